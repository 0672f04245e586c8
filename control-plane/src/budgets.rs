//! Fleet budgets: the control plane's side of quotas and FLEET rate limits.
//!
//! Agents do not count first and report later; they spend budget the control plane granted
//! them before (see `portico_proxy`'s `budgets`). Each (policy, key, window) has one record in
//! the store (`budgets/…`, [`BudgetRecord`]): the budget granted to agents so far and the
//! counts they reported. A replica grants from it only through a compare-and-write on the
//! record's mod revision, so however many replicas grant at once, what is granted never
//! exceeds the window's budget, and agents admit only what they were granted: the fleet stays
//! within the limit while its agents reach a control plane. The records are not on a lease:
//! they survive restarts of every part; a new window starts a new record; the records of
//! windows that ended are deleted by the leader.
//!
//! Budget requests and report counts from this replica's streams are queued ([`Budgets::demand`])
//! and served by one task in rounds: a round groups the queue by record, grants each record's
//! askers from what is left of its budget (what each asked for while there is enough, else an
//! equal share of the rest, at least one request each while any is left), writes the records
//! (at most [`MAX_RECORDS_PER_ROUND`] per round, [`CONCURRENT_WRITES`] at a time) and sends
//! each asking stream its grants, or that the budget is exhausted. Counts without asks are
//! written at most every [`COUNTS_EVERY`]. **Write bound:** a record is written once per round
//! that grants from it, and rounds run as asks come; an agent asks for about a second of its
//! traffic at a time, so a key busy on n agents costs at most n writes per second per replica,
//! and at least one per window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use portico_api::Kind;
use portico_api::budget::{Spec, Window, key_consumer, unix_ms};
use portico_api::pb::{
    BudgetGrant, BudgetGrants, BudgetRecord, BudgetUse, ControlMessage, control_message,
    resource::Spec as ResourceSpec,
};
use prost::Message;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::election::Leadership;
use crate::keys::{self, Keys};
use crate::metered::MeteredStore;
use crate::metrics::{BUDGET_GRANTED, BUDGET_WRITES};
use crate::registry::StreamId;
use crate::snapshot::Snapshot;
use crate::store::{Compare, Op, Revision, Store, StoreError, Txn, TxnOutcome};
use crate::views::Views;

/// Most records written per round; the rest wait for the next round.
pub const MAX_RECORDS_PER_ROUND: usize = 64;
/// Record writes in flight at once.
pub const CONCURRENT_WRITES: usize = 8;
/// How often counts that come without an ask are written.
pub const COUNTS_EVERY: Duration = Duration::from_secs(1);
/// How often the records of ended windows are deleted.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How far a window's start may be ahead of this replica's clock.
const CLOCK_SKEW_MS: i64 = 5_000;
/// The pause after a round that could not write every record.
const RETRY_AFTER: Duration = Duration::from_millis(100);
/// Attempts of one record's compare-and-write within a round.
const ATTEMPTS: usize = 3;
/// Grant messages queued per stream; a stream that does not take them loses the newest.
const STREAM_QUEUE: usize = 64;

/// One record's business in a round.
#[derive(Default)]
struct Group {
    admitted: u64,
    refused: u64,
    /// The streams asking, with what they asked for.
    askers: Vec<(StreamId, u64)>,
}

/// The record a group is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RecordId {
    policy: String,
    key: String,
    window_start: i64,
}

#[derive(Default)]
struct Inner {
    /// Asks and counts waiting for a round.
    queue: HashMap<RecordId, Group>,
    /// Streams to send grants to.
    streams: HashMap<StreamId, mpsc::Sender<Bytes>>,
    /// The records as this replica last read or wrote them, with their mod revisions.
    records: HashMap<String, (BudgetRecord, Revision)>,
}

/// This replica's fleet budget service.
pub struct Budgets {
    store: MeteredStore,
    keys: Keys,
    views: Arc<Views>,
    inner: Mutex<Inner>,
    wake: Notify,
}

/// How a round ended for one record.
enum Outcome {
    /// Written (or nothing to write): grants for the askers.
    Done(Vec<(StreamId, BudgetGrant)>),
    /// Not written: the group goes back in the queue.
    Retry(Group),
}

