//! The agent registry: one [`AgentRecord`] per agent, kept in the store under this replica's
//! lease so every replica lists the whole fleet and a dead replica's agents expire. Beside each
//! record, two smaller key families on the same lease (and the replica's summary of applied
//! versions, below):
//! - `service-nodes/<id>`: the node of a healthy agent that announces services
//!   ([`membership`]), from which every replica derives the same service endpoints;
//! - `upstream-health/<id>`: the endpoint states the agent last reported ([`health`]), which
//!   `portico health` reads from any replica.
//!
//! Streams change records only in memory; a flusher writes the changed ("dirty") ones every
//! [`FLUSH_INTERVAL`] (`flush.rs`). **Write bound:** per replica at most
//! `(MAX_BATCHES_PER_FLUSH + MAX_DISCONNECTS_PER_FLUSH) / FLUSH_INTERVAL` = (32 + 64) / 0.5 s
//! = 192 transactions per second (plus one lease keep-alive every 3 s, and the summary below),
//! each of at most [`MAX_BATCH`] = 128 keys and [`MAX_TXN_BYTES`] = 1 MiB, so at most
//! 32 × 128 = 4,096 keys per flush (8,192 per second), of which endpoint-health values at most
//! [`MAX_HEALTH_BYTES_PER_FLUSH`] = 1 MiB per flush (2 MiB per second); what does not fit stays
//! dirty for the next flush. A service-node key is written only when the agent turns healthy
//! or unhealthy (or changes its address or services); a health value only when an endpoint's
//! state changes, at most every 30 s for its counts, and every 5 min at least.
//!
//! A record is written when its stream opens, on a NACK or a report (coalesced by the
//! flusher), and when it closes. **ACKs do not write records:** the versions the connected
//! agents applied go to one summary per replica (`applied.rs`: the common version and the
//! agents on another), written at most once per flush when it changed, in one transaction per
//! 512 KiB of listed node ids (one while no more than about 20,000 agents lag). So a push costs
//! each replica one or two transactions per flush while its agents ACK, however many agents it
//! holds; listings read the summaries over the records. A closed stream's record stays,
//! `connected: false`, so
//! `portico agents` shows the agent `disconnected`, until it is older than the agent expiry
//! (`--agent-expiry`, default 24 h): then the leader deletes it (`expiry.rs`). The closing write compares the key's mod revision with this
//! replica's last write, so it never overwrites a record another replica wrote after the agent
//! moved there; the same write deletes the agent's service-node and health keys.

mod applied;
pub mod expiry;
mod flush;
pub mod health;
pub mod membership;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use portico_api::node::DataPlane;
use portico_api::pb::{AgentHealth, AgentRecord, NackInfo, Node, Report};
use tokio_util::sync::CancellationToken;

use crate::keys::{self, Keys};
use crate::metered::MeteredStore;
use crate::metrics::UNHEALTHY_ENDPOINTS;
use crate::store::{LeaseId, Revision, Store, StoreError};
use membership::Stored;

/// How often dirty records are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// Most keys in one transaction: as many as a store transaction holds.
pub const MAX_BATCH: usize = crate::store::MAX_TXN_OPS;
/// Most bytes of values in one transaction, below etcd's default request limit (1.5 MiB).
pub const MAX_TXN_BYTES: usize = 1024 * 1024;
/// Most bytes of endpoint-health values written per flush.
pub const MAX_HEALTH_BYTES_PER_FLUSH: usize = 1024 * 1024;
/// Most batch transactions per flush.
pub const MAX_BATCHES_PER_FLUSH: usize = 32;
/// Most closing (compare-and-write) transactions per flush.
pub const MAX_DISCONNECTS_PER_FLUSH: usize = 64;
/// Lease time-to-live: a replica that stops refreshing loses its agents after this long.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(3);

/// Identifies one stream of an agent, so a late close of an old stream does not mark a newer
/// stream of the same agent disconnected.
pub type StreamId = u64;

struct Entry {
    record: AgentRecord,
    stream: StreamId,
    dirty: bool,
    /// The record key's mod revision as this replica last wrote it.
    written: Revision,
    /// What the store holds under the agent's service-node key.
    member: Stored,
    /// The store revision of this replica's last write of that key.
    member_written: Revision,
    /// The agent's endpoint health.
    health: health::Tracker,
    /// Endpoints the agent sees unhealthy or ejected, by cluster, as counted in
    /// [`UNHEALTHY_ENDPOINTS`].
    unhealthy: BTreeMap<String, u64>,
}

/// The registry of one replica.
pub struct Registry {
    store: MeteredStore,
    keys: Keys,
    replica: String,
    /// How long a disconnected agent's record is kept.
    expiry: Duration,
    next_stream: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    lease: Option<LeaseId>,
    local: HashMap<String, Entry>,
    /// Whether the versions the agents applied changed since the summary was last written.
    applied_dirty: bool,
    /// How many chunks of the summary are in the store.
    applied_chunks: usize,
}

