//! The agent's periodic report on itself to the control plane: readiness, the version it
//! serves, resource use, and each cluster's endpoints with their state and the requests and
//! errors since the previous report. The endpoints are bounded
//! ([`portico_api::health::MAX_REPORTED_ENDPOINTS`], the ones not healthy first), so a report
//! stays small however many endpoints the agent's clusters have.

use portico_api::health;
use portico_api::pb::Report;

use crate::state::State;
use portico_proxy::Proxy;

/// A report of the agent's health now.
pub fn current(state: &State, proxy: &Proxy) -> Report {
    let mut clusters = proxy.cluster_health();
    let endpoints_omitted = health::bound(&mut clusters, health::MAX_REPORTED_ENDPOINTS);
    Report {
        ready: state.ready(),
        applied_version: state.applied_version(),
        uptime_seconds: state.uptime().as_secs(),
        active_connections: proxy.active_connections(),
        rss_bytes: rss_bytes().unwrap_or(0),
        clusters,
        endpoints_omitted,
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
        let r = current(&State::default(), &Proxy::default());
        assert!(!r.ready);
        assert_eq!(r.applied_version, 0);
        assert!(r.rss_bytes > 0, "this process has a resident set");
    }
}
