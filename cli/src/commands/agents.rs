//! `portico agents`: the agent registry, with how far each agent has applied the config;
//! `portico agents revoke ID`: revoke an agent's certificate.

use std::collections::BTreeMap;
use std::time::SystemTime;

use portico_api::pb::{AgentRecord, AgentsRequest, RevokeAgentRequest};
use serde::Serialize;

use crate::commands::Context;
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

/// `portico agents [--region R] [--selector k=v,...]` and `portico agents revoke ID`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Only agents of this region.
    #[arg(long)]
    pub region: Option<String>,
    /// Only agents with these labels: `k=v`, comma-separated or repeated.
    #[arg(short = 'l', long, value_name = "K=V", value_delimiter = ',')]
    pub selector: Vec<String>,
}

/// `portico agents …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Revoke an agent's certificate: its streams close, and it is refused until it joins
    /// again with a join token created after now.
    Revoke {
        /// The agent's node id.
        id: String,
    },
}

/// One agent. JSON fields are stable.
#[derive(Debug, Serialize)]
pub struct Agent {
    /// Node id.
    pub id: String,
    /// The kind of data plane: `portico`, `envoy` or `grpc`.
    pub kind: String,
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Node labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The agent's software version.
    pub agent_version: String,
    /// The config version it last applied (0: none).
    pub applied_version: i64,
    /// `in-sync`, `pending`, `nacked`, `ahead-of-control-plane` or `disconnected`.
    pub state: &'static str,
    /// Last message from the agent, RFC 3339 UTC ("" when never).
    pub last_seen: String,
    /// When its current stream opened, RFC 3339 UTC ("" when not connected).
    pub connected_since: String,
    /// The control-plane replica holding its stream.
    pub replica: String,
    /// Its last rejection since its last ACK, if any.
    pub nack: Option<Nack>,
    /// Requests per second it answered over the period its last report covers (0 when
    /// disconnected).
    pub req_per_s: f64,
}

/// A rejected update.
#[derive(Debug, Serialize)]
pub struct Nack {
    /// The rejected version.
    pub version: i64,
    /// The agent's reason.
    pub error: String,
}

/// The whole output.
#[derive(Debug, Serialize)]
pub struct Agents {
    /// The current config revision.
    pub config_revision: i64,
    /// By node id.
    pub agents: Vec<Agent>,
}

/// An agent's state against the current config revision.
pub fn state(a: &AgentRecord, config_revision: i64) -> &'static str {
    if !a.connected {
        "disconnected"
    } else if a.ahead_of_control_plane {
        "ahead-of-control-plane"
    } else if a
        .last_nack
        .as_ref()
        .is_some_and(|n| n.version > a.applied_version)
    {
        "nacked"
    } else if a.applied_version >= config_revision {
        "in-sync"
    } else {
        "pending"
    }
}

/// The kind of data plane of a record (records written before kinds are Portico agents').
pub fn kind(a: &AgentRecord) -> &str {
    if a.kind.is_empty() {
        "portico"
    } else {
        &a.kind
    }
}

impl Agent {
    fn from_pb(a: &AgentRecord, config_revision: i64) -> Agent {
        let node = a.node.clone().unwrap_or_default();
        Agent {
            id: node.id,
            kind: kind(a).to_string(),
            region: node.region,
            zone: node.zone,
            labels: node.labels.into_iter().collect(),
            agent_version: node.agent_version,
            applied_version: a.applied_version,
            state: state(a, config_revision),
            last_seen: output::rfc3339(a.last_seen.as_ref()),
            connected_since: output::rfc3339(a.connected_since.as_ref()),
            replica: a.replica.clone(),
            nack: a.last_nack.as_ref().map(|n| Nack {
                version: n.version,
                error: n.error.clone(),
            }),
            req_per_s: req_per_s(a),
        }
    }
}

/// An agent's requests per second as its last report gave them, rounded to a tenth; 0 when it
/// is disconnected.
pub fn req_per_s(a: &AgentRecord) -> f64 {
    if a.connected {
        (a.requests_per_second * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// Parses `k=v` selectors.
pub fn parse_selector(items: &[String]) -> CliResult<BTreeMap<String, String>> {
    items
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CliError::Usage(format!(
                "bad selector {s:?}; expected key=value"
            ))),
        })
        .collect()
}

