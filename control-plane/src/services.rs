//! Service endpoints: for each service, the healthy nodes that announce it, the same on every
//! replica.
//!
//! The registry keeps a `service-nodes/<node id>` key for every healthy agent that announces
//! services ([`crate::registry::membership`]), on the lease of the replica holding its stream.
//! Every replica lists and watches those keys ([`follow`]) and derives a [`ServiceTable`]: per
//! service, its endpoints (the node's address and the announced port, with the node's region
//! and zone, ordered by node id) and the encoded `ServiceEndpoints` message every agent gets,
//! encoded once. Discovery streams push a service's message to the agents whose clusters name
//! it when the stream starts and whenever the set changes.
//!
//! Changes are coalesced: a new table is published [`GATHER`] after the first change, and at
//! most every [`MIN_INTERVAL`], so a join storm of thousands of agents costs each agent at
//! most two messages per second per service, each with the newest set.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use portico_api::backoff::Backoff;
use portico_api::pb::{ControlMessage, Endpoint, Node, ServiceEndpoints, control_message};
use prost::Message;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::keys::{self, Keys};
use crate::metered::MeteredStore;
use crate::metrics::SERVICE_ENDPOINTS;
use crate::registry::Registry;
use crate::store::{Change, Store, StoreError, WatchEvent};

/// How long changes are gathered after the first one before a table is published.
pub const GATHER: Duration = Duration::from_millis(100);
/// The shortest time between two published tables.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// One service's endpoints and the message that carries them.
#[derive(Debug, PartialEq)]
pub struct ServiceSet {
    /// The endpoints, ordered by node id.
    pub endpoints: Vec<Endpoint>,
    /// The encoded `ControlMessage` with the `ServiceEndpoints`.
    pub message: Bytes,
}

/// Every announced service's endpoints. Immutable once published; a set that did not change
/// is the same `Arc` in the next table, so a stream compares pointers.
#[derive(Debug, Default)]
pub struct ServiceTable {
    sets: BTreeMap<String, Arc<ServiceSet>>,
}

impl ServiceTable {
    /// The table of the healthy announcing `nodes` (by node id), sharing the sets that did not
    /// change with `previous`.
    pub fn build(nodes: &BTreeMap<String, Node>, previous: &ServiceTable) -> ServiceTable {
        let mut endpoints: BTreeMap<&str, Vec<Endpoint>> = BTreeMap::new();
        for node in nodes.values() {
            for service in &node.services {
                endpoints
                    .entry(service.name.as_str())
                    .or_default()
                    .push(Endpoint {
                        address: node.address.clone(),
                        port: service.port,
                        weight: 0,
                        region: node.region.clone(),
                        zone: node.zone.clone(),
                    });
            }
        }
        let sets = endpoints
            .into_iter()
            .map(|(service, endpoints)| {
                let set = match previous.sets.get(service) {
                    Some(old) if old.endpoints == endpoints => old.clone(),
                    _ => Arc::new(ServiceSet {
                        message: message(service, &endpoints),
                        endpoints,
                    }),
                };
                (service.to_string(), set)
            })
            .collect();
        ServiceTable { sets }
    }

    /// The endpoints of `service`, if any node announces it.
    pub fn get(&self, service: &str) -> Option<&Arc<ServiceSet>> {
        self.sets.get(service)
    }

    /// Every service with endpoints, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<ServiceSet>)> {
        self.sets.iter().map(|(name, set)| (name.as_str(), set))
    }
}

/// The encoded `ControlMessage` telling an agent that `service` has `endpoints` now.
pub fn message(service: &str, endpoints: &[Endpoint]) -> Bytes {
    ControlMessage {
        message: Some(control_message::Message::ServiceEndpoints(
            ServiceEndpoints {
                service: service.to_string(),
                endpoints: endpoints.to_vec(),
            },
        )),
    }
    .encode_to_vec()
    .into()
}

/// The current service table, shared by every stream of a replica.
pub struct Services {
    table: watch::Sender<Arc<ServiceTable>>,
}

