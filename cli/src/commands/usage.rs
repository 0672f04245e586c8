//! `portico usage`: the traffic the agents reported, one row per listener, route, cluster,
//! consumer and agents' region, with requests, error rate and latency quantiles.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use portico_api::pb::{UsageRequest, UsageRow, UsageStats};
use portico_api::usage::{merge, quantile_ms, rejected};
use serde::Serialize;

use crate::commands::Context;
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

/// `portico usage [--consumer C] [--route R] [--region R] [--since DUR]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this consumer ("-": requests without one).
    #[arg(long)]
    pub consumer: Option<String>,
    /// Only this route.
    #[arg(long)]
    pub route: Option<String>,
    /// Only agents of this region.
    #[arg(long)]
    pub region: Option<String>,
    /// How far back, e.g. 15m, 6h, 7d (at most 30d). Up to 24h back usage is kept by the
    /// minute, beyond that by the hour.
    #[arg(long, default_value = "1h", value_parser = parse_since)]
    pub since: Duration,
}

fn parse_since(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d.is_zero() {
        return Err("must be above zero".into());
    }
    Ok(d)
}

/// The whole output. JSON fields are stable (cli/README.md).
#[derive(Debug, Serialize)]
pub struct Usage {
    /// The start of the time covered, RFC 3339 UTC.
    pub from: String,
    /// Its end.
    pub to: String,
    /// Most requests first.
    pub rows: Vec<Row>,
}

/// One listener, route, cluster, consumer and region.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The listener ("" for traffic reported without its names).
    pub listener: String,
    /// The route ("" when none matched).
    pub route: String,
    /// The cluster ("" when not forwarded).
    pub cluster: String,
    /// The consumer ("" when none was identified).
    pub consumer: String,
    /// The agents' region.
    pub region: String,
    /// Requests answered.
    pub requests: u64,
    /// Of those, answered 5xx.
    pub errors: u64,
    /// `errors / requests` (0 without requests).
    pub error_rate: f64,
    /// Requests a policy refused.
    pub rejected: u64,
    /// Those by reason code.
    pub rejections: BTreeMap<String, u64>,
    /// Requests by status class ("2xx", ...).
    pub status: BTreeMap<String, u64>,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Latency quantiles in milliseconds, as the upper bound of the latency bucket they fall in
    /// (null when beyond the last bound, 10 s, or without requests).
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

/// The rows of `rows` summed over status classes.
pub fn rows(rows: &[UsageRow]) -> Vec<Row> {
    type Key = (String, String, String, String, String);
    let mut by: BTreeMap<Key, (UsageStats, BTreeMap<String, u64>)> = BTreeMap::new();
    for r in rows {
        let key = (
            r.listener.clone(),
            r.route.clone(),
            r.cluster.clone(),
            r.consumer.clone(),
            r.region.clone(),
        );
        let (stats, classes) = by.entry(key).or_default();
        let s = r.stats.clone().unwrap_or_default();
        merge(stats, &s);
        if !r.status_class.is_empty() {
            *classes.entry(r.status_class.clone()).or_default() += s.requests;
        }
    }
    let mut out: Vec<Row> = by
        .into_iter()
        .map(
            |((listener, route, cluster, consumer, region), (s, status))| {
                let errors = status.get("5xx").copied().unwrap_or(0);
                Row {
                    listener,
                    route,
                    cluster,
                    consumer,
                    region,
                    requests: s.requests,
                    errors,
                    error_rate: if s.requests == 0 {
                        0.0
                    } else {
                        errors as f64 / s.requests as f64
                    },
                    rejected: rejected(&s),
                    rejections: s.rejections.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    status,
                    bytes_in: s.bytes_in,
                    bytes_out: s.bytes_out,
                    p50_ms: quantile_ms(&s, 0.5),
                    p99_ms: quantile_ms(&s, 0.99),
                }
            },
        )
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.requests));
    out
}

