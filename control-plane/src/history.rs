//! History records and rollback reconstruction.
//!
//! Every config change writes one [`HistoryRecord`] with the transaction that commits it,
//! holding the before and after of each changed resource; a change too large for one
//! transaction keeps them in parts ([`HistoryPart`]) beside the record, written before any of
//! its resources (see [`crate::commit`]), and reading assembles them. A record's key carries
//! the change's config revision (the value the transaction writes to the config-revision key),
//! which is filled in when it is read.
//!
//! The config at revision REV is reconstructed backwards: start from the current config and
//! undo every record newer than REV, newest first (set each resource back to its `before`).
//! Undoing is exact, because every change to the config went through a record, so a rollback
//! restores the very resources REV had. It costs the records since REV, not all of history.
//!
//! # Secret material
//! Records keep no secret material: a Secret's private key or opaque value is written as
//! `<redacted>`, with the SHA-256 fingerprint of the material beside it
//! (`ResourceDelta.before_fingerprint`, `after_fingerprint`). So a deleted or replaced key is
//! gone from the store once the config no longer holds it, rather than readable in history
//! for ever. Reconstructing REV puts the material back from the Secrets stored now, found by
//! fingerprint (the same Secret unchanged, or any Secret holding the same material); when
//! none holds it, [`config_at`] refuses with [`HistoryError::SecretGone`], naming the Secret,
//! and the operator applies the material again before rolling back.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use portico_api::limits::MAX_MESSAGE_LEN;
use portico_api::pb::{HistoryEntry, HistoryPart, HistoryRecord, HistoryResponse, ResourceDelta};
use portico_api::{Kind, ResourceSet, secret};

use crate::keys::{self, Keys};
use crate::store::{Compare, Op, Revision, Store, StoreError, Txn, TxnOutcome};

/// Default and largest page of [`page`].
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;

/// Why a history question has no answer.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Reading the records failed.
    #[error(transparent)]
    Read(#[from] StoreError),
    /// A stored record does not decode.
    #[error(transparent)]
    Undecodable(#[from] keys::DecodeError),
    /// No config change happened at this revision.
    #[error("revision {0} is not a config revision (see `portico history`)")]
    UnknownRevision(Revision),
    /// A change between `revision` and now was pruned: it can no longer be undone.
    #[error(
        "cannot roll back to revision {revision}: the history of revision {pruned} was pruned \
         (the control plane keeps the last --history-retention changes); roll back to a newer \
         revision, or apply the config you want"
    )]
    Pruned {
        revision: Revision,
        pruned: Revision,
    },
    /// The config at `revision` holds secret material that no stored Secret holds any more.
    #[error(
        "cannot roll back to revision {revision}: Secret/{secret} then held material that is no \
         longer stored (history keeps only its fingerprint, {fingerprint}); apply Secret/{secret} \
         with that material again, then roll back"
    )]
    SecretGone {
        revision: Revision,
        secret: String,
        fingerprint: String,
    },
}

/// Every history record, oldest first, with its revision filled in and the deltas of a large
/// change assembled from its parts. Parts without a record (a large change being written, or
/// one that stopped half-way) are left out.
pub async fn read_all(store: &dyn Store, keys: &Keys) -> Result<Vec<HistoryRecord>, StoreError> {
    let (kvs, _) = store.list(&keys.history_prefix()).await?;
    let mut records = Vec::with_capacity(kvs.len());
    // Keys sort a record before its parts: "…/00042" < "…/00042/000000".
    let mut parts: std::collections::HashMap<Revision, Vec<(u32, HistoryPart)>> =
        Default::default();
    for kv in kvs {
        if let Some((at, part)) = keys.parse_history_part(&kv.key) {
            match keys::decode::<HistoryPart>(&kv.key, &kv.value) {
                Ok(p) => parts.entry(at).or_default().push((part, p)),
                Err(e) => tracing::warn!(error = %e, "skipping undecodable history part"),
            }
            continue;
        }
        let Some(at) = keys.parse_history(&kv.key) else {
            tracing::warn!(key = %kv.key, "skipping history record with an unknown key");
            continue;
        };
        match keys::decode::<HistoryRecord>(&kv.key, &kv.value) {
            Ok(mut record) => {
                record.entry.get_or_insert_default().revision = at;
                records.push(record);
            }
            Err(e) => tracing::warn!(error = %e, "skipping undecodable history record"),
        }
    }
    for record in &mut records {
        if record.parts == 0 {
            continue;
        }
        let mut own = parts.remove(&revision(record)).unwrap_or_default();
        if own.len() != record.parts as usize {
            tracing::warn!(
                revision = revision(record),
                parts = record.parts,
                found = own.len(),
                "history record of a large change is missing parts"
            );
        }
        own.sort_by_key(|(i, _)| *i);
        record.deltas = own.into_iter().flat_map(|(_, p)| p.deltas).collect();
    }
    records.sort_by_key(revision);
    Ok(records)
}

