//! Portico as the control plane of data planes it did not write, over xDS v3: grpcio's own
//! proxyless xDS client (`xds:///NAME`) calling Python gRPC backends, and a real Envoy proxying
//! to real upstreams. Both are configured only by `portico apply`, scoped like agents, and
//! show up in `portico agents` and `portico rollout status`, NACKs included.

use std::collections::BTreeMap;

use portico_api::Resource;
use portico_api::pb;
use portico_integration_tests::cp::{ControlPlane, SYNC_TIMEOUT};
use portico_integration_tests::xds::{Backend, Envoy, GrpcClient, XdsNode};
use portico_test_support::http::fetch;
use portico_test_support::net::free_port;
use portico_test_support::resources::{
    Edit, api_listener, cluster, kinds, listener, prefix, regex, route, route_table, to, vhost,
};
use portico_test_support::upstream::Upstream;
use portico_test_support::wait::eventually;

const GREETER: &str = "greeter.example.internal";
const METHOD: &str = "/greeter.Greeter/SayHello";
const CALLS: usize = 1000;

/// The API listener GREETER routing every call to the cluster `greeter` of `backends` with
/// these weights.
fn greeter(backends: &[(&Backend, u32)]) -> Vec<Resource> {
    let endpoints: Vec<std::net::SocketAddr> = backends.iter().map(|(b, _)| b.addr).collect();
    let weights: Vec<u32> = backends.iter().map(|(_, w)| *w).collect();
    vec![
        api_listener(GREETER, "greeter"),
        route_table(
            "greeter",
            vec![vhost(
                "",
                &[GREETER],
                vec![route("all", prefix("/"), to("greeter"))],
            )],
        ),
        cluster("greeter", &endpoints).with(|c: &mut pb::Cluster| {
            c.protocol = pb::cluster::UpstreamProtocol::Http2.into();
            for (e, w) in c.endpoints.iter_mut().zip(weights) {
                e.weight = w;
                e.region = "eu".into();
                e.zone = "eu-1".into();
            }
        }),
    ]
}

fn node(id: &str) -> XdsNode<'_> {
    XdsNode {
        id,
        region: "eu",
        zone: "eu-1",
        cluster: "greeter-clients",
    }
}

/// Waits until the registry says `id` runs `revision`.
async fn wait_applied(cp: &ControlPlane, id: &str, revision: i64) {
    cp.wait_for_record(id, &format!("{id} to apply revision {revision}"), |r| {
        r.applied_version >= revision
    })
    .await;
}

