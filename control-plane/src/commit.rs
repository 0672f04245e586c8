//! Writing a change to the store: its resources, its history record and the next config
//! revision, as one transaction when it fits, or staged in several behind one config revision.
//!
//! **One transaction** when the change holds at most [`MAX_TXN_OPS`] − 2 resources and its
//! values (resources and history record) at most [`STAGE_BYTES`]: it compares the
//! config-revision key's mod revision with the one the change read, and the absence of a staged
//! change's marker, so concurrent changes through any replica serialise.
//!
//! **Staged** otherwise (a change of thousands of resources, or of large ones; a rollback of
//! either):
//! 1. *begin*: the marker ([`StagedChange`], under [`Keys::staged_change`]), with the same
//!    compares as above; from here on every other change waits.
//! 2. the history record's deltas in parts (`HistoryPart`s of at most [`STAGE_BYTES`]), one
//!    transaction each;
//! 3. the resources, in transactions of at most [`MAX_TXN_OPS`] − 1 ops and [`STAGE_BYTES`];
//! 4. *finish*: the history record (its entry and the number of parts), the next config
//!    revision, and the marker's deletion.
//!
//! Steps 2–4 compare the marker's mod revision and write it again with a fresh heartbeat, so
//! the writer notices when another replica took the change over. Watchers publish nothing of a
//! staged change until step 4 moves the config revision, so agents (and `get`) see it whole or
//! not at all; a watcher that (re)lists while a marker exists undoes the partial writes from
//! the parts' `before` values (`undo_listed`).
//!
//! A change that finds a marker waits while its writer makes progress. A marker whose heartbeat
//! is older than [`STALE_AFTER`] belongs to a writer that stopped (crashed, or lost the store
//! mid-way): the change undoes it ([`undo`]): it puts back every resource the parts name as it
//! was before (the parts are written before any resource, so they cover every resource
//! written), deletes the parts, then the marker. A writer that fails mid-way undoes its own
//! change the same way before it answers.

use std::time::{Duration, SystemTime};

use portico_api::pb::{HistoryPart, HistoryRecord, ResourceDelta, StagedChange};
use prost::Message;

use crate::history;
use crate::keys::{self, Keys};
use crate::metered::MeteredStore;
use crate::registry::timestamp;
use crate::store::{
    Compare, KeyValue, MAX_TXN_OPS, Op, Revision, Store, StoreError, Txn, TxnOutcome,
};

/// Most bytes of values in one transaction of a change: below the store's transaction limit
/// ([`crate::store::MAX_TXN_BYTES`]) with room for the keys and the marker, and large enough for
/// one delta of two resources at their limit.
pub const STAGE_BYTES: usize = 1024 * 1024 + 64 * 1024;
/// How long a staged change's writer may go without progress before another change undoes it.
pub const STALE_AFTER: Duration = Duration::from_secs(30);
/// How often a change waiting on a staged one looks again.
pub const WAIT_POLL: Duration = Duration::from_millis(100);

/// Why a change could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change has writes that must commit with it, and does not fit in one transaction.
    #[error(
        "a canary rollout's change must fit in one store transaction (at most {} resources \
         and {} of them); apply a change this large without --canary",
        MAX_TXN_OPS - 6,
        portico_api::limits::bytes(STAGE_BYTES / 2)
    )]
    TooLarge,
    /// Another replica undid this staged change after it stalled; nothing of it remains.
    #[error(
        "the change was taken over and undone by replica {by} after it stalled; nothing was \
         written: apply it again"
    )]
    TakenOver { by: String },
    /// A staged change failed part-way and was undone; nothing of it remains.
    #[error("writing the change failed part-way ({source}); it was undone, nothing was written")]
    Undone {
        #[source]
        source: StoreError,
    },
}

/// A change to write, on top of the config read at `revision` (`guard`: the config-revision
/// key's mod revision then).
pub struct Change<'a> {
    pub revision: Revision,
    pub guard: Revision,
    pub deltas: Vec<ResourceDelta>,
    pub record: HistoryRecord,
    pub replica: &'a str,
    /// More writes that must commit with the change (a canary rollout's pin and record); a
    /// change with any must fit in one transaction.
    pub extra: Vec<Op>,
}

/// What the store held for a change's marker when it was read: none, or one with its mod
/// revision.
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    pub staged: StagedChange,
    pub mod_revision: Revision,
}