impl Budgets {
    /// The service, granting from budgets the policies of `views` define.
    pub fn new(store: MeteredStore, keys: Keys, views: Arc<Views>) -> Self {
        Budgets {
            store,
            keys,
            views,
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A stream that may ask: the receiver of the encoded `BudgetGrants` messages for it.
    pub fn register(&self, stream: StreamId) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        self.lock().streams.insert(stream, tx);
        rx
    }

    /// The stream closed.
    pub fn unregister(&self, stream: StreamId) {
        self.lock().streams.remove(&stream);
    }

    /// Counts and asks from `stream` (a report or a budget request).
    pub fn demand(&self, stream: StreamId, uses: Vec<BudgetUse>) {
        if uses.is_empty() {
            return;
        }
        let mut ask = false;
        {
            let mut inner = self.lock();
            for u in uses {
                let group = inner
                    .queue
                    .entry(RecordId {
                        policy: u.policy,
                        key: u.key,
                        window_start: u.window_start_ms,
                    })
                    .or_default();
                group.admitted += u.admitted;
                group.refused += u.refused;
                if u.wanted > 0 {
                    group.askers.push((stream, u.wanted));
                    ask = true;
                }
            }
        }
        if ask {
            self.wake.notify_one();
        }
    }

    /// Serves rounds until `cancel`, and deletes the records of ended windows every
    /// [`PRUNE_EVERY`].
    pub async fn run(self: Arc<Self>, leadership: Arc<Leadership>, cancel: CancellationToken) {
        let mut counts = tokio::time::interval(COUNTS_EVERY);
        counts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let counts_too = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => false,
                _ = counts.tick() => true,
                _ = prune.tick() => {
                    if let Some(term) = leadership.term() {
                        let now = unix_ms(SystemTime::now());
                        if let Some(Err(e)) = term.run(self.prune(now, &[term.fence()])).await {
                            tracing::warn!(error = %e, "deleting ended fleet budget records failed");
                        }
                    }
                    continue;
                }
            };
            if self.round(counts_too).await {
                // The store refused or failed: give it a moment before the next round.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_AFTER) => {}
                }
            }
        }
    }

    /// One round: the groups with askers (and with `counts_too`, those with counts only).
    /// True when some record could not be written (and is queued again).
    async fn round(&self, counts_too: bool) -> bool {
        let groups: Vec<(RecordId, Group)> = {
            let mut inner = self.lock();
            let ids: Vec<RecordId> = inner
                .queue
                .iter()
                .filter(|(_, g)| counts_too || !g.askers.is_empty())
                .map(|(id, _)| id.clone())
                .take(MAX_RECORDS_PER_ROUND)
                .collect();
            ids.into_iter()
                .filter_map(|id| inner.queue.remove_entry(&id))
                .collect()
        };
        if groups.is_empty() {
            return false;
        }
        let snapshot = self.views.current();
        let now = unix_ms(SystemTime::now());
        let outcomes: Vec<(RecordId, Outcome)> = futures::stream::iter(groups)
            .map(|(id, group)| {
                let snapshot = &snapshot;
                async move {
                    let outcome = self.serve(&id, group, snapshot, now).await;
                    (id, outcome)
                }
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        let mut messages: HashMap<StreamId, Vec<BudgetGrant>> = HashMap::new();
        let mut again = false;
        let mut retry = false;
        {
            let mut inner = self.lock();
            for (id, outcome) in outcomes {
                match outcome {
                    Outcome::Done(grants) => {
                        for (stream, grant) in grants {
                            messages.entry(stream).or_default().push(grant);
                        }
                    }
                    Outcome::Retry(group) => {
                        retry = true;
                        let queued = inner.queue.entry(id).or_default();
                        queued.admitted += group.admitted;
                        queued.refused += group.refused;
                        queued.askers.extend(group.askers);
                    }
                }
            }
            for (stream, grants) in messages {
                let Some(tx) = inner.streams.get(&stream) else {
                    continue;
                };
                let message = ControlMessage {
                    message: Some(control_message::Message::Budgets(BudgetGrants { grants })),
                };
                if tx.try_send(message.encode_to_vec().into()).is_err() {
                    tracing::debug!(stream, "a stream's budget grants are not being taken");
                }
            }
            if inner.queue.values().any(|g| !g.askers.is_empty()) {
                again = true;
            }
        }
        if again {
            self.wake.notify_one();
        }
        retry
    }

    /// Grants from and writes one record.
    async fn serve(&self, id: &RecordId, group: Group, snapshot: &Snapshot, now: i64) -> Outcome {
        let Some((limit, window)) = budget_of(snapshot, id, now) else {
            // A policy this replica does not know (yet), or a window that is not one of its
            // windows: nothing to grant, nothing to count.
            tracing::debug!(policy = %id.policy, key = %id.key, "budget of no known fleet policy");
            return Outcome::Done(Vec::new());
        };
        let key = self.keys.budget(&id.policy, id.window_start, &id.key);
        for _ in 0..ATTEMPTS {
            let (record, revision) = match self.record(&key, window).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(key, error = %e, "reading a fleet budget failed");
                    return Outcome::Retry(group);
                }
            };
            let (next, grants) = grant(record, limit, &group);
            let txn = Txn {
                compares: vec![Compare::ModRevision {
                    key: key.clone(),
                    revision,
                }],
                ops: vec![Op::Put {
                    key: key.clone(),
                    value: keys::encode(&next),
                    lease: None,
                }],
            };
            metrics::counter!(BUDGET_WRITES).increment(1);
            match self.store.txn(txn).await {
                Ok(TxnOutcome::Committed(rev)) => {
                    let granted: u64 = grants.iter().map(|(_, g)| g.granted).sum();
                    metrics::counter!(BUDGET_GRANTED).increment(granted);
                    self.lock().records.insert(key, (next, rev));
                    let grants = group
                        .askers
                        .iter()
                        .zip(grants)
                        .map(|((stream, _), (_, g))| {
                            (
                                *stream,
                                BudgetGrant {
                                    policy: id.policy.clone(),
                                    key: id.key.clone(),
                                    window_start_ms: window.start_ms,
                                    window_end_ms: window.end_ms,
                                    ..g
                                },
                            )
                        })
                        .collect();
                    return Outcome::Done(grants);
                }
                Ok(TxnOutcome::Conflict(_)) => {
                    // Another replica wrote it: read it again.
                    self.lock().records.remove(&key);
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "writing a fleet budget failed");
                    return Outcome::Retry(group);
                }
            }
        }
        Outcome::Retry(group)
    }

    /// The record under `key` and its mod revision (0 when there is none, or when it belongs
    /// to an earlier use of the key), from the cache or the store.
    async fn record(
        &self,
        key: &str,
        window: Window,
    ) -> Result<(BudgetRecord, Revision), StoreError> {
        if let Some(cached) = self.lock().records.get(key).cloned() {
            return Ok(cached);
        }
        let fresh = BudgetRecord {
            window_end_ms: window.end_ms,
            ..Default::default()
        };
        let Some(kv) = self.store.get(key).await? else {
            return Ok((fresh, 0));
        };
        match keys::decode::<BudgetRecord>(&kv.key, &kv.value) {
            Ok(record) => Ok((record, kv.mod_revision)),
            Err(e) => {
                // Written over by the next grant.
                tracing::warn!(error = %e, "an undecodable fleet budget record");
                Ok((fresh, kv.mod_revision))
            }
        }
    }

    /// Deletes the records of windows that ended before `now_ms` (and forgets them).
    async fn prune(&self, now_ms: i64, fence: &[Compare]) -> Result<(), StoreError> {
        let (kvs, _) = self.store.list(&self.keys.budgets_prefix()).await?;
        let ended: Vec<String> = kvs
            .into_iter()
            .filter(|kv| {
                keys::decode::<BudgetRecord>(&kv.key, &kv.value)
                    .map_or(true, |r| r.window_end_ms < now_ms)
            })
            .map(|kv| kv.key)
            .collect();
        {
            let mut inner = self.lock();
            inner.records.retain(|_, (r, _)| r.window_end_ms >= now_ms);
        }
        for chunk in ended.chunks(crate::store::MAX_TXN_OPS) {
            let ops = chunk
                .iter()
                .map(|key| Op::Delete { key: key.clone() })
                .collect();
            metrics::counter!(BUDGET_WRITES).increment(1);
            self.store
                .txn(Txn {
                    compares: fence.to_vec(),
                    ops,
                })
                .await?;
        }
        Ok(())
    }
}

