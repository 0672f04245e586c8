//! Config sync end to end: a real `portico-cp`, real `portico-agent` processes and real
//! upstreams. Config goes in through the Admin API and comes out as traffic.

use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::cp::{ControlPlane, SYNC_TIMEOUT};
use portico_test_support::http::fetch;
use portico_test_support::net::{free_port, refusing};
use portico_test_support::resources::{Edit, routed};
use portico_test_support::upstream::Upstream;
use portico_test_support::wait::eventually;

/// The body that `port` answers `/` with through the agent.
async fn served(port: u16) -> Option<String> {
    match fetch(format!("http://127.0.0.1:{port}/")).await {
        Some((200, body)) => Some(body),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_registers_and_serves_what_is_applied() {
    let cp = ControlPlane::embedded();
    let (blue, green) = (
        Upstream::start_name_only("blue").await,
        Upstream::start_name_only("green").await,
    );
    let options = AgentOptions::new("edge-1", &[cp.endpoint()]).label("tier", "edge");
    let agent = Agent::start(&options);

    let record = cp
        .wait_for_record("edge-1", "the agent to register", |r| r.connected)
        .await;
    let node = record.node.unwrap();
    assert_eq!((node.region.as_str(), node.zone.as_str()), ("eu", "eu-1"));
    assert_eq!(node.labels.get("tier").map(String::as_str), Some("edge"));
    assert!(!node.agent_version.is_empty());

    let port = free_port();
    let v1 = cp.apply(routed("shop", port, &[blue.addr])).await.revision;
    agent.wait_for_version(v1).await;
    agent.wait_ready().await;
    assert_eq!(served(port).await.as_deref(), Some("blue\n"));
    cp.wait_for_rollout(v1, "the agent to ACK", |s| s.applied == 1)
        .await;
    let record = cp
        .wait_for_record("edge-1", "a report", |r| {
            r.last_report
                .as_ref()
                .is_some_and(|rep| rep.ready && rep.applied_version == v1)
        })
        .await;
    assert!(record.last_report.unwrap().rss_bytes > 0);

    // A change of one resource arrives as a diff and switches traffic.
    let v2 = cp.apply(routed("shop", port, &[green.addr])).await.revision;
    agent.wait_for_version(v2).await;
    assert_eq!(served(port).await.as_deref(), Some("green\n"));
    assert_eq!(agent.resource_names("cluster").await, ["shop"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_resumes_after_a_control_plane_restart_with_only_the_diff() {
    let mut cp = ControlPlane::embedded();
    let (blue, green) = (
        Upstream::start_name_only("blue").await,
        Upstream::start_name_only("green").await,
    );
    let agent = Agent::start(&AgentOptions::new("edge-2", &[cp.endpoint()]));
    let port = free_port();
    let v1 = cp.apply(routed("shop", port, &[blue.addr])).await.revision;
    agent.wait_for_version(v1).await;

    cp.restart();
    // The agent comes back on its own, claiming the version it serves.
    eventually("the agent to reconnect", SYNC_TIMEOUT, || async {
        let log = agent.log();
        (log.matches("connected to the control plane").count() >= 2).then_some(())
    })
    .await;
    cp.wait_for_record("edge-2", "the registry to see the resumed agent", |r| {
        r.connected && r.applied_version == v1
    })
    .await;
    assert_eq!(served(port).await.as_deref(), Some("blue\n"));

    let v2 = cp.apply(routed("shop", port, &[green.addr])).await.revision;
    agent.wait_for_version(v2).await;
    assert_eq!(served(port).await.as_deref(), Some("green\n"));
    let log = agent.log();
    assert!(
        log.contains(&format!("applied_version={v1}")),
        "Hello resumed at {v1}:\n{log}"
    );
    assert_eq!(
        log.matches("full=true").count(),
        1,
        "one full update, at the start:\n{log}"
    );
    let resumed = log
        .lines()
        .find(|l| l.contains("acked update") && l.contains(&format!("version={v2}")))
        .unwrap_or_else(|| panic!("no update to {v2}:\n{log}"));
    assert!(resumed.contains("full=false"), "{resumed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbindable_port_is_nacked_and_the_old_config_keeps_serving() {
    let cp = ControlPlane::embedded();
    let blue = Upstream::start_name_only("blue").await;
    let agent = Agent::start(&AgentOptions::new("edge-3", &[cp.endpoint()]));
    let port = free_port();
    let v1 = cp.apply(routed("shop", port, &[blue.addr])).await.revision;
    agent.wait_for_version(v1).await;

    // Moving the listener to a port something else holds cannot apply.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = blocker.local_addr().unwrap().port();
    let v2 = cp.apply(routed("shop", taken, &[blue.addr])).await.revision;
    let status = cp.wait_for_rollout(v2, "the NACK", |s| s.nacked == 1).await;
    assert_eq!(status.nacks[0].node_id, "edge-3");
    assert!(status.nacks[0].error.contains("bind"), "{:?}", status.nacks);
    assert_eq!(agent.version().await, v1);
    assert_eq!(served(port).await.as_deref(), Some("blue\n"));

    // Once the port is free, the next revision brings the listener over.
    drop(blocker);
    let mut resources = routed("shop", taken, &[blue.addr]);
    resources[0] = resources[0].clone().label("retry", "1");
    let v3 = cp.apply(resources).await.revision;
    agent.wait_for_version(v3).await;
    assert_eq!(served(taken).await.as_deref(), Some("blue\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_fails_over_to_the_second_control_plane() {
    let cp = ControlPlane::embedded();
    let blue = Upstream::start_name_only("blue").await;
    let down = refusing();
    let agent = Agent::start(&AgentOptions::new("edge-4", &[down.url(), cp.endpoint()]));
    let port = free_port();
    let v1 = cp.apply(routed("shop", port, &[blue.addr])).await.revision;
    agent.wait_for_version(v1).await;
    assert_eq!(served(port).await.as_deref(), Some("blue\n"));
    cp.wait_for_record("edge-4", "the agent to register", |r| r.connected)
        .await;
}
