//! Usage rollups: the traffic agents report, kept in the store by the minute for
//! [`MINUTES_KEPT`] and by the hour for [`HOURS_KEPT`], and read back for `portico usage`.
//!
//! Each replica adds the usage rows of its agents' reports (with the agent's region) to the
//! current minute in memory and writes each minute it changed as one key of its own
//! (`usage/minute/<hour>/<minute>/<replica>`, at most [`MAX_ROLLUP_ROWS`] rows, the rest folded
//! into rows without names) every [`FLUSH_EVERY`], so a minute costs each replica a few
//! writes, whatever the fleet's size. An hour's rollup (`usage/hour/<hour>`) is made from the
//! minutes of every replica once the hour is over by [`ROLL_UP_AFTER`], by the leader (the
//! write creates the key only if it does not exist and the leader's term lasts, so a leader
//! elected while its predecessor's write is in flight cannot write the hour twice). Rollups
//! past their retention are deleted by the leader.
//!
//! **Write bound:** per replica, one put per [`FLUSH_EVERY`] (the minutes changed since the
//! last flush, usually one); for the leader also one hour rollup per hour at most, and one
//! delete transaction per [`PRUNE_EVERY`]; values are at most [`MAX_ROLLUP_ROWS`] rows (about 100 KB).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use portico_api::budget::unix_ms;
use portico_api::pb::{UsagePoint, UsageRollup, UsageRow, UsageStats};
use portico_api::usage::{Rows, merge, row_key};
use tokio_util::sync::CancellationToken;

use crate::election::Leadership;
use crate::keys::{self, Keys};
use crate::metered::MeteredStore;
use crate::metrics::USAGE_WRITES;
use crate::store::{Compare, Op, Store, StoreError, Txn};

/// How often changed minutes are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);
/// How long after an hour ends its rollup is made (every replica has written its minutes).
pub const ROLL_UP_AFTER: Duration = Duration::from_secs(120);
/// How often rollups past their retention are deleted.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How long minute rollups are kept.
pub const MINUTES_KEPT: Duration = Duration::from_secs(24 * 3600);
/// How long hour rollups are kept.
pub const HOURS_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most rows a rollup holds.
pub const MAX_ROLLUP_ROWS: usize = 1000;
/// The longest `since` a query may ask for.
pub const MAX_SINCE: Duration = HOURS_KEPT;
/// The most steps of time one usage query answers.
pub const MAX_STEPS: u64 = 1_500;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// One minute of this replica's agents' usage.
#[derive(Default)]
struct Minute {
    rows: Rows,
    /// Changed since it was last written.
    dirty: bool,
}

#[derive(Default)]
struct Inner {
    /// By minute start.
    minutes: BTreeMap<i64, Minute>,
    /// The last hour rolled up (or found rolled up).
    rolled_up: i64,
}

/// This replica's usage rollups.
pub struct UsageRollups {
    store: MeteredStore,
    keys: Keys,
    replica: String,
    inner: Mutex<Inner>,
}

/// What a query selects.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this consumer ("-": requests without one).
    pub consumer: Option<String>,
    /// Only this route.
    pub route: Option<String>,
    /// Only agents of this region.
    pub region: Option<String>,
}

impl Filter {
    fn keeps(&self, row: &UsageRow) -> bool {
        let consumer = |c: &str| match c {
            "-" => row.consumer.is_empty(),
            c => row.consumer == c,
        };
        self.consumer.as_deref().is_none_or(consumer)
            && self.route.as_deref().is_none_or(|r| row.route == r)
            && self.region.as_deref().is_none_or(|r| row.region == r)
    }
}