impl Registry {
    /// A registry writing through `store` as `replica`, keeping disconnected agents' records
    /// for `expiry`.
    pub fn new(store: MeteredStore, keys: Keys, replica: String, expiry: Duration) -> Self {
        Registry {
            store,
            keys,
            replica,
            expiry,
            next_stream: AtomicU64::new(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// How long disconnected agents' records are kept.
    pub fn expiry(&self) -> Duration {
        self.expiry
    }

    /// The agent streams this replica holds.
    pub fn connected(&self) -> usize {
        self.lock().local.len()
    }

    /// Registers a stream that said Hello. `node.address` is where its services are reached
    /// (the address it advertised, or the stream's peer address).
    pub fn connect(&self, node: &Node, applied_version: Revision) -> StreamId {
        self.connect_as(node, applied_version, DataPlane::Portico)
    }

    /// Registers a stream of a data plane of this `kind` (an xDS client's first request).
    pub fn connect_as(&self, node: &Node, applied_version: Revision, kind: DataPlane) -> StreamId {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let now = Some(timestamp(SystemTime::now()));
        let record = AgentRecord {
            node: Some(node.clone()),
            replica: self.replica.clone(),
            connected_since: now,
            last_seen: now,
            applied_version,
            last_nack: None,
            last_report: None,
            connected: true,
            requests_per_second: 0.0,
            error_rate: 0.0,
            kind: kind.as_str().to_string(),
            ahead_of_control_plane: false,
        };
        let mut inner = self.lock();
        inner.applied_dirty = true;
        let written = inner.local.get(&node.id).map(|e| e.written).unwrap_or(0);
        if let Some(old) = inner.local.get_mut(&node.id) {
            count_unhealthy(&mut old.unhealthy, BTreeMap::new());
        }
        inner.local.insert(
            node.id.clone(),
            Entry {
                record,
                stream,
                dirty: true,
                written,
                // Whatever an earlier stream left in the store is written over.
                member: Stored::Unknown,
                member_written: 0,
                health: health::Tracker::default(),
                unhealthy: BTreeMap::new(),
            },
        );
        stream
    }

    /// The agent ACKed `version`. Only the replica's summary of applied versions changes, unless
    /// the record held a NACK or the agent's being ahead, which the ACK clears.
    pub fn acked(&self, id: &str, stream: StreamId, version: Revision) {
        self.touch(id, stream, |e| {
            let clears = e.record.last_nack.is_some() || e.record.ahead_of_control_plane;
            e.record.applied_version = version;
            e.record.last_nack = None;
            e.record.ahead_of_control_plane = false;
            clears
        });
    }

    /// The agent refused this control plane's config as older than the `served` one it keeps
    /// serving.
    pub fn ahead(&self, id: &str, stream: StreamId, served: Revision) {
        self.touch(id, stream, |e| {
            e.record.applied_version = served;
            e.record.last_nack = None;
            e.record.ahead_of_control_plane = true;
            true
        });
    }

    /// The agent NACKed `version`.
    pub fn nacked(&self, id: &str, stream: StreamId, version: Revision, error: &str) {
        self.touch(id, stream, |e| {
            e.record.last_nack = Some(NackInfo {
                version,
                error: error.to_string(),
                time: Some(timestamp(SystemTime::now())),
            });
            true
        });
    }

    /// The agent reported on itself, answering `requests_per_second` since its previous
    /// report, `error_rate` of them with a 5xx. Its endpoint health goes to the health key,
    /// not the record, so the record stays small (its usage and budget counts are taken out
    /// before, by the stream).
    pub fn report(
        &self,
        id: &str,
        stream: StreamId,
        mut report: Report,
        (requests_per_second, error_rate): (f64, f64),
    ) {
        let mut clusters = std::mem::take(&mut report.clusters);
        let omitted = report
            .endpoints_omitted
            .saturating_add(portico_api::health::bound(
                &mut clusters,
                portico_api::health::MAX_REPORTED_ENDPOINTS,
            ));
        report.endpoints_omitted = omitted;
        let (at, now) = (SystemTime::now(), Instant::now());
        self.touch(id, stream, |e| {
            e.record.last_report = Some(report);
            e.record.requests_per_second = requests_per_second;
            e.record.error_rate = error_rate;
            count_unhealthy(&mut e.unhealthy, health::unhealthy_by_cluster(&clusters));
            e.health.observe(clusters, omitted, at, now);
            true
        });
    }

    /// The stream closed.
    pub fn disconnect(&self, id: &str, stream: StreamId) {
        self.touch(id, stream, |e| {
            e.record.connected = false;
            count_unhealthy(&mut e.unhealthy, BTreeMap::new());
            true
        });
    }

    /// Applies `change` to the entry of `id` if it still belongs to `stream`; `change` says
    /// whether the stored record changes (so the next flush writes it). The summary of applied
    /// versions changes with the agent's version, or when it leaves.
    fn touch(&self, id: &str, stream: StreamId, change: impl FnOnce(&mut Entry) -> bool) {
        let mut inner = self.lock();
        let Inner {
            local,
            applied_dirty,
            ..
        } = &mut *inner;
        if let Some(entry) = local.get_mut(id).filter(|e| e.stream == stream) {
            let before = (entry.record.applied_version, entry.record.connected);
            entry.dirty |= change(entry);
            entry.record.last_seen = Some(timestamp(SystemTime::now()));
            *applied_dirty |= (entry.record.applied_version, entry.record.connected) != before;
        }
    }

    /// The store holds `seen` under the service-node key of `id` as of `revision` (from a
    /// watch). When that contradicts what this replica wrote for an agent it holds (another
    /// replica wrote over it, e.g. while the agent moved), the next flush writes it again.
    pub fn seen_member(&self, id: &str, seen: Option<&Node>, revision: Revision) {
        let mut inner = self.lock();
        if let Some(entry) = inner.local.get_mut(id).filter(|e| e.record.connected)
            && membership::contradicts(&entry.member, entry.member_written, seen, revision)
        {
            tracing::debug!(
                node = id,
                "service-node key changed elsewhere; writing it again"
            );
            entry.member = Stored::Unknown;
            entry.dirty = true;
        }
    }

    /// Every registered agent, by node id: the store's records with their replicas' applied
    /// versions over them, and this replica's (fresher) ones on top.
    pub async fn list(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let (kvs, _) = self.store.list(&self.keys.agents_prefix()).await?;
        let (applied, _) = self.store.list(&self.keys.applied_prefix()).await?;
        let applied = applied::Summaries::read(&self.keys, &applied);
        let mut by_id = BTreeMap::new();
        for kv in kvs {
            match keys::decode::<AgentRecord>(&kv.key, &kv.value) {
                Ok(mut record) => {
                    applied.overlay(&mut record);
                    let id = record
                        .node
                        .as_ref()
                        .map(|n| n.id.clone())
                        .unwrap_or_default();
                    by_id.insert(id, record);
                }
                Err(e) => tracing::warn!(error = %e, "skipping undecodable agent record"),
            }
        }
        for (id, entry) in &self.lock().local {
            by_id.insert(id.clone(), entry.record.clone());
        }
        Ok(by_id.into_values().collect())
    }

    /// The endpoint health every connected agent last reported, as stored, by node id.
    pub async fn health(&self) -> Result<Vec<AgentHealth>, StoreError> {
        let (kvs, _) = self.store.list(&self.keys.upstream_health_prefix()).await?;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            match keys::decode::<AgentHealth>(&kv.key, &kv.value) {
                Ok(health) => out.push(health),
                Err(e) => tracing::warn!(error = %e, "skipping undecodable endpoint health"),
            }
        }
        Ok(out)
    }

    /// Writes dirty records every [`FLUSH_INTERVAL`] and keeps the lease alive until `cancel`;
    /// then revokes the lease, so this replica's agents leave the registry (and the service
    /// endpoints) at once and show up again wherever they reconnect.
    pub async fn run_flusher(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_keep_alive = Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            if last_keep_alive.elapsed() >= KEEP_ALIVE_EVERY {
                self.keep_alive().await;
                last_keep_alive = Instant::now();
            }
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "writing the agent registry failed; retrying");
            }
        }
        let lease = self.lock().lease.take();
        if let Some(lease) = lease
            && let Err(e) = self.store.lease_revoke(lease).await
        {
            tracing::warn!(error = %e, "revoking the registry lease failed");
        }
    }

    async fn keep_alive(&self) {
        let Some(lease) = self.lock().lease else {
            return;
        };
        match self.store.lease_keep_alive(lease).await {
            Ok(()) => {}
            Err(StoreError::LeaseNotFound(_)) => {
                tracing::warn!(
                    lease,
                    "registry lease expired; registering this replica's agents again"
                );
                let mut inner = self.lock();
                inner.lease = None;
                inner.applied_dirty = true;
                inner.applied_chunks = 0;
                for entry in inner.local.values_mut() {
                    entry.dirty = true;
                    entry.written = 0;
                    entry.member = Stored::Unknown;
                    entry.health.rewrite();
                }
            }
            Err(e) => tracing::warn!(error = %e, "keeping the registry lease alive failed"),
        }
    }

    async fn lease(&self) -> Result<LeaseId, StoreError> {
        if let Some(lease) = self.lock().lease {
            return Ok(lease);
        }
        let lease = self.store.lease_grant(LEASE_TTL).await?;
        self.lock().lease = Some(lease);
        Ok(lease)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Moves an agent's contribution to [`UNHEALTHY_ENDPOINTS`] from `counted` to `now`.
fn count_unhealthy(counted: &mut BTreeMap<String, u64>, now: BTreeMap<String, u64>) {
    for (cluster, n) in counted.iter() {
        if now.get(cluster) != Some(n) {
            metrics::gauge!(UNHEALTHY_ENDPOINTS, "cluster" => cluster.clone()).decrement(*n as f64);
        }
    }
    for (cluster, n) in &now {
        if counted.get(cluster) != Some(n) {
            metrics::gauge!(UNHEALTHY_ENDPOINTS, "cluster" => cluster.clone()).increment(*n as f64);
        }
    }
    *counted = now;
}

/// The time of a protobuf timestamp (times before the epoch are the epoch).
pub fn system_time(t: &pbjson_types::Timestamp) -> SystemTime {
    let seconds = u64::try_from(t.seconds).unwrap_or(0);
    let nanos = u32::try_from(t.nanos).unwrap_or(0).min(999_999_999);
    SystemTime::UNIX_EPOCH + std::time::Duration::new(seconds, nanos)
}

/// A protobuf timestamp.
pub fn timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    fn replica(store: &MeteredStore, id: &str) -> Registry {
        Registry::new(
            store.clone(),
            Keys::default(),
            id.into(),
            crate::config::DEFAULT_AGENT_EXPIRY,
        )
    }

    fn node(i: usize) -> Node {
        Node {
            id: format!("edge-{i}"),
            ..Default::default()
        }
    }

    /// The store's revision: one more per committed transaction.
    async fn revision(store: &MeteredStore) -> Revision {
        store.list("/").await.expect("list").1
    }

    #[tokio::test]
    async fn a_push_costs_one_write_and_every_replica_lists_the_new_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = MeteredStore::new(Arc::new(EmbeddedStore::open(dir.path()).unwrap()));
        let (holder, other) = (replica(&store, "cp-1"), replica(&store, "cp-2"));
        let streams: Vec<StreamId> = (0..1_000).map(|i| holder.connect(&node(i), 1)).collect();
        holder.flush().await.expect("flush");
        let records = |list: Vec<AgentRecord>| -> Vec<(Revision, bool)> {
            list.iter()
                .map(|r| (r.applied_version, r.last_nack.is_some()))
                .collect()
        };
        assert_eq!(
            records(other.list().await.unwrap()),
            vec![(1, false); 1_000]
        );

        // Every agent ACKs version 2 but one, which NACKs it: the summary and that one
        // agent's record are written, in two transactions.
        for (i, &stream) in streams.iter().enumerate().skip(1) {
            holder.acked(&node(i).id, stream, 2);
        }
        holder.nacked(&node(0).id, streams[0], 2, "bad route");
        let before = revision(&store).await;
        holder.flush().await.expect("flush");
        assert_eq!(revision(&store).await - before, 2);
        let listed = records(other.list().await.unwrap());
        let nacked = listed.iter().filter(|r| **r == (1, true)).count();
        let applied = listed.iter().filter(|r| **r == (2, false)).count();
        assert_eq!((nacked, applied), (1, 999));

        // The NACKed agent gets version 3 and the rest follow: one transaction for them, one
        // for the record whose NACK the ACK clears.
        holder.acked(&node(0).id, streams[0], 3);
        let before = revision(&store).await;
        holder.flush().await.expect("flush");
        assert_eq!(revision(&store).await - before, 2);
        for (i, &stream) in streams.iter().enumerate().skip(1) {
            holder.acked(&node(i).id, stream, 3);
        }
        let before = revision(&store).await;
        holder.flush().await.expect("flush");
        assert_eq!(revision(&store).await - before, 1);
        assert_eq!(
            records(other.list().await.unwrap()),
            vec![(3, false); 1_000]
        );

        // A closed stream's record keeps its final version, whatever the summary says.
        holder.disconnect(&node(7).id, streams[7]);
        holder.flush().await.expect("flush");
        let listed = other.list().await.unwrap();
        let closed = listed
            .iter()
            .find(|r| !r.connected)
            .expect("a closed stream");
        assert_eq!(
            (
                closed.applied_version,
                closed.node.as_ref().unwrap().id.as_str()
            ),
            (3, "edge-7")
        );
        // Nothing changed: nothing is written.
        let before = revision(&store).await;
        holder.flush().await.expect("flush");
        assert_eq!(revision(&store).await, before);
    }
}
