//! The versions a replica's connected agents applied, as one summary in the store: the version
//! most of them run (`common`) and every other agent by node id, split into chunks of at most
//! [`MAX_CHUNK_BYTES`] (`<root>/v1/applied/<replica>/<chunk>`, on the registry lease).
//!
//! An ACK changes only this summary, which the flusher writes at most once per flush, so a
//! push costs a replica one store write (a few when many agents lag), however many agents it
//! holds; the agents' records are written on their own events (connect, NACK, report, close).
//! Listings put the summaries over the stored records ([`Summaries::overlay`]).

use std::collections::{BTreeMap, HashMap};

use portico_api::pb::{AgentRecord, AppliedVersions};

use crate::keys::{self, Keys};
use crate::store::{KeyValue, Revision};

/// Most bytes of node ids in one chunk, well below a transaction's limit.
pub const MAX_CHUNK_BYTES: usize = 512 * 1024;
/// What an entry of `others` costs beside its node id: field tags, lengths and the version.
const ENTRY_OVERHEAD: usize = 16;

/// The chunks summarising `agents` (node id, applied version): the first holds the most common
/// version, and each holds the agents on another version, up to [`MAX_CHUNK_BYTES`].
pub fn chunks<'a>(
    agents: impl Iterator<Item = (&'a str, Revision)> + Clone,
) -> Vec<AppliedVersions> {
    let mut counts: HashMap<Revision, usize> = HashMap::new();
    for (_, version) in agents.clone() {
        *counts.entry(version).or_default() += 1;
    }
    // Ties go to the newer version: mid-push, the one every agent is moving to.
    let common = counts
        .into_iter()
        .max_by_key(|&(version, n)| (n, version))
        .map_or(0, |(version, _)| version);
    let mut out = vec![AppliedVersions {
        common,
        others: BTreeMap::new(),
    }];
    let mut bytes = 0;
    for (id, version) in agents.filter(|&(_, v)| v != common) {
        let size = id.len() + ENTRY_OVERHEAD;
        if bytes + size > MAX_CHUNK_BYTES && bytes > 0 {
            out.push(AppliedVersions::default());
            bytes = 0;
        }
        bytes += size;
        if let Some(chunk) = out.last_mut() {
            chunk.others.insert(id.to_string(), version);
        }
    }
    out
}

/// Every replica's summary, read from the store.
#[derive(Default)]
pub struct Summaries(HashMap<String, Summary>);

#[derive(Default)]
struct Summary {
    /// From chunk 0; `None` while only later chunks are in the store.
    common: Option<Revision>,
    others: HashMap<String, Revision>,
}