impl Marker {
    /// The marker in `kv`, if `kv` is one.
    pub fn decode(kv: &KeyValue) -> Result<Marker, keys::DecodeError> {
        Ok(Marker {
            staged: keys::decode(&kv.key, &kv.value)?,
            mod_revision: kv.mod_revision,
        })
    }

    /// Whether its writer stopped making progress.
    pub fn is_stale(&self, now: SystemTime) -> bool {
        let heartbeat = self
            .staged
            .heartbeat
            .as_ref()
            .map_or(SystemTime::UNIX_EPOCH, |t| {
                SystemTime::UNIX_EPOCH
                    + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32)
            });
        now.duration_since(heartbeat).unwrap_or_default() >= STALE_AFTER
    }
}

/// Writes `change` as config revision `change.revision + 1`, which it returns; `None` when
/// another change committed (or began) first.
pub async fn commit(
    store: &MeteredStore,
    keys: &Keys,
    change: Change<'_>,
) -> Result<Option<Revision>, CommitError> {
    let next = change.revision + 1;
    let guards = vec![
        Compare::ModRevision {
            key: keys.config_revision(),
            revision: change.guard,
        },
        Compare::ModRevision {
            key: keys.staged_change(),
            revision: 0,
        },
    ];
    let resource_bytes: usize = change.deltas.iter().map(delta_after_len).sum();
    let mut record = change.record;
    // History keeps a fingerprint of secret material, never the material.
    record.deltas = history::stripped(&change.deltas);
    let extra_bytes: usize = change.extra.iter().map(op_len).sum();
    if record.deltas.len() + 2 + change.extra.len() <= MAX_TXN_OPS
        && resource_bytes + record.encoded_len() + extra_bytes <= STAGE_BYTES
    {
        let mut ops = resource_ops(keys, &change.deltas);
        ops.extend(change.extra);
        ops.push(put(keys.history(next), keys::encode(&record)));
        ops.push(put(keys.config_revision(), keys::encode_revision(next)));
        return match store
            .txn(Txn {
                compares: guards,
                ops,
            })
            .await?
        {
            TxnOutcome::Committed(_) => Ok(Some(next)),
            TxnOutcome::Conflict(_) => Ok(None),
        };
    }
    if !change.extra.is_empty() {
        return Err(CommitError::TooLarge);
    }
    let deltas = std::mem::take(&mut record.deltas);
    let parts = parts(deltas);
    record.parts = parts.len() as u32;
    let mut staged = StagedChange {
        revision: next,
        parts: record.parts,
        replica: change.replica.to_string(),
        heartbeat: None,
    };
    // 1. Begin.
    let begin = Txn {
        compares: guards,
        ops: vec![marker_op(keys, &mut staged)],
    };
    let mut marker = match store.txn(begin).await? {
        TxnOutcome::Committed(at) => at,
        TxnOutcome::Conflict(_) => return Ok(None),
    };
    tracing::info!(
        revision = next,
        parts = staged.parts,
        "writing a large change in several transactions"
    );
    let mut writer = Writer {
        store,
        keys,
        staged,
        marker,
    };
    match writer.write(&record, &parts, &change.deltas).await {
        Ok(()) => Ok(Some(next)),
        Err(WriteError::TakenOver) => Err(CommitError::TakenOver {
            by: current_owner(store, keys).await,
        }),
        Err(WriteError::Store(source)) => {
            marker = writer.marker;
            let own = Marker {
                staged: writer.staged,
                mod_revision: marker,
            };
            match undo(store, keys, own, change.replica).await {
                Ok(_) => Err(CommitError::Undone { source }),
                Err(e) => {
                    tracing::error!(
                        revision = next,
                        error = %e,
                        "undoing a failed staged change failed; the next change undoes it \
                         once it is stale"
                    );
                    Err(CommitError::Store(source))
                }
            }
        }
    }
}

enum WriteError {
    TakenOver,
    Store(StoreError),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        WriteError::Store(e)
    }
}

/// The writer of one staged change, holding the marker's mod revision.
struct Writer<'a> {
    store: &'a MeteredStore,
    keys: &'a Keys,
    staged: StagedChange,
    marker: Revision,
}

