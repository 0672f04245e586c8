//! Agent apply of a one-route diff on a 10,000-route config: the update applied to the
//! config set, then compiled and swapped in by the proxy (what the sync client does before it
//! ACKs). Budget (DESIGN.md §8): < 5 ms.
//!
//! `agent_apply/no_change/10000` applies an update that changes nothing, as every agent
//! receives for each config revision that does not concern it.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use portico_agent::config::ConfigSet;
use portico_agent::proxy::{Proxy, ProxyConfig};
use portico_api::pb::Update;
use portico_bench::config;

const ROUTES: usize = 10_000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn one_route_diff(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    // No access log: the bench measures apply, not logging.
    let proxy = Proxy::new(ProxyConfig {
        access_log: false,
        ..Default::default()
    });
    let full = Update {
        version: 1,
        full: true,
        upserts: config::dataplane(free_port(), free_port(), ROUTES),
        ..Default::default()
    };
    let mut current = ConfigSet::default().with_update(full);
    runtime
        .block_on(proxy.apply(&current))
        .expect("the initial config applies");
    let mut generation = 0u64;
    let mut group = c.benchmark_group("agent_apply");
    group.bench_function(BenchmarkId::new("one_route_diff", ROUTES), |b| {
        b.iter_batched(
            // The decoded update is input, not work: build it outside the timing.
            || {
                generation += 1;
                Update {
                    version: generation as i64 + 1,
                    upserts: vec![config::route_table(
                        "bench",
                        ROUTES,
                        "upstream",
                        &format!("v{generation}"),
                    )],
                    ..Default::default()
                }
            },
            |update| {
                let next = current.with_update(black_box(update));
                runtime
                    .block_on(proxy.apply(&next))
                    .expect("the diff applies");
                // Returned, so criterion frees the replaced config outside the timing, as the
                // sync client frees it after sending the ACK.
                std::mem::replace(&mut current, next)
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function(BenchmarkId::new("no_change", ROUTES), |b| {
        b.iter_batched(
            || {
                generation += 1;
                Update {
                    version: generation as i64 + 1,
                    ..Default::default()
                }
            },
            |update| {
                let next = current.with_update(black_box(update));
                runtime
                    .block_on(proxy.apply(&next))
                    .expect("the empty diff applies");
                std::mem::replace(&mut current, next)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
    runtime.block_on(proxy.shutdown(std::time::Duration::ZERO));
}

criterion_group!(benches, one_route_diff);
criterion_main!(benches);
