//! Endpoint health for `portico health` (the Admin `Health` call): every endpoint of every
//! cluster as each agent last reported it, grouped by the agents' region, and the endpoints
//! the agents disagree on (healthy on some, unhealthy or ejected on others). Pure data: the
//! registry supplies the agents' stored [`AgentHealth`].

use std::collections::BTreeMap;

use portico_api::pb::{
    AgentHealth, ClusterHealthView, Disagreement, EndpointSighting, EndpointView, HealthResponse,
    RegionHealth, endpoint_health::State,
};

/// The view of `agents` for the cluster `cluster` (every cluster when empty), as the agents of
/// `region` (every region when empty) see it. Clusters, regions, endpoints and agents are each
/// in name order.
pub fn view(agents: &[AgentHealth], cluster: &str, region: &str) -> HealthResponse {
    // cluster → agent region → address → endpoint
    let mut clusters: BTreeMap<&str, BTreeMap<&str, BTreeMap<&str, EndpointView>>> =
        BTreeMap::new();
    let mut incomplete = Vec::new();
    for agent in agents {
        if !region.is_empty() && agent.region != region {
            continue;
        }
        if agent.endpoints_omitted > 0 {
            incomplete.push(agent.node_id.clone());
        }
        for c in &agent.clusters {
            if !cluster.is_empty() && c.cluster != cluster {
                continue;
            }
            let regions = clusters.entry(&c.cluster).or_default();
            let endpoints = regions.entry(&agent.region).or_default();
            for e in &c.endpoints {
                let view = endpoints.entry(&e.address).or_insert_with(|| EndpointView {
                    address: e.address.clone(),
                    ..Default::default()
                });
                if view.region.is_empty() && view.zone.is_empty() {
                    view.region = e.region.clone();
                    view.zone = e.zone.clone();
                }
                view.agents.push(EndpointSighting {
                    node_id: agent.node_id.clone(),
                    region: agent.region.clone(),
                    zone: agent.zone.clone(),
                    state: e.state,
                    reason: e.reason.clone(),
                    ejected_until_unix_ms: e.ejected_until_unix_ms,
                    requests: e.requests,
                    errors: e.errors,
                    window_seconds: agent.window_seconds,
                    reported_at: agent.time,
                    panic: c.panic,
                });
            }
        }
    }
    incomplete.sort();
    let clusters = clusters
        .into_iter()
        .map(|(name, regions)| {
            let regions: Vec<RegionHealth> = regions
                .into_iter()
                .map(|(region, endpoints)| RegionHealth {
                    region: region.to_string(),
                    endpoints: endpoints
                        .into_values()
                        .map(|mut e| {
                            e.agents.sort_by(|a, b| a.node_id.cmp(&b.node_id));
                            e
                        })
                        .collect(),
                })
                .collect();
            ClusterHealthView {
                cluster: name.to_string(),
                disagreements: disagreements(&regions),
                regions,
            }
        })
        .collect();
    HealthResponse {
        clusters,
        incomplete_agents: incomplete,
    }
}