impl UsageRollups {
    /// Rollups written through `store` as `replica`.
    pub fn new(store: MeteredStore, keys: Keys, replica: String) -> Self {
        UsageRollups {
            store,
            keys,
            replica,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the usage of a report received at `at` from an agent of `region`: its rows, and
    /// what it left out of them.
    pub fn report(
        &self,
        region: &str,
        rows: Vec<UsageRow>,
        other: Option<UsageStats>,
        at: SystemTime,
    ) {
        let other = other.filter(|o| o.requests > 0).map(|stats| UsageRow {
            stats: Some(stats),
            ..Default::default()
        });
        if rows.is_empty() && other.is_none() {
            return;
        }
        let minute = unix_ms(at).div_euclid(MINUTE_MS) * MINUTE_MS;
        let mut inner = self.lock();
        let m = inner.minutes.entry(minute).or_default();
        for mut row in rows.into_iter().chain(other) {
            row.region = region.to_string();
            m.rows.add(&row);
        }
        m.dirty = true;
    }

    /// Writes changed minutes every [`FLUSH_EVERY`], makes hour rollups and deletes old ones,
    /// until `cancel`; then writes changed minutes once more.
    pub async fn run(&self, leadership: &Leadership, cancel: CancellationToken) {
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = flush.tick() => {
                    let now = unix_ms(SystemTime::now());
                    if let Err(e) = self.flush(now).await {
                        tracing::warn!(error = %e, "writing usage rollups failed; retrying");
                    }
                    let Some(term) = leadership.term() else { continue };
                    if let Some(Err(e)) = term.run(self.roll_up(now, &[term.fence()])).await {
                        tracing::warn!(error = %e, "rolling up an hour of usage failed; retrying");
                    }
                }
                _ = prune.tick() => {
                    let Some(term) = leadership.term() else { continue };
                    let now = unix_ms(SystemTime::now());
                    if let Some(Err(e)) = term.run(self.prune(now, &[term.fence()])).await {
                        tracing::warn!(error = %e, "deleting old usage rollups failed");
                    }
                }
            }
        }
        if let Err(e) = self.flush(unix_ms(SystemTime::now())).await {
            tracing::warn!(error = %e, "writing usage rollups at shutdown failed");
        }
    }

