//! Usage counts in reports and rollups: the latency buckets every part agrees on, how counts
//! add up, quantiles from buckets, and how a set of rows is bounded (the busiest rows, the
//! rest summed in rows without names).

use std::collections::HashMap;

use crate::pb::{UsageRow, UsageStats};

/// Upper bounds of the latency buckets, in milliseconds; the last bucket has none.
pub const LATENCY_BOUNDS_MS: [u64; 13] =
    [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// The most rows one agent report carries.
pub const MAX_REPORTED_ROWS: usize = 64;

/// Adds `b`'s counts to `a`.
pub fn merge(a: &mut UsageStats, b: &UsageStats) {
    a.requests += b.requests;
    a.bytes_in += b.bytes_in;
    a.bytes_out += b.bytes_out;
    if a.latency.len() < b.latency.len() {
        a.latency.resize(b.latency.len(), 0);
    }
    for (x, y) in a.latency.iter_mut().zip(&b.latency) {
        *x += y;
    }
    for (reason, n) in &b.rejections {
        *a.rejections.entry(reason.clone()).or_default() += n;
    }
}

/// Requests refused by a policy.
pub fn rejected(s: &UsageStats) -> u64 {
    s.rejections.values().sum()
}

/// The upper bound of the latency bucket holding quantile `q` (0–1), in milliseconds; `None`
/// without requests, or when it falls in the last, unbounded bucket.
pub fn quantile_ms(s: &UsageStats, q: f64) -> Option<u64> {
    let total: u64 = s.latency.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in s.latency.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return LATENCY_BOUNDS_MS.get(i).copied();
        }
    }
    None
}

/// The names of a row, without its counts.
pub type RowKey = (String, String, String, String, String, String);

/// The names of `row`: listener, route, cluster, consumer, region, status class.
pub fn row_key(row: &UsageRow) -> RowKey {
    (
        row.listener.clone(),
        row.route.clone(),
        row.cluster.clone(),
        row.consumer.clone(),
        row.region.clone(),
        row.status_class.clone(),
    )
}

/// Rows summed by name.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    rows: HashMap<RowKey, UsageStats>,
}

impl Rows {
    /// Adds `row`.
    pub fn add(&mut self, row: &UsageRow) {
        let stats = self.rows.entry(row_key(row)).or_default();
        if let Some(s) = &row.stats {
            merge(stats, s);
        }
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, the `max` busiest with their names and the others summed into one row per
    /// region and status class whose other names are empty; most requests first.
    pub fn bounded(self, max: usize) -> Vec<UsageRow> {
        let mut rows: Vec<(RowKey, UsageStats)> = self.rows.into_iter().collect();
        rows.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then_with(|| a.0.cmp(&b.0)));
        // Rows without a listener are "other" rows already: they never take a named place.
        let (named, mut others): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|(k, _)| !k.0.is_empty());
        let mut kept: Vec<(RowKey, UsageStats)> = Vec::new();
        for (i, row) in named.into_iter().enumerate() {
            if i < max {
                kept.push(row);
            } else {
                others.push(row);
            }
        }
        let mut folded: HashMap<(String, String), UsageStats> = HashMap::new();
        for ((_, _, _, _, region, class), stats) in others {
            merge(folded.entry((region, class)).or_default(), &stats);
        }
        let mut out: Vec<UsageRow> = kept.into_iter().map(|(k, stats)| row(k, stats)).collect();
        let mut folded: Vec<_> = folded.into_iter().collect();
        folded.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(folded.into_iter().map(|((region, class), stats)| {
            row(
                (
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    region,
                    class,
                ),
                stats,
            )
        }));
        out.sort_by(|a, b| {
            let n = |r: &UsageRow| r.stats.as_ref().map_or(0, |s| s.requests);
            n(b).cmp(&n(a))
        });
        out
    }
}

fn row(
    (listener, route, cluster, consumer, region, status_class): RowKey,
    stats: UsageStats,
) -> UsageRow {
    UsageRow {
        listener,
        route,
        cluster,
        consumer,
        status_class,
        stats: Some(stats),
        region,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn r(route: &str, class: &str, requests: u64) -> UsageRow {
        UsageRow {
            listener: "web".into(),
            route: route.into(),
            status_class: class.into(),
            region: "eu".into(),
            stats: Some(UsageStats {
                requests,
                latency: vec![0, requests],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn rows_add_up_by_name_and_the_tail_folds_into_unnamed_rows() {
        let mut rows = Rows::default();
        for row in [
            r("a", "2xx", 5),
            r("a", "2xx", 5),
            r("b", "2xx", 3),
            r("c", "5xx", 1),
        ] {
            rows.add(&row);
        }
        let out = rows.bounded(1);
        let summary: Vec<(&str, &str, u64)> = out
            .iter()
            .map(|r| {
                (
                    r.route.as_str(),
                    r.status_class.as_str(),
                    r.stats.as_ref().unwrap().requests,
                )
            })
            .collect();
        assert_eq!(summary, [("a", "2xx", 10), ("", "2xx", 3), ("", "5xx", 1)]);
        assert!(out[1].listener.is_empty());
        assert_eq!(out[1].region, "eu");
    }

    #[test]
    fn quantiles_come_from_the_bucket_bounds() {
        let s = UsageStats {
            requests: 100,
            latency: vec![0, 0, 90, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ..Default::default()
        };
        assert_eq!(quantile_ms(&s, 0.5), Some(5));
        assert_eq!(quantile_ms(&s, 0.99), Some(10));
        // The slowest request is beyond the last bound.
        assert_eq!(quantile_ms(&s, 1.0), None);
        assert_eq!(quantile_ms(&UsageStats::default(), 0.5), None);
    }
}
