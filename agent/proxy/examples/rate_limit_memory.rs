//! Memory of rate-limit buckets under many distinct keys: checks `KEYS` distinct keys (default
//! 5,000,000) against one keyed limit of 100 requests per `PERIOD` seconds per key (default 1),
//! and prints the buckets held and the process's peak resident memory. With a long period a
//! bucket stays in use long after its one request, which is the worst case.
//!
//!   cargo run --release -p portico-proxy --example rate_limit_memory [KEYS [PERIOD]]

use portico_api::pb;
use portico_proxy::policy::rate_limit::RateLimit;

/// The process's peak resident set, in KiB (Linux).
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let keys: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000_000);
    let period: i64 = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let policy = RateLimit::compile(&pb::RateLimit {
        requests: 100,
        period: Some(pbjson_types::Duration {
            seconds: period,
            nanos: 0,
        }),
        ..Default::default()
    })
    .expect("the limit compiles");
    let before = peak_kib();
    let started = std::time::Instant::now();
    let mut most = 0;
    for key in 0..keys {
        policy.check_raw(key);
        if key % 4096 == 0 {
            most = most.max(policy.base().buckets());
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{keys} distinct keys, {period}s period, in {:.2}s ({:.0} checks/s): at most {most} buckets held, {} at the end; \
         peak RSS {} MiB (from {} MiB)",
        elapsed.as_secs_f64(),
        keys as f64 / elapsed.as_secs_f64(),
        policy.base().buckets(),
        peak_kib() / 1024,
        before / 1024,
    );
}