/// The budget and window `id` names, by the policies and consumers of `snapshot`: `None` when
/// the policy is not a fleet budget there, or the window is not one of its windows (or long
/// over, or far ahead).
fn budget_of(snapshot: &Snapshot, id: &RecordId, now: i64) -> Option<(u64, Window)> {
    let policy = match &snapshot.get(Kind::Policy, &id.policy)?.resource.spec {
        Some(ResourceSpec::Policy(p)) => Spec::of(p)?,
        _ => return None,
    };
    let plan = key_consumer(&id.key)
        .and_then(|name| snapshot.get(Kind::Consumer, name))
        .and_then(|c| match &c.resource.spec {
            Some(ResourceSpec::Consumer(c)) if !c.plan.is_empty() => Some(c.plan.clone()),
            _ => None,
        });
    let (limit, period) = policy.limit(plan.as_deref());
    let window = period.window(id.window_start);
    (window.start_ms == id.window_start
        && window.end_ms > now
        && window.start_ms <= now + CLOCK_SKEW_MS)
        .then_some((limit, window))
}

/// The record after granting `group`'s askers from it, and each asker's grant (`granted`,
/// `exhausted`, `limit`, `remaining`): what each asked for while there is enough, else an equal
/// share of what is left (smallest asks served first, at least one each while any is left).
fn grant(
    mut record: BudgetRecord,
    limit: u64,
    group: &Group,
) -> (BudgetRecord, Vec<(StreamId, BudgetGrant)>) {
    record.limit = limit;
    record.admitted += group.admitted;
    record.refused += group.refused;
    let before = record.granted;
    let mut left = limit.saturating_sub(before);
    let mut order: Vec<usize> = (0..group.askers.len()).collect();
    order.sort_by_key(|&i| group.askers[i].1);
    let mut amounts = vec![0u64; group.askers.len()];
    for (served, &i) in order.iter().enumerate() {
        let others = (group.askers.len() - served) as u64;
        let share = left.div_ceil(others);
        let amount = group.askers[i].1.min(share).min(left);
        amounts[i] = amount;
        left -= amount;
    }
    record.granted = before + amounts.iter().sum::<u64>();
    let exhausted = record.granted >= limit;
    let grants = group
        .askers
        .iter()
        .zip(amounts)
        .map(|((stream, _), granted)| {
            (
                *stream,
                BudgetGrant {
                    granted,
                    exhausted,
                    limit,
                    remaining: limit.saturating_sub(record.granted),
                    ..Default::default()
                },
            )
        })
        .collect();
    (record, grants)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(asks: &[u64]) -> Group {
        Group {
            admitted: 3,
            refused: 1,
            askers: asks
                .iter()
                .enumerate()
                .map(|(i, w)| (i as u64, *w))
                .collect(),
        }
    }

    fn amounts(grants: &[(StreamId, BudgetGrant)]) -> Vec<u64> {
        grants.iter().map(|(_, g)| g.granted).collect()
    }

    #[test]
    fn askers_get_what_they_ask_while_there_is_enough_then_equal_shares() {
        let record = BudgetRecord {
            granted: 90,
            ..Default::default()
        };
        // Enough for everyone.
        let (next, grants) = grant(record, 200, &group(&[10, 20]));
        assert_eq!(amounts(&grants), [10, 20]);
        assert_eq!((next.granted, next.admitted, next.refused), (120, 3, 1));
        assert!(
            grants
                .iter()
                .all(|(_, g)| !g.exhausted && g.remaining == 80)
        );

        // 10 left for asks of 2, 30 and 30: the small ask whole, the rest shared.
        let (next, grants) = grant(record, 100, &group(&[30, 2, 30]));
        assert_eq!(amounts(&grants), [4, 2, 4]);
        assert_eq!(next.granted, 100);
        assert!(grants.iter().all(|(_, g)| g.exhausted && g.remaining == 0));

        // 1 left for three askers: one of them gets it.
        let (_, grants) = grant(record, 91, &group(&[5, 5, 5]));
        assert_eq!(amounts(&grants).iter().sum::<u64>(), 1);

        // Nothing left; a lowered limit grants nothing either.
        let (next, grants) = grant(record, 50, &group(&[5]));
        assert_eq!(amounts(&grants), [0]);
        assert_eq!(next.granted, 90);
        assert!(grants[0].1.exhausted);
    }

    #[test]
    fn counts_without_asks_only_add_up() {
        let (next, grants) = grant(BudgetRecord::default(), 10, &group(&[]));
        assert!(grants.is_empty());
        assert_eq!((next.granted, next.admitted), (0, 3));
    }
}