/// The history record of the change that made `revision`, with the deltas of a large change
/// assembled from its parts.
pub async fn read_one(
    store: &dyn Store,
    keys: &Keys,
    revision: Revision,
) -> Result<HistoryRecord, HistoryError> {
    let Some(kv) = store.get(&keys.history(revision)).await? else {
        return Err(HistoryError::UnknownRevision(revision));
    };
    let mut record = keys::decode::<HistoryRecord>(&kv.key, &kv.value)?;
    record.entry.get_or_insert_default().revision = revision;
    if record.parts > 0 {
        let (kvs, _) = store.list(&keys.history_parts_prefix(revision)).await?;
        // Part keys sort by part number.
        for kv in kvs {
            let part = keys::decode::<HistoryPart>(&kv.key, &kv.value)?;
            record.deltas.extend(part.deltas);
        }
    }
    Ok(record)
}

/// The store revision each change started at and its config revision, in order, read from the
/// history keys alone (no record is read). A change written in one transaction starts where
/// its record was written; a large one where its first part was, before any of its resources.
pub async fn change_revisions(
    store: &dyn Store,
    keys: &Keys,
) -> Result<Vec<(Revision, Revision)>, StoreError> {
    let (kvs, _) = store.list_keys(&keys.history_prefix()).await?;
    let mut starts: std::collections::BTreeMap<Revision, Revision> = Default::default();
    let mut recorded = std::collections::BTreeSet::new();
    for kv in &kvs {
        let at = match keys.parse_history_part(&kv.key) {
            Some((at, _)) => at,
            None => match keys.parse_history(&kv.key) {
                Some(at) => {
                    recorded.insert(at);
                    at
                }
                None => continue,
            },
        };
        let start = starts.entry(at).or_insert(kv.create_revision);
        *start = (*start).min(kv.create_revision);
    }
    let mut changes: Vec<_> = starts
        .into_iter()
        .filter(|(at, _)| recorded.contains(at))
        .map(|(at, start)| (start, at))
        .collect();
    changes.sort_unstable();
    Ok(changes)
}

fn revision(record: &HistoryRecord) -> Revision {
    record
        .entry
        .as_ref()
        .map(|e| e.revision)
        .unwrap_or_default()
}

/// Most records one [`prune`] call prunes; the rest wait for the next.
const MAX_PRUNED_PER_CALL: usize = 256;

