//! How far a revision has rolled out, from the registry.
//!
//! Every agent receives every config version, with an empty diff when its scope did not change,
//! so "applied version ≥ REV" means the agent runs REV's config (or a newer one). The agents a
//! canary rollout does not pick stay below its revision, so they count as pending until it is
//! promoted. An agent ahead of the control plane (it refused this store's config as older than its own, see
//! `discovery`) runs none of this store's revisions: it counts as rejecting every one.

use portico_api::pb::{AgentNack, AgentRecord, NackInfo, RolloutStatusResponse};

use crate::store::Revision;

/// The rollout status of `revision` over `records`.
pub fn status(revision: Revision, records: &[AgentRecord]) -> RolloutStatusResponse {
    let mut out = RolloutStatusResponse {
        revision,
        ..Default::default()
    };
    for record in records {
        if record.connected && record.ahead_of_control_plane {
            out.nacked += 1;
            out.nacks.push(AgentNack {
                node_id: node_id(record),
                error: ahead(record),
            });
            continue;
        }
        let nack = rejection(record, revision);
        if let Some(nack) = nack {
            out.nacks.push(AgentNack {
                node_id: node_id(record),
                error: nack.error.clone(),
            });
        }
        if !record.connected {
            out.disconnected += 1;
        } else if record.applied_version >= revision {
            out.applied += 1;
        } else if nack.is_some() {
            out.nacked += 1;
        } else {
            out.pending += 1;
        }
    }
    out
}

/// The agent's NACK of `revision` or a newer one, while it runs an older one.
pub fn rejection(record: &AgentRecord, revision: Revision) -> Option<&NackInfo> {
    record
        .last_nack
        .as_ref()
        .filter(|n| n.version >= revision && record.applied_version < revision)
}

/// Why an agent ahead of the control plane runs none of its revisions.
pub fn ahead(record: &AgentRecord) -> String {
    format!(
        "ahead of the control plane: serves version {} of another history and refuses this \
         control plane's",
        record.applied_version
    )
}

fn node_id(record: &AgentRecord) -> String {
    record
        .node
        .as_ref()
        .map(|n| n.id.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use portico_api::pb::{NackInfo, Node};

    use super::*;

    fn agent(id: &str, connected: bool, applied: Revision, nack: Option<Revision>) -> AgentRecord {
        AgentRecord {
            node: Some(Node {
                id: id.into(),
                ..Default::default()
            }),
            connected,
            applied_version: applied,
            last_nack: nack.map(|version| NackInfo {
                version,
                error: format!("{id} says no"),
                time: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn counts_each_agent_once() {
        let records = [
            agent("a", true, 10, None),
            agent("b", true, 12, None),
            agent("c", true, 8, None),
            agent("d", true, 8, Some(10)),
            agent("e", false, 10, None),
            agent("f", true, 8, Some(9)),
        ];
        let s = status(10, &records);
        assert_eq!(
            (s.applied, s.pending, s.nacked, s.disconnected),
            (2, 2, 1, 1)
        );
        assert_eq!(s.nacks.len(), 1);
        assert_eq!(s.nacks[0].node_id, "d");
        assert_eq!(s.nacks[0].error, "d says no");
    }
}
