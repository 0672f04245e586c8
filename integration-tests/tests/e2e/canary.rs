//! Canary rollouts end to end, with the real CLI, real agents and traffic: a good change reaches
//! the canary agents only, then every agent after the bake; a change a canary agent rejects,
//! and one that makes a canary route answer 500, abort and put the canary agents back on the
//! previous config (while the other agents' clients never see the broken one); manual promote
//! and abort, one rollout at a time and `--force`; and a rollout that finishes on another
//! replica after the leader driving it dies mid-bake.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::cli::{Files, Run, agent_listeners_yaml};
use portico_integration_tests::cp::{ControlPlane, StoreSpec};
use portico_integration_tests::etcd::Etcd;
use portico_test_support::http::{client, get_with};
use portico_test_support::net::free_port;
use portico_test_support::upstream::Upstream;
use portico_test_support::wait::eventually;
use serde_json::Value;

/// How long a rollout may take to reach a stage: an ACK timeout (30 s) at most, plus the
/// leader's tick and the traffic sums' flush.
const STAGE_TIMEOUT: Duration = Duration::from_secs(45);
/// Leadership moves within one lease TTL.
const LEADER_MOVES_WITHIN: Duration = Duration::from_secs(20);

/// One listener per agent (`edge-<n>` on `ports[n-1]`, selecting the agent labelled
/// `node: a<n>`), each routing `/api` with `api` (an action) and `/other` to a direct 200.
fn config(ports: &[u16], upstream: u16, api: &str) -> String {
    let mut docs = agent_listeners_yaml(ports);
    docs.push(format!(
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: [\"*\"]\n      routes:\n\
         \x20       - {{name: api, match: {{prefix: /api}}, action: {api}}}\n\
         \x20       - {{name: other, match: {{prefix: /other}}, action: {{direct_response: {{status: 200, body: other}}}}}}\n"
    ));
    docs.push(format!(
        "kind: Cluster\nname: backend\nspec:\n  endpoints: [{{address: 127.0.0.1, port: {upstream}}}]\n"
    ));
    docs.join("---\n")
}

/// `/api` to the backend cluster.
const TO_BACKEND: &str = "{cluster: backend}";
/// `/api` answered 500 by the proxy itself.
const BROKEN: &str = "{direct_response: {status: 500, body: broken}}";

/// Agent `a<n>` labelled `node: a<n>` and `slot: <slot>`, syncing from `cps`.
fn agent(cps: &[String], n: usize, slot: &str) -> Agent {
    Agent::start(
        &AgentOptions::new(&format!("a{n}"), cps)
            .label("node", &format!("a{n}"))
            .label("slot", slot),
    )
}

/// Agents `a1`, `a2`, … (one per port) on `cps`: `a1` in slot 1 (the canary), the others in
/// slot 2, each running `config(ports, upstream, TO_BACKEND)` applied through `cp`. Returns
/// them and that revision.
async fn fleet(
    cp: &ControlPlane,
    cps: &[String],
    files: &Files,
    ports: &[u16],
    upstream: u16,
) -> (Vec<Agent>, i64) {
    let first = cp.apply_text(files, &config(ports, upstream, TO_BACKEND), &[]);
    let agents: Vec<Agent> = (1..=ports.len())
        .map(|n| agent(cps, n, if n == 1 { "1" } else { "2" }))
        .collect();
    for a in &agents {
        a.wait_for_version(first).await;
    }
    (agents, first)
}

/// `portico rollout status -o json` through `cp`: the exit code and the `rollout` object.
fn rollout(cp: &ControlPlane) -> (i32, Value) {
    rollout_of(cp, &[])
}

/// `portico rollout status -o json ARGS…` through `cp`: the exit code and the `rollout`
/// object.
fn rollout_of(cp: &ControlPlane, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["-o", "json", "rollout", "status"];
    all.extend_from_slice(args);
    let run = cp.portico(&all);
    let json: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run.code, json["rollout"].clone())
}

/// Waits until the rollout seen through `cp` is in `stage`; returns its object.
async fn stage(cp: &ControlPlane, stage: &str) -> Value {
    eventually(
        &format!("the rollout to be {stage}"),
        STAGE_TIMEOUT,
        || async {
            let (_, r) = rollout(cp);
            (r["stage"] == stage).then_some(r)
        },
    )
    .await
}

