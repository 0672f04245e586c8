//! The `portico` binary with agents: `agents`, `rollout status --wait` (success, NACK,
//! timeout), config revisions that count changes, and `portico dev` serving the curl commands
//! it prints.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use portico_api::Resource;
use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::bins;
use portico_integration_tests::cli::{self, Files, routes, small_config, web_listener};
use portico_integration_tests::cp::ControlPlane;
use portico_integration_tests::scripted_agent::{ScriptedAgent, node};
use portico_test_support::http::fetch_blocking;
use portico_test_support::net::{free_addr, free_port, localhost};
use portico_test_support::process::{Process, SIGINT};
use portico_test_support::resources::cluster;
use portico_test_support::wait::eventually_blocking;

fn agent(cp: &ControlPlane, id: &str, region: &str) -> AgentOptions {
    let mut options = AgentOptions::new(id, &[cp.endpoint()]);
    options.region = region.to_string();
    options.zone = format!("{region}-1");
    options
}

/// One listener per region on its own port (agents share this machine), and the routes.
fn regional_config(regions: &[&str]) -> Vec<Resource> {
    let mut config: Vec<Resource> = regions
        .iter()
        .map(|r| web_listener(&format!("web-{r}"), free_port(), Some(r)))
        .collect();
    config.extend(routes("hi", free_port()));
    config
}

#[test]
fn agents_lists_each_agent_with_its_state_and_filters_by_region_and_label() {
    let cp = ControlPlane::embedded();
    let _eu = Agent::start(&agent(&cp, "edge-eu", "eu").label("tier", "edge"));
    let _us = Agent::start(&agent(&cp, "edge-us", "us"));
    let files = Files::new();
    let config = files.write_yaml("a.yaml", &regional_config(&["eu", "us"]));
    let revision = cp
        .portico(&["-o", "json", "apply", "-f", &config])
        .ok()
        .json()["revision"]
        .as_i64()
        .unwrap();

    let listed = eventually_blocking("both agents in sync", Duration::from_secs(20), || {
        let json = cp.portico(&["-o", "json", "agents"]).ok().json();
        let agents = json["agents"].as_array()?;
        (agents.len() == 2 && agents.iter().all(|a| a["state"] == "in-sync")).then_some(json)
    });
    assert_eq!(listed["config_revision"], revision);
    let eu = &listed["agents"][0];
    assert_eq!(eu["id"], "edge-eu");
    assert_eq!(eu["kind"], "portico");
    assert_eq!(eu["region"], "eu");
    assert_eq!(eu["zone"], "eu-1");
    assert_eq!(eu["labels"]["tier"], "edge");
    assert_eq!(eu["applied_version"], revision);
    assert!(
        eu["last_seen"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{eu}"
    );

    let table = cp.portico(&["agents"]).ok();
    assert!(table.stdout.starts_with("ID "), "{table:#?}");
    assert!(
        table.stdout.contains("edge-us") && table.stdout.contains("in-sync"),
        "{table:#?}"
    );

    let ids = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["-o", "json", "agents"];
        full.extend_from_slice(args);
        let json = cp.portico(&full).ok().json();
        json["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&["--region", "us"]), ["edge-us"]);
    assert_eq!(ids(&["--selector", "tier=edge"]), ["edge-eu"]);
    cp.portico(&["agents", "--selector", "tier"]).expect(2);
}

/// A `portico -o json` command that must succeed; its `revision`.
fn revision_of(cp: &ControlPlane, args: &[&str]) -> i64 {
    let mut full = vec!["-o", "json"];
    full.extend_from_slice(args);
    let json = cp.portico(&full).ok().json();
    json["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no revision in {json}"))
}

/// Waits until every connected agent applied the current revision.
fn wait_rollout(cp: &ControlPlane) {
    cp.portico(&["rollout", "status", "--wait", "--timeout", "30s"])
        .ok();
}

#[test]
fn config_revisions_count_changes_whatever_the_registry_writes() {
    let cp = ControlPlane::embedded();
    let regions = ["eu", "us", "ap"];
    let agents: Vec<Agent> = regions
        .iter()
        .map(|r| Agent::start(&agent(&cp, &format!("edge-{r}"), r)))
        .collect();
    eventually_blocking("three agents registered", Duration::from_secs(20), || {
        let json = cp.portico(&["-o", "json", "agents"]).ok().json();
        (json["agents"].as_array()?.len() == 3).then_some(())
    });
    let listeners: Vec<Resource> = regions
        .iter()
        .map(|r| web_listener(&format!("web-{r}"), free_port(), Some(r)))
        .collect();
    let upstream = free_port();
    let files = Files::new();
    let config = |body: &str, extra: bool| {
        let mut config = listeners.clone();
        config.extend(routes(body, upstream));
        if extra {
            config.push(cluster("extra", &[localhost(upstream)]));
        }
        files.write_yaml("config.yaml", &config)
    };

    // Four changes (three applies and a delete); after each, every agent applies it, so the
    // registry writes its records to the store between the changes.
    let mut revisions = Vec::new();
    for (body, extra) in [("one", false), ("one", true), ("two", true)] {
        revisions.push(revision_of(&cp, &["apply", "-f", &config(body, extra)]));
        wait_rollout(&cp);
    }
    revisions.push(revision_of(&cp, &["delete", "cluster", "extra"]));
    wait_rollout(&cp);
    assert_eq!(revisions, [1, 2, 3, 4]);

    let history = cp.portico(&["-o", "json", "history"]).ok().json();
    let listed: Vec<i64> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [4, 3, 2, 1]);
    let table = cp.portico(&["get", "routetable"]).ok();
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["main", "3"])),
        "the route table was last changed by revision 3: {table:#?}"
    );

    // A rollback is the next change.
    let rolled = cp.portico(&["-o", "json", "rollback", "2"]).ok().json();
    assert_eq!(
        (rolled["revision"].as_i64(), rolled["rollback_of"].as_i64()),
        (Some(5), Some(2))
    );
    wait_rollout(&cp);
    let history = cp
        .portico(&["-o", "json", "history", "--limit", "1"])
        .ok()
        .json();
    assert_eq!(history["entries"][0]["revision"], 5);
    assert_eq!(history["entries"][0]["rollback_of"], 2);
    let status = cp
        .portico(&["-o", "json", "rollout", "status", "5"])
        .ok()
        .json();
    assert_eq!(
        (status["revision"].as_i64(), status["applied"].as_i64()),
        (Some(5), Some(3))
    );

    // Agents, their admin endpoints and both binaries' metrics speak of the same number.
    let listed = cp.portico(&["-o", "json", "agents"]).ok().json();
    assert_eq!(listed["config_revision"], 5);
    for a in listed["agents"].as_array().unwrap() {
        assert_eq!(a["applied_version"], 5, "{a}");
    }
    for agent in &agents {
        let (status, config) = fetch_blocking(agent.admin(), "/config").expect("agent /config");
        assert_eq!(status, 200);
        let config: serde_json::Value = serde_json::from_str(&config).unwrap();
        assert_eq!(config["version"], 5);
        let (_, metrics) = fetch_blocking(agent.admin(), "/metrics").expect("agent /metrics");
        assert!(
            metrics.contains("portico_agent_config_version 5"),
            "{metrics}"
        );
    }
    let metrics = cp.metrics_text();
    assert!(
        metrics.contains("portico_cp_config_revision 5"),
        "{metrics}"
    );
}