/// Runs `agents`.
pub async fn run(ctx: &Context, args: Args) -> CliResult {
    if let Some(Command::Revoke { id }) = args.command {
        let mut admin = ctx.connect().await?;
        admin
            .revoke_agent(RevokeAgentRequest {
                node_id: id.clone(),
            })
            .await
            .map_err(|s| ctx.status(s))?;
        println!("agent {id} revoked: its certificates are refused and its streams closed");
        return Ok(());
    }
    let labels = parse_selector(&args.selector)?;
    let mut admin = ctx.connect().await?;
    let resp = admin
        .agents(AgentsRequest {
            region: args.region.unwrap_or_default(),
            labels,
        })
        .await
        .map_err(|s| ctx.status(s))?
        .into_inner();
    let out = Agents {
        config_revision: resp.config_revision,
        agents: resp
            .agents
            .iter()
            .map(|a| Agent::from_pb(a, resp.config_revision))
            .collect(),
    };
    output::print(ctx.format, &out, || {
        table(&resp.agents, resp.config_revision, SystemTime::now())
    })
}

fn table(agents: &[AgentRecord], config_revision: i64, now: SystemTime) -> String {
    if agents.is_empty() {
        return format!("no agents (config is at revision {config_revision})\n");
    }
    let mut t = Table::new([
        "ID",
        "KIND",
        "REGION",
        "ZONE",
        "APPLIED",
        "STATE",
        "REQ/S",
        "LAST SEEN",
    ]);
    for a in agents {
        let node = a.node.clone().unwrap_or_default();
        let mut state = state(a, config_revision).to_string();
        if let (Some(n), "nacked") = (&a.last_nack, state.as_str()) {
            state = format!("NACKed {}: {}", n.version, n.error);
        }
        t.row([
            node.id,
            kind(a).to_string(),
            node.region,
            node.zone,
            a.applied_version.to_string(),
            state,
            format!("{:.1}", req_per_s(a)),
            output::ago(a.last_seen.as_ref(), now),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_api::pb::{NackInfo, Node};

    fn agent(id: &str, applied: i64, connected: bool, nack: Option<i64>) -> AgentRecord {
        AgentRecord {
            node: Some(Node {
                id: id.into(),
                region: "eu".into(),
                zone: "eu-1a".into(),
                ..Default::default()
            }),
            applied_version: applied,
            connected,
            last_nack: nack.map(|v| NackInfo {
                version: v,
                error: "bind 0.0.0.0:80: permission denied".into(),
                time: None,
            }),
            last_seen: Some(pbjson_types::Timestamp {
                seconds: 1_000,
                nanos: 0,
            }),
            requests_per_second: 12.345,
            ..Default::default()
        }
    }

    #[test]
    fn states_follow_connection_nack_and_version() {
        assert_eq!(state(&agent("a", 5, true, None), 5), "in-sync");
        assert_eq!(state(&agent("a", 4, true, None), 5), "pending");
        assert_eq!(state(&agent("a", 4, true, Some(5)), 5), "nacked");
        // A NACK of an older version is history once a newer version was applied.
        assert_eq!(state(&agent("a", 5, true, Some(4)), 5), "in-sync");
        assert_eq!(state(&agent("a", 5, false, None), 5), "disconnected");
        let ahead = AgentRecord {
            ahead_of_control_plane: true,
            ..agent("a", 9, true, None)
        };
        assert_eq!(state(&ahead, 2), "ahead-of-control-plane");
    }

    #[test]
    fn table_shows_state_and_nack_reason() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_010);
        let envoy = AgentRecord {
            kind: "envoy".into(),
            ..agent("edge-3", 5, true, None)
        };
        let text = table(
            &[
                agent("edge-1", 5, true, None),
                agent("edge-2", 4, true, Some(5)),
                envoy,
            ],
            5,
            now,
        );
        assert_eq!(
            text,
            "ID       KIND      REGION   ZONE    APPLIED   STATE                                          REQ/S   LAST SEEN\n\
             edge-1   portico   eu       eu-1a   5         in-sync                                        12.3    10s ago\n\
             edge-2   portico   eu       eu-1a   4         NACKed 5: bind 0.0.0.0:80: permission denied   12.3    10s ago\n\
             edge-3   envoy     eu       eu-1a   5         in-sync                                        12.3    10s ago\n"
        );
    }

    #[test]
    fn selectors_parse_and_reject_malformed_items() {
        let s = parse_selector(&["tier=edge".into(), "pop=fra".into()]).unwrap();
        assert_eq!(s.get("tier").map(String::as_str), Some("edge"));
        assert_eq!(s.len(), 2);
        assert!(parse_selector(&["tier".into()]).is_err());
        assert!(parse_selector(&["=x".into()]).is_err());
    }
}
