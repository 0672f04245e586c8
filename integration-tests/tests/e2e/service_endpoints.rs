//! Service endpoints end to end: real `portico-agent` processes announce `--service api=PORT`
//! with real upstream servers on those ports, and another agent, whose cluster names
//! `service: api`, sends its traffic to them and follows them as they leave and join.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::cp::{ControlPlane, StoreSpec};
use portico_integration_tests::etcd::Etcd;
use portico_test_support::http::fetch;
use portico_test_support::net::free_port;
use portico_test_support::resources::parse as resources;
use portico_test_support::upstream::Upstream;
use portico_test_support::wait::eventually;

/// How long an agent leaving or joining may take to show in another agent's traffic: the
/// registry flush (0.5 s), the store watch, the coalescing of service changes (0.1–0.5 s) and
/// one apply. Measured at about a second; the bound leaves room for a loaded machine.
const MEMBERSHIP_BOUND: Duration = Duration::from_secs(10);
/// Requests in a row that must all be answered by the expected upstreams.
const IN_A_ROW: usize = 30;

/// A listener on `port` for the agents labelled role=edge, routing everything to the cluster
/// `api`, whose endpoints are the nodes announcing the service `api`.
fn config(port: u16) -> String {
    format!(
        "kind: Listener\nname: edge\nspec:\n  address: 127.0.0.1\n  port: {port}\n  protocol: HTTP\n  route_table: main\n  selector: {{labels: {{role: edge}}}}\n\
         ---\n\
         kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: [\"*\"]\n      routes:\n        - action: {{cluster: api}}\n\
         ---\n\
         kind: Cluster\nname: api\nspec:\n  service: api\n"
    )
}

/// Who answered each of [`IN_A_ROW`] requests through `port`; `None` if one failed.
async fn answered_by(port: u16) -> Option<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for _ in 0..IN_A_ROW {
        match fetch(format!("http://127.0.0.1:{port}/")).await {
            Some((200, body)) => names.insert(body.trim().to_string()),
            _ => return None,
        };
    }
    Some(names)
}

/// Waits until the requests through `port` are answered by exactly `upstreams`; returns how long
/// since `since`.
async fn wait_for_upstreams(port: u16, upstreams: &[&str], since: Instant) -> Duration {
    let want: BTreeSet<String> = upstreams.iter().map(|s| s.to_string()).collect();
    eventually(
        &format!("traffic through the agent to reach exactly {upstreams:?}"),
        MEMBERSHIP_BOUND,
        || async { (answered_by(port).await.as_ref() == Some(&want)).then_some(()) },
    )
    .await;
    since.elapsed()
}

/// An agent announcing `api` on `upstream`'s port, in zone `zone`, syncing from `cps`.
fn announcing_via(cps: &[String], id: &str, zone: &str, upstream: &Upstream) -> Agent {
    let mut options = AgentOptions::new(id, cps).service("api", upstream.addr.port());
    options.zone = zone.to_string();
    Agent::start(&options)
}

