//! Usage counters: requests, bytes and latency per listener × route × cluster × consumer ×
//! status class, with the policy rejections by reason, gathered per proxy worker and
//! collected by the agent ([`crate::Proxy::take_usage`]) for its reports.
//!
//! Each worker counts into its own table behind a mutex that only the collector ever
//! contends for; a table is keyed by the addresses of the name strings it holds (as the
//! metric handles are), so counting a request hashes five words and allocates nothing once
//! its row exists. A table holds at most [`MAX_ROWS`] rows; requests past that count in the
//! table's "other" row. A collection drains every table, merges the rows by name, and keeps
//! the `top` rows with the most requests, folding the rest into "other": its size is bounded
//! whatever the traffic.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use portico_api::pb;

use crate::metrics::{AddressHasher, status_class};

/// Rows per worker table at most.
pub const MAX_ROWS: usize = 4096;

/// Upper bounds of the latency buckets, in milliseconds; the last bucket has none.
pub use portico_api::usage::LATENCY_BOUNDS_MS;

/// Counts of some requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageStats {
    /// Requests.
    pub requests: u64,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Requests by latency bucket ([`LATENCY_BOUNDS_MS`], then one for longer).
    pub latency: [u64; 14],
    /// Requests refused by a policy, by reason code.
    pub rejections: Vec<(&'static str, u64)>,
}

impl UsageStats {
    fn add_request(&mut self, r: &Request<'_>) {
        self.requests += 1;
        self.bytes_in += r.bytes_in;
        self.bytes_out += r.bytes_out;
        let ms = r.duration.as_millis();
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|b| ms <= u128::from(*b))
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.latency[bucket] += 1;
        if let Some(reason) = r.rejection {
            self.reject(reason, 1);
        }
    }

    fn reject(&mut self, reason: &'static str, n: u64) {
        match self.rejections.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, count)) => *count += n,
            None => self.rejections.push((reason, n)),
        }
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &UsageStats) {
        self.requests += other.requests;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a += b;
        }
        for (reason, n) in &other.rejections {
            self.reject(reason, *n);
        }
    }

    /// The upper bound of the latency bucket holding quantile `q` (0–1), in milliseconds;
    /// `None` without requests or when it falls in the last, unbounded bucket.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<u64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LATENCY_BOUNDS_MS.get(i).copied();
            }
        }
        None
    }
}

impl UsageStats {
    /// The counts as a report carries them.
    pub fn to_pb(&self) -> pb::UsageStats {
        let used = self
            .latency
            .iter()
            .rposition(|n| *n > 0)
            .map_or(0, |i| i + 1);
        pb::UsageStats {
            requests: self.requests,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            latency: self.latency[..used].to_vec(),
            rejections: self
                .rejections
                .iter()
                .map(|(reason, n)| (reason.to_string(), *n))
                .collect(),
        }
    }
}

impl UsageSummary {
    /// The rows and the rest as a report carries them.
    pub fn to_pb(&self) -> (Vec<pb::UsageRow>, pb::UsageStats) {
        let rows = self
            .rows
            .iter()
            .map(|r| pb::UsageRow {
                listener: r.listener.clone(),
                route: r.route.clone(),
                cluster: r.cluster.clone(),
                consumer: r.consumer.clone(),
                status_class: r.status_class.to_string(),
                stats: Some(r.stats.to_pb()),
                region: String::new(),
            })
            .collect();
        (rows, self.other.to_pb())
    }

    /// Requests over every row and the rest.
    pub fn requests(&self) -> u64 {
        self.rows.iter().map(|r| r.stats.requests).sum::<u64>() + self.other.requests
    }
}

/// One row of a collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    /// The listener.
    pub listener: String,
    /// The route ("" when none matched).
    pub route: String,
    /// The cluster ("" when not forwarded).
    pub cluster: String,
    /// The consumer ("" when none was identified).
    pub consumer: String,
    /// "2xx", "4xx"...
    pub status_class: &'static str,
    /// The counts.
    pub stats: UsageStats,
}

/// A collection: the busiest rows and the sum of the others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageSummary {
    /// The rows with the most requests, most first.
    pub rows: Vec<UsageRow>,
    /// Everything else.
    pub other: UsageStats,
}

/// One finished request, as usage counts it.
pub(crate) struct Request<'a> {
    pub listener: &'a Arc<str>,
    pub route: Option<&'a Arc<str>>,
    pub cluster: Option<&'a Arc<str>>,
    pub consumer: Option<&'a Arc<str>>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub rejection: Option<&'static str>,
}

type RowKey = (usize, usize, usize, usize, u16);

struct Row {
    names: [Option<Arc<str>>; 4],
    status_class: &'static str,
    stats: UsageStats,
}

#[derive(Default)]
struct Table {
    rows: HashMap<RowKey, Row, BuildHasherDefault<AddressHasher>>,
    other: UsageStats,
}

/// The usage tables of every worker.
pub(crate) struct Usage {
    tables: Vec<Mutex<Table>>,
}

fn address(s: Option<&Arc<str>>) -> usize {
    s.map_or(0, |s| Arc::as_ptr(s).cast::<u8>() as usize)
}