fn rfc3339(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Runs `usage`.
pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let since = pbjson_types::Duration {
        seconds: i64::try_from(args.since.as_secs())
            .map_err(|_| CliError::Usage("--since: too long".into()))?,
        nanos: args.since.subsec_nanos() as i32,
    };
    let mut admin = ctx.connect().await?;
    let resp = admin
        .usage(UsageRequest {
            consumer: args.consumer.unwrap_or_default(),
            route: args.route.unwrap_or_default(),
            region: args.region.unwrap_or_default(),
            since: Some(since),
            step: None,
        })
        .await
        .map_err(|s| ctx.status(s))?
        .into_inner();
    let out = Usage {
        from: rfc3339(resp.from_ms),
        to: rfc3339(resp.to_ms),
        rows: rows(&resp.rows),
    };
    output::print(ctx.format, &out, || table(&out))
}

fn quantile(q: Option<u64>, requests: u64) -> String {
    match q {
        Some(ms) => format!("{ms}ms"),
        None if requests > 0 => ">10s".into(),
        None => "-".into(),
    }
}

fn table(usage: &Usage) -> String {
    if usage.rows.is_empty() {
        return format!("no traffic reported from {} to {}\n", usage.from, usage.to);
    }
    let mut t = Table::new([
        "LISTENER", "ROUTE", "CLUSTER", "CONSUMER", "REGION", "REQUESTS", "ERRORS", "REJECTED",
        "P50", "P99",
    ]);
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    for r in &usage.rows {
        let listener = if r.listener.is_empty() {
            "(other)".to_string()
        } else {
            r.listener.clone()
        };
        t.row([
            listener,
            or_dash(&r.route),
            or_dash(&r.cluster),
            or_dash(&r.consumer),
            or_dash(&r.region),
            r.requests.to_string(),
            format!("{:.1}%", r.error_rate * 100.0),
            r.rejected.to_string(),
            quantile(r.p50_ms, r.requests),
            quantile(r.p99_ms, r.requests),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(consumer: &str, class: &str, requests: u64, latency: Vec<u64>) -> UsageRow {
        UsageRow {
            listener: "web".into(),
            route: "api".into(),
            cluster: "backend".into(),
            consumer: consumer.into(),
            status_class: class.into(),
            region: "eu".into(),
            stats: Some(UsageStats {
                requests,
                latency,
                rejections: if class == "4xx" {
                    [("quota_exhausted".to_string(), requests)].into()
                } else {
                    Default::default()
                },
                ..Default::default()
            }),
        }
    }

    #[test]
    fn status_classes_merge_into_one_row_with_error_rate_and_quantiles() {
        let out = rows(&[
            row("ann", "2xx", 90, vec![0, 0, 90]),
            row("ann", "5xx", 5, vec![0, 0, 0, 5]),
            row("ann", "4xx", 5, vec![5]),
            row("bob", "2xx", 1, vec![0, 1]),
        ]);
        assert_eq!(out.len(), 2);
        let ann = &out[0];
        assert_eq!(
            (ann.consumer.as_str(), ann.requests, ann.errors),
            ("ann", 100, 5)
        );
        assert!((ann.error_rate - 0.05).abs() < 1e-9);
        assert_eq!(ann.rejected, 5);
        assert_eq!((ann.p50_ms, ann.p99_ms), (Some(5), Some(10)));
        assert_eq!(ann.status.get("2xx"), Some(&90));
        let text = table(&Usage {
            from: "a".into(),
            to: "b".into(),
            rows: out,
        });
        assert!(
            text.starts_with("LISTENER   ROUTE   CLUSTER   CONSUMER   REGION   REQUESTS"),
            "{text}"
        );
        assert!(
            text.contains("ann        eu       100        5.0%     5          5ms   10ms"),
            "{text}"
        );
    }

    #[test]
    fn since_must_be_a_positive_duration() {
        assert_eq!(parse_since("15m"), Ok(Duration::from_secs(900)));
        assert!(parse_since("0s").is_err());
        assert!(parse_since("soon").is_err());
    }
}
