//! Control-plane cost of one push: the scope views of the old and new snapshot, their diff and
//! the encoded `ControlMessage` (what `Views::update` does once per scope before the bytes are
//! shared by every agent of that scope). Measured uncached, on the fleet config and on a
//! 10,000-route config, for a one-route change and for a full update.

use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use portico_api::pb::Node;
use portico_api::{Resource, ResourceSet};
use portico_bench::config;
use portico_control_plane::snapshot::Snapshot;
use portico_control_plane::views::Views;

fn snapshot(version: i64, resources: Vec<Resource>) -> Arc<Snapshot> {
    let mut set = ResourceSet::new();
    let mut revisions = std::collections::BTreeMap::new();
    for r in resources {
        revisions.insert((r.kind(), r.name.clone()), version);
        set.insert(r);
    }
    Arc::new(Snapshot {
        version,
        resources: set,
        revisions,
        published: None,
    })
}

/// The config before and after a one-route change of `table` (`routes` routes).
fn configs(
    base: Vec<Resource>,
    table: &str,
    cluster: &str,
    routes: usize,
) -> (Arc<Snapshot>, Arc<Snapshot>) {
    let before = snapshot(1, base.clone());
    let mut after = base;
    after.retain(|r| r.name != table || r.kind() != portico_api::Kind::RouteTable);
    after.push(config::route_table(table, routes, cluster, "v1"));
    (before, snapshot(2, after))
}

fn diff_encode(c: &mut Criterion) {
    let node = Node {
        id: "bench".into(),
        region: config::REGIONS[0].into(),
        zone: "a".into(),
        ..Default::default()
    };
    let cases = [
        (
            "fleet_200_listeners",
            configs(config::fleet(200, 10), "global", "global", 10),
        ),
        (
            "routes_10000",
            configs(
                config::dataplane(18081, 18080, 10_000),
                "bench",
                "upstream",
                10_000,
            ),
        ),
    ];
    let mut group = c.benchmark_group("cp_diff_encode");
    for (name, (before, after)) in &cases {
        let views = || {
            let views = Views::new(before.clone());
            views.publish(after.clone());
            views
        };
        group.bench_function(BenchmarkId::new("one_route", name), |b| {
            b.iter_batched(
                views,
                |views| views.update(&node, before.version, after).bytes.len(),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("full", name), |b| {
            b.iter_batched(
                views,
                |views| views.update(&node, 0, after).bytes.len(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, diff_encode);
criterion_main!(benches);