/// Prunes the records of changes older than the newest `keep` and newer than `after` (pruned
/// before): each keeps its entry, marked `pruned`, and loses its deltas; a large change's parts
/// are emptied but kept, since their keys date the change ([`change_revisions`]). Every write
/// also checks `fence`. Returns how many records were pruned and the newest revision that is
/// now pruned (or was found pruned), for the next call's `after`.
pub async fn prune(
    store: &dyn Store,
    keys: &Keys,
    keep: u64,
    after: Revision,
    fence: &[Compare],
) -> Result<(usize, Revision), StoreError> {
    let (kvs, _) = store.list_keys(&keys.history_prefix()).await?;
    let Some(newest) = kvs
        .iter()
        .filter_map(|kv| keys.parse_history(&kv.key))
        .max()
    else {
        return Ok((0, after));
    };
    let cut = newest - keep.min(i64::MAX as u64) as i64;
    let mut parts: BTreeMap<Revision, Vec<String>> = BTreeMap::new();
    let mut old = Vec::new();
    for kv in kvs {
        if let Some((at, _)) = keys.parse_history_part(&kv.key) {
            if at > after && at <= cut {
                parts.entry(at).or_default().push(kv.key);
            }
        } else if let Some(at) = keys.parse_history(&kv.key)
            && at > after
            && at <= cut
        {
            old.push(at);
        }
    }
    old.sort_unstable();
    let (mut pruned, mut through) = (0, after);
    // Each record's emptied parts first, the record last: a pass cut short leaves the record
    // unpruned, and the next pass does it again.
    let mut ops = Vec::new();
    for at in old.into_iter().take(MAX_PRUNED_PER_CALL) {
        through = at;
        let key = keys.history(at);
        let Some(kv) = store.get(&key).await? else {
            continue;
        };
        // An undecodable record stays as it is: pruning must not lose what a reader may yet
        // make sense of.
        let Ok(mut record) = keys::decode::<HistoryRecord>(&kv.key, &kv.value) else {
            continue;
        };
        let entry = record.entry.get_or_insert_with(Default::default);
        if entry.pruned {
            continue;
        }
        entry.pruned = true;
        record.deltas.clear();
        let empty = keys::encode(&HistoryPart::default());
        ops.extend(
            parts
                .remove(&at)
                .unwrap_or_default()
                .into_iter()
                .map(|key| Op::Put {
                    key,
                    value: empty.clone(),
                    lease: None,
                }),
        );
        ops.push(Op::Put {
            key,
            value: keys::encode(&record),
            lease: None,
        });
        pruned += 1;
    }
    for chunk in ops.chunks(crate::store::MAX_TXN_OPS - 1) {
        write(store, chunk.to_vec(), fence).await?;
    }
    Ok((pruned, through))
}

/// Writes `ops` behind `fence`; a failed fence is an error (the term ended).
async fn write(store: &dyn Store, ops: Vec<Op>, fence: &[Compare]) -> Result<(), StoreError> {
    let txn = Txn {
        compares: fence.to_vec(),
        ops,
    };
    match store.txn(txn).await? {
        TxnOutcome::Committed(_) => Ok(()),
        TxnOutcome::Conflict(_) => Err(StoreError::Unavailable(
            "the leader's term ended while pruning history".into(),
        )),
    }
}

