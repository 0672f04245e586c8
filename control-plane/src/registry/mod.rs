//! The agent registry: one [`AgentRecord`] per agent, kept in the store under this replica's
//! lease so every replica lists the whole fleet and a dead replica's agents expire.
//!
//! Streams change records only in memory; a flusher writes the changed ("dirty") ones every
//! [`FLUSH_INTERVAL`]. **Write bound:** per replica at most
//! `(MAX_BATCHES_PER_FLUSH + MAX_DISCONNECTS_PER_FLUSH) / FLUSH_INTERVAL` = (32 + 64) / 0.5 s
//! = 192 transactions per second (plus one lease keep-alive every 3 s), carrying at most
//! `MAX_BATCHES_PER_FLUSH * MAX_BATCH` = 32 × 128 = 4,096 records per flush (8,192 per
//! second); records beyond that stay dirty for the next flush. So 10,000 agents ACKing one
//! change cost 79 transactions over about 1.5 s, however often each agent writes in between.
//!
//! A record is written when its stream opens, on every ACK/NACK/Report (coalesced by the
//! flusher) and when it closes. The closing write compares the key's mod revision with this
//! replica's last write, so it never overwrites a record another replica wrote after the agent
//! moved there.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use portico_api::pb::{AgentRecord, NackInfo, Node, Report};
use tokio_util::sync::CancellationToken;

use crate::keys::{self, Keys};
use crate::metered::MeteredStore;
use crate::metrics::REGISTRY_WRITES;
use crate::store::{Compare, LeaseId, Op, Revision, Store, StoreError, Txn, TxnOutcome};

/// How often dirty records are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// Most records in one transaction: as many as a store transaction holds.
pub const MAX_BATCH: usize = crate::store::MAX_TXN_OPS;
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
    written: Revision,
}

/// The registry of one replica.
pub struct Registry {
    store: MeteredStore,
    keys: Keys,
    replica: String,
    next_stream: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    lease: Option<LeaseId>,
    local: HashMap<String, Entry>,
}

