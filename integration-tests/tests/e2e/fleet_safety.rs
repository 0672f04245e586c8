//! Fleet safety: an agent never moves to an older or empty config because its control plane is
//! behind it (a new store, a restored backup, another key prefix). It keeps serving and
//! caching its own, says so (`/readyz`, `portico_agent_ahead_of_control_plane`, `portico
//! agents` state `ahead-of-control-plane`), and the control plane logs it. An operator moves
//! it on by making the control plane's version higher, or with `--accept-lower-version`.

use std::path::Path;
use std::time::Duration;

use portico_agent::cache::Cache;
use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::cp::{ControlPlane, StoreSpec};
use portico_integration_tests::etcd::Etcd;
use portico_test_support::http::fetch;
use portico_test_support::net::{free_port, localhost};
use portico_test_support::resources::{cluster, routed};
use portico_test_support::upstream::Upstream;
use portico_test_support::wait::eventually;

const WAIT: Duration = Duration::from_secs(30);

/// The body `port` answers `/` with through the agent, if it answers 200.
async fn served(port: u16) -> Option<String> {
    match fetch(format!("http://127.0.0.1:{port}/")).await {
        Some((200, body)) => Some(body),
        _ => None,
    }
}

/// `log` without its terminal color sequences.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits until the cache in `dir` holds `version`.
async fn cached(dir: &Path, version: i64) {
    let cache = Cache::new(dir);
    eventually(
        &format!("the cache to hold version {version}"),
        WAIT,
        || async {
            let config = cache.load().ok().flatten()?;
            (config.version == version).then_some(())
        },
    )
    .await;
}

