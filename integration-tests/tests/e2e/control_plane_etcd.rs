//! The control plane on a real etcd: several replicas, crashes, and losing the store.

use std::time::Duration;

use portico_api::Resource;
use portico_api::pb::{AgentsRequest, ApplyRequest, HistoryRequest, RolloutStatusRequest};
use portico_integration_tests::cp::{ControlPlane, StoreSpec, apply, base_config, list};
use portico_integration_tests::etcd::Etcd;
use portico_integration_tests::scripted_agent::{ScriptedAgent, node};
use portico_test_support::net::localhost;
use portico_test_support::resources::cluster;
use portico_test_support::wait::eventually;
use tonic::Code;

/// Cluster `backend` with one endpoint on `port`.
fn backend(port: u16) -> Resource {
    cluster("backend", &[localhost(port)])
}

fn on(etcd: &Etcd) -> StoreSpec {
    StoreSpec::Etcd {
        endpoint: etcd.endpoint(),
        prefix: "/portico-test".into(),
    }
}

#[tokio::test]
async fn two_replicas_serve_the_same_config_and_the_whole_fleet() {
    let etcd = Etcd::start();
    let one = ControlPlane::start(on(&etcd), "cp-1");
    let two = ControlPlane::start(on(&etcd), "cp-2");
    let mut admin_one = one.admin().await;
    let mut admin_two = two.admin().await;
    apply(&mut admin_one, base_config()).await;

    let mut a = ScriptedAgent::connect(&one.endpoint(), node("a", "eu", "eu-1"), 0)
        .await
        .expect("connect a");
    let mut b = ScriptedAgent::connect(&two.endpoint(), node("b", "eu", "eu-1"), 0)
        .await
        .expect("connect b");
    let (ua, ub) = (a.expect_update().await, b.expect_update().await);
    assert_eq!(ua, ub, "both replicas send the same update");
    a.ack(&ua);
    b.ack(&ub);

    // A change through replica two reaches the agent on replica one, and back.
    let changed = apply(&mut admin_two, vec![backend(9002)]).await;
    let (ua, ub) = (a.expect_update().await, b.expect_update().await);
    assert_eq!(ua.version, changed.revision);
    assert_eq!(
        (ua.upserts.clone(), ua.removals.clone()),
        (ub.upserts.clone(), ub.removals.clone())
    );
    a.ack(&ua);
    b.ack(&ub);
    assert_eq!(a.config, b.config);

    for admin in [&mut admin_one, &mut admin_two] {
        let status = eventually(
            "every agent applied, seen from each replica",
            Duration::from_secs(10),
            || {
                let mut admin = admin.clone();
                async move {
                    let s = admin
                        .rollout_status(RolloutStatusRequest {
                            revision: changed.revision,
                        })
                        .await
                        .ok()?
                        .into_inner();
                    (s.applied == 2).then_some(s)
                }
            },
        )
        .await;
        assert_eq!(
            (status.pending, status.nacked, status.disconnected),
            (0, 0, 0)
        );
        let agents = admin
            .agents(AgentsRequest::default())
            .await
            .expect("agents")
            .into_inner();
        let replicas: Vec<_> = agents.agents.iter().map(|r| r.replica.as_str()).collect();
        assert_eq!(replicas, ["cp-1", "cp-2"]);
        let lists = list(admin).await;
        assert_eq!(lists.revision, changed.revision);
    }
}

#[tokio::test]
async fn a_sigkilled_replica_loses_no_applied_change_and_its_agents_expire() {
    let etcd = Etcd::start();
    let mut one = ControlPlane::start(on(&etcd), "cp-1");
    let two = ControlPlane::start(on(&etcd), "cp-2");
    let mut admin = one.admin().await;
    apply(&mut admin, base_config()).await;
    let last = apply(&mut admin, vec![backend(9003)]).await;
    let _agent = ScriptedAgent::synced(&one.endpoint(), node("a", "eu", "eu-1")).await;
    let mut admin_two = two.admin().await;
    let watcher = admin_two.clone();
    let registered = |n: usize| {
        let mut admin = watcher.clone();
        async move {
            let agents = admin.agents(AgentsRequest::default()).await.ok()?;
            (agents.into_inner().agents.len() == n).then_some(())
        }
    };
    eventually("the agent registered", Duration::from_secs(10), || {
        registered(1)
    })
    .await;

    one.kill();
    assert_eq!(list(&mut admin_two).await.revision, last.revision);
    let history = admin_two
        .history(HistoryRequest::default())
        .await
        .expect("history");
    assert_eq!(history.into_inner().entries.len(), 2);
    // The dead replica's lease expires and takes its agent's record along.
    eventually(
        "the dead replica's agent to expire",
        Duration::from_secs(30),
        || registered(0),
    )
    .await;
    one.restart();
    let mut admin = one.admin().await;
    assert_eq!(list(&mut admin).await.revision, last.revision);
}

#[tokio::test]
async fn losing_the_store_keeps_agents_served_and_refuses_writes() {
    let mut etcd = Etcd::start();
    let cp = ControlPlane::start(on(&etcd), "cp-1");
    let mut admin = cp.admin().await;
    let applied = apply(&mut admin, base_config()).await;
    let _agent = ScriptedAgent::synced(&cp.endpoint(), node("a", "eu", "eu-1")).await;

    etcd.kill();
    let err = admin
        .apply(ApplyRequest {
            resources: vec![backend(9004)],
            ..Default::default()
        })
        .await
        .expect_err("the store is gone");
    assert_eq!(err.code(), Code::Unavailable);
    // The control plane says it is its store that is unavailable (what `portico` reads), and
    // the store's own words.
    assert_eq!(
        err.metadata()
            .get("portico-error")
            .and_then(|v| v.to_str().ok()),
        Some("store-unavailable"),
        "{err:?}"
    );
    assert!(err.message().contains("etcd"), "{}", err.message());
    eventually(
        "/readyz to report not ready",
        Duration::from_secs(20),
        || async { cp.http_get("/readyz").filter(|(status, _)| *status == 503) },
    )
    .await;

    // Reads and agents are served from memory.
    assert_eq!(list(&mut admin).await.revision, applied.revision);
    let mut late = ScriptedAgent::connect(&cp.endpoint(), node("late", "eu", "eu-1"), 0)
        .await
        .expect("a new agent connects without the store");
    assert_eq!(late.expect_update().await.version, applied.revision);
}
