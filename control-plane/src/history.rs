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

use std::collections::BTreeSet;

use portico_api::limits::MAX_MESSAGE_LEN;
use portico_api::pb::{HistoryEntry, HistoryPart, HistoryRecord, HistoryResponse, ResourceDelta};
use portico_api::{Kind, ResourceSet};

use crate::keys::{self, Keys};
use crate::store::{Revision, Store, StoreError};

/// Default and largest page of [`page`].
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;

/// Why a history question has no answer.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Reading the records failed.
    #[error(transparent)]
    Read(#[from] StoreError),
    /// No config change happened at this revision.
    #[error("revision {0} is not a config revision (see `portico history`)")]
    UnknownRevision(Revision),
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
    let mut set = current.clone();
    for record in records.iter().rev().take_while(|r| revision(r) > target) {
        for delta in &record.deltas {
            let Some(key) = &delta.key else { continue };
            match &delta.before {
                Some(before) => {
                    set.insert(before.clone());
                }
                None => {
                    set.remove(key.kind(), &key.name);
                }
            }
        }
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
            })
        })
        .collect()
}

/// The record of a change of `deltas`, without them (the commit puts them in the record or in
/// its parts); its revision is filled in when read back.
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
        record.deltas = deltas;
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