impl Writer<'_> {
    async fn write(
        &mut self,
        record: &HistoryRecord,
        parts: &[HistoryPart],
        deltas: &[ResourceDelta],
    ) -> Result<(), WriteError> {
        let next = self.staged.revision;
        // 2. The history parts, so that whatever is written next can be undone.
        for (i, part) in parts.iter().enumerate() {
            let key = self.keys.history_part(next, i as u32);
            self.step(vec![put(key, keys::encode(part))]).await?;
        }
        // 3. The resources.
        for batch in batches(deltas, MAX_TXN_OPS - 1) {
            self.step(resource_ops(self.keys, batch)).await?;
        }
        // 4. Finish.
        let ops = vec![
            put(self.keys.history(next), keys::encode(record)),
            put(self.keys.config_revision(), keys::encode_revision(next)),
            Op::Delete {
                key: self.keys.staged_change(),
            },
        ];
        self.txn(ops).await
    }

    /// One transaction of `ops` and the marker with a fresh heartbeat.
    async fn step(&mut self, mut ops: Vec<Op>) -> Result<(), WriteError> {
        ops.push(marker_op(self.keys, &mut self.staged));
        self.txn(ops).await
    }

    async fn txn(&mut self, ops: Vec<Op>) -> Result<(), WriteError> {
        let compares = vec![Compare::ModRevision {
            key: self.keys.staged_change(),
            revision: self.marker,
        }];
        match self.store.txn(Txn { compares, ops }).await? {
            TxnOutcome::Committed(at) => {
                self.marker = at;
                Ok(())
            }
            TxnOutcome::Conflict(_) => Err(WriteError::TakenOver),
        }
    }
}

/// Undoes the staged change of `marker`: every resource its parts name goes back to its
/// `before`, then the parts and the marker are deleted. Each transaction compares the marker's
/// mod revision (and writes it again, now owned by `replica`), so only one replica undoes it.
/// Returns false when another replica got there first.
pub async fn undo(
    store: &MeteredStore,
    keys: &Keys,
    marker: Marker,
    replica: &str,
) -> Result<bool, StoreError> {
    let Marker {
        mut staged,
        mod_revision,
    } = marker;
    tracing::warn!(
        revision = staged.revision,
        writer = %staged.replica,
        "undoing a change that was left half-written"
    );
    staged.replica = replica.to_string();
    let (parts, _) = store
        .list(&keys.history_parts_prefix(staged.revision))
        .await?;
    let mut deltas = Vec::new();
    for kv in &parts {
        match keys::decode::<HistoryPart>(&kv.key, &kv.value) {
            Ok(part) => deltas.extend(part.deltas),
            Err(e) => tracing::warn!(error = %e, "skipping an undecodable history part"),
        }
    }
    let undone: Vec<ResourceDelta> = deltas
        .into_iter()
        .filter(|d| {
            // History holds no secret material, so a Secret the change replaced cannot be put
            // back: it keeps the change's material, which is valid, and is said.
            let kept = !d.before_fingerprint.is_empty();
            if kept {
                tracing::warn!(
                    revision = staged.revision,
                    secret = ?d.key.as_ref().map(|k| k.name.clone()),
                    "undoing a half-written change leaves this Secret as the change wrote it"
                );
            }
            !kept
        })
        .map(|d| ResourceDelta {
            key: d.key,
            before: None,
            after: d.before,
            ..Default::default()
        })
        .collect();
    let mut writer = Writer {
        store,
        keys,
        staged,
        marker: mod_revision,
    };
    let result: Result<(), WriteError> = async {
        for batch in batches(undone.iter(), MAX_TXN_OPS - 1) {
            writer.step(resource_ops(keys, batch)).await?;
        }
        for chunk in parts.chunks(MAX_TXN_OPS - 1) {
            let ops = chunk
                .iter()
                .map(|kv| Op::Delete {
                    key: kv.key.clone(),
                })
                .collect();
            writer.step(ops).await?;
        }
        writer
            .txn(vec![Op::Delete {
                key: keys.staged_change(),
            }])
            .await
    }
    .await;
    match result {
        Ok(()) => Ok(true),
        Err(WriteError::TakenOver) => Ok(false),
        Err(WriteError::Store(e)) => Err(e),
    }
}

