//! Agent apply of a one-route diff on a 10,000-route config: the update applied to the
//! config set, then compiled and swapped in by the proxy (what the sync client does before it
//! ACKs). Budget (DESIGN.md §8): < 5 ms.
//!
//! `agent_apply/no_change/10000` applies an update that changes nothing, as every agent
//! receives for each config revision that does not concern it.

use std::hint::black_box;

use criterion::{BatchSize, Bencher, BenchmarkId, Criterion, criterion_group, criterion_main};
use portico_api::Resource;
use portico_api::pb::Update;
use portico_bench::config;
use portico_proxy::config::ConfigSet;
use portico_proxy::{Proxy, ProxyConfig};

const ROUTES: usize = 10_000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A proxy serving the data-plane bench config, and the config it serves.
struct Agent {
    runtime: tokio::runtime::Runtime,
    proxy: Proxy,
    current: ConfigSet,
    version: i64,
}

impl Agent {
    fn start() -> Agent {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        // No access log: the bench measures apply, not logging.
        let proxy = Proxy::new(ProxyConfig {
            access_log: false,
            ..Default::default()
        });
        let current = ConfigSet::default().with_update(Update {
            version: 1,
            full: true,
            upserts: config::dataplane(free_port(), free_port(), ROUTES),
            ..Default::default()
        });
        runtime
            .block_on(proxy.apply(&current))
            .expect("the initial config applies");
        Agent {
            runtime,
            proxy,
            current,
            version: 1,
        }
    }

    /// Times applying updates whose upserts `upserts` makes from the update's version.
    fn bench(&mut self, b: &mut Bencher, upserts: impl Fn(i64) -> Vec<Resource>) {
        b.iter_batched(
            // The decoded update is input, not work: build it outside the timing.
            || {
                self.version += 1;
                Update {
                    version: self.version,
                    upserts: upserts(self.version),
                    ..Default::default()
                }
            },
            |update| {
                let next = self.current.with_update(black_box(update));
                self.runtime
                    .block_on(self.proxy.apply(&next))
                    .expect("the update applies");
                // Returned, so criterion frees the replaced config outside the timing, as the
                // sync client frees it after sending the ACK.
                std::mem::replace(&mut self.current, next)
            },
            BatchSize::PerIteration,
        );
    }
}

fn apply(c: &mut Criterion) {
    let mut agent = Agent::start();
    let mut group = c.benchmark_group("agent_apply");
    group.bench_function(BenchmarkId::new("one_route_diff", ROUTES), |b| {
        agent.bench(b, |version| {
            vec![config::route_table(
                "bench",
                ROUTES,
                "upstream",
                &format!("v{version}"),
            )]
        })
    });
    group.bench_function(BenchmarkId::new("no_change", ROUTES), |b| {
        agent.bench(b, |_| Vec::new())
    });
    group.finish();
    agent
        .runtime
        .block_on(agent.proxy.shutdown(std::time::Duration::ZERO));
}

criterion_group!(benches, apply);
criterion_main!(benches);