/// An agent announcing `api` on `upstream`'s port, in zone `zone`.
fn announcing(cp: &str, id: &str, zone: &str, upstream: &Upstream) -> Agent {
    announcing_via(&[cp.to_string()], id, zone, upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_naming_a_service_reach_the_healthy_agents_announcing_it() {
    let cp = ControlPlane::embedded();
    let url = cp.endpoint();
    let (u1, u2, u3) = (
        Upstream::start_name_only("u1").await,
        Upstream::start_name_only("u2").await,
        Upstream::start_name_only("u3").await,
    );
    let port = free_port();
    let revision = cp.apply(resources(&config(port))).await.revision;

    let _a1 = announcing(&url, "api-1", "eu-1", &u1);
    let mut a2 = announcing(&url, "api-2", "eu-2", &u2);
    let edge =
        Agent::start(&AgentOptions::new("edge", std::slice::from_ref(&url)).label("role", "edge"));
    edge.wait_for_version(revision).await;

    // Both announcing agents are endpoints of the edge agent's cluster, with their zones.
    wait_for_upstreams(port, &["u1", "u2"], Instant::now()).await;
    let services = edge.config().await["services"]["api"].clone();
    let mut seen: Vec<(u64, String)> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["address"], "127.0.0.1", "{services}");
            (
                e["port"].as_u64().unwrap(),
                e["zone"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut want = vec![
        (u64::from(u1.addr.port()), "eu-1".to_string()),
        (u64::from(u2.addr.port()), "eu-2".to_string()),
    ];
    want.sort();
    assert_eq!(seen, want);
    let metrics = cp.http_get("/metrics").unwrap().1;
    assert!(
        metrics.contains("portico_cp_service_endpoints{service=\"api\"} 2"),
        "{metrics}"
    );

    // An announcing agent stops: its endpoint leaves, though its upstream still answers.
    let stopped = Instant::now();
    a2.terminate();
    a2.wait_exit(Duration::from_secs(30));
    let left = wait_for_upstreams(port, &["u1"], stopped).await;

    // One starts: its endpoint joins once it is connected and serves a config.
    let started = Instant::now();
    let _a3 = announcing(&url, "api-3", "eu-3", &u3);
    let joined = wait_for_upstreams(port, &["u1", "u3"], started).await;
    eprintln!("service endpoints: an agent leaving took {left:?}, one joining {joined:?}");
    assert!(left < MEMBERSHIP_BOUND && joined < MEMBERSHIP_BOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_endpoints_carry_the_zone_of_their_node_for_locality() {
    let cp = ControlPlane::embedded();
    let url = cp.endpoint();
    let (near, far) = (
        Upstream::start_name_only("near").await,
        Upstream::start_name_only("far").await,
    );
    let port = free_port();
    let local = config(port).replace(
        "  service: api\n",
        "  service: api\n  locality: {prefer_local: true}\n",
    );
    let revision = cp.apply(resources(&local)).await.revision;
    // The edge agent is in zone eu-1 (the harness default), like api-near.
    let mut a_near = announcing(&url, "api-near", "eu-1", &near);
    let _a_far = announcing(&url, "api-far", "eu-2", &far);
    let edge =
        Agent::start(&AgentOptions::new("edge", std::slice::from_ref(&url)).label("role", "edge"));
    edge.wait_for_version(revision).await;
    eventually(
        "both nodes announced to the edge agent",
        MEMBERSHIP_BOUND,
        || async {
            let services = edge.config().await["services"]["api"].clone();
            (services.as_array().map(Vec::len) == Some(2)).then_some(())
        },
    )
    .await;
    wait_for_upstreams(port, &["near"], Instant::now()).await;

    // The local node leaves: traffic spills over to the other zone.
    a_near.kill();
    wait_for_upstreams(port, &["far"], Instant::now()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcing_agent_is_an_endpoint_only_once_it_serves_a_config() {
    let cp = ControlPlane::embedded();
    let url = cp.endpoint();
    let (u1, u4) = (
        Upstream::start_name_only("u1").await,
        Upstream::start_name_only("u4").await,
    );
    // The agent api-4 gets a listener on a port this test holds, so it rejects its config and
    // serves none.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let broken = |label: &str| {
        format!(
            "---\nkind: Listener\nname: broken\nlabels: {{try: {label}}}\nspec:\n  address: 127.0.0.1\n  port: {held_port}\n  protocol: HTTP\n  route_table: main\n  selector: {{labels: {{role: broken}}}}\n"
        )
    };
    let port = free_port();
    let revision = cp
        .apply(resources(&(config(port) + &broken("one"))))
        .await
        .revision;
    let _a1 = announcing(&url, "api-1", "eu-1", &u1);
    let mut options = AgentOptions::new("api-4", std::slice::from_ref(&url))
        .service("api", u4.addr.port())
        .label("role", "broken");
    options.zone = "eu-4".to_string();
    let _a4 = Agent::start(&options);
    let edge =
        Agent::start(&AgentOptions::new("edge", std::slice::from_ref(&url)).label("role", "edge"));
    edge.wait_for_version(revision).await;
    cp.wait_for_record("api-4", "api-4 to reject its config and report", |r| {
        r.last_nack.is_some() && r.last_report.is_some()
    })
    .await;
    wait_for_upstreams(port, &["u1"], Instant::now()).await;
    // For longer than a service change takes to arrive, api-4 gets no traffic.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let names = answered_by(port).await.unwrap();
        assert!(
            !names.contains("u4"),
            "api-4 serves no config, yet got traffic"
        );
    }

    // Once the port is free and a new revision arrives, api-4 serves it and joins.
    drop(held);
    let fixed = Instant::now();
    cp.apply(resources(&(config(port) + &broken("two")))).await;
    let joined = wait_for_upstreams(port, &["u1", "u4"], fixed).await;
    eprintln!("service endpoints: an agent that came to serve a config joined in {joined:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_pushes_the_agents_of_every_replica_and_a_dead_replicas_lease_keeps_none() {
    let etcd = Etcd::start();
    let store = StoreSpec::Etcd {
        endpoint: etcd.endpoint(),
        prefix: "/services-test".into(),
    };
    let one = ControlPlane::start(store.clone(), "cp-1");
    let mut two = ControlPlane::start(store, "cp-2");
    let (url_one, url_two) = (one.endpoint(), two.endpoint());
    let (u1, u2) = (
        Upstream::start_name_only("u1").await,
        Upstream::start_name_only("u2").await,
    );
    let port = free_port();
    let revision = one.apply(resources(&config(port))).await.revision;

    // api-1 on replica one, api-2 on replica two (falling back to one); the edge agent on one.
    let _a1 = announcing(&url_one, "api-1", "eu-1", &u1);
    let _a2 = announcing_via(&[url_two.clone(), url_one.clone()], "api-2", "eu-2", &u2);
    let edge = Agent::start(
        &AgentOptions::new("edge", std::slice::from_ref(&url_one)).label("role", "edge"),
    );
    edge.wait_for_version(revision).await;
    wait_for_upstreams(port, &["u1", "u2"], Instant::now()).await;
    // An agent held only by replica two shows when that replica's lease is gone.
    let _witness = Agent::start(&AgentOptions::new(
        "witness",
        std::slice::from_ref(&url_two),
    ));
    one.wait_for_record("witness", "the witness to register", |r| r.connected)
        .await;

    // Replica two dies without a word: api-2 moves to replica one, which writes its key on
    // its own lease, so the dead replica's lease expiring takes nothing of it.
    two.kill();
    one.wait_for_record("api-2", "api-2 to move to replica one", |r| {
        r.connected && r.replica == "cp-1"
    })
    .await;
    eventually(
        "replica two's lease to expire",
        Duration::from_secs(30),
        || async { one.agent_record("witness").await.is_none().then_some(()) },
    )
    .await;
    wait_for_upstreams(port, &["u1", "u2"], Instant::now()).await;
}