impl Registry {
    /// A registry writing through `store` as `replica`.
    pub fn new(store: MeteredStore, keys: Keys, replica: String) -> Self {
        Registry {
            store,
            keys,
            replica,
            next_stream: AtomicU64::new(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Registers a stream that said Hello.
    pub fn connect(&self, node: &Node, applied_version: Revision) -> StreamId {
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
        };
        let mut inner = self.lock();
        let written = inner.local.get(&node.id).map(|e| e.written).unwrap_or(0);
        inner.local.insert(
            node.id.clone(),
            Entry {
                record,
                stream,
                dirty: true,
                written,
            },
        );
        stream
    }

    /// The agent ACKed `version`.
    pub fn acked(&self, id: &str, stream: StreamId, version: Revision) {
        self.touch(id, stream, |r| {
            r.applied_version = version;
            r.last_nack = None;
        });
    }

    /// The agent NACKed `version`.
    pub fn nacked(&self, id: &str, stream: StreamId, version: Revision, error: &str) {
        self.touch(id, stream, |r| {
            r.last_nack = Some(NackInfo {
                version,
                error: error.to_string(),
                time: Some(timestamp(SystemTime::now())),
            });
        });
    }

    /// The agent reported on itself.
    pub fn report(&self, id: &str, stream: StreamId, report: Report) {
        self.touch(id, stream, |r| r.last_report = Some(report));
    }

    /// The stream closed.
    pub fn disconnect(&self, id: &str, stream: StreamId) {
        self.touch(id, stream, |r| r.connected = false);
    }

    fn touch(&self, id: &str, stream: StreamId, change: impl FnOnce(&mut AgentRecord)) {
        let mut inner = self.lock();
        if let Some(entry) = inner.local.get_mut(id).filter(|e| e.stream == stream) {
            change(&mut entry.record);
            entry.record.last_seen = Some(timestamp(SystemTime::now()));
            entry.dirty = true;
        }
    }

    /// Every registered agent, by node id: the store's records with this replica's (fresher)
    /// ones on top.
    pub async fn list(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let (kvs, _) = self.store.list(&self.keys.agents_prefix()).await?;
        let mut by_id = BTreeMap::new();
        for kv in kvs {
            match keys::decode::<AgentRecord>(&kv.key, &kv.value) {
                Ok(record) => {
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

    /// Writes dirty records every [`FLUSH_INTERVAL`] and keeps the lease alive until `cancel`;
    /// then revokes the lease, so this replica's agents leave the registry at once and show up
    /// again wherever they reconnect.
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
                for entry in inner.local.values_mut() {
                    entry.dirty = true;
                    entry.written = 0;
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

    /// One flush: batches of connected records, then closing writes one by one.
    async fn flush(&self) -> Result<(), StoreError> {
        if !self.lock().local.values().any(|e| e.dirty) {
            return Ok(());
        }
        let lease = self.lease().await?;
        // One pass over the records per flush: taking each batch with its own pass would cost
        // a scan of the whole fleet, under the lock every ACK needs, per transaction.
        let connected = self.take_dirty(MAX_BATCH * MAX_BATCHES_PER_FLUSH, true);
        for (i, batch) in connected.chunks(MAX_BATCH).enumerate() {
            let ops = batch
                .iter()
                .map(|(id, record, _)| Op::Put {
                    key: self.keys.agent(id),
                    value: keys::encode(record),
                    lease: Some(lease),
                })
                .collect();
            let result = self
                .store
                .txn(Txn {
                    compares: Vec::new(),
                    ops,
                })
                .await;
            metrics::counter!(REGISTRY_WRITES).increment(1);
            match result {
                Ok(TxnOutcome::Committed(rev)) => self.written(batch, Some(rev)),
                Ok(TxnOutcome::Conflict(_)) => self.written(batch, None),
                Err(e) => {
                    self.redirty(&connected[i * MAX_BATCH..]);
                    return Err(e);
                }
            }
        }
        for closed in self.take_dirty(MAX_DISCONNECTS_PER_FLUSH, false) {
            let (id, record, written) = &closed;
            let key = self.keys.agent(id);
            let txn = Txn {
                compares: vec![Compare::ModRevision {
                    key: key.clone(),
                    revision: *written,
                }],
                ops: vec![Op::Put {
                    key,
                    value: keys::encode(record),
                    lease: Some(lease),
                }],
            };
            let result = self.store.txn(txn).await;
            metrics::counter!(REGISTRY_WRITES).increment(1);
            if let Err(e) = result {
                self.redirty(std::slice::from_ref(&closed));
                return Err(e);
            }
            // Written, or another replica owns the record now: either way this one is done.
            self.forget_closed(id);
        }
        Ok(())
    }

    /// Takes up to `max` dirty records that are connected (or closed), clearing their flag.
    fn take_dirty(&self, max: usize, connected: bool) -> Vec<(String, AgentRecord, Revision)> {
        let mut inner = self.lock();
        inner
            .local
            .iter_mut()
            .filter(|(_, e)| e.dirty && e.record.connected == connected)
            .take(max)
            .map(|(id, e)| {
                e.dirty = false;
                (id.clone(), e.record.clone(), e.written)
            })
            .collect()
    }

    fn written(&self, batch: &[(String, AgentRecord, Revision)], revision: Option<Revision>) {
        let mut inner = self.lock();
        for (id, _, _) in batch {
            if let (Some(entry), Some(rev)) = (inner.local.get_mut(id), revision) {
                entry.written = rev;
            }
        }
    }

    fn redirty(&self, batch: &[(String, AgentRecord, Revision)]) {
        let mut inner = self.lock();
        for (id, _, _) in batch {
            if let Some(entry) = inner.local.get_mut(id) {
                entry.dirty = true;
            }
        }
    }

    fn forget_closed(&self, id: &str) {
        let mut inner = self.lock();
        if inner
            .local
            .get(id)
            .is_some_and(|e| !e.record.connected && !e.dirty)
        {
            inner.local.remove(id);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A protobuf timestamp.
pub fn timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