impl Default for Services {
    fn default() -> Self {
        Services {
            table: watch::Sender::new(Arc::new(ServiceTable::default())),
        }
    }
}

impl Services {
    /// A receiver of every published table.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ServiceTable>> {
        self.table.subscribe()
    }

    /// The current table.
    pub fn current(&self) -> Arc<ServiceTable> {
        self.table.borrow().clone()
    }

    pub(crate) fn publish(&self, nodes: &BTreeMap<String, Node>) {
        let previous = self.current();
        let table = Arc::new(ServiceTable::build(nodes, &previous));
        for (service, _) in previous.iter().filter(|(s, _)| table.get(s).is_none()) {
            metrics::gauge!(SERVICE_ENDPOINTS, "service" => service.to_string()).set(0.0);
        }
        for (service, set) in table.iter() {
            metrics::gauge!(SERVICE_ENDPOINTS, "service" => service.to_string())
                .set(set.endpoints.len() as f64);
        }
        self.table.send_replace(table);
    }
}

/// Follows the service-node keys until `cancel`, publishing the table to `services` and telling
/// `registry` what the store holds for the agents it has (see
/// [`Registry::seen_member`]). While the store is away, the last table stays.
pub async fn follow(
    store: MeteredStore,
    keys: Keys,
    services: Arc<Services>,
    registry: Arc<Registry>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut publisher = Publisher::default();
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = follow_once(&store, &keys, &services, &registry, &mut publisher) => r,
        };
        match result {
            Ok(()) => {
                tracing::info!("service-node watch ended; listing again");
                backoff.reset();
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "service-node watch failed; keeping the last endpoints")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// When to publish: [`GATHER`] after the first unpublished change, [`MIN_INTERVAL`] after the
/// last publish at the earliest.
#[derive(Debug, Default)]
struct Publisher {
    last: Option<Instant>,
    due: Option<Instant>,
}

impl Publisher {
    fn changed(&mut self, now: Instant) {
        if self.due.is_none() {
            let earliest = self.last.map_or(now, |l| l + MIN_INTERVAL);
            self.due = Some(earliest.max(now + GATHER));
        }
    }

    fn published(&mut self, now: Instant) {
        self.last = Some(now);
        self.due = None;
    }
}

/// Lists the keys, then follows the watch until it ends (Ok: list again) or fails.
async fn follow_once(
    store: &MeteredStore,
    keys: &Keys,
    services: &Services,
    registry: &Registry,
    publisher: &mut Publisher,
) -> Result<(), StoreError> {
    let prefix = keys.service_nodes_prefix();
    let (kvs, listed_at) = store.list(&prefix).await?;
    let mut nodes = BTreeMap::new();
    for kv in &kvs {
        if let Some((id, node)) = decode(keys, &kv.key, &kv.value) {
            registry.seen_member(&id, Some(&node), kv.mod_revision);
            nodes.insert(id, node);
        }
    }
    publisher.changed(Instant::now());
    let mut watch = store.watch(&prefix, listed_at + 1).await?;
    loop {
        let due = publisher.due;
        let publish = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = publish => {
                services.publish(&nodes);
                publisher.published(Instant::now());
            }
            event = watch.next() => match event {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(WatchEvent::Compacted { compact_revision })) => {
                    tracing::info!(compact_revision, "service-node watch compacted; listing again");
                    return Ok(());
                }
                Some(Ok(WatchEvent::Changes(changes))) => {
                    for change in &changes {
                        apply(keys, registry, &mut nodes, change);
                    }
                    publisher.changed(Instant::now());
                }
            },
        }
    }
}

/// Applies one watched change to `nodes`.
fn apply(keys: &Keys, registry: &Registry, nodes: &mut BTreeMap<String, Node>, change: &Change) {
    match change {
        Change::Put(kv) => {
            if let Some((id, node)) = decode(keys, &kv.key, &kv.value) {
                registry.seen_member(&id, Some(&node), kv.mod_revision);
                nodes.insert(id, node);
            }
        }
        Change::Delete { key, revision } => {
            if let Some(id) = keys.parse_service_node(key) {
                registry.seen_member(id, None, *revision);
                nodes.remove(id);
            }
        }
    }
}

