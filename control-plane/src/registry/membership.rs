//! Which agents are endpoints of the services they announce, and what the store holds for them.
//!
//! An agent is **healthy** while all of these hold:
//! - its stream to this replica is open (a stream that breaks, or whose peer stops answering
//!   the server's HTTP/2 keepalive pings, closes);
//! - it serves a config: it ACKed an update on this stream, or said Hello with an applied
//!   version (a config from its cache or an earlier stream);
//! - its last report on this stream, if it sent one, says it is ready (a draining agent is not).
//!
//! A healthy agent that announces services has a key in the store (`service-nodes/<node id>`,
//! on this replica's lease) holding its node: id, region, zone, services and the address
//! other nodes reach them at. Every replica derives the service endpoints from those keys
//! alone, so all replicas push the same endpoints whichever replica each agent is connected to.

use portico_api::pb::{AgentRecord, Node};

use crate::store::Revision;

/// What the store holds under an agent's service-node key, as far as this replica knows.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Stored {
    /// Not known (a new stream, a failed write, a lost lease): written at the next flush.
    #[default]
    Unknown,
    /// No key.
    Absent,
    /// This node.
    Present(Node),
}

/// The service-node value an agent should have: its node, while it is healthy (see the module
/// doc) and announces services at a known address.
pub fn announced(record: &AgentRecord) -> Option<Node> {
    let node = record.node.as_ref()?;
    let ready = record.last_report.as_ref().is_none_or(|r| r.ready);
    let healthy = record.connected && record.applied_version > 0 && ready;
    (healthy && !node.services.is_empty() && !node.address.is_empty()).then(|| Node {
        id: node.id.clone(),
        region: node.region.clone(),
        zone: node.zone.clone(),
        services: node.services.clone(),
        address: node.address.clone(),
        ..Node::default()
    })
}

/// The write that brings the store from `stored` to `wanted`: `Some(Some(node))` puts,
/// `Some(None)` deletes, `None` means nothing to write.
pub fn write(stored: &Stored, wanted: Option<Node>) -> Option<Option<Node>> {
    match (stored, wanted) {
        (Stored::Absent, None) => None,
        (Stored::Present(held), Some(node)) if *held == node => None,
        (_, wanted) => Some(wanted),
    }
}

/// What the store holds for an agent, as a watch showed it at `revision`, against what this
/// replica last wrote (`stored`, at `written_at`): whether the replica must write it again.
/// Events older than the replica's own last write are echoes of earlier writes.
pub fn contradicts(
    stored: &Stored,
    written_at: Revision,
    seen: Option<&Node>,
    revision: Revision,
) -> bool {
    if revision <= written_at {
        return false;
    }
    match (stored, seen) {
        (Stored::Unknown, _) | (Stored::Absent, None) => false,
        (Stored::Present(held), Some(node)) => held != node,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use portico_api::pb::{Report, ServicePort};

    use super::*;

    fn record(
        connected: bool,
        applied: i64,
        ready: Option<bool>,
        services: &[&str],
    ) -> AgentRecord {
        AgentRecord {
            node: Some(Node {
                id: "n1".into(),
                region: "eu".into(),
                zone: "eu-1".into(),
                labels: [("tier".to_string(), "edge".to_string())].into(),
                agent_version: "1.0".into(),
                services: services
                    .iter()
                    .map(|s| ServicePort {
                        name: s.to_string(),
                        port: 8080,
                    })
                    .collect(),
                address: "10.0.0.1".into(),
            }),
            connected,
            applied_version: applied,
            last_report: ready.map(|ready| Report {
                ready,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn healthy_means_connected_serving_and_not_reported_unready() {
        let cases = [
            // (connected, applied version, last report ready, services) → announced
            (true, 3, None, &["api"][..], true),
            (true, 3, Some(true), &["api"], true),
            (true, 3, Some(false), &["api"], false),
            (true, 0, None, &["api"], false),
            (false, 3, Some(true), &["api"], false),
            (true, 3, Some(true), &[], false),
        ];
        for (connected, applied, ready, services, expected) in cases {
            let r = record(connected, applied, ready, services);
            assert_eq!(
                announced(&r).is_some(),
                expected,
                "{connected} {applied} {ready:?} {services:?}"
            );
        }
        let node = announced(&record(true, 1, None, &["api"])).unwrap();
        assert!(node.labels.is_empty() && node.agent_version.is_empty());
        assert_eq!(
            (node.id.as_str(), node.address.as_str()),
            ("n1", "10.0.0.1")
        );

        let mut no_address = record(true, 1, None, &["api"]);
        no_address.node.as_mut().unwrap().address.clear();
        assert_eq!(announced(&no_address), None);
    }

    #[test]
    fn only_a_difference_is_written() {
        let node = announced(&record(true, 1, None, &["api"])).unwrap();
        let other = Node {
            address: "10.0.0.2".into(),
            ..node.clone()
        };
        let present = Stored::Present(node.clone());
        assert_eq!(write(&Stored::Unknown, None), Some(None));
        assert_eq!(
            write(&Stored::Unknown, Some(node.clone())),
            Some(Some(node.clone()))
        );
        assert_eq!(write(&Stored::Absent, None), None);
        assert_eq!(write(&present, Some(node.clone())), None);
        assert_eq!(write(&present, Some(other.clone())), Some(Some(other)));
        assert_eq!(write(&present, None), Some(None));
    }

    #[test]
    fn a_newer_store_state_than_the_last_write_is_written_over() {
        let node = announced(&record(true, 1, None, &["api"])).unwrap();
        let present = Stored::Present(node.clone());
        // Echoes of this replica's own writes.
        assert!(!contradicts(&present, 10, None, 9));
        assert!(!contradicts(&present, 10, Some(&node), 10));
        // Another replica deleted or replaced the key afterwards.
        assert!(contradicts(&present, 10, None, 11));
        let moved = Node {
            address: "10.0.0.9".into(),
            ..node.clone()
        };
        assert!(contradicts(&present, 10, Some(&moved), 11));
        assert!(contradicts(&Stored::Absent, 10, Some(&node), 11));
        assert!(!contradicts(&Stored::Absent, 10, None, 11));
        assert!(!contradicts(&Stored::Unknown, 10, Some(&node), 11));
    }
}