/// One page of history, newest first: at most `limit` entries (0: the default) older than
/// `before` (0: from the newest).
pub fn page(records: &[HistoryRecord], limit: u32, before: Revision) -> HistoryResponse {
    let limit = match limit as usize {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let mut older = records
        .iter()
        .rev()
        .filter(|r| before == 0 || revision(r) < before)
        .filter_map(|r| r.entry.clone())
        .map(|mut e| {
            // Messages stored before their size was bounded: shown cut, so a page stays small.
            if let Some((cut, _)) = e.message.char_indices().nth(MAX_MESSAGE_LEN) {
                e.message.truncate(cut);
                e.message.push('…');
            }
            e
        });
    let entries: Vec<HistoryEntry> = older.by_ref().take(limit).collect();
    let next_before_revision = match (older.next(), entries.last()) {
        (Some(_), Some(last)) => last.revision,
        _ => 0,
    };
    HistoryResponse {
        entries,
        next_before_revision,
    }
}

/// The config at `target`, from the `current` config and every record (oldest first).
pub fn config_at(
    current: &ResourceSet,
    records: &[HistoryRecord],
    target: Revision,
) -> Result<ResourceSet, HistoryError> {
    if !records.iter().any(|r| revision(r) == target) {
        return Err(HistoryError::UnknownRevision(target));
    }
    if let Some(pruned) = records
        .iter()
        .rev()
        .take_while(|r| revision(r) > target)
        .find(|r| r.entry.as_ref().is_some_and(|e| e.pruned))
    {
        return Err(HistoryError::Pruned {
            revision: target,
            pruned: revision(pruned),
        });
    }
    let mut set = current.clone();
    // The Secrets set back to a `before` without its material, with the material's fingerprint.
    let mut stripped: BTreeMap<String, String> = BTreeMap::new();
    for record in records.iter().rev().take_while(|r| revision(r) > target) {
        for delta in &record.deltas {
            let Some(key) = &delta.key else { continue };
            if key.kind() == Kind::Secret {
                stripped.remove(&key.name);
            }
            match &delta.before {
                Some(before) => {
                    // Records written before fingerprints existed hold the material itself.
                    if !delta.before_fingerprint.is_empty() {
                        stripped.insert(key.name.clone(), delta.before_fingerprint.clone());
                    }
                    set.insert(before.clone());
                }
                None => {
                    set.remove(key.kind(), &key.name);
                }
            }
        }
    }
    if stripped.is_empty() {
        return Ok(set);
    }
    let held: HashMap<String, &str> = current
        .of_kind(Kind::Secret)
        .filter_map(|r| Some((secret::fingerprint(r)?, secret::material(r)?)))
        .collect();
    for (name, fingerprint) in stripped {
        let (Some(material), Some(resource)) =
            (held.get(&fingerprint), set.get(Kind::Secret, &name))
        else {
            return Err(HistoryError::SecretGone {
                revision: target,
                secret: name,
                fingerprint,
            });
        };
        let mut resource = resource.clone();
        secret::restore(&mut resource, material);
        set.insert(resource);
    }
    Ok(set)
}

/// The changes turning `from` into `to`, by kind then name.
pub fn deltas(from: &ResourceSet, to: &ResourceSet) -> Vec<ResourceDelta> {
    let keys: BTreeSet<(Kind, &str)> = from
        .iter()
        .chain(to.iter())
        .map(|r| (r.kind(), r.name.as_str()))
        .collect();
    keys.into_iter()
        .filter_map(|(kind, name)| {
            let before = from.get(kind, name);
            let after = to.get(kind, name);
            (before != after).then(|| ResourceDelta {
                key: Some(portico_api::ResourceKey::new(kind, name)),
                before: before.cloned(),
                after: after.cloned(),
                ..Default::default()
            })
        })
        .collect()
}

/// `deltas` as history keeps them: secret material replaced by its fingerprint.
pub fn stripped(deltas: &[ResourceDelta]) -> Vec<ResourceDelta> {
    let mut deltas = deltas.to_vec();
    for delta in &mut deltas {
        if let Some(before) = delta.before.as_mut() {
            delta.before_fingerprint = secret::strip(before).unwrap_or_default();
        }
        if let Some(after) = delta.after.as_mut() {
            delta.after_fingerprint = secret::strip(after).unwrap_or_default();
        }
    }
    deltas
}

/// The record of a change of `deltas`, without them (the commit puts them, [`stripped`], in
/// the record or in its parts); its revision is filled in when read back.
pub fn record(
    author: &str,
    message: &str,
    deltas: &[ResourceDelta],
    rollback_of: Revision,
) -> HistoryRecord {
    let count = |f: fn(&ResourceDelta) -> bool| deltas.iter().filter(|d| f(d)).count() as u32;
    HistoryRecord {
        entry: Some(HistoryEntry {
            revision: 0,
            time: Some(crate::registry::timestamp(std::time::SystemTime::now())),
            author: author.to_string(),
            message: message.to_string(),
            created: count(|d| d.before.is_none()),
            updated: count(|d| d.before.is_some() && d.after.is_some()),
            deleted: count(|d| d.after.is_none()),
            rollback_of,
            ..Default::default()
        }),
        deltas: Vec::new(),
        parts: 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use portico_api::Resource;
    use portico_api::pb::{Cluster, resource::Spec};

    use super::*;

    fn cluster(name: &str, port: u32) -> Resource {
        Resource {
            name: name.into(),
            spec: Some(Spec::Cluster(Cluster {
                endpoints: vec![portico_api::pb::Endpoint {
                    address: "10.0.0.1".into(),
                    port,
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    /// The record of the change `deltas` at `rev`, as read back.
    fn at(rev: Revision, deltas: Vec<ResourceDelta>) -> HistoryRecord {
        let mut record = record("t", "", &deltas, 0);
        record.deltas = stripped(&deltas);
        record.entry.get_or_insert_default().revision = rev;
        record
    }

    #[test]
    fn config_at_undoes_newer_records() {
        let v1: ResourceSet = [cluster("a", 1)].into_iter().collect();
        let v2: ResourceSet = [cluster("a", 2), cluster("b", 1)].into_iter().collect();
        let v3: ResourceSet = [cluster("b", 3)].into_iter().collect();
        let records = [
            at(5, deltas(&ResourceSet::new(), &v1)),
            at(9, deltas(&v1, &v2)),
            at(12, deltas(&v2, &v3)),
        ];
        assert_eq!(config_at(&v3, &records, 5).unwrap(), v1);
        assert_eq!(config_at(&v3, &records, 9).unwrap(), v2);
        assert_eq!(config_at(&v3, &records, 12).unwrap(), v3);
        assert!(matches!(
            config_at(&v3, &records, 7),
            Err(HistoryError::UnknownRevision(7))
        ));
        let counts = records[1].entry.as_ref().unwrap();
        assert_eq!((counts.created, counts.updated, counts.deleted), (1, 1, 0));
    }

    fn opaque(name: &str, value: &str) -> Resource {
        Resource {
            name: name.into(),
            spec: Some(Spec::Secret(portico_api::pb::Secret {
                secret: Some(portico_api::pb::secret::Secret::Opaque(value.into())),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn records_keep_fingerprints_and_rollbacks_find_the_material_again() {
        let marker = "MARKER-31d9-old-key";
        let v1: ResourceSet = [opaque("key", marker), cluster("a", 1)]
            .into_iter()
            .collect();
        let v2: ResourceSet = [opaque("key", "new-key"), cluster("a", 2)]
            .into_iter()
            .collect();
        let v3: ResourceSet = [opaque("key", "new-key"), cluster("a", 3)]
            .into_iter()
            .collect();
        let records = [
            at(1, deltas(&ResourceSet::new(), &v1)),
            at(2, deltas(&v1, &v2)),
            at(3, deltas(&v2, &v3)),
        ];
        let stored: Vec<u8> = records
            .iter()
            .flat_map(prost::Message::encode_to_vec)
            .collect();
        let text = String::from_utf8_lossy(&stored);
        assert!(
            !text.contains(marker) && !text.contains("new-key"),
            "{text}"
        );
        assert_eq!(
            records[1].deltas[1].before_fingerprint,
            secret::fingerprint(&opaque("key", marker)).unwrap()
        );

        // Revision 2's key is the current one: found again by its fingerprint.
        assert_eq!(config_at(&v3, &records, 2).unwrap(), v2);
        // Revision 1's key was replaced: refused, naming the Secret.
        let err = config_at(&v3, &records, 1).unwrap_err();
        assert!(matches!(&err, HistoryError::SecretGone { secret, .. } if secret == "key"));
        assert!(err.to_string().contains("apply Secret/key"), "{err}");
        // Once some Secret holds that material again, the rollback goes through.
        let mut again = v3.clone();
        again.insert(opaque("restored", marker));
        let mut expected = v1.clone();
        expected.insert(opaque("restored", marker));
        assert_eq!(config_at(&again, &records, 1).unwrap(), expected);
    }

    #[test]
    fn pages_run_newest_first() {
        let mut records: Vec<_> = (1..=5).map(|r| at(r, vec![])).collect();
        records[0].entry.as_mut().unwrap().message = "x".repeat(3 * MAX_MESSAGE_LEN);
        let first = page(&records, 2, 0);
        let revs: Vec<_> = first.entries.iter().map(|e| e.revision).collect();
        assert_eq!(revs, [5, 4]);
        assert_eq!(first.next_before_revision, 4);
        let last = page(&records, 2, 2);
        assert_eq!(last.entries.len(), 1);
        assert_eq!(last.next_before_revision, 0);
        // A message stored before messages were bounded comes back cut.
        assert_eq!(last.entries[0].message.chars().count(), MAX_MESSAGE_LEN + 1);
    }
}
