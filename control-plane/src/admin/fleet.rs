//! The fleet as the dashboard shows it (`Fleet`): every agent's state against the revision due
//! to it, summed by region and zone, and one page of agents. Summing here keeps what a browser
//! fetches small at 100,000 agents: the groups, the totals and one page.

use std::collections::BTreeMap;

use portico_api::pb::{
    AgentRecord, CanaryPin, FleetAgent, FleetGroup, FleetRequest, FleetResponse, Node,
};

use super::AdminError;
use crate::rollout;
use crate::store::Revision;

/// Agents on a page unless asked otherwise.
pub const DEFAULT_PAGE: u32 = 100;
/// The most agents on a page.
pub const MAX_PAGE: u32 = 1000;
/// The states an agent can be in, as `FleetAgent.state` names them.
pub const STATES: [&str; 5] = ["in-sync", "pending", "nacked", "ahead", "disconnected"];

/// The fleet of `records` while `current` is the config revision and `pin` the active canary
/// rollout. The groups and the total cover every agent; `req`'s filters pick the page.
pub fn view(
    records: &[AgentRecord],
    current: Revision,
    pin: Option<&CanaryPin>,
    req: &FleetRequest,
) -> Result<FleetResponse, AdminError> {
    if !req.state.is_empty() && !STATES.contains(&req.state.as_str()) {
        return Err(AdminError::BadRequest(format!(
            "state: {:?} is not one of {}",
            req.state,
            STATES.join(", ")
        )));
    }
    let page_size = match req.page_size {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let mut groups: BTreeMap<(String, String), Sum> = BTreeMap::new();
    let mut total = Sum::default();
    let mut matching = Vec::new();
    for record in records {
        let agent = agent(record, current, pin);
        total.add(&agent);
        groups
            .entry((agent.region.clone(), agent.zone.clone()))
            .or_default()
            .add(&agent);
        let keep = (req.region.is_empty() || agent.region == req.region)
            && (req.zone.is_empty() || agent.zone == req.zone)
            && (req.state.is_empty() || agent.state == req.state)
            && (req.search.is_empty() || agent.node_id.contains(&req.search));
        if keep {
            matching.push(agent);
        }
    }
    matching.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let count = matching.len() as u32;
    let agents = matching
        .into_iter()
        .skip(req.offset as usize)
        .take(page_size as usize)
        .collect();
    Ok(FleetResponse {
        config_revision: current,
        groups: groups
            .into_iter()
            .map(|((region, zone), sum)| sum.group(region, zone))
            .collect(),
        total: Some(total.group(String::new(), String::new())),
        agents,
        matching: count,
    })
}

/// One agent's row: its state against the revision due to it.
fn agent(record: &AgentRecord, current: Revision, pin: Option<&CanaryPin>) -> FleetAgent {
    let node = record.node.clone().unwrap_or_default();
    let due = due(&node, current, pin);
    let (state, reason) = if !record.connected {
        ("disconnected", String::new())
    } else if record.ahead_of_control_plane {
        ("ahead", rollout::ahead(record))
    } else if record.applied_version >= due {
        ("in-sync", String::new())
    } else if let Some(nack) = rollout::rejection(record, due) {
        ("nacked", nack.error.clone())
    } else {
        ("pending", String::new())
    };
    FleetAgent {
        node_id: node.id,
        region: node.region,
        zone: node.zone,
        state: state.to_string(),
        version: record.applied_version,
        due,
        reason,
        requests_per_second: record.requests_per_second,
        error_rate: record.error_rate,
        replica: record.replica.clone(),
        kind: if record.kind.is_empty() {
            "portico".to_string()
        } else {
            record.kind.clone()
        },
        last_seen: record.last_seen,
        labels: node.labels,
    }
}

/// The revision due to the agent of `node`: the current one, or the one before an active
/// canary rollout that does not pick it.
fn due(node: &Node, current: Revision, pin: Option<&CanaryPin>) -> Revision {
    match pin {
        Some(pin) if !crate::canary::picks(pin, node) => pin.previous,
        _ => current,
    }
}

/// Agents summed by state, with their traffic.
#[derive(Default)]
struct Sum {
    group: FleetGroup,
    errors_per_second: f64,
}

impl Sum {
    fn add(&mut self, agent: &FleetAgent) {
        let g = &mut self.group;
        g.agents += 1;
        match agent.state.as_str() {
            "in-sync" => g.in_sync += 1,
            "pending" => g.pending += 1,
            "disconnected" => g.disconnected += 1,
            _ => g.nacked += 1,
        }
        g.requests_per_second += agent.requests_per_second;
        self.errors_per_second += agent.requests_per_second * agent.error_rate;
    }

    fn group(self, region: String, zone: String) -> FleetGroup {
        let rate = self.group.requests_per_second;
        FleetGroup {
            region,
            zone,
            error_rate: if rate > 0.0 {
                self.errors_per_second / rate
            } else {
                0.0
            },
            ..self.group
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use portico_api::pb::{CanarySelector, NackInfo};

    use super::*;

    fn record(id: &str, zone: &str, connected: bool, applied: Revision) -> AgentRecord {
        AgentRecord {
            node: Some(Node {
                id: id.into(),
                region: "eu".into(),
                zone: zone.into(),
                ..Default::default()
            }),
            connected,
            applied_version: applied,
            requests_per_second: 10.0,
            ..Default::default()
        }
    }

    #[test]
    fn each_agent_has_its_state_and_groups_sum_them_by_zone() {
        let mut nacked = record("c", "b", true, 4);
        nacked.last_nack = Some(NackInfo {
            version: 5,
            error: "listener web: port taken".into(),
            time: None,
        });
        nacked.error_rate = 0.5;
        let mut ahead = record("e", "b", true, 9);
        ahead.ahead_of_control_plane = true;
        let records = vec![
            record("a", "a", true, 5),
            record("b", "a", true, 4),
            nacked,
            record("d", "b", false, 3),
            ahead,
        ];
        let fleet = view(&records, 5, None, &FleetRequest::default()).unwrap();
        let states: Vec<(&str, &str)> = fleet
            .agents
            .iter()
            .map(|a| (a.node_id.as_str(), a.state.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("a", "in-sync"),
                ("b", "pending"),
                ("c", "nacked"),
                ("d", "disconnected"),
                ("e", "ahead")
            ]
        );
        assert_eq!(fleet.agents[2].reason, "listener web: port taken");
        let total = fleet.total.unwrap();
        assert_eq!(
            (total.agents, total.in_sync, total.pending, total.nacked),
            (5, 1, 1, 2)
        );
        assert_eq!(total.disconnected, 1);
        assert_eq!(fleet.groups.len(), 2);
        let b = &fleet.groups[1];
        assert_eq!((b.zone.as_str(), b.agents), ("b", 3));
        // 5 errors a second of 30 requests a second.
        assert!((b.error_rate - 5.0 / 30.0).abs() < 1e-9, "{}", b.error_rate);
    }

    #[test]
    fn filters_and_pages_pick_the_agents_but_not_the_groups() {
        let records: Vec<_> = (0..250)
            .map(|i| {
                record(
                    &format!("n{i:03}"),
                    if i % 2 == 0 { "a" } else { "b" },
                    true,
                    5,
                )
            })
            .collect();
        let req = FleetRequest {
            zone: "b".into(),
            offset: 100,
            ..Default::default()
        };
        let fleet = view(&records, 5, None, &req).unwrap();
        assert_eq!(fleet.matching, 125);
        assert_eq!(fleet.agents.len(), 25);
        assert_eq!(fleet.agents[0].node_id, "n201");
        assert_eq!(fleet.total.unwrap().agents, 250);
        let req = FleetRequest {
            search: "n00".into(),
            page_size: 5000,
            ..Default::default()
        };
        assert_eq!(view(&records, 5, None, &req).unwrap().agents.len(), 10);
        let bad = FleetRequest {
            state: "happy".into(),
            ..Default::default()
        };
        let err = view(&records, 5, None, &bad).unwrap_err().to_string();
        assert!(
            err.starts_with("state: \"happy\" is not one of in-sync"),
            "{err}"
        );
    }

    #[test]
    fn during_a_canary_the_agents_it_does_not_pick_are_due_the_previous_revision() {
        let mut canary = record("a", "a", true, 5);
        canary.node.as_mut().unwrap().labels = [("slot".into(), "1".into())].into();
        let records = vec![canary, record("b", "a", true, 4)];
        let pin = CanaryPin {
            revision: 5,
            previous: 4,
            selector: Some(CanarySelector {
                labels: [("slot".into(), "1".into())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let fleet = view(&records, 5, Some(&pin), &FleetRequest::default()).unwrap();
        let due: Vec<(Revision, &str)> = fleet
            .agents
            .iter()
            .map(|a| (a.due, a.state.as_str()))
            .collect();
        assert_eq!(due, [(5, "in-sync"), (4, "in-sync")]);
    }
}
