//! `portico health`: every endpoint's state as each agent sees it, grouped by the agents'
//! region, and the endpoints the agents disagree on.

use std::time::{Duration, UNIX_EPOCH};

use portico_api::pb::{
    self, EndpointSighting, HealthRequest, HealthResponse, endpoint_health::State,
};
use serde::Serialize;

use crate::commands::Context;
use crate::error::CliResult;
use crate::output::{self, Table};

/// `portico health [CLUSTER] [--region R]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this cluster.
    pub cluster: Option<String>,
    /// Only what the agents of this region see.
    #[arg(long)]
    pub region: Option<String>,
}

/// The whole output. JSON fields are stable (cli/README.md).
#[derive(Debug, Serialize)]
pub struct Health {
    /// By cluster name.
    pub clusters: Vec<Cluster>,
    /// Agents whose report left endpoints out, by node id.
    pub incomplete_agents: Vec<String>,
}

/// One cluster.
#[derive(Debug, Serialize)]
pub struct Cluster {
    /// The cluster's name.
    pub cluster: String,
    /// By the agents' region.
    pub regions: Vec<Region>,
    /// Endpoints some agents see healthy and others not, by address.
    pub disagreements: Vec<Disagreement>,
}

/// A cluster's endpoints as the agents of one region see them.
#[derive(Debug, Serialize)]
pub struct Region {
    /// The agents' region.
    pub region: String,
    /// By address.
    pub endpoints: Vec<Endpoint>,
}

/// One endpoint.
#[derive(Debug, Serialize)]
pub struct Endpoint {
    /// host:port.
    pub address: String,
    /// The endpoint's own region ("" when unknown).
    pub region: String,
    /// The endpoint's own zone ("" when unknown).
    pub zone: String,
    /// Each agent's view, by agent.
    pub agents: Vec<Sighting>,
}

/// One agent's view of one endpoint.
#[derive(Debug, Serialize)]
pub struct Sighting {
    /// The agent's node id.
    pub agent: String,
    /// The agent's region.
    pub region: String,
    /// The agent's zone.
    pub zone: String,
    /// `healthy`, `unhealthy`, `ejected` or `draining`.
    pub state: &'static str,
    /// Why it is unhealthy or ejected ("" otherwise).
    pub reason: String,
    /// When the ejection ends, RFC 3339 UTC ("" when not ejected).
    pub ejected_until: String,
    /// Requests the agent sent it during the window.
    pub requests: u64,
    /// Of those, the ones that failed.
    pub errors: u64,
    /// The window of the counts, in seconds, ending at `reported_at`.
    pub window_seconds: u32,
    /// When the agent reported it, RFC 3339 UTC.
    pub reported_at: String,
    /// The cluster has no healthy endpoint on that agent, which uses them all (panic mode).
    pub panic: bool,
}

/// An endpoint the agents disagree on.
#[derive(Debug, Serialize)]
pub struct Disagreement {
    /// host:port.
    pub address: String,
    /// The agents that see it healthy.
    pub healthy: Vec<String>,
    /// The agents that see it unhealthy or ejected, with the reason and the ejection's end.
    pub unhealthy: Vec<Sighting>,
}

/// The name of a state in output.
pub fn state_name(state: i32) -> &'static str {
    match State::try_from(state) {
        Ok(State::Healthy) => "healthy",
        Ok(State::Unhealthy) => "unhealthy",
        Ok(State::Ejected) => "ejected",
        Ok(State::Draining) => "draining",
        _ => "unknown",
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 (UTC, seconds), "" for 0.
fn unix_ms(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) if ms > 0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        _ => String::new(),
    }
}

impl Sighting {
    fn from_pb(s: &EndpointSighting) -> Sighting {
        Sighting {
            agent: s.node_id.clone(),
            region: s.region.clone(),
            zone: s.zone.clone(),
            state: state_name(s.state),
            reason: s.reason.clone(),
            ejected_until: unix_ms(s.ejected_until_unix_ms),
            requests: s.requests,
            errors: s.errors,
            window_seconds: s.window_seconds,
            reported_at: output::rfc3339(s.reported_at.as_ref()),
            panic: s.panic,
        }
    }
}