/// A service-node key's node id and node; values that do not decode, or have no address, are
/// skipped with a warning.
fn decode(keys: &Keys, key: &str, value: &[u8]) -> Option<(String, Node)> {
    let id = keys.parse_service_node(key)?;
    match keys::decode::<Node>(key, value) {
        Ok(node) if !node.address.is_empty() => Some((id.to_string(), node)),
        Ok(_) => {
            tracing::warn!(key, "ignoring a service node without an address");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "ignoring an undecodable service node");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use portico_api::pb::ServicePort;

    use super::*;

    fn node(id: &str, zone: &str, services: &[(&str, u32)]) -> (String, Node) {
        (
            id.to_string(),
            Node {
                id: id.into(),
                region: "eu".into(),
                zone: zone.into(),
                address: format!("10.0.0.{}", id.len()),
                services: services
                    .iter()
                    .map(|(name, port)| ServicePort {
                        name: name.to_string(),
                        port: *port,
                    })
                    .collect(),
                ..Default::default()
            },
        )
    }

    fn ports(table: &ServiceTable, service: &str) -> Vec<(String, u32, String)> {
        table
            .get(service)
            .map(|s| {
                s.endpoints
                    .iter()
                    .map(|e| (e.address.clone(), e.port, e.zone.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn each_service_lists_its_nodes_and_unchanged_sets_are_shared() {
        let nodes: BTreeMap<_, _> = [
            node("b", "eu-2", &[("api", 80), ("db", 5432)]),
            node("aa", "eu-1", &[("api", 81)]),
        ]
        .into();
        let first = ServiceTable::build(&nodes, &ServiceTable::default());
        // Ordered by node id, with the node's locality.
        assert_eq!(
            ports(&first, "api"),
            [
                ("10.0.0.2".into(), 81, "eu-1".into()),
                ("10.0.0.1".into(), 80, "eu-2".into())
            ]
        );
        assert_eq!(ports(&first, "db").len(), 1);
        assert!(first.get("cache").is_none());

        // The message is the ServiceEndpoints of those endpoints.
        let api = first.get("api").unwrap();
        match ControlMessage::decode(api.message.clone()).unwrap().message {
            Some(control_message::Message::ServiceEndpoints(s)) => {
                assert_eq!(s.service, "api");
                assert_eq!(s.endpoints, api.endpoints);
            }
            other => panic!("{other:?}"),
        }

        // "aa" leaves: "api" changes, "db" is the same set.
        let mut fewer = nodes.clone();
        fewer.remove("aa");
        let second = ServiceTable::build(&fewer, &first);
        assert_eq!(ports(&second, "api").len(), 1);
        assert!(!Arc::ptr_eq(
            second.get("api").unwrap(),
            first.get("api").unwrap()
        ));
        assert!(Arc::ptr_eq(
            second.get("db").unwrap(),
            first.get("db").unwrap()
        ));

        // The last node of a service leaves: the service is gone.
        let third = ServiceTable::build(&BTreeMap::new(), &second);
        assert!(third.get("api").is_none());
    }

    #[test]
    fn publishing_gathers_changes_and_keeps_an_interval() {
        let t0 = Instant::now();
        let mut p = Publisher::default();
        p.changed(t0);
        assert_eq!(p.due, Some(t0 + GATHER));
        // More changes before it is due do not move it.
        p.changed(t0 + Duration::from_millis(50));
        assert_eq!(p.due, Some(t0 + GATHER));
        p.published(t0 + GATHER);
        // The next change waits for the interval since the last publish.
        p.changed(t0 + GATHER + Duration::from_millis(10));
        assert_eq!(p.due, Some(t0 + GATHER + MIN_INTERVAL));
        p.published(t0 + GATHER + MIN_INTERVAL);
        // After a quiet spell, only the gathering delay.
        let later = t0 + Duration::from_secs(10);
        p.changed(later);
        assert_eq!(p.due, Some(later + GATHER));
    }
}
