//! Control-plane cost of one push: the scope views of the old and new snapshot, their diff and
//! the encoded `ControlMessage` (what `Views::update` does once per scope before the bytes are
//! shared by every agent of that scope). Measured with empty view and update caches (the
//! snapshots' scope caches are warm, as for every agent after the first of its identity), on
//! the fleet config and on a 10,000-route config, for a one-route change and for a full update.
//! `scope/…` is one scope computation, which happens once per node identity when the
//! listeners' selectors change.

use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use portico_api::pb::Node;
use portico_api::{Kind, Resource};
use portico_bench::config;
use portico_control_plane::scope::{Identity, ScopeMemo, Selectors};
use portico_control_plane::snapshot::{Snapshot, Stored};
use portico_control_plane::views::Views;

/// The config before (every resource at revision 1) and after a one-route change of `table`
/// (`routes` routes) at revision 2; store and config revisions are the same here.
fn configs(
    base: Vec<Resource>,
    table: &str,
    cluster: &str,
    routes: usize,
) -> (Arc<Snapshot>, Arc<Snapshot>) {
    let before = Snapshot::new(1, base.iter().cloned().map(|r| Stored::new(r, 1, 1)));
    let mut after: Vec<Stored> = base
        .into_iter()
        .filter(|r| r.name != table || r.kind() != Kind::RouteTable)
        .map(|r| Stored::new(r, 1, 1))
        .collect();
    after.push(Stored::new(
        config::route_table(table, routes, cluster, "v1"),
        2,
        2,
    ));
    (Arc::new(before), Arc::new(Snapshot::new(2, after)))
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
                |views| {
                    let mut memo = ScopeMemo::new(&node);
                    views.update(&mut memo, before.version, after).bytes.len()
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("full", name), |b| {
            b.iter_batched(
                views,
                |views| {
                    let mut memo = ScopeMemo::new(&node);
                    views.update(&mut memo, 0, after).bytes.len()
                },
                BatchSize::SmallInput,
            )
        });
    }
    let listeners: Vec<(Arc<str>, Resource)> = config::fleet(200, 10)
        .into_iter()
        .filter(|r| r.kind() == Kind::Listener)
        .map(|r| (Arc::from(r.name.as_str()), r))
        .collect();
    let identity = Identity::of(&node);
    group.bench_function(BenchmarkId::new("scope", "fleet_200_listeners"), |b| {
        b.iter_batched(
            || Selectors::new(listeners.iter().map(|(name, r)| (name, r))),
            |selectors| selectors.scope_of(&identity).listeners.len(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, diff_encode);
criterion_main!(benches);
