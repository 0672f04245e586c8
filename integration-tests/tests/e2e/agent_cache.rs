//! The agent's last-good cache with no control plane reachable: a valid cache makes the agent
//! serve at once, a corrupt one is ignored.

use std::time::Duration;

use portico_agent::cache::Cache;
use portico_api::pb::Update;
use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::cp::ControlPlane;
use portico_proxy::config::ConfigSet;
use portico_test_support::http::fetch;
use portico_test_support::net::{Refusing, free_port, refusing};
use portico_test_support::resources::{cluster, routed};
use portico_test_support::upstream::Upstream;
use portico_test_support::wait::eventually;

/// Options for agent `id` syncing from a control plane URL that refuses connections for as
/// long as the returned value lives.
fn without_control_plane(id: &str) -> (AgentOptions, Refusing) {
    let down = refusing();
    (AgentOptions::new(id, &[down.url()]), down)
}

fn cached_config(version: i64) -> ConfigSet {
    ConfigSet::default().with_update(Update {
        version,
        full: true,
        upserts: vec![cluster("checkout", &[]), cluster("search", &[])],
        ..Default::default()
    })
}

#[tokio::test]
async fn agent_without_control_plane_serves_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    Cache::new(dir.path()).store(&cached_config(17)).unwrap();
    let (options, _down) = without_control_plane("cache-1");
    let options = options.cache_dir(dir.path());
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
    let (mut options, _down) = without_control_plane("cache-env");
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
        let (options, _down) = without_control_plane("cache-bad");
        let options = options.cache_dir(dir.path());
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
    let mut cp = ControlPlane::embedded();
    let blue = Upstream::start_name_only("blue").await;
    let options = AgentOptions::new("cache-2", &[cp.endpoint()]).cache_dir(&cache_dir);
    let mut agent = Agent::start(&options);
    let port = free_port();
    let version = cp.apply(routed("shop", port, &[blue.addr])).await.revision;
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
    let answer = fetch(format!("http://127.0.0.1:{port}/")).await;
    assert_eq!(answer, Some((200, "blue\n".to_string())));
}