    /// Writes every changed minute; forgets minutes over for a while and written.
    async fn flush(&self, now: i64) -> Result<(), StoreError> {
        let changed: Vec<(i64, Rows)> = {
            let mut inner = self.lock();
            inner
                .minutes
                .retain(|start, m| m.dirty || *start + 2 * MINUTE_MS > now);
            inner
                .minutes
                .iter_mut()
                .filter(|(_, m)| m.dirty)
                .map(|(start, m)| {
                    m.dirty = false;
                    (*start, m.rows.clone())
                })
                .collect()
        };
        for (i, (start, rows)) in changed.iter().enumerate() {
            let rollup = UsageRollup {
                start_ms: *start,
                seconds: 60,
                rows: rows.clone().bounded(MAX_ROLLUP_ROWS),
            };
            metrics::counter!(USAGE_WRITES).increment(1);
            let written = self
                .store
                .txn(Txn {
                    compares: Vec::new(),
                    ops: vec![Op::Put {
                        key: self.keys.usage_minute(*start, &self.replica),
                        value: keys::encode(&rollup),
                        lease: None,
                    }],
                })
                .await;
            if let Err(e) = written {
                let mut inner = self.lock();
                for (start, _) in &changed[i..] {
                    if let Some(m) = inner.minutes.get_mut(start) {
                        m.dirty = true;
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Makes the rollup of every hour that ended [`ROLL_UP_AFTER`] ago or more and whose
    /// minutes are all still kept, unless it exists: a replica that was down when an hour
    /// ended (or the only replica, restarted) still rolls it up before its minutes are pruned.
    async fn roll_up(&self, now: i64, fence: &[Compare]) -> Result<(), StoreError> {
        let last = (now - ROLL_UP_AFTER.as_millis() as i64).div_euclid(HOUR_MS) * HOUR_MS - HOUR_MS;
        let oldest_whole =
            (now - MINUTES_KEPT.as_millis() as i64 + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS;
        let mut hour = oldest_whole.max(self.lock().rolled_up + HOUR_MS);
        while hour <= last {
            self.roll_up_hour(hour, fence).await?;
            self.lock().rolled_up = hour;
            hour += HOUR_MS;
        }
        Ok(())
    }

    /// Makes the rollup of the hour starting at `hour` from every replica's minutes, unless it
    /// exists (or there was no traffic).
    async fn roll_up_hour(&self, hour: i64, fence: &[Compare]) -> Result<(), StoreError> {
        let key = self.keys.usage_hour(hour);
        if self.store.get(&key).await?.is_some() {
            return Ok(());
        }
        let mut rows = Rows::default();
        for rollup in self.minutes_of_hour(hour).await? {
            for row in &rollup.rows {
                rows.add(row);
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let rollup = UsageRollup {
            start_ms: hour,
            seconds: 3600,
            rows: rows.bounded(MAX_ROLLUP_ROWS),
        };
        metrics::counter!(USAGE_WRITES).increment(1);
        // Created only if no replica did first.
        self.store
            .txn(Txn {
                compares: [Compare::ModRevision {
                    key: key.clone(),
                    revision: 0,
                }]
                .into_iter()
                .chain(fence.iter().cloned())
                .collect(),
                ops: vec![Op::Put {
                    key,
                    value: keys::encode(&rollup),
                    lease: None,
                }],
            })
            .await?;
        Ok(())
    }

    /// Every replica's minute rollups of the hour starting at `hour`.
    async fn minutes_of_hour(&self, hour: i64) -> Result<Vec<UsageRollup>, StoreError> {
        let (kvs, _) = self
            .store
            .list(&self.keys.usage_minutes_of_hour(hour))
            .await?;
        Ok(kvs
            .into_iter()
            .filter_map(|kv| match keys::decode::<UsageRollup>(&kv.key, &kv.value) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an undecodable usage rollup");
                    None
                }
            })
            .collect())
    }

    /// Deletes minute rollups older than [`MINUTES_KEPT`] and hour rollups older than
    /// [`HOURS_KEPT`].
    async fn prune(&self, now: i64, fence: &[Compare]) -> Result<(), StoreError> {
        let (minutes, _) = self
            .store
            .list_keys(&self.keys.usage_minutes_prefix())
            .await?;
        let (hours, _) = self
            .store
            .list_keys(&self.keys.usage_hours_prefix())
            .await?;
        let minute_cut = now - MINUTES_KEPT.as_millis() as i64;
        let hour_cut = now - HOURS_KEPT.as_millis() as i64;
        let old: Vec<String> = minutes
            .into_iter()
            .filter(|kv| {
                self.keys
                    .parse_usage_minute(&kv.key)
                    .is_none_or(|(start, _)| start + MINUTE_MS < minute_cut)
            })
            .chain(hours.into_iter().filter(|kv| {
                self.keys
                    .parse_usage_hour(&kv.key)
                    .is_none_or(|start| start + HOUR_MS < hour_cut)
            }))
            .map(|kv| kv.key)
            .collect();
        for chunk in old.chunks(crate::store::MAX_TXN_OPS) {
            metrics::counter!(USAGE_WRITES).increment(1);
            self.store
                .txn(Txn {
                    compares: fence.to_vec(),
                    ops: chunk
                        .iter()
                        .map(|key| Op::Delete { key: key.clone() })
                        .collect(),
                })
                .await?;
        }
        Ok(())
    }

    /// The usage of the last `since` that `filter` keeps, summed by row: from the hour
    /// rollups of whole hours in the range that have one, from the minute rollups otherwise
    /// (this replica's own minutes from memory, fresher than the store). With `step`, also
    /// summed by step of time (minute rollups are read then for steps under an hour, so the
    /// steps are not lumped into hours). The range covered is `[from, to)` in milliseconds.
    pub async fn query(
        &self,
        since: Duration,
        step: Option<Duration>,
        filter: &Filter,
        now: SystemTime,
    ) -> Result<Answer, StoreError> {
        let to = unix_ms(now);
        let since = since.min(MAX_SINCE);
        let from = (to - since.as_millis() as i64).div_euclid(MINUTE_MS) * MINUTE_MS;
        let step_ms = step.map(|s| {
            let unit = if since > MINUTES_KEPT {
                HOUR_MS
            } else {
                MINUTE_MS
            };
            ((s.as_millis() as u64).max(1).div_ceil(unit as u64) as i64) * unit
        });
        let mut total = Sums::default();
        let mut series: BTreeMap<i64, Sums> = BTreeMap::new();
        let mut add = |start: i64, row: &UsageRow| {
            if !filter.keeps(row) {
                return;
            }
            total.add(row);
            if let Some(step) = step_ms {
                let bucket = from + (start - from).max(0) / step * step;
                series.entry(bucket).or_default().add(row);
            }
        };
        let mine: BTreeMap<i64, Rows> = self
            .lock()
            .minutes
            .range(from..)
            .map(|(start, m)| (*start, m.rows.clone()))
            .collect();
        let first_hour = from.div_euclid(HOUR_MS) * HOUR_MS;
        let mut hour = first_hour;
        while hour < to {
            let whole = hour >= from
                && hour + HOUR_MS <= to
                && step_ms.is_none_or(|s| s >= HOUR_MS || since > MINUTES_KEPT);
            let rolled = if whole {
                self.store.get(&self.keys.usage_hour(hour)).await?
            } else {
                None
            };
            match rolled.map(|kv| keys::decode::<UsageRollup>(&kv.key, &kv.value)) {
                Some(Ok(rollup)) => rollup.rows.iter().for_each(|r| add(hour, r)),
                _ => {
                    let (kvs, _) = self
                        .store
                        .list(&self.keys.usage_minutes_of_hour(hour))
                        .await?;
                    for kv in kvs {
                        let Some((start, replica)) = self.keys.parse_usage_minute(&kv.key) else {
                            continue;
                        };
                        if start < from || start >= to {
                            continue;
                        }
                        if replica == self.replica && mine.contains_key(&start) {
                            continue;
                        }
                        match keys::decode::<UsageRollup>(&kv.key, &kv.value) {
                            Ok(r) => r.rows.iter().for_each(|row| add(start, row)),
                            Err(e) => {
                                tracing::warn!(error = %e, "skipping an undecodable usage rollup")
                            }
                        }
                    }
                    for (start, rows) in mine.range(hour..hour + HOUR_MS) {
                        rows.clone()
                            .bounded(usize::MAX)
                            .iter()
                            .for_each(|row| add(*start, row));
                    }
                }
            }
            hour += HOUR_MS;
        }
        Ok(Answer {
            rows: total.rows(),
            series: series
                .into_iter()
                .map(|(start_ms, sums)| UsagePoint {
                    start_ms,
                    rows: sums.rows(),
                })
                .collect(),
            from,
            to,
        })
    }
}

/// What [`UsageRollups::query`] found.
#[derive(Debug, Default)]
pub struct Answer {
    /// Summed by row, most requests first.
    pub rows: Vec<UsageRow>,
    /// Summed by row within each step, oldest first (empty without a step).
    pub series: Vec<UsagePoint>,
    /// The range covered, `[from, to)` in milliseconds since the Unix epoch.
    pub from: i64,
    pub to: i64,
}

/// Rows summed by their names.
#[derive(Default)]
struct Sums(BTreeMap<portico_api::usage::RowKey, UsageRow>);

impl Sums {
    fn add(&mut self, row: &UsageRow) {
        let entry = self.0.entry(row_key(row)).or_insert_with(|| UsageRow {
            stats: Some(UsageStats::default()),
            ..row.clone()
        });
        if let (Some(sum), Some(s)) = (entry.stats.as_mut(), row.stats.as_ref()) {
            merge(sum, s);
        }
    }

    /// The sums, most requests first.
    fn rows(self) -> Vec<UsageRow> {
        let mut rows: Vec<UsageRow> = self.0.into_values().collect();
        rows.sort_by(|a, b| {
            let n = |r: &UsageRow| r.stats.as_ref().map_or(0, |s| s.requests);
            n(b).cmp(&n(a))
        });
        rows
    }
}

/// Requests per second over what a report's usage covers.
pub fn requests_per_second(rows: &[UsageRow], other: Option<&UsageStats>, millis: u64) -> f64 {
    if millis == 0 {
        return 0.0;
    }
    let requests: u64 = rows
        .iter()
        .filter_map(|r| r.stats.as_ref())
        .chain(other)
        .map(|s| s.requests)
        .sum();
    requests as f64 * 1000.0 / millis as f64
}

/// The share of a report's requests answered 5xx (0 without requests).
pub fn error_rate(rows: &[UsageRow], other: Option<&UsageStats>) -> f64 {
    let count = |r: &UsageRow| r.stats.as_ref().map_or(0, |s| s.requests);
    let errors: u64 = rows
        .iter()
        .filter(|r| r.status_class == "5xx")
        .map(count)
        .sum();
    let requests: u64 = rows.iter().map(count).sum::<u64>() + other.map_or(0, |s| s.requests);
    if requests == 0 {
        0.0
    } else {
        errors as f64 / requests as f64
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::store::embedded::EmbeddedStore;

    /// An hour start (2023-11-14 22:00 UTC).
    const H: i64 = 1_699_999_200_000;

    fn at(ms: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    }

    fn row(route: &str, consumer: &str, class: &str, requests: u64) -> UsageRow {
        UsageRow {
            listener: "edge".into(),
            route: route.into(),
            cluster: "backend".into(),
            consumer: consumer.into(),
            status_class: class.into(),
            stats: Some(UsageStats {
                requests,
                ..Default::default()
            }),
            region: String::new(),
        }
    }

    fn requests(rows: &[UsageRow]) -> u64 {
        rows.iter()
            .filter_map(|r| r.stats.as_ref())
            .map(|s| s.requests)
            .sum()
    }

    /// Replicas `names` of one embedded store, and the store.
    fn replicas(dir: &tempfile::TempDir, names: &[&str]) -> (Vec<UsageRollups>, MeteredStore) {
        let store = MeteredStore::new(Arc::new(EmbeddedStore::open(dir.path()).expect("open")));
        let rollups = names
            .iter()
            .map(|n| UsageRollups::new(store.clone(), Keys::new("/t"), n.to_string()))
            .collect();
        (rollups, store)
    }

    async fn hour_rollup(store: &MeteredStore, hour: i64) -> Option<(UsageRollup, i64)> {
        let kv = store
            .get(&Keys::new("/t").usage_hour(hour))
            .await
            .unwrap()?;
        let rollup = keys::decode::<UsageRollup>(&kv.key, &kv.value).unwrap();
        Some((rollup, kv.mod_revision))
    }

    #[tokio::test]
    async fn minutes_of_every_replica_roll_up_into_one_hour_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let (r, store) = replicas(&dir, &["cp-1", "cp-2", "cp-3"]);
        r[0].report(
            "eu",
            vec![row("api", "ann", "2xx", 10)],
            None,
            at(H + 300_000),
        );
        let other = UsageStats {
            requests: 3,
            ..Default::default()
        };
        r[1].report(
            "us",
            vec![row("api", "ann", "2xx", 5), row("api", "", "4xx", 2)],
            Some(other),
            at(H + 1_800_000),
        );
        r[0].flush(H + 360_000).await.unwrap();
        r[1].flush(H + 1_860_000).await.unwrap();
        let (minutes, _) = store
            .list(&Keys::new("/t").usage_minutes_of_hour(H))
            .await
            .unwrap();
        assert_eq!(minutes.len(), 2, "one minute key per replica");

        // Not before every replica has had the time to write its last minutes.
        r[0].roll_up(H + HOUR_MS + 60_000, &[]).await.unwrap();
        assert!(hour_rollup(&store, H).await.is_none());

        // A replica that was not running when the hour ended rolls it up later (within the
        // 24 hours its minutes are kept).
        r[2].roll_up(H + 5 * HOUR_MS, &[]).await.unwrap();
        let (rollup, revision) = hour_rollup(&store, H).await.expect("the hour's rollup");
        assert_eq!((rollup.start_ms, rollup.seconds), (H, 3600));
        assert_eq!(requests(&rollup.rows), 20);
        // The others find it made and leave it as it is.
        r[0].roll_up(H + HOUR_MS + 180_000, &[]).await.unwrap();
        r[1].roll_up(H + 5 * HOUR_MS, &[]).await.unwrap();
        assert_eq!(hour_rollup(&store, H).await.unwrap().1, revision);

        // A replica with nothing in memory answers from the store, each request counted once,
        // with filters.
        let fresh = &r[2];
        let query = |filter: Filter| async move {
            let answer = fresh
                .query(
                    Duration::from_secs(2 * 3600),
                    None,
                    &filter,
                    at(H + 2 * HOUR_MS),
                )
                .await
                .unwrap();
            assert_eq!((answer.from, answer.to), (H, H + 2 * HOUR_MS));
            assert!(answer.series.is_empty(), "no step, no series");
            answer.rows
        };
        let all = query(Filter::default()).await;
        assert_eq!(requests(&all), 20);
        // By 10-minute steps: the minutes of the two replicas (5 and 30 minutes in), not the
        // hour's rollup, which would lump them together.
        let by_step = fresh
            .query(
                Duration::from_secs(2 * 3600),
                Some(Duration::from_secs(570)),
                &Filter::default(),
                at(H + 2 * HOUR_MS),
            )
            .await
            .unwrap();
        let steps: Vec<(i64, u64)> = by_step
            .series
            .iter()
            .map(|p| (p.start_ms - H, requests(&p.rows)))
            .collect();
        assert_eq!(
            steps,
            [(0, 10), (1_800_000, 10)],
            "steps rounded up to 10 min"
        );
        let ann = query(Filter {
            consumer: Some("ann".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(requests(&ann), 15);
        let eu = query(Filter {
            region: Some("eu".into()),
            ..Default::default()
        })
        .await;
        assert_eq!((eu.len(), requests(&eu)), (1, 10));
        let anonymous = query(Filter {
            consumer: Some("-".into()),
            route: Some("api".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(
            requests(&anonymous),
            2,
            "the row left out of names has no route"
        );
    }

    #[tokio::test]
    async fn minutes_go_after_a_day_hours_after_30_days_and_pruning_twice_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let (r, store) = replicas(&dir, &["cp-1", "cp-2"]);
        let keys = Keys::new("/t");
        r[0].report(
            "eu",
            vec![row("api", "ann", "2xx", 7)],
            None,
            at(H + 300_000),
        );
        r[0].flush(H + 360_000).await.unwrap();
        r[0].roll_up(H + HOUR_MS + 180_000, &[]).await.unwrap();
        let count = |prefix: String| {
            let store = store.clone();
            async move { store.list_keys(&prefix).await.unwrap().0.len() }
        };
        assert_eq!(count(keys.usage_minutes_prefix()).await, 1);
        assert_eq!(count(keys.usage_hours_prefix()).await, 1);

        // Within the day nothing goes.
        r[0].prune(H + 23 * HOUR_MS, &[]).await.unwrap();
        assert_eq!(count(keys.usage_minutes_prefix()).await, 1);

        // After a day the minute goes and the hour stays; both replicas prune at once, and
        // again: the same outcome, no error.
        let later = H + 25 * HOUR_MS;
        let (a, b) = tokio::join!(r[0].prune(later, &[]), r[1].prune(later, &[]));
        a.unwrap();
        b.unwrap();
        r[1].prune(later, &[]).await.unwrap();
        assert_eq!(count(keys.usage_minutes_prefix()).await, 0);
        assert_eq!(count(keys.usage_hours_prefix()).await, 1);
        let answer = r[1]
            .query(
                Duration::from_secs(26 * 3600),
                None,
                &Filter::default(),
                at(later),
            )
            .await
            .unwrap();
        assert_eq!(requests(&answer.rows), 7, "the hour still answers");

        // After 30 days the hour goes too.
        let month = H + 30 * 24 * HOUR_MS + 2 * HOUR_MS;
        r[0].prune(month, &[]).await.unwrap();
        r[0].prune(month, &[]).await.unwrap();
        assert_eq!(count(keys.usage_hours_prefix()).await, 0);
    }
}
