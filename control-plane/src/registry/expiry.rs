//! Expiry of disconnected agents' records. When an agent's stream closes, its record stays in
//! the store (`connected: false`, on the lease of the replica that held the stream), so
//! `portico agents` shows it `disconnected`; a replica that lives on would keep it forever. The
//! leader therefore sweeps, every quarter of the expiry (at least every second, at most every
//! 5 minutes), the records of agents whose stream closed longer than the expiry ago, whichever
//! replica wrote them, and deletes them, each compared against the mod revision it listed (a
//! record written meanwhile, the agent came back, stays) and against the leader's term. A dead
//! replica's records go with its lease.

use std::time::{Duration, SystemTime};

use portico_api::pb::AgentRecord;

use super::Registry;
use crate::election::Term;
use crate::keys;
use crate::store::{Compare, MAX_TXN_OPS, Op, Store, StoreError, Txn, TxnOutcome};

/// Most records one sweep deletes; the rest wait for the next sweep.
const MAX_PER_SWEEP: usize = 8 * MAX_TXN_OPS;

/// How often records are swept for an expiry of `expiry`.
pub fn sweep_every(expiry: Duration) -> Duration {
    (expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(300))
}

/// Whether `record` is of an agent disconnected since before `cutoff`.
fn expired(record: &AgentRecord, cutoff: SystemTime) -> bool {
    let last_seen = record
        .last_seen
        .as_ref()
        .map_or(SystemTime::UNIX_EPOCH, |t| {
            SystemTime::UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32)
        });
    !record.connected && last_seen < cutoff
}

impl Registry {
    /// Deletes the expired records, within the leader's `term`; returns how many.
    pub async fn expire(&self, now: SystemTime, term: &Term) -> Result<usize, StoreError> {
        let Some(cutoff) = now.checked_sub(self.expiry) else {
            return Ok(0);
        };
        let (kvs, _) = self.store.list(&self.keys.agents_prefix()).await?;
        let mut stale = Vec::new();
        for kv in kvs {
            let Ok(record) = keys::decode::<AgentRecord>(&kv.key, &kv.value) else {
                continue;
            };
            let id = record.node.as_ref().map(|n| n.id.as_str()).unwrap_or("");
            // An agent whose stream this replica holds again is not stale, whatever the store
            // says until the next flush.
            if !expired(&record, cutoff) || self.lock().local.contains_key(id) {
                continue;
            }
            stale.push((kv.key, kv.mod_revision));
            if stale.len() == MAX_PER_SWEEP {
                break;
            }
        }
        let mut deleted = 0;
        for chunk in stale.chunks(MAX_TXN_OPS) {
            let txn = Txn {
                compares: chunk
                    .iter()
                    .map(|(key, revision)| Compare::ModRevision {
                        key: key.clone(),
                        revision: *revision,
                    })
                    .chain([term.fence()])
                    .collect(),
                ops: chunk
                    .iter()
                    .map(|(key, _)| Op::Delete { key: key.clone() })
                    .collect(),
            };
            match self.store.txn(txn).await? {
                TxnOutcome::Committed(_) => deleted += chunk.len(),
                // One of them was written meanwhile: the rest wait for the next sweep, one by
                // one, so a returning agent does not keep others in the registry.
                TxnOutcome::Conflict(_) => {
                    for (key, revision) in chunk {
                        let one = Txn {
                            compares: vec![
                                Compare::ModRevision {
                                    key: key.clone(),
                                    revision: *revision,
                                },
                                term.fence(),
                            ],
                            ops: vec![Op::Delete { key: key.clone() }],
                        };
                        if let TxnOutcome::Committed(_) = self.store.txn(one).await? {
                            deleted += 1;
                        }
                    }
                }
            }
        }
        if deleted > 0 {
            tracing::info!(
                deleted,
                expiry = ?self.expiry,
                "forgot agents disconnected for longer than the expiry"
            );
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use portico_api::pb::Node;

    use super::*;
    use crate::registry::timestamp;

    fn record(connected: bool, replica: &str, seen: SystemTime) -> AgentRecord {
        AgentRecord {
            node: Some(Node {
                id: "edge-1".into(),
                ..Default::default()
            }),
            connected,
            replica: replica.into(),
            last_seen: Some(timestamp(seen)),
            ..Default::default()
        }
    }

    #[test]
    fn only_long_disconnected_records_expire_whichever_replica_wrote_them() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100_000);
        let cutoff = now - Duration::from_secs(3600);
        let old = now - Duration::from_secs(7200);
        assert!(expired(&record(false, "cp-1", old), cutoff));
        assert!(expired(&record(false, "cp-2", old), cutoff));
        assert!(!expired(&record(false, "cp-1", now), cutoff));
        assert!(!expired(&record(true, "cp-1", old), cutoff));
    }

    #[test]
    fn sweeps_follow_the_expiry_within_bounds() {
        assert_eq!(sweep_every(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(
            sweep_every(Duration::from_secs(60)),
            Duration::from_secs(15)
        );
        assert_eq!(
            sweep_every(Duration::from_secs(24 * 3600)),
            Duration::from_secs(300)
        );
    }
}