fn share(counts: &BTreeMap<String, u64>, name: &str) -> f64 {
    let total: u64 = counts.values().sum();
    counts.get(name).copied().unwrap_or(0) as f64 * 100.0 / total as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_balances_as_the_config_says_and_follows_a_weight_change() {
    let cp = ControlPlane::embedded();
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    cp.apply(greeter(&[(&a, 1), (&b, 1)])).await;
    let mut client = GrpcClient::start(&cp, &node("grpc-1"), &format!("xds:///{GREETER}"), METHOD);

    // Round robin over two endpoints of one locality: they take turns.
    client.warm_up(&["a", "b"]);
    let counts = client.call(100);
    assert_eq!(
        counts.get("a").zip(counts.get("b")),
        Some((&50, &50)),
        "{counts:?}"
    );
    let agents = cp.portico(&["-o", "json", "agents"]).ok().json();
    let me = agents["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["id"] == "grpc-1"))
        .unwrap_or_else(|| panic!("grpc-1 is not registered: {agents}"));
    assert_eq!(me["kind"], "grpc");
    assert_eq!(me["region"], "eu");
    assert_eq!(me["labels"]["cluster"], "greeter-clients");

    // 80/20 by endpoint weight, then 20/80: each within one push.
    for (wa, wb) in [(80, 20), (20, 80)] {
        let revision = cp.apply(greeter(&[(&a, wa), (&b, wb)])).await.revision;
        wait_applied(&cp, "grpc-1", revision).await;
        client.warm_up(&["a", "b"]);
        let counts = client.call(CALLS);
        let got = share(&counts, "a");
        assert!(
            (got - f64::from(wa)).abs() <= 5.0,
            "weights {wa}/{wb}: a took {got:.1}% of {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_a_grpc_client_cannot_accept_is_a_nack_in_rollout_status() {
    let cp = ControlPlane::embedded();
    let a = Backend::start("a");
    let config = greeter(&[(&a, 1)]);
    let revision = cp.apply(config.clone()).await.revision;
    let mut client = GrpcClient::start(&cp, &node("grpc-2"), &format!("xds:///{GREETER}"), METHOD);
    assert_eq!(client.call(5).get("a"), Some(&5));
    wait_applied(&cp, "grpc-2", revision).await;

    // `\p{Alphabetic}` (a Unicode property) is a regex Portico accepts and RE2, which gRPC
    // uses, does not: it knows scripts and general categories only.
    let mut bad = config;
    bad[1] = route_table(
        "greeter",
        vec![vhost(
            "",
            &[GREETER],
            vec![
                route(
                    "words",
                    regex(r"/greeter\.Greeter/\p{Alphabetic}+"),
                    to("greeter"),
                ),
                route("all", prefix("/"), to("greeter")),
            ],
        )],
    );
    let revision = cp.apply(bad).await.revision;
    let status = cp
        .wait_for_rollout(revision, "grpc-2 to reject the route", |s| s.nacked == 1)
        .await;
    assert_eq!(status.nacks[0].node_id, "grpc-2");
    assert!(!status.nacks[0].error.is_empty());
    let shown = cp.portico(&["rollout", "status", &revision.to_string()]);
    assert!(shown.stdout.contains("NACK from grpc-2: "), "{shown:#?}");
    let agents = cp.portico(&["agents"]).ok();
    assert!(
        agents.stdout.contains(&format!("NACKed {revision}: ")),
        "{agents:#?}"
    );
    // The client keeps the routes it had.
    assert_eq!(client.call(5).get("a"), Some(&5));
}

/// Listener `edge` on `port` for Envoy proxies, routing everything to the cluster `web` of
/// `upstreams` with these weights.
fn edge(port: u16, upstreams: &[(&Upstream, u32)]) -> Vec<Resource> {
    let endpoints: Vec<std::net::SocketAddr> = upstreams.iter().map(|(u, _)| u.addr).collect();
    let weights: Vec<u32> = upstreams.iter().map(|(_, w)| *w).collect();
    vec![
        listener("edge", port, "web").with(|l: &mut pb::Listener| {
            l.selector = Some(kinds(&["envoy"]));
        }),
        route_table(
            "web",
            vec![vhost(
                "",
                &["*"],
                vec![route("all", prefix("/"), to("web"))],
            )],
        ),
        cluster("web", &endpoints).with(|c: &mut pb::Cluster| {
            for (e, w) in c.endpoints.iter_mut().zip(weights) {
                e.weight = w;
            }
        }),
    ]
}

/// Who answered `n` requests through `port`.
async fn answers(port: u16, n: usize) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let name = match fetch(format!("http://127.0.0.1:{port}/")).await {
            Some((200, body)) => body.trim().to_string(),
            other => format!("{other:?}"),
        };
        *counts.entry(name).or_default() += 1;
    }
    counts
}

/// Envoy over state-of-the-world or incremental ADS: it serves Portico's listener, balances as
/// the weights say, follows a change, and a route it cannot accept is a NACK.
async fn envoy_follows_the_config(delta: bool) {
    let cp = ControlPlane::embedded();
    let (a, b) = (
        Upstream::start_name_only("a").await,
        Upstream::start_name_only("b").await,
    );
    let port = free_port();
    let revision = cp.apply(edge(port, &[(&a, 1), (&b, 1)])).await.revision;
    let id = if delta { "envoy-delta" } else { "envoy-sotw" };
    let envoy = Envoy::start(&cp, &node(id), delta);
    eventually("Envoy to serve the listener", SYNC_TIMEOUT, || async {
        matches!(
            fetch(format!("http://127.0.0.1:{port}/")).await,
            Some((200, _))
        )
        .then_some(())
    })
    .await;
    wait_applied(&cp, id, revision).await;
    let counts = answers(port, 100).await;
    assert_eq!(
        counts.get("a").zip(counts.get("b")),
        Some((&50, &50)),
        "{counts:?}\n{}",
        envoy.output()
    );
    let record = cp.agent_record(id).await.expect("registered");
    assert_eq!(record.kind, "envoy");

    let revision = cp.apply(edge(port, &[(&a, 80), (&b, 20)])).await.revision;
    wait_applied(&cp, id, revision).await;
    let counts = answers(port, 500).await;
    let got = share(&counts, "a");
    assert!((got - 80.0).abs() <= 5.0, "a took {got:.1}% of {counts:?}");

    // A Unicode property RE2 (Envoy's regex engine) does not know.
    let mut bad = edge(port, &[(&a, 80), (&b, 20)]);
    bad[1] = route_table(
        "web",
        vec![vhost(
            "",
            &["*"],
            vec![
                route("words", regex(r"/\p{Alphabetic}+"), to("web")),
                route("all", prefix("/"), to("web")),
            ],
        )],
    );
    let revision = cp.apply(bad).await.revision;
    let status = cp
        .wait_for_rollout(revision, "Envoy to reject the route", |s| s.nacked == 1)
        .await;
    assert_eq!(status.nacks[0].node_id, id, "{}", envoy.output());
    // Envoy keeps serving what it had.
    assert_eq!(answers(port, 5).await.values().sum::<u64>(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_over_state_of_the_world_ads() {
    envoy_follows_the_config(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_over_incremental_ads() {
    envoy_follows_the_config(true).await;
}