/// Asserts what an agent ahead of `cp`, serving `version`, shows everywhere.
async fn assert_ahead(cp: &ControlPlane, agent: &Agent, id: &str, version: i64) {
    cp.wait_for_record(id, "the agent to be ahead of the control plane", |r| {
        r.connected && r.ahead_of_control_plane && r.applied_version == version
    })
    .await;
    let (status, body) = agent.get("/readyz").await.unwrap();
    assert_eq!(status, 200, "it still serves: {body}");
    assert!(
        body.contains(&format!(
            "ahead of the control plane: serving version {version}"
        )),
        "{body}"
    );
    let (_, metrics) = agent.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("portico_agent_ahead_of_control_plane 1"),
        "{metrics}"
    );
    let agents = cp.portico(&["-o", "json", "agents"]).ok().json();
    assert_eq!(agents["agents"][0]["id"], id, "{agents}");
    assert_eq!(
        agents["agents"][0]["state"], "ahead-of-control-plane",
        "{agents}"
    );
    assert_eq!(agents["agents"][0]["applied_version"], version, "{agents}");
    let log = plain(&cp.log());
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("agent refused this control plane's config as older")
            && l.contains(&format!("node={id}"))
            && l.contains(&format!("agent_version={version}"))),
        "the control plane logs it:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_on_an_empty_control_plane_keeps_its_config() {
    let tmp = tempfile::tempdir().unwrap();
    let cache_dir = tmp.path().join("cache");
    let a = ControlPlane::embedded();
    let (blue, green) = (
        Upstream::start_name_only("blue").await,
        Upstream::start_name_only("green").await,
    );
    let port = free_port();
    let on_a = AgentOptions::new("fleet-1", &[a.endpoint()]).cache_dir(&cache_dir);
    let mut agent = Agent::start(&on_a);
    a.apply(routed("shop", port, &[blue.addr])).await;
    let v2 = a
        .apply(vec![cluster("spare", &[localhost(9)])])
        .await
        .revision;
    agent.wait_for_version(v2).await;
    cached(&cache_dir, v2).await;
    agent.kill();

    // A new control plane on an empty store, the same cache.
    let b = ControlPlane::embedded();
    let on_b = AgentOptions::new("fleet-1", &[b.endpoint()]).cache_dir(&cache_dir);
    let agent = Agent::start_ready(&on_b).await;
    assert_ahead(&b, &agent, "fleet-1", v2).await;
    assert_eq!(served(port).await.as_deref(), Some("blue\n"));
    assert_eq!(
        Cache::new(&cache_dir).load().unwrap().unwrap().version,
        v2,
        "the cache is not overwritten"
    );
    let status = b.portico(&["rollout", "status"]).expect(5);
    assert!(
        status.stderr.contains("ahead of the control plane"),
        "{status:#?}"
    );

    // The operator's way forward on this control plane: changes that take its version past
    // the agent's. The agent then takes the whole config.
    b.apply(routed("shop", port, &[green.addr])).await;
    b.apply(vec![cluster("spare", &[localhost(9)])]).await;
    let v3 = b
        .apply(vec![cluster("other", &[localhost(10)])])
        .await
        .revision;
    assert!(v3 > v2);
    agent.wait_for_version(v3).await;
    assert_eq!(served(port).await.as_deref(), Some("green\n"));
    b.wait_for_record("fleet-1", "the agent in sync", |r| {
        !r.ahead_of_control_plane && r.applied_version == v3
    })
    .await;
    assert_eq!(agent.get("/readyz").await.unwrap(), (200, "ready\n".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_failing_over_to_a_control_plane_behind_it_keeps_its_config() {
    let tmp = tempfile::tempdir().unwrap();
    let cache_dir = tmp.path().join("cache");
    let mut a = ControlPlane::embedded();
    let b = ControlPlane::embedded();
    let blue = Upstream::start_name_only("blue").await;
    let (port, other_port) = (free_port(), free_port());
    // B is behind: one change of its own.
    b.apply(routed("other", other_port, &[blue.addr])).await;
    let both = AgentOptions::new("fleet-2", &[a.endpoint(), b.endpoint()]).cache_dir(&cache_dir);
    let agent = Agent::start(&both);
    a.apply(routed("shop", port, &[blue.addr])).await;
    a.apply(vec![cluster("spare", &[localhost(9)])]).await;
    let v3 = a
        .apply(vec![cluster("more", &[localhost(10)])])
        .await
        .revision;
    agent.wait_for_version(v3).await;
    cached(&cache_dir, v3).await;

    a.kill();
    assert_ahead(&b, &agent, "fleet-2", v3).await;
    assert_eq!(served(port).await.as_deref(), Some("blue\n"));
    assert_eq!(served(other_port).await, None, "B's config is not served");
    assert_eq!(agent.version().await, v3);
    assert_eq!(Cache::new(&cache_dir).load().unwrap().unwrap().version, v3);
    drop(agent);

    // The explicit operator action on the agent: it takes B's older config.
    let mut accepting = AgentOptions::new("fleet-2", &[b.endpoint()]).cache_dir(&cache_dir);
    accepting
        .env
        .push(("PORTICO_AGENT_ACCEPT_LOWER_VERSION".into(), "true".into()));
    let agent = Agent::start(&accepting);
    agent.wait_for_version(1).await;
    eventually("B's config to be served", WAIT, || async {
        (served(other_port).await.as_deref() == Some("blue\n") && served(port).await.is_none())
            .then_some(())
    })
    .await;
    assert_eq!(agent.version().await, 1);
    cached(&cache_dir, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_failing_over_to_an_empty_etcd_prefix_keeps_its_config() {
    // The reported case: the agent's second control plane reads another (empty) key prefix
    // of the same etcd, so it offers version 0.
    let etcd = Etcd::start();
    let on = |prefix: &str| StoreSpec::Etcd {
        endpoint: etcd.endpoint(),
        prefix: prefix.into(),
    };
    let mut a = ControlPlane::start(on("/fleet"), "cp-1");
    let b = ControlPlane::start(on("/fleet-typo"), "cp-2");
    let tmp = tempfile::tempdir().unwrap();
    let cache_dir = tmp.path().join("cache");
    let blue = Upstream::start_name_only("blue").await;
    let port = free_port();
    let both = AgentOptions::new("fleet-3", &[a.endpoint(), b.endpoint()]).cache_dir(&cache_dir);
    let agent = Agent::start(&both);
    let v1 = a.apply(routed("shop", port, &[blue.addr])).await.revision;
    agent.wait_for_version(v1).await;
    cached(&cache_dir, v1).await;

    a.kill();
    assert_ahead(&b, &agent, "fleet-3", v1).await;
    assert_eq!(served(port).await.as_deref(), Some("blue\n"));
    assert_eq!(agent.version().await, v1);
    assert_eq!(
        Cache::new(&cache_dir).load().unwrap().unwrap().version,
        v1,
        "the cache keeps the config"
    );
    let metrics = b.metrics_text();
    let refusals = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portico_cp_ahead_refusals_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(
        refusals.is_some_and(|n| n >= 1.0),
        "the control plane counts it: {metrics}"
    );
}
