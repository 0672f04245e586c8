//! The API gateway across a fleet, end to end: fleet quotas shared by agents on two control
//! planes over one etcd (never exceeded), quota counters that survive restarts and start over
//! with the next period, API keys removed from a Consumer refused by every agent once the
//! change reaches it, `portico usage` and `portico agents` showing the traffic agents served,
//! and configs naming what does not exist refused at apply with the field path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::cli::{Files, agent_listeners_yaml};
use portico_integration_tests::cp::{ControlPlane, StoreSpec};
use portico_integration_tests::etcd::Etcd;
use portico_test_support::http::{client, get_with};
use portico_test_support::net::free_port;
use portico_test_support::resources::parse as resources;
use portico_test_support::upstream::Upstream;
use portico_test_support::wait::eventually;
use serde_json::Value;

/// How long a report (200 ms in tests) and what the control plane makes of it may take to
/// show.
const SHOW_TIMEOUT: Duration = Duration::from_secs(20);

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Waits until at least `room` of the current calendar minute is left; returns the minute.
async fn minute_with_room(room: Duration) -> u64 {
    eventually(
        &format!("a minute with {room:?} left"),
        Duration::from_secs(70),
        || async {
            let now = now_secs();
            (60 - now % 60 >= room.as_secs()).then_some(now / 60)
        },
    )
    .await
}