impl Health {
    /// The output of a Health response.
    pub fn from_pb(resp: &HealthResponse) -> Health {
        Health {
            clusters: resp.clusters.iter().map(cluster).collect(),
            incomplete_agents: resp.incomplete_agents.clone(),
        }
    }
}

fn cluster(c: &pb::ClusterHealthView) -> Cluster {
    Cluster {
        cluster: c.cluster.clone(),
        regions: c
            .regions
            .iter()
            .map(|r| Region {
                region: r.region.clone(),
                endpoints: r
                    .endpoints
                    .iter()
                    .map(|e| Endpoint {
                        address: e.address.clone(),
                        region: e.region.clone(),
                        zone: e.zone.clone(),
                        agents: e.agents.iter().map(Sighting::from_pb).collect(),
                    })
                    .collect(),
            })
            .collect(),
        disagreements: c
            .disagreements
            .iter()
            .map(|d| Disagreement {
                address: d.address.clone(),
                healthy: d.healthy.clone(),
                unhealthy: d.unhealthy.iter().map(Sighting::from_pb).collect(),
            })
            .collect(),
    }
}

/// Runs `health`.
pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let mut admin = ctx.connect().await?;
    let resp = admin
        .health(HealthRequest {
            cluster: args.cluster.clone().unwrap_or_default(),
            region: args.region.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| ctx.status(s))?
        .into_inner();
    let out = Health::from_pb(&resp);
    output::print(ctx.format, &out, || table(&out, &args))
}

/// A sighting's state for people: the state, with the ejection's end and "panic".
fn state_cell(s: &Sighting) -> String {
    let mut cell = s.state.to_string();
    if !s.ejected_until.is_empty() {
        cell = format!("{cell} until {}", s.ejected_until);
    }
    if s.panic {
        cell.push_str(" (panic)");
    }
    cell
}

