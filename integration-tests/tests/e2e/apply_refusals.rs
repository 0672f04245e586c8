//! Changes the control plane refuses at apply (and at dry run), through `portico` against a
//! real control plane: each refusal names the resource and the field path, and nothing is
//! written.

use portico_api::pb;
use portico_integration_tests::cli::{Files, small_config};
use portico_integration_tests::cp::ControlPlane;
use portico_test_support::net::free_port;
use portico_test_support::resources::{
    Edit, cluster, listener, prefix, route, route_table, to, vhost,
};

/// A header rule setting `name`.
fn set(name: &str, value: &str) -> pb::HeaderTransform {
    pb::HeaderTransform {
        set: vec![pb::HeaderValue {
            name: name.into(),
            value: value.into(),
        }],
        ..Default::default()
    }
}

#[test]
fn route_header_rules_cannot_write_framing_or_hop_by_hop_headers() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    let mut rules = route("api", prefix("/"), to("app"));
    rules.request_headers = Some(set("Content-Length", "0"));
    rules.response_headers = Some(pb::HeaderTransform {
        remove: vec!["transfer-encoding".into()],
        add: vec![pb::HeaderValue {
            name: "connection".into(),
            value: "close".into(),
        }],
        ..Default::default()
    });
    let mut host = route("host", prefix("/h"), to("app"));
    host.request_headers = Some(set("host", "internal.example"));
    let config = vec![
        listener("web", free_port(), "main"),
        route_table("main", vec![vhost("", &["*"], vec![host, rules])]),
        cluster("app", &[portico_test_support::net::localhost(free_port())]),
    ];
    let path = files.write_yaml("framing.yaml", &config);
    for dry_run in [true, false] {
        let mut args = vec!["apply", "-f", &path];
        if dry_run {
            args.push("--dry-run");
        }
        let refused = cp.portico(&args).expect(4);
        for line in [
            "RouteTable/main: virtual_hosts[0].routes[0].request_headers.set[0].name: \"host\" is a framing or hop-by-hop header",
            "RouteTable/main: virtual_hosts[0].routes[1].request_headers.set[0].name: \"Content-Length\" is a framing or hop-by-hop header",
            "virtual_hosts[0].routes[1].response_headers.add[0].name: \"connection\" is a framing",
            "virtual_hosts[0].routes[1].response_headers.remove[0]: \"transfer-encoding\" is a framing",
        ] {
            assert!(refused.stderr.contains(line), "{line}\n{refused:#?}");
        }
    }
    let history = cp.portico(&["-o", "json", "history"]).ok().json();
    assert_eq!(history["entries"], serde_json::json!([]), "nothing written");

    // Other headers are fine.
    let mut config = small_config(free_port(), "hi", free_port());
    config[1] = config[1].clone().with(|t: &mut pb::RouteTable| {
        t.virtual_hosts[0].routes[0].request_headers = Some(set("x-tenant", "blue"));
    });
    cp.portico(&["apply", "-f", &files.write_yaml("ok.yaml", &config)])
        .ok();
}