/// The body `/api` answers on `port` with.
async fn api(port: u16) -> String {
    let http = client();
    let answer = get_with(&http, port, "/api", &[]).await;
    format!("{} {}", answer.status.as_u16(), answer.body.trim())
}

/// Sends `n` requests to `/api` on each of `ports`, so the gates have traffic to judge.
async fn traffic(ports: &[u16], n: usize) {
    let http = client();
    for port in ports {
        for _ in 0..n {
            get_with(&http, *port, "/api", &[]).await;
        }
    }
}

/// The history entry of `revision`, from `portico history -o json`.
fn history_entry(cp: &ControlPlane, revision: i64) -> Value {
    let out = cp.portico(&["-o", "json", "history"]).ok().json();
    let entries = out
        .as_array()
        .cloned()
        .or_else(|| out["entries"].as_array().cloned())
        .unwrap_or_default();
    entries
        .into_iter()
        .find(|e| e["revision"] == revision)
        .unwrap_or_else(|| panic!("no history entry {revision} in {out}"))
}

/// What `run` printed, both streams.
fn said(run: &Run) -> String {
    format!("{}{}", run.stdout, run.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_change_reaches_the_canaries_first_then_every_agent_after_the_bake() {
    let cp = ControlPlane::embedded();
    let (v1, v2) = (
        Upstream::start_name_only("v1").await,
        Upstream::start_name_only("v2").await,
    );
    let ports = [free_port(), free_port(), free_port()];
    let files = Files::new();
    let (agents, first) = fleet(&cp, &[cp.endpoint()], &files, &ports, v1.addr.port()).await;

    let canary = cp.apply_text(
        &files,
        &config(&ports, v2.addr.port(), TO_BACKEND),
        &["--canary", "slot=1", "--bake", "4s"],
    );
    agents[0].wait_for_version(canary).await;
    assert_eq!(api(ports[0]).await, "200 v2");
    // Every other agent stays on the previous revision while the canary bakes.
    for (a, port) in agents[1..].iter().zip(&ports[1..]) {
        assert_eq!(a.version().await, first);
        assert_eq!(api(*port).await, "200 v1");
    }
    let baking = stage(&cp, "baking").await;
    assert_eq!(baking["canary_agents"], 1, "{baking}");
    assert_eq!(baking["canary_node_ids"][0], "a1", "{baking}");
    assert_eq!(agents[2].version().await, first);
    traffic(&ports, 150).await;

    let wait = cp.portico(&["rollout", "status", "--wait", "--timeout", "60s"]);
    assert_eq!(wait.code, 0, "{wait:#?}");
    let (code, done) = rollout(&cp);
    assert_eq!((code, &done["stage"]), (0, &Value::from("done")), "{done}");
    let promotion = done["ended_revision"].as_i64().unwrap();
    assert!(promotion > canary, "{done}");
    let gates: Vec<(String, String)> = done["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap().into(),
                g["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        gates.contains(&("error_rate".into(), "pass".into())),
        "{gates:?}"
    );
    for (a, port) in agents.iter().zip(&ports) {
        a.wait_for_version(promotion).await;
        assert_eq!(api(*port).await, "200 v2");
    }
    assert_eq!(history_entry(&cp, canary)["canary"], "slot=1");
    assert_eq!(history_entry(&cp, promotion)["promotion_of"], canary);
    assert!(
        cp.metrics_text()
            .contains("portico_cp_rollouts_total{outcome=\"promoted\"} 1"),
        "{}",
        cp.metrics_text()
    );
    eventually("the stage gauge to show done", STAGE_TIMEOUT, || async {
        let text = cp.metrics_text();
        (text.contains("portico_cp_rollout_stage{stage=\"done\"} 1")
            && text.contains("portico_cp_rollout_stage{stage=\"baking\"} 0"))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_a_canary_agent_rejects_aborts_and_puts_it_back_on_the_previous_config() {
    let cp = ControlPlane::embedded();
    let upstream = Upstream::start_name_only("v1").await;
    let ports = [free_port(), free_port()];
    let files = Files::new();
    let base = config(&ports, upstream.addr.port(), TO_BACKEND);
    let (agents, first) = fleet(&cp, &[cp.endpoint()], &files, &ports, upstream.addr.port()).await;
    // A listener for the canary agent on a port something else holds: it cannot bind it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let change = format!(
        "{base}---\nkind: Listener\nname: taken\nspec:\n  address: 127.0.0.1\n  port: {port}\n  protocol: HTTP\n  route_table: main\n  selector: {{labels: {{node: a1}}}}\n"
    );
    let canary = cp.apply_text(&files, &change, &["--canary", "node=a1"]);

    let wait = cp.portico(&["rollout", "status", "--wait", "--timeout", "60s"]);
    assert_eq!(wait.code, 5, "{wait:#?}");
    assert!(said(&wait).contains("nack"), "{wait:#?}");
    let (_, aborted) = rollout(&cp);
    assert_eq!(aborted["stage"], "aborted", "{aborted}");
    let reason = aborted["reason"].as_str().unwrap();
    assert!(reason.contains("a1") && reason.contains("bind"), "{reason}");
    let restored = aborted["ended_revision"].as_i64().unwrap();
    for a in &agents {
        a.wait_for_version(restored).await;
        assert_eq!(a.resource_names("listener").await.len(), 1);
    }
    assert_eq!(api(ports[0]).await, "200 v1");
    assert_eq!(history_entry(&cp, canary)["aborted"], true);
    assert_eq!(history_entry(&cp, restored)["rollback_of"], first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_answering_500_aborts_on_the_error_rate_and_other_clients_never_see_it() {
    let cp = ControlPlane::embedded();
    let upstream = Upstream::start_name_only("v1").await;
    let ports = [free_port(), free_port(), free_port()];
    let files = Files::new();
    let (agents, _) = fleet(&cp, &[cp.endpoint()], &files, &ports, upstream.addr.port()).await;

    // Clients of every agent, flat out, until the test is over.
    let stop = Arc::new(AtomicBool::new(false));
    let errors: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::default()).collect();
    let mut clients = Vec::new();
    for (port, errors) in ports.iter().zip(&errors) {
        let (port, errors, stop) = (*port, errors.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let http = client();
            let mut sent = 0u64;
            // Bounded: far more than the test needs.
            while !stop.load(Ordering::Relaxed) && sent < 1_000_000 {
                if get_with(&http, port, "/api", &[]).await.status.as_u16() == 500 {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                sent += 1;
            }
        }));
    }
    cp.apply_text(
        &files,
        &config(&ports, upstream.addr.port(), BROKEN),
        &["--canary", "slot=1", "--bake", "10m"],
    );
    let aborted = stage(&cp, "aborted").await;
    let reason = aborted["reason"].as_str().unwrap();
    assert!(reason.starts_with("error_rate: "), "{reason}");
    let restored = aborted["ended_revision"].as_i64().unwrap();
    for a in &agents {
        a.wait_for_version(restored).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(
        errors[0].load(Ordering::Relaxed) > 0,
        "the canary never broke"
    );
    assert_eq!(errors[1].load(Ordering::Relaxed), 0);
    assert_eq!(errors[2].load(Ordering::Relaxed), 0);
    assert_eq!(api(ports[0]).await, "200 v1");
    let gate = aborted["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "error_rate")
        .cloned()
        .unwrap();
    assert_eq!(gate["state"], "fail", "{gate}");
    assert!(gate["value"].as_f64().unwrap() > 0.01, "{gate}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_promote_and_abort_by_hand_and_one_rollout_runs_at_a_time() {
    let cp = ControlPlane::embedded();
    let (v1, v2) = (
        Upstream::start_name_only("v1").await,
        Upstream::start_name_only("v2").await,
    );
    let ports = [free_port(), free_port()];
    let files = Files::new();
    let one = config(&ports, v1.addr.port(), TO_BACKEND);
    let two = config(&ports, v2.addr.port(), TO_BACKEND);
    let (agents, first) = fleet(&cp, &[cp.endpoint()], &files, &ports, v1.addr.port()).await;

    // Manual: the bake ends and the rollout waits for the operator.
    let canary = cp.apply_text(
        &files,
        &two,
        &["--canary", "slot=1", "--bake", "1s", "--manual"],
    );
    eventually("the bake to end", STAGE_TIMEOUT, || async {
        let (_, r) = rollout(&cp);
        let waiting = r["warnings"].as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w.as_str().is_some_and(|w| w.contains("waiting")))
        });
        waiting.then_some(())
    })
    .await;
    assert_eq!(agents[1].version().await, first);
    // Any other change is refused, naming the rollout.
    let path = files.write("refused.yaml", &one);
    let refused = cp.portico(&["apply", "-f", &path]);
    assert_ne!(refused.code, 0, "{refused:#?}");
    assert!(
        said(&refused).contains(&format!("canary rollout of revision {canary}")),
        "{refused:#?}"
    );
    let promoted = cp
        .portico(&["-o", "json", "rollout", "promote"])
        .ok()
        .json();
    let promotion = promoted["revision"].as_i64().unwrap();
    for (a, port) in agents.iter().zip(&ports) {
        a.wait_for_version(promotion).await;
        assert_eq!(api(*port).await, "200 v2");
    }
    assert_eq!(rollout(&cp).1["stage"], "done");

    // Abort by hand: the canary agent goes back to v2.
    cp.apply_text(&files, &one, &["--canary", "slot=1", "--bake", "10m"]);
    let aborted = cp
        .portico(&["-o", "json", "rollout", "abort", "-m", "looks wrong"])
        .ok()
        .json();
    let restored = aborted["revision"].as_i64().unwrap();
    for (a, port) in agents.iter().zip(&ports) {
        a.wait_for_version(restored).await;
        assert_eq!(api(*port).await, "200 v2");
    }
    let (code, r) = rollout(&cp);
    assert_eq!((code, &r["stage"]), (5, &Value::from("aborted")), "{r}");
    assert!(r["reason"].as_str().unwrap().contains("looks wrong"), "{r}");

    // --force aborts the active rollout before it applies.
    let third = cp.apply_text(&files, &one, &["--canary", "slot=1", "--bake", "10m"]);
    let forced = cp.apply_text(&files, &one.replace("other", "elsewhere"), &["--force"]);
    // The forced change is the current revision; the rollout is asked for by its own.
    let (_, r) = rollout_of(&cp, &[&third.to_string()]);
    assert_eq!(r["stage"], "aborted", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("forced"), "{r}");
    for a in &agents {
        a.wait_for_version(forced).await;
    }
    // The forced change (back to v1) reached every agent.
    assert_eq!(api(ports[1]).await, "200 v1");
}

/// `portico_cp_leader` of `cp`; `None` when it does not answer.
fn leads(cp: &ControlPlane) -> Option<bool> {
    let (status, text) = cp.http_get("/metrics")?;
    (status == 200).then_some(())?;
    text.lines()
        .find_map(|l| l.strip_prefix("portico_cp_leader "))
        .map(|v| v.trim() == "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_whose_leader_dies_mid_bake_finishes_on_the_other_replica() {
    let etcd = Etcd::start();
    let store = StoreSpec::Etcd {
        endpoint: etcd.endpoint(),
        prefix: "/canary-failover".into(),
    };
    let one = ControlPlane::start(store.clone(), "cp-1");
    let two = ControlPlane::start(store, "cp-2");
    let (v1, v2) = (
        Upstream::start_name_only("v1").await,
        Upstream::start_name_only("v2").await,
    );
    let ports = [free_port(), free_port()];
    let files = Files::new();
    // Both agents know both replicas.
    let cps = [one.endpoint(), two.endpoint()];
    let (agents, first) = fleet(&one, &cps, &files, &ports, v1.addr.port()).await;
    let one_leads = eventually("one leader", LEADER_MOVES_WITHIN, || async {
        let (a, b) = (leads(&one)?, leads(&two)?);
        (a != b).then_some(a)
    })
    .await;
    let (mut leader, survivor) = if one_leads { (one, two) } else { (two, one) };

    let canary = leader.apply_text(
        &files,
        &config(&ports, v2.addr.port(), TO_BACKEND),
        &["--canary", "slot=1", "--bake", "8s"],
    );
    stage(&leader, "baking").await;
    assert_eq!(agents[1].version().await, first);
    leader.kill();

    let wait = survivor.portico(&["rollout", "status", "--wait", "--timeout", "90s"]);
    assert_eq!(wait.code, 0, "{wait:#?}");
    let (_, done) = rollout(&survivor);
    assert_eq!(done["stage"], "done", "{done}");
    assert_eq!(done["revision"], canary, "{done}");
    let promotion = done["ended_revision"].as_i64().unwrap();
    for (a, port) in agents.iter().zip(&ports) {
        a.wait_for_version(promotion).await;
        assert_eq!(api(*port).await, "200 v2");
    }
}
