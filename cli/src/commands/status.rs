//! `portico status`: the control-plane replicas, which one leads, and each one's agents and
//! store health.

use std::time::SystemTime;

use portico_api::pb::{ReplicaRecord, StatusRequest, StatusResponse};
use serde::Serialize;

use crate::commands::Context;
use crate::error::CliResult;
use crate::output::{self, Table};

/// A replica whose record is older than this has stopped writing it: it lost its store, or
/// died (its record then goes with its lease).
const STALE_AFTER_SECONDS: i64 = 6;

/// `portico status`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// One replica. JSON fields are stable.
#[derive(Debug, Serialize)]
pub struct Replica {
    /// Its `--replica-id`.
    pub id: String,
    /// Whether it leads.
    pub leader: bool,
    /// The address its gRPC services listen on.
    pub address: String,
    /// Agent streams it holds.
    pub agents: u64,
    /// The config revision it serves.
    pub config_revision: i64,
    /// `ok`, `unavailable` (its store does not answer it) or `stale` (its record is older than
    /// a few seconds: it cannot write to the store, or stopped).
    pub store: &'static str,
    /// How long its last record write took, in milliseconds.
    pub store_latency_ms: u32,
    /// When it last wrote its record, RFC 3339 UTC.
    pub heartbeat: String,
    /// When it started, RFC 3339 UTC.
    pub started: String,
    /// The control plane's version.
    pub version: String,
}

/// The whole output.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The leading replica ("" while none leads).
    pub leader: String,
    /// The replica that answered.
    pub answered_by: String,
    /// Whether the answering replica's store answers.
    pub store_reachable: bool,
    /// The config revision the answering replica serves.
    pub config_revision: i64,
    /// By id.
    pub replicas: Vec<Replica>,
}

fn store_state(r: &ReplicaRecord, now: SystemTime) -> &'static str {
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if !r.store_reachable {
        "unavailable"
    } else if r
        .heartbeat
        .as_ref()
        .is_none_or(|h| now_s - h.seconds > STALE_AFTER_SECONDS)
    {
        "stale"
    } else {
        "ok"
    }
}

impl Status {
    fn from_pb(resp: &StatusResponse, now: SystemTime) -> Status {
        Status {
            leader: resp.leader.clone(),
            answered_by: resp.answered_by.clone(),
            store_reachable: resp.store_reachable,
            config_revision: resp.config_revision,
            replicas: resp
                .replicas
                .iter()
                .map(|r| Replica {
                    id: r.id.clone(),
                    leader: !resp.leader.is_empty() && r.id == resp.leader,
                    address: r.address.clone(),
                    agents: r.agents,
                    config_revision: r.config_revision,
                    store: store_state(r, now),
                    store_latency_ms: r.store_latency_ms,
                    heartbeat: output::rfc3339(r.heartbeat.as_ref()),
                    started: output::rfc3339(r.started.as_ref()),
                    version: r.version.clone(),
                })
                .collect(),
        }
    }
}

/// Runs `status`.
pub async fn run(ctx: &Context, _args: Args) -> CliResult {
    let mut admin = ctx.connect().await?;
    let resp = admin
        .status(StatusRequest {})
        .await
        .map_err(|s| ctx.status(s))?
        .into_inner();
    let now = SystemTime::now();
    let out = Status::from_pb(&resp, now);
    output::print(ctx.format, &out, || table(&resp, now))
}

fn table(resp: &StatusResponse, now: SystemTime) -> String {
    let mut t = Table::new([
        "REPLICA",
        "LEADER",
        "ADDRESS",
        "AGENTS",
        "REVISION",
        "STORE",
        "HEARTBEAT",
    ]);
    for r in &resp.replicas {
        let store = match store_state(r, now) {
            "ok" => format!("ok ({} ms)", r.store_latency_ms),
            other => other.to_string(),
        };
        t.row([
            r.id.clone(),
            if r.id == resp.leader { "*" } else { "" }.to_string(),
            r.address.clone(),
            r.agents.to_string(),
            r.config_revision.to_string(),
            store,
            output::ago(r.heartbeat.as_ref(), now),
        ]);
    }
    let leader = if resp.leader.is_empty() {
        "none".to_string()
    } else {
        resp.leader.clone()
    };
    let store = if resp.store_reachable {
        "reachable"
    } else {
        "UNAVAILABLE (replicas listed from memory: this one only)"
    };
    format!(
        "leader: {leader}\nanswered by: {} (store {store})\n\n{}",
        resp.answered_by,
        t.render()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(id: &str, heartbeat: i64, reachable: bool) -> ReplicaRecord {
        ReplicaRecord {
            id: id.into(),
            address: "10.0.0.1:7000".into(),
            agents: 12,
            config_revision: 7,
            store_reachable: reachable,
            store_latency_ms: 3,
            heartbeat: Some(pbjson_types::Timestamp {
                seconds: heartbeat,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_table_marks_the_leader_and_each_replicas_store() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let resp = StatusResponse {
            replicas: vec![
                replica("cp-1", 999, true),
                replica("cp-2", 980, true),
                replica("cp-3", 999, false),
            ],
            leader: "cp-1".into(),
            answered_by: "cp-1".into(),
            store_reachable: true,
            config_revision: 7,
        };
        assert_eq!(
            table(&resp, now),
            "leader: cp-1\nanswered by: cp-1 (store reachable)\n\n\
             REPLICA   LEADER   ADDRESS         AGENTS   REVISION   STORE         HEARTBEAT\n\
             cp-1      *        10.0.0.1:7000   12       7          ok (3 ms)     1s ago\n\
             cp-2               10.0.0.1:7000   12       7          stale         20s ago\n\
             cp-3               10.0.0.1:7000   12       7          unavailable   1s ago\n"
        );
        let json = Status::from_pb(&resp, now);
        assert!(json.replicas[0].leader && !json.replicas[1].leader);
        assert_eq!(json.replicas[1].store, "stale");
    }
}