#[test]
fn rollout_status_wait_succeeds_once_every_agent_applied() {
    let cp = ControlPlane::embedded();
    let _a = Agent::start(&agent(&cp, "edge-1", "eu"));
    let _b = Agent::start(&agent(&cp, "edge-2", "us"));
    eventually_blocking("both agents registered", Duration::from_secs(20), || {
        let json = cp.portico(&["-o", "json", "agents"]).ok().json();
        (json["agents"].as_array()?.len() == 2).then_some(())
    });
    let files = Files::new();
    let config = files.write_yaml("a.yaml", &regional_config(&["eu", "us"]));
    cp.portico(&["apply", "-f", &config]).ok();

    let run = cp
        .portico(&["rollout", "status", "--wait", "--timeout", "30s"])
        .ok();
    assert!(
        run.stdout.contains("2/2 applied, 0 pending, 0 NACKed"),
        "{run:#?}"
    );
    let json = cp.portico(&["-o", "json", "rollout", "status"]).ok().json();
    assert_eq!(json["state"], "complete");
    assert_eq!(json["applied"], 2);
}

#[test]
fn rollout_status_wait_exits_5_with_the_reason_when_an_agent_nacks() {
    let cp = ControlPlane::embedded();
    let _agent = Agent::start(&agent(&cp, "edge-1", "eu"));
    // The listener's port is taken, so the agent cannot bind it and rejects the config.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let files = Files::new();
    cp.portico(&[
        "apply",
        "-f",
        &files.write_yaml("a.yaml", &small_config(port, "hi", free_port())),
    ])
    .ok();

    let run = cp
        .portico(&["rollout", "status", "--wait", "--timeout", "30s"])
        .expect(5);
    assert!(run.stdout.contains("1 NACKed"), "{run:#?}");
    assert!(run.stdout.contains("NACK from edge-1:"), "{run:#?}");
    assert!(
        run.stderr.contains("rejected by 1 agent(s): edge-1:"),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains(&port.to_string()),
        "the reason names the port: {run:#?}"
    );

    let agents = cp.portico(&["agents"]).ok();
    assert!(agents.stdout.contains("NACKed"), "{agents:#?}");
    // Without --wait the status is printed and the exit code still says it failed.
    cp.portico(&["rollout", "status"]).expect(5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_status_wait_exits_5_on_timeout_while_an_agent_has_not_applied() {
    let cp = ControlPlane::embedded();
    // An agent that receives updates and never answers: the fault of a hung agent.
    let mut stuck = ScriptedAgent::connect(&cp.endpoint(), node("stuck", "eu", "eu-1"), 0)
        .await
        .unwrap();
    let files = Files::new();
    let config = files.write_yaml("a.yaml", &small_config(free_port(), "hi", free_port()));
    let url = cp.endpoint();
    tokio::task::spawn_blocking(move || cli::portico(&url, &["apply", "-f", &config]).ok())
        .await
        .unwrap();
    stuck.expect_update().await;

    let url = cp.endpoint();
    let run = tokio::task::spawn_blocking(move || {
        cli::portico(&url, &["rollout", "status", "--wait", "--timeout", "1s"])
    })
    .await
    .unwrap()
    .expect(5);
    assert!(run.stderr.contains("timed out after 1s"), "{run:#?}");
    assert!(run.stderr.contains("0 of 1 agents applied it"), "{run:#?}");
    assert!(run.stdout.contains("1 pending"), "{run:#?}");
}

/// `portico dev` on `ports`.
fn start_dev(ports: &DevPorts) -> Process {
    let mut cmd = Command::new(bins::path("portico"));
    cmd.arg("dev")
        .arg("--listen")
        .arg(ports.cp.to_string())
        .arg("--proxy-port")
        .arg(ports.proxy.port().to_string())
        .arg("--upstream")
        .arg(ports.upstream.to_string())
        .arg("--agent-admin")
        .arg(ports.agent_admin.to_string())
        .arg("--metrics-listen")
        .arg(ports.metrics.to_string())
        .arg("--web-listen")
        .arg(ports.web.to_string());
    Process::spawn("portico dev", cmd)
}

struct DevPorts {
    cp: SocketAddr,
    proxy: SocketAddr,
    upstream: SocketAddr,
    agent_admin: SocketAddr,
    metrics: SocketAddr,
    web: SocketAddr,
}

impl DevPorts {
    fn free() -> DevPorts {
        DevPorts {
            cp: free_addr(),
            proxy: free_addr(),
            upstream: free_addr(),
            agent_admin: free_addr(),
            metrics: free_addr(),
            web: free_addr(),
        }
    }
}

#[test]
fn dev_serves_the_curl_commands_it_prints_and_stops_on_ctrl_c() {
    let ports = DevPorts::free();
    let mut dev = start_dev(&ports);
    let curls = eventually_blocking(
        "the curl commands portico dev prints",
        Duration::from_secs(60),
        || {
            if let Some(status) = dev.try_wait() {
                panic!("portico dev exited with {status}: {}", dev.stderr());
            }
            let urls: Vec<String> = dev
                .stdout()
                .lines()
                .filter_map(|l| l.trim().strip_prefix("curl -i ").map(String::from))
                .collect();
            (urls.len() == 3).then_some(urls)
        },
    );
    let api = format!("http://{}/api/hello", ports.proxy);
    assert_eq!(curls[0], api);

    let (status, body) = fetch_blocking(ports.proxy, "/api/hello").expect("the proxy answers");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("hello from the portico demo upstream"),
        "{body}"
    );
    assert!(
        body.contains("\"path\": \"/hello\""),
        "the prefix is rewritten: {body}"
    );
    let (status, body) = fetch_blocking(ports.proxy, "/healthz").expect("the proxy answers");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = fetch_blocking(ports.proxy, "/nothing-here").expect("the proxy answers");
    assert_eq!(status, 404);

    let server = format!("http://{}", ports.cp);
    let agents = cli::portico(&server, &["-o", "json", "agents"]).ok().json();
    assert_eq!(agents["agents"][0]["id"], "dev-agent");
    assert_eq!(agents["agents"][0]["state"], "in-sync");

    // Agent and control plane share the process's recorder; each endpoint shows its own.
    let (status, agent_metrics) =
        fetch_blocking(ports.agent_admin, "/metrics").expect("agent admin");
    assert_eq!(status, 200);
    assert!(
        agent_metrics.contains("portico_agent_requests_total"),
        "{agent_metrics}"
    );
    assert!(!agent_metrics.contains("portico_cp_"), "{agent_metrics}");
    let (status, cp_metrics) = fetch_blocking(ports.metrics, "/metrics").expect("cp metrics");
    assert_eq!(status, 200);
    assert!(
        cp_metrics.contains("portico_cp_connected_agents"),
        "{cp_metrics}"
    );
    assert!(!cp_metrics.contains("portico_agent_"), "{cp_metrics}");

    dev.signal(SIGINT);
    let status = dev.wait_timeout(Duration::from_secs(20));
    assert!(status.success(), "portico dev exited with {status}");
    assert!(
        fetch_blocking(ports.proxy, "/healthz").is_none(),
        "the proxy stopped"
    );
    assert!(
        fetch_blocking(ports.upstream, "/").is_none(),
        "the demo upstream stopped"
    );
}

#[test]
fn dev_fails_clearly_when_a_port_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = DevPorts {
        proxy: taken.local_addr().unwrap(),
        ..DevPorts::free()
    };
    let mut dev = start_dev(&ports);
    let status = dev.wait_timeout(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1));
    let stderr = dev.stderr();
    assert!(
        stderr.contains(&format!("cannot listen on {}", ports.proxy))
            && stderr.contains("--proxy-port"),
        "{stderr}"
    );
}
