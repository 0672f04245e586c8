//! The agent's last-good cache with no control plane reachable: a valid cache makes the agent
//! serve at once, a corrupt one is ignored.

#![allow(clippy::unwrap_used)]

mod agent_support;

use std::time::Duration;

use agent_support::{apply, control_plane};

use portico_agent::cache::Cache;
use portico_api::pb::{Resource, Update, resource::Spec};
use portico_integration_tests::agent::{Agent, AgentOptions, http_get};
use portico_integration_tests::net::{eventually, free_addr, free_port};
use portico_integration_tests::upstream::{Upstream, routed};
use portico_proxy::config::ConfigSet;

/// A control plane URL nothing answers on.
fn no_control_plane() -> Vec<String> {
    vec![format!("http://{}", free_addr())]
}

fn cluster(name: &str) -> Resource {
    Resource {
        name: name.into(),
        spec: Some(Spec::Cluster(Default::default())),
        ..Default::default()
    }
}

fn cached_config(version: i64) -> ConfigSet {
    ConfigSet::default().with_update(Update {
        version,
        full: true,
        upserts: vec![cluster("checkout"), cluster("search")],
        ..Default::default()
    })
}

#[tokio::test]
async fn agent_without_control_plane_serves_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    Cache::new(dir.path()).store(&cached_config(17)).unwrap();
    let options = AgentOptions::new("cache-1", &no_control_plane()).cache_dir(dir.path());
    let agent = Agent::start_ready(&options).await;
    assert_eq!(agent.version().await, 17);
    assert_eq!(
        agent.resource_names("cluster").await,
        ["checkout", "search"]
    );
}

#[tokio::test]
async fn cache_dir_is_read_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    Cache::new(dir.path()).store(&cached_config(3)).unwrap();
    let mut options = AgentOptions::new("cache-env", &no_control_plane());
    options.env.push((
        "PORTICO_AGENT_CACHE_DIR".to_string(),
        dir.path().display().to_string(),
    ));
    let agent = Agent::start_ready(&options).await;
    assert_eq!(agent.version().await, 3);
}

#[tokio::test]
async fn corrupt_cache_is_ignored_with_a_warning() {
    for (what, bytes) in [
        ("garbage", b"not a config cache".to_vec()),
        ("truncated", truncated_cache()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.pb"), bytes).unwrap();
        let options = AgentOptions::new("cache-bad", &no_control_plane()).cache_dir(dir.path());
        let agent = Agent::start(&options);
        eventually(
            "the agent to log the bad cache",
            Duration::from_secs(20),
            || async {
                agent
                    .log()
                    .contains("ignoring the config cache")
                    .then_some(())
            },
        )
        .await;
        assert_eq!(
            agent.get("/healthz").await.map(|r| r.0),
            Some(200),
            "{what}"
        );
        assert_eq!(agent.get("/readyz").await.map(|r| r.0), Some(503), "{what}");
        assert_eq!(agent.version().await, 0, "{what}");
    }
}

fn truncated_cache() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    cache.store(&cached_config(5)).unwrap();
    let mut bytes = std::fs::read(cache.path()).unwrap();
    bytes.truncate(bytes.len() / 2);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restarted_while_the_control_plane_is_down_serves_from_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let mut cp = control_plane(&dir);
    let blue = Upstream::start("blue").await;
    let options = AgentOptions::new("cache-2", &[cp.endpoint()]).cache_dir(&cache_dir);
    let mut agent = Agent::start(&options);
    let port = free_port();
    let version = apply(&cp, routed("shop", port, &[blue.addr])).await;
    agent.wait_for_version(version).await;
    // The cache is written after the ACK, in the background.
    let cache = Cache::new(&cache_dir);
    eventually(
        "the cache to hold the config",
        Duration::from_secs(10),
        || async {
            let cached = cache.load().ok().flatten()?;
            (cached.version == version).then_some(())
        },
    )
    .await;

    agent.kill();
    cp.kill();
    let agent = Agent::start_ready(&options).await;
    assert_eq!(agent.version().await, version);
    let answer = http_get(format!("http://127.0.0.1:{port}/")).await;
    assert_eq!(answer, Some((200, "blue\n".to_string())));
}
