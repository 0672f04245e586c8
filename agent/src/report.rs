//! The agent's periodic report on itself to the control plane: readiness, the version it
//! serves, resource use, and each cluster's endpoints with their state and the requests and
//! errors since the previous report. The endpoints are bounded
//! ([`portico_api::health::MAX_REPORTED_ENDPOINTS`], the ones not healthy first), so a report
//! stays small however many endpoints the agent's clusters have.
//!
//! A report also carries the traffic since the previous one (usage: the busiest
//! [`usage::MAX_REPORTED_ROWS`] rows of listener × route × cluster × consumer × status class,
//! the rest summed) and what the agent spent of its fleet budgets, so the control plane
//! keeps usage rollups and quota counters.

use std::time::Duration;

use portico_api::pb::Report;
use portico_api::{health, usage};

use crate::state::State;
use portico_proxy::Proxy;

/// A report of the agent's health now, with the traffic of the last `since`.
pub fn current(state: &State, proxy: &Proxy, since: Duration) -> Report {
    let mut clusters = proxy.cluster_health();
    let endpoints_omitted = health::bound(&mut clusters, health::MAX_REPORTED_ENDPOINTS);
    let (rows, other) = proxy.take_usage(usage::MAX_REPORTED_ROWS).to_pb();
    Report {
        ready: state.ready(),
        applied_version: state.applied_version(),
        uptime_seconds: state.uptime().as_secs(),
        active_connections: proxy.active_connections(),
        rss_bytes: rss_bytes().unwrap_or(0),
        clusters,
        endpoints_omitted,
        budgets: proxy.take_budget_use(),
        usage: rows,
        usage_other: Some(other),
        usage_millis: u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
    }
}

/// The process's resident set size, from `/proc/self/status` (`VmRSS`, in KiB). `None` where
/// there is no procfs. (`/proc/self/statm` counts pages, and the page size needs `sysconf`,
/// which is unsafe to call.)
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tportico-agent\nVmPeak:\t  9000 kB\nVmRSS:\t   5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(5120 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn report_of_a_fresh_agent_is_not_ready() {
        let r = current(&State::default(), &Proxy::default(), Duration::from_secs(1));
        assert!(!r.ready);
        assert_eq!(r.applied_version, 0);
        assert!(r.rss_bytes > 0, "this process has a resident set");
    }
}
