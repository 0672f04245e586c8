//! `portico health` with real agents and real upstreams: an endpoint whose health check fails
//! shows unhealthy (table and JSON), and an endpoint one agent ejected while another still
//! sees it healthy shows as a disagreement, with the reason and the end of the ejection.

use std::net::SocketAddr;
use std::time::Duration;

use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::cli::Files;
use portico_integration_tests::cp::ControlPlane;
use portico_test_support::http::fetch_blocking;
use portico_test_support::net::free_port;
use portico_test_support::upstream::Upstream;
use portico_test_support::wait::eventually_blocking as poll;
use serde_json::Value;

/// How long a state change may take to show in `portico health`: a report (200 ms in tests),
/// a registry flush (500 ms) and the health check's own interval and threshold.
const SHOW_TIMEOUT: Duration = Duration::from_secs(20);

fn agent(cp: &ControlPlane, id: &str, region: &str) -> AgentOptions {
    let mut options = AgentOptions::new(id, &[cp.endpoint()]);
    options.region = region.to_string();
    options.zone = format!("{region}-1");
    options
}

fn endpoint(addr: SocketAddr) -> String {
    format!("{{address: 127.0.0.1, port: {}}}", addr.port())
}

/// A listener per region (on `ports`), each routing `/checked` to the health-checked cluster
/// `checked` (`flaky`, `good`) and the rest to the cluster `ejecting` (`flaky2`, `good2`),
/// which ejects an endpoint after 3 consecutive 5xx.
fn config(ports: [u16; 2], upstreams: [SocketAddr; 4]) -> String {
    let [flaky, good, flaky2, good2] = upstreams.map(endpoint);
    let listener = |region: &str, port: u16| {
        format!(
            "kind: Listener\nname: web-{region}\nspec:\n  address: 127.0.0.1\n  port: {port}\n  protocol: HTTP\n  route_table: main\n  selector: {{regions: [{region}]}}\n"
        )
    };
    [
        listener("eu", ports[0]),
        listener("us", ports[1]),
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: [\"*\"]\n      routes:\n\
         \x20       - {match: {prefix: /checked}, action: {cluster: checked}}\n\
         \x20       - action: {cluster: ejecting}\n"
            .to_string(),
        format!(
            "kind: Cluster\nname: checked\nspec:\n  endpoints: [{flaky}, {good}]\n  health_check: {{path: /healthz, interval: 0.2s, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 1}}\n"
        ),
        format!(
            "kind: Cluster\nname: ejecting\nspec:\n  endpoints: [{flaky2}, {good2}]\n  outlier_detection: {{consecutive_5xx: 3, base_ejection_time: 60s, max_ejection_percent: 50}}\n"
        ),
    ]
    .join("---\n")
}

/// The sightings of `address` in cluster `cluster` of a `portico health -o json` output, as
/// (agent, state, reason).
fn sightings(json: &Value, cluster: &str, address: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for c in json["clusters"].as_array().unwrap() {
        if c["cluster"] != cluster {
            continue;
        }
        for r in c["regions"].as_array().unwrap() {
            for e in r["endpoints"].as_array().unwrap() {
                if e["address"] != address {
                    continue;
                }
                for a in e["agents"].as_array().unwrap() {
                    let s = |k: &str| a[k].as_str().unwrap().to_string();
                    out.push((s("agent"), s("state"), s("reason")));
                }
            }
        }
    }
    out
}

#[test]
fn health_shows_unhealthy_endpoints_and_the_agents_that_disagree() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let [flaky, good, flaky2, good2] =
        ["flaky", "good", "flaky2", "good2"].map(|name| runtime.block_on(Upstream::start(name)));
    let cp = ControlPlane::embedded();
    let _eu = Agent::start(&agent(&cp, "edge-eu", "eu"));
    let _us = Agent::start(&agent(&cp, "edge-us", "us"));
    let ports = [free_port(), free_port()];
    let files = Files::new();
    let addrs = [flaky.addr, good.addr, flaky2.addr, good2.addr];
    let path = files.write("lb.yaml", &config(ports, addrs));
    cp.portico(&["apply", "-f", &path]).ok();
    cp.portico(&["rollout", "status", "--wait", "--timeout", "30s"])
        .ok();
    let flaky_at = format!("127.0.0.1:{}", flaky.addr.port());
    let flaky2_at = format!("127.0.0.1:{}", flaky2.addr.port());
    let health = |args: &[&str]| {
        let mut full = vec!["-o", "json", "health"];
        full.extend_from_slice(args);
        cp.portico(&full).ok().json()
    };

    // Every agent reports every endpoint healthy.
    poll("both agents to report both clusters", SHOW_TIMEOUT, || {
        let json = health(&[]);
        let all = [("checked", &flaky_at), ("ejecting", &flaky2_at)]
            .iter()
            .all(|(c, a)| {
                let seen = sightings(&json, c, a);
                seen.len() == 2 && seen.iter().all(|(_, state, _)| state == "healthy")
            });
        all.then_some(())
    });

    // A failing health check: unhealthy on both agents, with the reason.
    flaky.set_failing(true);
    let json = poll(
        "the failing endpoint to show unhealthy",
        SHOW_TIMEOUT,
        || {
            let json = health(&["checked"]);
            let seen = sightings(&json, "checked", &flaky_at);
            (seen.len() == 2 && seen.iter().all(|(_, s, _)| s == "unhealthy")).then_some(json)
        },
    );
    assert_eq!(
        sightings(&json, "checked", &flaky_at),
        [
            ("edge-eu".into(), "unhealthy".into(), "status 500".into()),
            ("edge-us".into(), "unhealthy".into(), "status 500".into())
        ]
    );
    let clusters: Vec<&str> = json["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(clusters, ["checked"], "only the cluster asked for");
    let regions: Vec<&str> = json["clusters"][0]["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, ["eu", "us"], "grouped by the agents' region");
    assert_eq!(json["clusters"][0]["disagreements"], Value::Array(vec![]));
    let table = cp.portico(&["health", "checked"]).ok().stdout;
    assert!(table.starts_with("CLUSTER "), "{table}");
    let row = table
        .lines()
        .find(|l| l.contains(&flaky_at) && l.contains("edge-us"))
        .unwrap_or_else(|| panic!("no row for {flaky_at} on edge-us:\n{table}"));
    assert!(
        row.contains("unhealthy") && row.contains("status 500"),
        "{row}"
    );
    assert!(!table.contains("Agents disagree"), "{table}");
    // The control plane counts it once per agent that sees it.
    poll("the unhealthy-endpoints gauge", SHOW_TIMEOUT, || {
        let metrics = cp.metrics_text();
        metrics
            .contains("portico_cp_unhealthy_endpoints{cluster=\"checked\"} 2")
            .then_some(())
    });

    // Failing answers through the us agent only: it ejects flaky2, the eu agent does not.
    flaky2.set_failing(true);
    let us: SocketAddr = ([127, 0, 0, 1], ports[1]).into();
    for _ in 0..20 {
        assert!(fetch_blocking(us, "/").is_some(), "the us agent answers");
    }
    let json = poll("the agents to disagree on flaky2", SHOW_TIMEOUT, || {
        let json = health(&["ejecting"]);
        let d = json["clusters"][0]["disagreements"]
            .as_array()?
            .first()?
            .clone();
        Some((json, d))
    });
    let (json, disagreement) = json;
    assert_eq!(disagreement["address"], flaky2_at.as_str());
    assert_eq!(disagreement["healthy"], serde_json::json!(["edge-eu"]));
    let ejected = &disagreement["unhealthy"][0];
    assert_eq!(ejected["agent"], "edge-us");
    assert_eq!(ejected["region"], "us");
    assert_eq!(ejected["state"], "ejected");
    assert_eq!(ejected["reason"], "consecutive 5xx");
    assert!(
        ejected["ejected_until"].as_str().unwrap().ends_with('Z'),
        "{ejected}"
    );
    assert!(ejected["errors"].as_u64().unwrap() >= 3, "{ejected}");
    assert_eq!(
        sightings(&json, "ejecting", &flaky2_at),
        [
            ("edge-eu".into(), "healthy".into(), String::new()),
            ("edge-us".into(), "ejected".into(), "consecutive 5xx".into())
        ]
    );
    let table = cp.portico(&["health"]).ok().stdout;
    let disputes = table
        .split_once("Agents disagree:\n")
        .unwrap_or_else(|| panic!("no disagreements in\n{table}"))
        .1;
    let line = disputes
        .lines()
        .find(|l| l.contains(&flaky2_at))
        .unwrap_or_else(|| panic!("{flaky2_at} not in\n{disputes}"));
    assert!(
        line.contains("edge-eu") && line.contains("edge-us (ejected until"),
        "{line}"
    );
    assert!(line.contains("consecutive 5xx"), "{line}");

    // Each region alone: the eu agents agree with themselves.
    let eu = health(&["ejecting", "--region", "eu"]);
    assert_eq!(
        sightings(&eu, "ejecting", &flaky2_at),
        [("edge-eu".into(), "healthy".into(), String::new())]
    );
    assert_eq!(eu["clusters"][0]["disagreements"], Value::Array(vec![]));

    // A health check that passes again brings the endpoint back.
    flaky.set_failing(false);
    poll("the endpoint to be healthy again", SHOW_TIMEOUT, || {
        let seen = sightings(&health(&["checked"]), "checked", &flaky_at);
        (seen.len() == 2 && seen.iter().all(|(_, s, _)| s == "healthy")).then_some(())
    });
    let metrics = cp.metrics_text();
    for line in [
        "portico_cp_unhealthy_endpoints{cluster=\"checked\"} 0",
        "portico_cp_unhealthy_endpoints{cluster=\"ejecting\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    // A cluster the config does not have.
    let missing = cp.portico(&["health", "nosuch"]).expect(1);
    assert!(
        missing.stderr.contains("Cluster/nosuch not found"),
        "{missing:#?}"
    );
}