/// The table: one row per endpoint and agent, then the disagreements.
pub fn table(health: &Health, args: &Args) -> String {
    if health.clusters.is_empty() {
        let mut what = String::from("no endpoint health reported");
        if let Some(c) = &args.cluster {
            what.push_str(&format!(" for cluster {c}"));
        }
        if let Some(r) = &args.region {
            what.push_str(&format!(" by agents in region {r}"));
        }
        return format!("{what}\n");
    }
    let mut t = Table::new([
        "CLUSTER", "REGION", "ENDPOINT", "AGENT", "STATE", "REASON", "REQUESTS", "ERRORS", "WINDOW",
    ]);
    for c in &health.clusters {
        for r in &c.regions {
            for e in &r.endpoints {
                for s in &e.agents {
                    t.row([
                        c.cluster.clone(),
                        r.region.clone(),
                        e.address.clone(),
                        s.agent.clone(),
                        state_cell(s),
                        s.reason.clone(),
                        s.requests.to_string(),
                        s.errors.to_string(),
                        format!("{}s", s.window_seconds),
                    ]);
                }
            }
        }
    }
    let mut out = t.render();
    let mut disputes = Table::new(["CLUSTER", "ENDPOINT", "HEALTHY ON", "NOT HEALTHY ON"]);
    for c in &health.clusters {
        for d in &c.disagreements {
            let unhealthy: Vec<String> = d
                .unhealthy
                .iter()
                .map(|s| {
                    let why = if s.reason.is_empty() {
                        state_cell(s)
                    } else {
                        format!("{}: {}", state_cell(s), s.reason)
                    };
                    format!("{} ({why})", s.agent)
                })
                .collect();
            disputes.row([
                c.cluster.clone(),
                d.address.clone(),
                d.healthy.join(", "),
                unhealthy.join(", "),
            ]);
        }
    }
    if !disputes.is_empty() {
        out.push_str("\nAgents disagree:\n");
        out.push_str(&disputes.render());
    }
    if !health.incomplete_agents.is_empty() {
        out.push_str(&format!(
            "\nnote: {} reported only part of their endpoints (more than a report holds); \
             their healthy endpoints may be missing\n",
            health.incomplete_agents.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::{ClusterHealthView, Disagreement as PbDisagreement, EndpointView, RegionHealth};

    fn sighting(agent: &str, state: State, reason: &str, until: i64) -> EndpointSighting {
        EndpointSighting {
            node_id: agent.into(),
            region: "eu".into(),
            zone: "eu-1".into(),
            state: state as i32,
            reason: reason.into(),
            ejected_until_unix_ms: until,
            requests: 12,
            errors: 1,
            window_seconds: 30,
            reported_at: Some(pbjson_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            panic: false,
        }
    }

    fn response() -> HealthResponse {
        let ejected = sighting(
            "edge-2",
            State::Ejected,
            "5 consecutive 5xx",
            1_700_000_030_000,
        );
        HealthResponse {
            clusters: vec![ClusterHealthView {
                cluster: "api".into(),
                regions: vec![RegionHealth {
                    region: "eu".into(),
                    endpoints: vec![EndpointView {
                        address: "10.0.0.1:80".into(),
                        region: "eu".into(),
                        zone: "eu-1".into(),
                        agents: vec![sighting("edge-1", State::Healthy, "", 0), ejected.clone()],
                    }],
                }],
                disagreements: vec![PbDisagreement {
                    address: "10.0.0.1:80".into(),
                    healthy: vec!["edge-1".into()],
                    unhealthy: vec![ejected],
                }],
            }],
            incomplete_agents: vec![],
        }
    }

    fn args() -> Args {
        Args {
            cluster: None,
            region: None,
        }
    }

    #[test]
    fn the_table_shows_each_agents_view_and_the_disagreements() {
        let text = table(&Health::from_pb(&response()), &args());
        assert_eq!(
            text,
            "CLUSTER   REGION   ENDPOINT      AGENT    STATE                                REASON              REQUESTS   ERRORS   WINDOW\n\
             api       eu       10.0.0.1:80   edge-1   healthy                                                  12         1        30s\n\
             api       eu       10.0.0.1:80   edge-2   ejected until 2023-11-14T22:13:50Z   5 consecutive 5xx   12         1        30s\n\
             \n\
             Agents disagree:\n\
             CLUSTER   ENDPOINT      HEALTHY ON   NOT HEALTHY ON\n\
             api       10.0.0.1:80   edge-1       edge-2 (ejected until 2023-11-14T22:13:50Z: 5 consecutive 5xx)\n"
        );
    }

    #[test]
    fn json_fields_are_the_documented_ones() {
        let json = serde_json::to_value(Health::from_pb(&response())).unwrap();
        let agent = &json["clusters"][0]["regions"][0]["endpoints"][0]["agents"][1];
        assert_eq!(agent["agent"], "edge-2");
        assert_eq!(agent["state"], "ejected");
        assert_eq!(agent["reason"], "5 consecutive 5xx");
        assert_eq!(agent["ejected_until"], "2023-11-14T22:13:50Z");
        assert_eq!(agent["reported_at"], "2023-11-14T22:13:20Z");
        assert_eq!(agent["window_seconds"], 30);
        let healthy = &json["clusters"][0]["regions"][0]["endpoints"][0]["agents"][0];
        assert_eq!(healthy["ejected_until"], "");
        let d = &json["clusters"][0]["disagreements"][0];
        assert_eq!(d["healthy"][0], "edge-1");
        assert_eq!(d["unhealthy"][0]["agent"], "edge-2");
        assert_eq!(json["incomplete_agents"], serde_json::json!([]));
    }

    #[test]
    fn nothing_reported_says_what_was_asked() {
        let empty = Health::from_pb(&HealthResponse::default());
        let asked = Args {
            cluster: Some("api".into()),
            region: Some("us".into()),
        };
        assert_eq!(
            table(&empty, &asked),
            "no endpoint health reported for cluster api by agents in region us\n"
        );
    }
}
