//! Route match cost with 10, 1,000 and 10,000 prefix routes in one route table, the request
//! matching the last route, and the cost of compiling such a table. Budget (DESIGN.md §8):
//! matching with 10,000 routes ≤ 2× the time of 10.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use portico_api::pb::resource::Spec;
use portico_bench::config;
use portico_proxy::config::Services;
use portico_proxy::runtime::{NodeInfo, cluster, router};

fn route_match(c: &mut Criterion) {
    let Some(Spec::Cluster(spec)) = config::cluster("upstream", &[18080]).spec else {
        unreachable!("config::cluster builds a cluster")
    };
    let node = NodeInfo::default();
    let services = Services::new();
    let env = cluster::Env {
        pools: 1,
        node: &node,
        services: &services,
    };
    let upstream = cluster::compile("upstream", &spec, env, None, |_| None)
        .expect("the bench cluster compiles");
    let clusters = HashMap::from([("upstream".to_string(), Arc::new(upstream))]);
    let headers = HeaderMap::new();
    let mut group = c.benchmark_group("route_match");
    for routes in [10, 1_000, 10_000] {
        let Some(Spec::RouteTable(spec)) =
            config::route_table("bench", routes, "upstream", "v0").spec
        else {
            unreachable!("config::route_table builds a route table")
        };
        let table = router::compile("bench", &spec, &clusters).expect("the bench table compiles");
        let path = format!("{}/bench", config::route_prefix(routes - 1));
        let request = router::RequestView {
            host: "bench.example",
            path: &path,
            query: None,
            method: &Method::GET,
            headers: &headers,
        };
        assert!(table.find(&request).is_some(), "the last route matches");
        group.bench_function(BenchmarkId::from_parameter(routes), |b| {
            b.iter(|| table.find(black_box(&request)).is_some())
        });
    }
    group.finish();

    // Compiling one table is the floor of any apply that changes it.
    let mut group = c.benchmark_group("route_compile");
    for routes in [10, 1_000, 10_000] {
        let Some(Spec::RouteTable(spec)) =
            config::route_table("bench", routes, "upstream", "v0").spec
        else {
            unreachable!("config::route_table builds a route table")
        };
        group.bench_function(BenchmarkId::from_parameter(routes), |b| {
            b.iter(|| router::compile("bench", black_box(&spec), &clusters).is_ok())
        });
    }
    group.finish();
}

criterion_group!(benches, route_match);
criterion_main!(benches);
