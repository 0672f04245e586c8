//! The registry's flusher: each [`FLUSH_INTERVAL`](super::FLUSH_INTERVAL), the dirty entries
//! of connected agents go out in batch transactions (each agent's record, and its service-node
//! and health keys when they changed), then the streams that closed in compare-and-write
//! transactions of their own, then the summary of applied versions when it changed (one
//! transaction per chunk). See the module doc of [`super`] for the bounds.

use std::time::Instant;

use portico_api::pb::{AgentHealth, AgentRecord, AppliedVersions, Node};
use prost::Message;

use super::membership::{self, Stored};
use super::{
    Entry, MAX_BATCH, MAX_BATCHES_PER_FLUSH, MAX_DISCONNECTS_PER_FLUSH, MAX_HEALTH_BYTES_PER_FLUSH,
    MAX_TXN_BYTES, Registry, StreamId, applied,
};
use crate::keys::{self, Keys};
use crate::metrics::REGISTRY_WRITES;
use crate::store::{Compare, LeaseId, Op, Revision, Store, StoreError, Txn, TxnOutcome};

/// One connected agent's writes in one flush.
#[derive(Debug)]
struct Write {
    id: String,
    stream: StreamId,
    record: AgentRecord,
    /// The service-node key: `Some(Some(node))` puts, `Some(None)` deletes.
    member: Option<Option<Node>>,
    /// The health key's new value.
    health: Option<AgentHealth>,
    /// The bytes of its values.
    bytes: usize,
}

impl Write {
    fn ops(&self) -> usize {
        1 + usize::from(self.member.is_some()) + usize::from(self.health.is_some())
    }

    fn into_ops(self, keys: &Keys, lease: LeaseId) -> impl Iterator<Item = Op> {
        let record = Op::Put {
            key: keys.agent(&self.id),
            value: keys::encode(&self.record),
            lease: Some(lease),
        };
        let member = self.member.map(|m| match m {
            Some(node) => Op::Put {
                key: keys.service_node(&self.id),
                value: keys::encode(&node),
                lease: Some(lease),
            },
            None => Op::Delete {
                key: keys.service_node(&self.id),
            },
        });
        let health = self.health.map(|h| Op::Put {
            key: keys.upstream_health(&self.id),
            value: keys::encode(&h),
            lease: Some(lease),
        });
        std::iter::once(record).chain(member).chain(health)
    }
}