/// A listener per agent (on `ports`, selecting the agent labelled `node: a<i>`), all routing
/// `/api/…` to the upstream at `upstream` with `policies` attached, and `/broken` to a 503.
fn config(ports: &[u16], upstream: u16, policies: &[&str], extra: &str) -> String {
    let mut docs = agent_listeners_yaml(ports);
    docs.push(format!(
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: [\"*\"]\n      routes:\n\
         \x20       - {{name: api, match: {{prefix: /api}}, action: {{cluster: backend}}, policies: [{}]}}\n\
         \x20       - {{name: broken, match: {{prefix: /broken}}, action: {{direct_response: {{status: 503, body: down}}}}}}\n",
        policies.join(", ")
    ));
    docs.push(format!(
        "kind: Cluster\nname: backend\nspec:\n  endpoints: [{{address: 127.0.0.1, port: {upstream}}}]\n"
    ));
    docs.push("kind: Policy\nname: key\nspec: {api_key_auth: {}}\n".to_string());
    if !extra.is_empty() {
        docs.push(extra.to_string());
    }
    docs.join("---\n")
}

/// Agent `a<n>` (labelled `node: a<n>`), syncing from `cp`.
fn agent(cp: &str, n: usize) -> Agent {
    Agent::start(
        &AgentOptions::new(&format!("a{n}"), &[cp.to_string()]).label("node", &format!("a{n}")),
    )
}

/// `portico consumer create|add-key NAME -o json` against `cp`: the key and its hash.
fn new_key(cp: &ControlPlane, command: &str, name: &str) -> (String, String) {
    let out = cp
        .portico(&["-o", "json", "consumer", command, name])
        .ok()
        .json();
    let s = |k: &str| out[k].as_str().unwrap().to_string();
    (s("key"), s("sha256"))
}

/// The requests `agent` refused with `reason`, from its metrics.
async fn rejections(agent: &Agent, reason: &str) -> f64 {
    let (_, text) = agent.get("/metrics").await.unwrap_or_default();
    let label = format!("reason=\"{reason}\"");
    text.lines()
        .filter(|l| l.starts_with("portico_agent_rejections_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What the clients of one agent saw.
#[derive(Default)]
struct Seen {
    admitted: AtomicU64,
    refused: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_quota_of_1000_per_minute_holds_across_3_agents_and_2_replicas() {
    let etcd = Etcd::start();
    let store = StoreSpec::Etcd {
        endpoint: etcd.endpoint(),
        prefix: "/quota-test".into(),
    };
    let one = ControlPlane::start(store.clone(), "cp-1");
    let two = ControlPlane::start(store, "cp-2");
    let upstream = Upstream::start_name_only("backend").await;
    let ports = [free_port(), free_port(), free_port()];
    let (key, _) = new_key(&one, "create", "ann");
    let quota = "kind: Policy\nname: per-minute\nspec: {quota: {limit: 1000, period: MINUTE}}\n";
    let revision = one
        .apply(resources(&config(
            &ports,
            upstream.addr.port(),
            &["key", "per-minute"],
            quota,
        )))
        .await
        .revision;
    // Two agents on one replica, one on the other.
    let agents = [
        agent(&one.endpoint(), 1),
        agent(&one.endpoint(), 2),
        agent(&two.endpoint(), 3),
    ];
    for a in &agents {
        a.wait_for_version(revision).await;
    }

    // All of it inside one calendar minute: 8 clients per agent, each until 50 refusals in a row
    // or 20 s.
    let minute = minute_with_room(Duration::from_secs(30)).await;
    let seen: Vec<Arc<Seen>> = (0..3).map(|_| Arc::default()).collect();
    // Every agent takes part: each admits a first request on a grant from its own replica
    // before the flood, in which the fastest agent may well spend all that is left.
    let http = client();
    for (port, seen) in ports.iter().zip(&seen) {
        eventually("a first grant", SHOW_TIMEOUT, || async {
            let answer = get_with(&http, *port, "/api/items", &[("x-api-key", &key)]).await;
            (answer.status == 200).then_some(())
        })
        .await;
        seen.admitted.fetch_add(1, Ordering::Relaxed);
    }
    let stop = Instant::now() + Duration::from_secs(20);
    let mut clients = Vec::new();
    for (port, seen) in ports.iter().zip(&seen) {
        for _ in 0..8 {
            let (port, seen, key) = (*port, seen.clone(), key.clone());
            clients.push(tokio::spawn(async move {
                let http = client();
                let mut in_a_row = 0;
                while in_a_row < 50 && Instant::now() < stop {
                    let answer = get_with(&http, port, "/api/items", &[("x-api-key", &key)]).await;
                    match answer.status.as_u16() {
                        200 => {
                            in_a_row = 0;
                            seen.admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        429 => {
                            in_a_row += 1;
                            seen.refused.fetch_add(1, Ordering::Relaxed);
                            let retry: u64 = answer.headers["retry-after"]
                                .to_str()
                                .unwrap()
                                .parse()
                                .unwrap();
                            assert!((1..=60).contains(&retry), "Retry-After {retry}");
                        }
                        other => panic!("unexpected answer {other}: {}", answer.body),
                    }
                }
            }));
        }
    }
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(now_secs() / 60, minute, "the traffic outlasted its minute");

    let admitted: Vec<u64> = seen
        .iter()
        .map(|s| s.admitted.load(Ordering::Relaxed))
        .collect();
    let total: u64 = admitted.iter().sum();
    eprintln!(
        "fleet quota 1000/min: admitted {total} ({admitted:?} by agent), refused {:?}",
        seen.iter()
            .map(|s| s.refused.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    );
    // The documented overshoot while agents reach a control plane is zero: agents admit only
    // what the control plane granted, and grants never exceed the budget (ARCHITECTURE.md,
    // "Fleet budgets"). And what was granted is spent: the fleet gets its whole budget.
    assert!(
        total <= 1000,
        "the fleet admitted {total} of a quota of 1000"
    );
    assert!(
        total >= 990,
        "the fleet admitted only {total} of a quota of 1000"
    );
    // Every agent refused with the quota's reason.
    for a in &agents {
        assert!(
            rejections(a, "quota_exhausted").await > 0.0,
            "an agent refused for no quota"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_counters_survive_restarts_and_start_over_with_the_next_period() {
    let mut cp = ControlPlane::embedded();
    let upstream = Upstream::start_name_only("backend").await;
    let port = free_port();
    let (key, _) = new_key(&cp, "create", "ann");
    let quota = "kind: Policy\nname: per-minute\nspec: {quota: {limit: 5, period: MINUTE}}\n";
    let revision = cp
        .apply(resources(&config(
            &[port],
            upstream.addr.port(),
            &["key", "per-minute"],
            quota,
        )))
        .await
        .revision;
    let mut a1 = agent(&cp.endpoint(), 1);
    a1.wait_for_version(revision).await;
    let http = client();
    let headers = [("x-api-key", key.as_str())];
    let call = || get_with(&http, port, "/api/items", &headers);

    let minute = minute_with_room(Duration::from_secs(40)).await;
    for i in 0..5 {
        assert_eq!(call().await.status, 200, "request {i}");
    }
    let refused = call().await;
    assert_eq!(refused.status, 429);
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry <= 60 - (now_secs() % 60) + 1,
        "Retry-After {retry} is past the minute"
    );

    // A new control plane process and a new agent process: the count is in the store.
    cp.restart();
    a1.kill();
    let a1 = agent(&cp.endpoint(), 1);
    a1.wait_for_version(revision).await;
    let after = call().await;
    assert_eq!(after.status, 429, "{}", after.body);
    assert_eq!(now_secs() / 60, minute, "the restarts outlasted the minute");

    // The next minute starts the count over.
    eventually(
        "the quota to start over",
        Duration::from_secs(70),
        || async { (call().await.status == 200).then_some(()) },
    )
    .await;
    assert!(now_secs() / 60 > minute);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_a_consumer_is_refused_by_every_agent_once_the_change_reaches_it() {
    let cp = ControlPlane::embedded();
    let upstream = Upstream::start_name_only("backend").await;
    let ports = [free_port(), free_port()];
    let (kept, kept_hash) = new_key(&cp, "create", "ann");
    let (removed, _) = new_key(&cp, "add-key", "ann");
    let revision = cp
        .apply(resources(&config(
            &ports,
            upstream.addr.port(),
            &["key"],
            "",
        )))
        .await
        .revision;
    let agents = [agent(&cp.endpoint(), 1), agent(&cp.endpoint(), 2)];
    for a in &agents {
        a.wait_for_version(revision).await;
    }
    let http = client();
    for port in ports {
        for key in [&kept, &removed] {
            let answer = get_with(&http, port, "/api/x", &[("x-api-key", key)]).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
        }
    }

    // The consumer keeps its first key only.
    let consumer = format!(
        "kind: Consumer\nname: ann\nspec:\n  api_keys: [{{id: key-1, sha256: {kept_hash}}}]\n"
    );
    let revision = cp.apply(resources(&consumer)).await.revision;
    for (a, port) in agents.iter().zip(ports) {
        // Once an agent serves the revision that removed it, the key is refused there.
        a.wait_for_version(revision).await;
        let answer = get_with(&http, port, "/api/x", &[("x-api-key", &removed)]).await;
        assert_eq!(answer.status, 401, "{}", answer.body);
        let answer = get_with(&http, port, "/api/x", &[("x-api-key", &kept)]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
}

/// The row of `portico usage -o json` for `route` and `consumer`.
fn usage_row(json: &Value, route: &str, consumer: &str) -> Option<Value> {
    json["rows"]
        .as_array()?
        .iter()
        .find(|r| r["route"] == route && r["consumer"] == consumer)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portico_usage_and_agents_show_the_traffic_agents_served() {
    let cp = ControlPlane::embedded();
    let upstream = Upstream::start_name_only("backend").await;
    let port = free_port();
    let (key, _) = new_key(&cp, "create", "ann");
    let revision = cp
        .apply(resources(&config(
            &[port],
            upstream.addr.port(),
            &["key"],
            "",
        )))
        .await
        .revision;
    let a1 = agent(&cp.endpoint(), 1);
    a1.wait_for_version(revision).await;
    let http = client();
    for _ in 0..20 {
        let answer = get_with(&http, port, "/api/items", &[("x-api-key", &key)]).await;
        assert_eq!(answer.status, 200);
    }
    for _ in 0..4 {
        assert_eq!(get_with(&http, port, "/api/items", &[]).await.status, 401);
    }
    for _ in 0..5 {
        assert_eq!(get_with(&http, port, "/broken", &[]).await.status, 503);
    }

    let json = eventually("the traffic in portico usage", SHOW_TIMEOUT, || async {
        let json = cp
            .portico(&["-o", "json", "usage", "--since", "10m"])
            .ok()
            .json();
        let served = usage_row(&json, "api", "ann")?;
        let refused = usage_row(&json, "api", "")?;
        let broken = usage_row(&json, "broken", "")?;
        (served["requests"] == 20 && refused["requests"] == 4 && broken["requests"] == 5)
            .then_some(json)
    })
    .await;
    let served = usage_row(&json, "api", "ann").unwrap();
    assert_eq!(served["listener"], "edge-1");
    assert_eq!(served["cluster"], "backend");
    assert_eq!(served["region"], "eu");
    assert_eq!(served["errors"], 0);
    assert!(
        served["p50_ms"].as_u64().is_some() && served["p99_ms"].as_u64().is_some(),
        "{served}"
    );
    let refused = usage_row(&json, "api", "").unwrap();
    assert_eq!(refused["rejections"]["auth_missing"], 4, "{refused}");
    let broken = usage_row(&json, "broken", "").unwrap();
    assert_eq!(
        (broken["errors"].as_u64(), broken["error_rate"].as_f64()),
        (Some(5), Some(1.0))
    );

    // Filters.
    let only_ann = cp
        .portico(&["-o", "json", "usage", "--consumer", "ann"])
        .ok()
        .json();
    let rows = only_ann["rows"].as_array().unwrap();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["consumer"] == "ann"),
        "{only_ann}"
    );
    let broken_only = cp
        .portico(&["-o", "json", "usage", "--route", "broken"])
        .ok()
        .json();
    assert!(
        broken_only["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["route"] == "broken")
    );
    let elsewhere = cp
        .portico(&["-o", "json", "usage", "--region", "us"])
        .ok()
        .json();
    assert_eq!(
        elsewhere["rows"].as_array().unwrap().len(),
        0,
        "{elsewhere}"
    );
    // The table.
    let table = cp.portico(&["usage"]).ok().stdout;
    let line = table
        .lines()
        .find(|l| l.starts_with("edge-1") && l.contains(" ann "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains(" 20 ") && line.contains("0.0%"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("broken") && l.contains("100.0%")),
        "{table}"
    );

    // portico agents: requests per second while traffic flows.
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let traffic = {
        let (busy, key) = (busy.clone(), key.clone());
        tokio::spawn(async move {
            let http = client();
            while busy.load(Ordering::Relaxed) {
                get_with(&http, port, "/api/items", &[("x-api-key", &key)]).await;
            }
        })
    };
    eventually(
        "requests per second in portico agents",
        SHOW_TIMEOUT,
        || async {
            let json = cp.portico(&["-o", "json", "agents"]).ok().json();
            (json["agents"][0]["req_per_s"].as_f64()? > 0.0).then_some(())
        },
    )
    .await;
    let table = cp.portico(&["agents"]).ok().stdout;
    assert!(table.lines().next().unwrap().contains("REQ/S"), "{table}");
    busy.store(false, Ordering::Relaxed);
    traffic.await.unwrap();
}

#[test]
fn apply_refuses_unknown_policies_consumers_and_key_types_with_the_field_path() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    let config = format!(
        "{}---\nkind: Policy\nname: jwt\nspec:\n  jwt_auth:\n    issuer: https://issuer.example.com\n    jwks: '{{\"keys\": [{{\"kty\": \"XYZ\", \"k\": \"c2VjcmV0\"}}]}}'\n---\nkind: Policy\nname: only-bob\nspec: {{api_key_auth: {{consumers: [bob]}}}}\n",
        config(
            &[free_port()],
            free_port(),
            &["key", "ghost", "only-bob"],
            ""
        )
    );
    let path = files.write("gateway.yaml", &config);
    let run = cp.portico(&["apply", "-f", &path]).expect(4);
    for expected in [
        "RouteTable/main: virtual_hosts[0].routes[0].policies[1]: policy \"ghost\" does not exist",
        "Policy/jwt: jwt_auth.jwks.keys[0].kty: unknown key type \"XYZ\"",
        "Policy/only-bob: api_key_auth.consumers[0]: consumer \"bob\" does not exist",
    ] {
        assert!(run.stderr.contains(expected), "{expected}\n{run:#?}");
    }
    let history = cp.portico(&["-o", "json", "history"]).ok().json();
    assert_eq!(history["entries"].as_array().unwrap().len(), 0, "{history}");
}