impl Usage {
    /// Tables for `workers` workers.
    pub fn new(workers: usize) -> Usage {
        Usage {
            tables: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    /// Counts `r` in the table of `worker`.
    pub fn record(&self, worker: usize, r: &Request<'_>) {
        let Some(table) = self.tables.get(worker % self.tables.len()) else {
            return;
        };
        let class = status_class(r.status);
        let key = (
            address(Some(r.listener)),
            address(r.route),
            address(r.cluster),
            address(r.consumer),
            r.status / 100,
        );
        let mut t = table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(row) = t.rows.get_mut(&key) {
            row.stats.add_request(r);
            return;
        }
        if t.rows.len() >= MAX_ROWS {
            t.other.add_request(r);
            return;
        }
        let mut stats = UsageStats::default();
        stats.add_request(r);
        t.rows.insert(
            key,
            Row {
                names: [
                    Some(r.listener.clone()),
                    r.route.cloned(),
                    r.cluster.cloned(),
                    r.consumer.cloned(),
                ],
                status_class: class,
                stats,
            },
        );
    }

    /// Drains every table: the `top` rows with the most requests, and the rest summed.
    pub fn take(&self, top: usize) -> UsageSummary {
        let mut merged: HashMap<(String, String, String, String, &'static str), UsageStats> =
            HashMap::new();
        let mut other = UsageStats::default();
        for table in &self.tables {
            let t = std::mem::take(&mut *table.lock().unwrap_or_else(PoisonError::into_inner));
            other.merge(&t.other);
            for row in t.rows.into_values() {
                let [l, r, c, u] = row
                    .names
                    .map(|n| n.map(|n| n.to_string()).unwrap_or_default());
                merged
                    .entry((l, r, c, u, row.status_class))
                    .or_default()
                    .merge(&row.stats);
            }
        }
        let mut rows: Vec<UsageRow> = merged
            .into_iter()
            .map(
                |((listener, route, cluster, consumer, status_class), stats)| UsageRow {
                    listener,
                    route,
                    cluster,
                    consumer,
                    status_class,
                    stats,
                },
            )
            .collect();
        rows.sort_by(|a, b| {
            b.stats.requests.cmp(&a.stats.requests).then_with(|| {
                (
                    &a.listener,
                    &a.route,
                    &a.cluster,
                    &a.consumer,
                    a.status_class,
                )
                    .cmp(&(
                        &b.listener,
                        &b.route,
                        &b.cluster,
                        &b.consumer,
                        b.status_class,
                    ))
            })
        });
        for row in rows.iter().skip(top) {
            other.merge(&row.stats);
        }
        rows.truncate(top);
        UsageSummary { rows, other }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request<'a>(
        listener: &'a Arc<str>,
        route: &'a Arc<str>,
        consumer: Option<&'a Arc<str>>,
        status: u16,
        ms: u64,
    ) -> Request<'a> {
        Request {
            listener,
            route: Some(route),
            cluster: None,
            consumer,
            status,
            bytes_in: 10,
            bytes_out: 100,
            duration: Duration::from_millis(ms),
            rejection: (status == 429).then_some("rate_limited"),
        }
    }

    #[test]
    fn workers_rows_merge_by_name_and_the_tail_folds_into_other() {
        let usage = Usage::new(2);
        let web: Arc<str> = "web".into();
        let api: Arc<str> = "api".into();
        // The same names as other strings, on the other worker: one row after merging.
        let (web2, api2): (Arc<str>, Arc<str>) = ("web".into(), "api".into());
        let alice: Arc<str> = "alice".into();
        for _ in 0..3 {
            usage.record(0, &request(&web, &api, Some(&alice), 200, 3));
        }
        usage.record(1, &request(&web2, &api2, Some(&alice), 204, 700));
        usage.record(1, &request(&web2, &api2, Some(&alice), 429, 0));
        usage.record(1, &request(&web2, &api2, None, 200, 1));
        let summary = usage.take(2);
        assert_eq!(summary.rows.len(), 2);
        let top = &summary.rows[0];
        assert_eq!(
            (
                top.listener.as_str(),
                top.route.as_str(),
                top.consumer.as_str(),
                top.status_class
            ),
            ("web", "api", "alice", "2xx")
        );
        assert_eq!(top.stats.requests, 4);
        assert_eq!(top.stats.bytes_out, 400);
        assert_eq!(top.stats.latency_quantile_ms(0.5), Some(5));
        assert_eq!(top.stats.latency_quantile_ms(1.0), Some(1000));
        // Two rows of one request each: one kept (by name order), one folded.
        assert_eq!(summary.other.requests, 1);
        let rejected: u64 = summary
            .rows
            .iter()
            .map(|r| &r.stats)
            .chain([&summary.other])
            .flat_map(|s| &s.rejections)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(rejected, 1);
        // Taking drains.
        assert_eq!(usage.take(10), UsageSummary::default());
    }

    #[test]
    fn a_full_table_counts_new_rows_as_other() {
        let usage = Usage::new(1);
        let web: Arc<str> = "web".into();
        let routes: Vec<Arc<str>> = (0..MAX_ROWS + 5).map(|i| i.to_string().into()).collect();
        for r in &routes {
            usage.record(0, &request(&web, r, None, 200, 1));
        }
        let summary = usage.take(usize::MAX);
        assert_eq!(summary.rows.len(), MAX_ROWS);
        assert_eq!(summary.other.requests, 5);
    }
}
