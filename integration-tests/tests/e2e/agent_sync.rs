//! Config sync end to end: a real `portico-cp`, real `portico-agent` processes and real
//! upstreams. Config goes in through the Admin API and comes out as traffic.

#![allow(clippy::unwrap_used)]

mod agent_support;

use agent_support::{apply, control_plane, wait_for_record, wait_for_rollout};
use portico_integration_tests::agent::{Agent, AgentOptions, http_get};
use portico_integration_tests::net::{free_addr, free_port};
use portico_integration_tests::upstream::{Upstream, routed};

/// The body that `port` answers `/` with through the agent.
async fn served(port: u16) -> Option<String> {
    match http_get(&format!("http://127.0.0.1:{port}/")).await {
        Some((200, body)) => Some(body),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_registers_and_serves_what_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(&dir);
    let (blue, green) = (
        Upstream::start("blue").await,
        Upstream::start("green").await,
    );
    let options = AgentOptions::new("edge-1", &[cp.endpoint()]).label("tier", "edge");
    let agent = Agent::start(&options);

    let record = wait_for_record(&cp, "edge-1", "the agent to register", |r| r.connected).await;
    let node = record.node.unwrap();
    assert_eq!((node.region.as_str(), node.zone.as_str()), ("eu", "eu-1"));
    assert_eq!(node.labels.get("tier").map(String::as_str), Some("edge"));
    assert!(!node.agent_version.is_empty());

    let port = free_port();
    let v1 = apply(&cp, routed("shop", port, &[blue.addr])).await;
    agent.wait_for_version(v1).await;
    agent.wait_ready().await;
    assert_eq!(served(port).await.as_deref(), Some("blue\n"));
    wait_for_rollout(&cp, v1, "the agent to ACK", |s| s.applied == 1).await;
    let record = wait_for_record(&cp, "edge-1", "a report", |r| {
        r.last_report
            .as_ref()
            .is_some_and(|rep| rep.ready && rep.applied_version == v1)
    })
    .await;
    assert!(record.last_report.unwrap().rss_bytes > 0);

    // A change of one resource arrives as a diff and switches traffic.
    let v2 = apply(&cp, routed("shop", port, &[green.addr])).await;
    agent.wait_for_version(v2).await;
    assert_eq!(served(port).await.as_deref(), Some("green\n"));
    assert_eq!(agent.resource_names("cluster").await, ["shop"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_resumes_after_a_control_plane_restart_with_only_the_diff() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = control_plane(&dir);
    let (blue, green) = (
        Upstream::start("blue").await,
        Upstream::start("green").await,
    );
    let agent = Agent::start(&AgentOptions::new("edge-2", &[cp.endpoint()]));
    let port = free_port();
    let v1 = apply(&cp, routed("shop", port, &[blue.addr])).await;
    agent.wait_for_version(v1).await;

    cp.restart();
    // The agent comes back on its own, claiming the version it serves.
    portico_integration_tests::net::eventually(
        "the agent to reconnect",
        agent_support::SYNC_TIMEOUT,
        || async {
            let log = agent.log();
            (log.matches("connected to the control plane").count() >= 2).then_some(())
        },
    )
    .await;
    wait_for_record(
        &cp,
        "edge-2",
        "the registry to see the resumed agent",
        |r| r.connected && r.applied_version == v1,
    )
    .await;
    assert_eq!(served(port).await.as_deref(), Some("blue\n"));

    let v2 = apply(&cp, routed("shop", port, &[green.addr])).await;
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
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(&dir);
    let blue = Upstream::start("blue").await;
    let agent = Agent::start(&AgentOptions::new("edge-3", &[cp.endpoint()]));
    let port = free_port();
    let v1 = apply(&cp, routed("shop", port, &[blue.addr])).await;
    agent.wait_for_version(v1).await;

    // Moving the listener to a port something else holds cannot apply.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = blocker.local_addr().unwrap().port();
    let v2 = apply(&cp, routed("shop", taken, &[blue.addr])).await;
    let status = wait_for_rollout(&cp, v2, "the NACK", |s| s.nacked == 1).await;
    assert_eq!(status.nacks[0].node_id, "edge-3");
    assert!(status.nacks[0].error.contains("bind"), "{:?}", status.nacks);
    assert_eq!(agent.version().await, v1);
    assert_eq!(served(port).await.as_deref(), Some("blue\n"));

    // Once the port is free, the next revision brings the listener over.
    drop(blocker);
    let mut resources = routed("shop", taken, &[blue.addr]);
    resources[0]
        .labels
        .insert("retry".to_string(), "1".to_string());
    let v3 = apply(&cp, resources).await;
    agent.wait_for_version(v3).await;
    assert_eq!(served(taken).await.as_deref(), Some("blue\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_fails_over_to_the_second_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(&dir);
    let blue = Upstream::start("blue").await;
    let down = format!("http://{}", free_addr());
    let agent = Agent::start(&AgentOptions::new("edge-4", &[down, cp.endpoint()]));
    let port = free_port();
    let v1 = apply(&cp, routed("shop", port, &[blue.addr])).await;
    agent.wait_for_version(v1).await;
    assert_eq!(served(port).await.as_deref(), Some("blue\n"));
    wait_for_record(&cp, "edge-4", "the agent to register", |r| r.connected).await;
}