/// The replica that holds the marker now, for the message of a writer that lost it.
async fn current_owner(store: &MeteredStore, keys: &Keys) -> String {
    match store.get(&keys.staged_change()).await {
        Ok(Some(kv)) => Marker::decode(&kv)
            .map(|m| m.staged.replica)
            .unwrap_or_else(|_| "another replica".into()),
        _ => "another replica".into(),
    }
}

/// A put of `value` at `key`, on no lease.
pub(crate) fn put(key: String, value: Vec<u8>) -> Op {
    Op::Put {
        key,
        value,
        lease: None,
    }
}

fn marker_op(keys: &Keys, staged: &mut StagedChange) -> Op {
    staged.heartbeat = Some(timestamp(SystemTime::now()));
    put(keys.staged_change(), keys::encode(staged))
}

fn op_len(op: &Op) -> usize {
    match op {
        Op::Put { key, value, .. } => key.len() + value.len(),
        Op::Delete { key } => key.len(),
    }
}

fn delta_after_len(delta: &ResourceDelta) -> usize {
    delta.after.as_ref().map_or(0, Message::encoded_len)
}

/// The puts and deletes that make the resources of `deltas` their `after`.
fn resource_ops<'a>(keys: &Keys, deltas: impl IntoIterator<Item = &'a ResourceDelta>) -> Vec<Op> {
    deltas
        .into_iter()
        .filter_map(|delta| {
            let key = delta.key.as_ref()?;
            let key = keys.config(key.kind(), &key.name);
            Some(match &delta.after {
                Some(after) => put(key, keys::encode(after)),
                None => Op::Delete { key },
            })
        })
        .collect()
}

/// `deltas` in parts of at most [`STAGE_BYTES`] each (a delta larger than that alone).
fn parts(deltas: Vec<ResourceDelta>) -> Vec<HistoryPart> {
    let mut out = Vec::new();
    let mut part = HistoryPart::default();
    let mut bytes = 0;
    for delta in deltas {
        let len = delta.encoded_len() + 8;
        if !part.deltas.is_empty() && bytes + len > STAGE_BYTES {
            out.push(std::mem::take(&mut part));
            bytes = 0;
        }
        bytes += len;
        part.deltas.push(delta);
    }
    if !part.deltas.is_empty() {
        out.push(part);
    }
    out
}

/// `deltas` in batches of at most `max_ops` and [`STAGE_BYTES`] of `after` values (a delta
/// larger than that alone).
fn batches<'a>(
    deltas: impl IntoIterator<Item = &'a ResourceDelta>,
    max_ops: usize,
) -> Vec<Vec<&'a ResourceDelta>> {
    let mut out = Vec::new();
    let mut batch: Vec<&ResourceDelta> = Vec::new();
    let mut bytes = 0;
    for delta in deltas {
        let len = delta_after_len(delta) + 64;
        if !batch.is_empty() && (batch.len() == max_ops || bytes + len > STAGE_BYTES) {
            out.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += len;
        batch.push(delta);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

#[cfg(test)]
mod tests {
    use portico_api::pb::{Cluster, resource::Spec};
    use portico_api::{Kind, Resource, ResourceKey};

    use super::*;

    fn delta(name: &str, bytes: usize) -> ResourceDelta {
        let after = Resource {
            name: name.into(),
            labels: [("pad".to_string(), "x".repeat(bytes))]
                .into_iter()
                .collect(),
            spec: Some(Spec::Cluster(Cluster::default())),
        };
        ResourceDelta {
            key: Some(ResourceKey::new(Kind::Cluster, name)),
            before: None,
            after: Some(after),
            ..Default::default()
        }
    }

    #[test]
    fn parts_and_batches_stay_within_a_transaction() {
        let deltas: Vec<_> = (0..300).map(|i| delta(&format!("c{i}"), 10)).collect();
        let batched = batches(&deltas, MAX_TXN_OPS - 1);
        assert_eq!(
            batched.iter().map(Vec::len).collect::<Vec<_>>(),
            [127, 127, 46]
        );
        let large: Vec<_> = (0..5)
            .map(|i| delta(&format!("l{i}"), 400 * 1024))
            .collect();
        let batched = batches(&large, MAX_TXN_OPS - 1);
        assert_eq!(batched.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        let split = parts(large);
        assert_eq!(
            split.iter().map(|p| p.deltas.len()).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        assert!(split.iter().all(|p| p.encoded_len() <= STAGE_BYTES));
    }
}