/// The endpoints some agents (in any region) see healthy and others unhealthy or ejected. A
/// draining endpoint is on its way out of one agent's config, which says nothing of its health.
fn disagreements(regions: &[RegionHealth]) -> Vec<Disagreement> {
    let mut by_address: BTreeMap<&str, Disagreement> = BTreeMap::new();
    for e in regions.iter().flat_map(|r| &r.endpoints) {
        let d = by_address
            .entry(&e.address)
            .or_insert_with(|| Disagreement {
                address: e.address.clone(),
                ..Default::default()
            });
        for a in &e.agents {
            match State::try_from(a.state) {
                Ok(State::Healthy) => d.healthy.push(a.node_id.clone()),
                Ok(State::Unhealthy | State::Ejected) => d.unhealthy.push(a.clone()),
                _ => {}
            }
        }
    }
    by_address
        .into_values()
        .filter(|d| !d.healthy.is_empty() && !d.unhealthy.is_empty())
        .map(|mut d| {
            d.healthy.sort();
            d.unhealthy.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use portico_api::pb::{ClusterHealth, EndpointHealth};

    use super::*;

    /// An agent's report: (cluster, [(address, state)]).
    fn agent(id: &str, region: &str, clusters: &[(&str, &[(&str, State)])]) -> AgentHealth {
        AgentHealth {
            node_id: id.into(),
            region: region.into(),
            zone: format!("{region}-1"),
            window_seconds: 30,
            clusters: clusters
                .iter()
                .map(|(name, endpoints)| ClusterHealth {
                    cluster: name.to_string(),
                    endpoints: endpoints
                        .iter()
                        .map(|(address, state)| EndpointHealth {
                            address: address.to_string(),
                            state: *state as i32,
                            reason: match state {
                                State::Unhealthy => "status 500".into(),
                                State::Ejected => "5 consecutive 5xx".into(),
                                _ => String::new(),
                            },
                            ..Default::default()
                        })
                        .collect(),
                    panic: false,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The view as lines: "cluster region address agent state" per sighting.
    fn lines(view: &HealthResponse) -> Vec<String> {
        let mut out = Vec::new();
        for c in &view.clusters {
            for r in &c.regions {
                for e in &r.endpoints {
                    for a in &e.agents {
                        let state = State::try_from(a.state).map_or("?", |s| s.as_str_name());
                        out.push(format!(
                            "{} {} {} {} {state}",
                            c.cluster, r.region, e.address, a.node_id
                        ));
                    }
                }
            }
        }
        out
    }

    /// Disagreements as "cluster address healthy=[..] unhealthy=[..]".
    fn disputes(view: &HealthResponse) -> Vec<String> {
        view.clusters
            .iter()
            .flat_map(|c| {
                c.disagreements.iter().map(|d| {
                    let unhealthy: Vec<_> = d
                        .unhealthy
                        .iter()
                        .map(|s| format!("{}:{}", s.node_id, s.reason))
                        .collect();
                    format!(
                        "{} {} healthy={} unhealthy={}",
                        c.cluster,
                        d.address,
                        d.healthy.join(","),
                        unhealthy.join(",")
                    )
                })
            })
            .collect()
    }

    #[test]
    fn endpoints_are_grouped_by_the_agents_region_and_disputes_found() {
        use State::*;
        let fleet = [
            agent(
                "edge-2",
                "eu",
                &[("api", &[("a:80", Healthy), ("b:80", Unhealthy)])],
            ),
            agent(
                "edge-1",
                "eu",
                &[("api", &[("a:80", Healthy), ("b:80", Healthy)])],
            ),
            agent(
                "edge-9",
                "us",
                &[
                    ("api", &[("a:80", Ejected), ("b:80", Unhealthy)]),
                    ("web", &[("w:80", Draining)]),
                ],
            ),
            agent("edge-3", "us", &[("web", &[("w:80", Healthy)])]),
        ];
        struct Case {
            cluster: &'static str,
            region: &'static str,
            lines: &'static [&'static str],
            disputes: &'static [&'static str],
        }
        let cases = [
            Case {
                cluster: "",
                region: "",
                lines: &[
                    "api eu a:80 edge-1 HEALTHY",
                    "api eu a:80 edge-2 HEALTHY",
                    "api eu b:80 edge-1 HEALTHY",
                    "api eu b:80 edge-2 UNHEALTHY",
                    "api us a:80 edge-9 EJECTED",
                    "api us b:80 edge-9 UNHEALTHY",
                    "web us w:80 edge-3 HEALTHY",
                    "web us w:80 edge-9 DRAINING",
                ],
                // Across regions; draining is no dispute.
                disputes: &[
                    "api a:80 healthy=edge-1,edge-2 unhealthy=edge-9:5 consecutive 5xx",
                    "api b:80 healthy=edge-1 unhealthy=edge-2:status 500,edge-9:status 500",
                ],
            },
            Case {
                cluster: "api",
                region: "us",
                lines: &["api us a:80 edge-9 EJECTED", "api us b:80 edge-9 UNHEALTHY"],
                // Alone, edge-9 agrees with itself.
                disputes: &[],
            },
            Case {
                cluster: "web",
                region: "",
                lines: &["web us w:80 edge-3 HEALTHY", "web us w:80 edge-9 DRAINING"],
                disputes: &[],
            },
            Case {
                cluster: "api",
                region: "eu",
                lines: &[
                    "api eu a:80 edge-1 HEALTHY",
                    "api eu a:80 edge-2 HEALTHY",
                    "api eu b:80 edge-1 HEALTHY",
                    "api eu b:80 edge-2 UNHEALTHY",
                ],
                disputes: &["api b:80 healthy=edge-1 unhealthy=edge-2:status 500"],
            },
            Case {
                cluster: "none",
                region: "",
                lines: &[],
                disputes: &[],
            },
        ];
        for case in cases {
            let v = view(&fleet, case.cluster, case.region);
            let what = format!("cluster {:?} region {:?}", case.cluster, case.region);
            assert_eq!(lines(&v), case.lines, "{what}");
            assert_eq!(disputes(&v), case.disputes, "{what}");
        }
    }

    #[test]
    fn agents_that_left_endpoints_out_are_named() {
        let mut full = agent("edge-1", "eu", &[("api", &[("a:80", State::Healthy)])]);
        let mut cut = agent("edge-2", "us", &[("api", &[("a:80", State::Healthy)])]);
        cut.endpoints_omitted = 40;
        full.clusters[0].endpoints[0].region = "eu".into();
        let fleet = [cut, full];
        let v = view(&fleet, "", "");
        assert_eq!(v.incomplete_agents, ["edge-2"]);
        // Only the agents of the region asked about.
        assert!(view(&fleet, "", "eu").incomplete_agents.is_empty());
        // An endpoint's own locality comes from the first agent that knows it.
        assert_eq!(v.clusters[0].regions[0].endpoints[0].region, "eu");
    }
}