impl Summaries {
    /// The summaries among `kvs` (listed under [`Keys::applied_prefix`]); undecodable chunks
    /// are skipped with a warning.
    pub fn read(keys: &Keys, kvs: &[KeyValue]) -> Self {
        let mut out: HashMap<String, Summary> = HashMap::new();
        for kv in kvs {
            let Some((replica, chunk)) = keys.parse_applied(&kv.key) else {
                continue;
            };
            let applied = match keys::decode::<AppliedVersions>(&kv.key, &kv.value) {
                Ok(applied) => applied,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an undecodable applied-versions chunk");
                    continue;
                }
            };
            let summary = out.entry(replica.to_string()).or_default();
            if chunk == 0 {
                summary.common = Some(applied.common);
            }
            for (id, version) in applied.others {
                // Between two flushes' writes an agent can sit in two chunks: its newer version
                // is the true one, as an agent's version only moves forward on a stream.
                let v = summary.others.entry(id).or_insert(version);
                *v = (*v).max(version);
            }
        }
        Summaries(out)
    }

    /// Sets the applied version of a connected agent's `record` from its replica's summary;
    /// a record without one (a replica that has not written it yet) keeps its own.
    pub fn overlay(&self, record: &mut AgentRecord) {
        if !record.connected {
            return;
        }
        let Some(summary) = self.0.get(&record.replica) else {
            return;
        };
        let id = record.node.as_ref().map_or("", |n| n.id.as_str());
        if let Some(&version) = summary.others.get(id) {
            record.applied_version = version;
        } else if let Some(common) = summary.common {
            record.applied_version = common;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_api::pb::Node;

    fn kv(keys: &Keys, replica: &str, chunk: usize, applied: &AppliedVersions) -> KeyValue {
        KeyValue {
            key: keys.applied(replica, chunk),
            value: keys::encode(applied),
            create_revision: 1,
            mod_revision: 1,
            lease: None,
        }
    }

    fn record(id: &str, replica: &str, version: Revision, connected: bool) -> AgentRecord {
        AgentRecord {
            node: Some(Node {
                id: id.into(),
                ..Default::default()
            }),
            replica: replica.into(),
            applied_version: version,
            connected,
            ..Default::default()
        }
    }

    #[test]
    fn the_common_version_is_the_most_held_and_the_rest_are_listed() {
        let agents = [("a", 7), ("b", 7), ("c", 6), ("d", 0)];
        let summary = chunks(agents.iter().copied());
        assert_eq!(summary.len(), 1);
        assert_eq!(summary[0].common, 7);
        let others: Vec<_> = summary[0]
            .others
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(others, [("c", 6), ("d", 0)]);
        // A tie goes to the newer version; no agents at all is version 0 and no one else.
        assert_eq!(chunks([("a", 3), ("b", 4)].into_iter())[0].common, 4);
        let none = chunks(std::iter::empty());
        assert_eq!(
            (none.len(), none[0].common, none[0].others.len()),
            (1, 0, 0)
        );
    }

    #[test]
    fn many_lagging_agents_split_into_bounded_chunks_that_read_back_whole() {
        let ids: Vec<String> = (0..60_000).map(|i| format!("edge-{i:020}")).collect();
        // Two thirds on version 9, a third lagging on 8: 20,000 listed agents.
        let agents = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), if i % 3 == 0 { 8 } else { 9 }));
        let summary = chunks(agents);
        assert!(
            summary.len() > 1,
            "20,000 ids of 25 bytes fill more than one chunk"
        );
        let keys = Keys::default();
        let mut kvs = Vec::new();
        for (n, chunk) in summary.iter().enumerate() {
            assert!(
                keys::encode(chunk).len() <= MAX_CHUNK_BYTES + 64,
                "chunk {n}"
            );
            kvs.push(kv(&keys, "cp-1", n, chunk));
        }
        let summaries = Summaries::read(&keys, &kvs);
        for (i, id) in ids.iter().enumerate().step_by(997) {
            let mut r = record(id, "cp-1", 1, true);
            summaries.overlay(&mut r);
            assert_eq!(r.applied_version, if i % 3 == 0 { 8 } else { 9 }, "{id}");
        }
    }

    #[test]
    fn records_take_their_replicas_summary_only_while_connected() {
        let keys = Keys::default();
        let applied = AppliedVersions {
            common: 5,
            others: [("late".to_string(), 4)].into(),
        };
        let summaries = Summaries::read(&keys, &[kv(&keys, "cp-1", 0, &applied)]);
        let cases = [
            (record("a", "cp-1", 2, true), 5),
            (record("late", "cp-1", 2, true), 4),
            // Closed streams' records hold their final version; other replicas' their own.
            (record("gone", "cp-1", 3, false), 3),
            (record("b", "cp-2", 2, true), 2),
        ];
        for (mut r, expected) in cases {
            summaries.overlay(&mut r);
            assert_eq!(r.applied_version, expected, "{r:?}");
        }
        // Only a later chunk in the store: its agents are known, the others keep their own.
        let summaries = Summaries::read(&keys, &[kv(&keys, "cp-1", 1, &applied)]);
        let (mut late, mut a) = (
            record("late", "cp-1", 2, true),
            record("a", "cp-1", 2, true),
        );
        summaries.overlay(&mut late);
        summaries.overlay(&mut a);
        assert_eq!((late.applied_version, a.applied_version), (4, 2));
    }
}