/// Packs `writes` into transactions of at most `max_ops` keys and `max_bytes` bytes of values,
/// keeping each agent's writes in one transaction.
fn pack(writes: Vec<Write>, max_ops: usize, max_bytes: usize) -> Vec<Vec<Write>> {
    let mut batches = Vec::new();
    let mut batch: Vec<Write> = Vec::new();
    let (mut ops, mut bytes) = (0, 0);
    for w in writes {
        if !batch.is_empty() && (ops + w.ops() > max_ops || bytes + w.bytes > max_bytes) {
            batches.push(std::mem::take(&mut batch));
            (ops, bytes) = (0, 0);
        }
        ops += w.ops();
        bytes += w.bytes;
        batch.push(w);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

impl Registry {
    /// One flush: batches of connected agents, then closing writes one by one.
    pub(super) async fn flush(&self) -> Result<(), StoreError> {
        if !self.lock().local.values().any(|e| e.dirty) {
            return self.write_applied().await;
        }
        let lease = self.lease().await?;
        // One pass over the entries per flush: taking each batch with its own pass would cost
        // a scan of the whole fleet, under the lock every ACK needs, per transaction. An agent
        // writes at most 3 keys, so this many keys pack into at most MAX_BATCHES_PER_FLUSH
        // transactions unless bytes split them further.
        let max_ops = MAX_BATCHES_PER_FLUSH * (MAX_BATCH - 2);
        let writes = self.take_dirty(max_ops, Instant::now());
        let mut batches = pack(writes, MAX_BATCH, MAX_TXN_BYTES).into_iter();
        let mut sent = 0;
        while let Some(batch) = batches.next() {
            if sent == MAX_BATCHES_PER_FLUSH {
                self.redirty(&batch);
                batches.for_each(|b| self.redirty(&b));
                break;
            }
            sent += 1;
            let done: Vec<_> = batch
                .iter()
                .map(|w| (w.id.clone(), w.stream, w.member.clone(), w.health.is_some()))
                .collect();
            let ops = batch
                .into_iter()
                .flat_map(|w| w.into_ops(&self.keys, lease))
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
                Ok(TxnOutcome::Committed(rev)) => self.written(&done, rev),
                // No compares: a conflict cannot happen, but if it does nothing was written.
                Ok(TxnOutcome::Conflict(_)) => self.failed(&done),
                Err(e) => {
                    self.failed(&done);
                    batches.for_each(|b| self.redirty(&b));
                    return Err(e);
                }
            }
        }
        for (id, record, written) in self.take_closed(MAX_DISCONNECTS_PER_FLUSH) {
            let key = self.keys.agent(&id);
            let txn = Txn {
                compares: vec![Compare::ModRevision {
                    key: key.clone(),
                    revision: written,
                }],
                ops: vec![
                    Op::Put {
                        key,
                        value: keys::encode(&record),
                        lease: Some(lease),
                    },
                    Op::Delete {
                        key: self.keys.service_node(&id),
                    },
                    Op::Delete {
                        key: self.keys.upstream_health(&id),
                    },
                ],
            };
            let result = self.store.txn(txn).await;
            metrics::counter!(REGISTRY_WRITES).increment(1);
            if let Err(e) = result {
                if let Some(entry) = self.lock().local.get_mut(&id) {
                    entry.dirty = true;
                }
                return Err(e);
            }
            // Written, or another replica owns the record now: either way this one is done.
            self.forget_closed(&id);
        }
        self.write_applied().await
    }

    /// Writes the summary of the versions the connected agents applied, if it changed: after
    /// the records, so a new agent's record is in the store before the summary that counts it.
    async fn write_applied(&self) -> Result<(), StoreError> {
        let (chunks, before) = {
            let mut inner = self.lock();
            if !inner.applied_dirty {
                return Ok(());
            }
            inner.applied_dirty = false;
            let agents = inner
                .local
                .iter()
                .filter(|(_, e)| e.record.connected)
                .map(|(id, e)| (id.as_str(), e.record.applied_version));
            (applied::chunks(agents), inner.applied_chunks)
        };
        let result = self.put_applied(&chunks, before).await;
        let mut inner = self.lock();
        match result {
            Ok(()) => inner.applied_chunks = chunks.len(),
            Err(_) => {
                inner.applied_dirty = true;
                // Some chunks may be in the store: delete every one that could be next time.
                inner.applied_chunks = inner.applied_chunks.max(chunks.len());
            }
        }
        result
    }

    /// Puts each chunk in a transaction of its own and deletes the ones past them that an
    /// earlier, longer summary left (`before` chunks).
    async fn put_applied(
        &self,
        chunks: &[AppliedVersions],
        before: usize,
    ) -> Result<(), StoreError> {
        let lease = self.lease().await?;
        let puts = chunks.iter().enumerate().map(|(n, chunk)| {
            vec![Op::Put {
                key: self.keys.applied(&self.replica, n),
                value: keys::encode(chunk),
                lease: Some(lease),
            }]
        });
        let stale: Vec<Op> = (chunks.len()..before)
            .map(|n| Op::Delete {
                key: self.keys.applied(&self.replica, n),
            })
            .collect();
        for ops in puts.chain(stale.chunks(MAX_BATCH).map(<[Op]>::to_vec)) {
            let txn = Txn {
                compares: Vec::new(),
                ops,
            };
            let result = self.store.txn(txn).await;
            metrics::counter!(REGISTRY_WRITES).increment(1);
            result?;
        }
        Ok(())
    }

    /// Takes the writes of dirty connected agents, at most `max_ops` keys, clearing their flag
    /// (an agent whose health value did not fit this flush stays dirty).
    fn take_dirty(&self, max_ops: usize, now: Instant) -> Vec<Write> {
        let mut inner = self.lock();
        let (mut ops, mut health_bytes) = (0, 0);
        let mut out = Vec::new();
        for (id, e) in inner
            .local
            .iter_mut()
            .filter(|(_, e)| e.dirty && e.record.connected)
        {
            let member = membership::write(&e.member, membership::announced(&e.record));
            let health = match (&e.record.node, e.health.pending()) {
                (Some(node), true) => Some(e.health.value(node, now))
                    .filter(|h| health_bytes + h.encoded_len() <= MAX_HEALTH_BYTES_PER_FLUSH),
                _ => None,
            };
            let write = Write {
                id: id.clone(),
                stream: e.stream,
                bytes: e.record.encoded_len()
                    + member
                        .as_ref()
                        .map_or(0, |m| m.as_ref().map_or(0, |n| n.encoded_len()))
                    + health.as_ref().map_or(0, |h| h.encoded_len()),
                record: e.record.clone(),
                member,
                health,
            };
            if ops + write.ops() > max_ops {
                break;
            }
            ops += write.ops();
            if let Some(h) = &write.health {
                health_bytes += h.encoded_len();
                e.health.taken(now);
            }
            e.dirty = e.health.pending();
            out.push(write);
        }
        out
    }

    /// Takes the dirty entries of closed streams, at most `max`, clearing their flag.
    fn take_closed(&self, max: usize) -> Vec<(String, AgentRecord, Revision)> {
        let mut inner = self.lock();
        inner
            .local
            .iter_mut()
            .filter(|(_, e)| e.dirty && !e.record.connected)
            .take(max)
            .map(|(id, e)| {
                e.dirty = false;
                (id.clone(), e.record.clone(), e.written)
            })
            .collect()
    }

    /// The entry of `id` if it still belongs to `stream`.
    fn entry<'a>(inner: &'a mut super::Inner, id: &str, stream: StreamId) -> Option<&'a mut Entry> {
        inner.local.get_mut(id).filter(|e| e.stream == stream)
    }

    fn written(&self, done: &[(String, StreamId, Option<Option<Node>>, bool)], rev: Revision) {
        let mut inner = self.lock();
        for (id, stream, member, _) in done {
            let Some(entry) = Self::entry(&mut inner, id, *stream) else {
                continue;
            };
            entry.written = rev;
            if let Some(member) = member {
                entry.member = match member {
                    Some(node) => Stored::Present(node.clone()),
                    None => Stored::Absent,
                };
                entry.member_written = rev;
            }
        }
    }

    fn failed(&self, done: &[(String, StreamId, Option<Option<Node>>, bool)]) {
        let mut inner = self.lock();
        for (id, stream, member, health) in done {
            let Some(entry) = Self::entry(&mut inner, id, *stream) else {
                continue;
            };
            entry.dirty = true;
            if member.is_some() {
                entry.member = Stored::Unknown;
            }
            if *health {
                entry.health.rewrite();
            }
        }
    }

    fn redirty(&self, batch: &[Write]) {
        let done: Vec<_> = batch
            .iter()
            .map(|w| (w.id.clone(), w.stream, w.member.clone(), w.health.is_some()))
            .collect();
        self.failed(&done);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(id: usize, member: bool, health: bool, bytes: usize) -> Write {
        Write {
            id: id.to_string(),
            stream: 1,
            record: AgentRecord::default(),
            member: member.then_some(None),
            health: health.then(AgentHealth::default),
            bytes,
        }
    }

    #[test]
    fn batches_hold_whole_agents_within_the_key_and_byte_limits() {
        let sizes = |batches: &[Vec<Write>]| -> Vec<Vec<String>> {
            batches
                .iter()
                .map(|b| b.iter().map(|w| w.id.clone()).collect())
                .collect()
        };
        // (writes as (member, health, bytes), key limit, byte limit, batches of agent ids)
        type Writes<'a> = &'a [(bool, bool, usize)];
        let cases: &[(Writes, usize, usize, &[&[&str]])] = &[
            // Three one-key agents, two keys a batch.
            (&[(false, false, 1); 3], 2, 100, &[&["0", "1"], &["2"]]),
            // An agent's three keys are never split.
            (
                &[(false, false, 1), (true, true, 1), (false, false, 1)],
                3,
                100,
                &[&["0"], &["1"], &["2"]],
            ),
            // Bytes split batches too; an agent larger than the limit goes alone.
            (
                &[
                    (false, false, 60),
                    (false, false, 60),
                    (false, true, 500),
                    (false, false, 1),
                ],
                10,
                100,
                &[&["0"], &["1"], &["2"], &["3"]],
            ),
            (&[], 10, 100, &[]),
        ];
        for (input, max_ops, max_bytes, expected) in cases {
            let writes = input
                .iter()
                .enumerate()
                .map(|(i, (m, h, b))| write(i, *m, *h, *b))
                .collect();
            let batches = pack(writes, *max_ops, *max_bytes);
            let expected: Vec<Vec<String>> = expected
                .iter()
                .map(|b| b.iter().map(|s| s.to_string()).collect())
                .collect();
            assert_eq!(sizes(&batches), expected, "{input:?}");
        }
    }
}
