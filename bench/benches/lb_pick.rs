//! The cost of choosing an endpoint, per load-balancing policy, over 10 and 1,000 endpoints:
//! one `Upstream::pick` (availability, locality tier, the policy's pick, counting the request
//! in flight) and dropping the pick. Weighted round robin uses unequal weights, so it runs the
//! smooth weighted schedule rather than the plain cursor.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::HeaderName;
use portico_proxy::upstream::{
    self, Endpoint, HashPolicy, Key, Locality, Policy, PoolLimits, Upstream, UpstreamConfig,
};

fn upstream(policy: Policy, endpoints: usize, weighted: bool) -> Upstream {
    let endpoints = (0..endpoints)
        .map(|i| {
            let authority = format!("10.0.{}.{}:8080", i / 250, i % 250)
                .parse()
                .expect("a valid authority");
            let weight = if weighted { 1 + (i % 3) as u32 } else { 1 };
            Arc::new(Endpoint::new(authority, weight, Locality::default(), 1))
        })
        .collect();
    let hashes = matches!(policy, Policy::RingHash | Policy::Maglev);
    let config = UpstreamConfig {
        http2: false,
        tls: None,
        limits: PoolLimits {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: upstream::IDLE_TIMEOUT,
            max_idle_per_endpoint: upstream::MAX_IDLE_PER_ENDPOINT,
            max_connections: 0,
            max_pending: 0,
            max_response_head: upstream::DEFAULT_MAX_RESPONSE_HEAD,
        },
        pools: 1,
        policy,
        tiering: None,
        hash: hashes.then(|| HashPolicy::Header(HeaderName::from_static("x-user"))),
        health_check: None,
        outlier: None,
        max_requests: 0,
        max_retries: 0,
    };
    Upstream::new("bench", endpoints, config)
}

fn lb_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("lb_pick");
    let policies = [
        ("round_robin", Policy::RoundRobin, false),
        ("weighted_round_robin", Policy::RoundRobin, true),
        ("least_request", Policy::LeastRequest, true),
        ("ring_hash", Policy::RingHash, true),
        ("maglev", Policy::Maglev, true),
    ];
    for (name, policy, weighted) in policies {
        for endpoints in [10, 1_000] {
            let upstream = upstream(policy, endpoints, weighted);
            let mut key = 0u64;
            group.bench_function(BenchmarkId::new(name, endpoints), |b| {
                b.iter(|| {
                    key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let pick = upstream.pick(&Key::Hash(key), None, false);
                    black_box(pick.map(|p| p.map(|p| p.index)))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, lb_pick);
criterion_main!(benches);
