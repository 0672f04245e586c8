//! The control plane with its default embedded store: the Admin API and discovery streams,
//! against the real `portico-cp` binary and scripted agents.

use std::time::Duration;

use portico_api::Resource;
use portico_api::pb::{
    self, AgentsRequest, ApplyRequest, HistoryRequest, Kind, ListRequest, ResourceKey,
    RollbackRequest, RolloutStatusRequest, RolloutStatusResponse,
};
use portico_integration_tests::cp::{
    Admin, ControlPlane, StoreSpec, apply, base_config, catch_all, command, list,
};
use portico_integration_tests::scripted_agent::{ScriptedAgent, node};
use portico_test_support::net::{free_addr, localhost, refusing};
use portico_test_support::process::Process;
use portico_test_support::resources::{
    Edit, cluster, https_listener, listener, regions, sni, tls_secret,
};
use portico_test_support::wait::eventually;
use tonic::Code;

/// Cluster `backend` with one endpoint on `port`.
fn backend(port: u16) -> Resource {
    cluster("backend", &[localhost(port)])
}

/// A Listener on `port` routing through `table`, selected for the agents in `region`.
fn regional(name: &str, port: u16, table: &str, region: &str) -> Resource {
    listener(name, port, table).with(|l: &mut pb::Listener| l.selector = Some(regions(&[region])))
}

async fn rollout(admin: &mut Admin, revision: i64) -> RolloutStatusResponse {
    admin
        .rollout_status(RolloutStatusRequest { revision })
        .await
        .expect("rollout status")
        .into_inner()
}

fn names(update: &portico_api::pb::Update) -> Vec<String> {
    update.upserts.iter().map(|r| r.key().to_string()).collect()
}

#[tokio::test]
async fn full_then_incremental_updates() {
    let cp = ControlPlane::embedded();
    let mut admin = cp.admin().await;
    let first = apply(&mut admin, base_config()).await;
    assert!(first.revision > 0 && !first.noop);

    let mut agent = ScriptedAgent::connect(&cp.endpoint(), node("a1", "eu", "eu-1"), 0)
        .await
        .expect("connect");
    let full = agent.expect_update().await;
    assert!(full.full);
    assert_eq!(full.version, first.revision);
    assert_eq!(
        names(&full),
        ["Listener/web", "RouteTable/shop", "Cluster/backend"]
    );
    agent.ack(&full);

    let second = apply(&mut admin, vec![backend(9002)]).await;
    let diff = agent.expect_update().await;
    assert!(!diff.full);
    assert_eq!(diff.version, second.revision);
    assert_eq!(names(&diff), ["Cluster/backend"]);
    assert!(diff.removals.is_empty());
    agent.ack(&diff);

    let status = eventually(
        "the agent to count as applied",
        Duration::from_secs(10),
        || {
            let mut admin = admin.clone();
            async move { Some(rollout(&mut admin, 0).await).filter(|s| s.applied == 1) }
        },
    )
    .await;
    assert_eq!((status.revision, status.pending), (second.revision, 0));
}

#[tokio::test]
async fn a_burst_of_applies_is_coalesced_while_the_ack_is_withheld() {
    let cp = ControlPlane::embedded();
    let mut admin = cp.admin().await;
    apply(&mut admin, base_config()).await;
    let mut agent = ScriptedAgent::connect(&cp.endpoint(), node("a1", "eu", "eu-1"), 0)
        .await
        .expect("connect");
    let first = agent.expect_update().await;

    let mut last = 0;
    for port in 0..50 {
        last = apply(&mut admin, vec![backend(10_000 + port)])
            .await
            .revision;
    }
    agent.ack(&first);
    let second = agent.expect_update().await;
    assert_eq!(
        second.version, last,
        "the second update goes to the newest version"
    );
    agent.ack(&second);
    assert!(
        agent
            .next_update(Duration::from_millis(500))
            .await
            .is_none(),
        "no third update"
    );
    assert_eq!(agent.config.version, last);
    let backend = agent.config.resources.get(Kind::Cluster, "backend");
    assert_eq!(backend, Some(&self::backend(10_049)));
}

#[tokio::test]
async fn a_nack_is_visible_in_rollout_status() {
    let cp = ControlPlane::embedded();
    let mut admin = cp.admin().await;
    let applied = apply(&mut admin, base_config()).await;
    let mut agent = ScriptedAgent::connect(&cp.endpoint(), node("a1", "eu", "eu-1"), 0)
        .await
        .expect("connect");
    let update = agent.expect_update().await;
    agent.nack(&update, "binding 0.0.0.0:8080: address in use");

    let status =
        eventually(
            "the NACK in rollout status",
            Duration::from_secs(10),
            || {
                let mut admin = admin.clone();
                async move {
                    Some(rollout(&mut admin, applied.revision).await).filter(|s| s.nacked == 1)
                }
            },
        )
        .await;
    assert_eq!((status.applied, status.pending), (0, 0));
    assert_eq!(status.nacks.len(), 1);
    assert_eq!(status.nacks[0].node_id, "a1");
    assert_eq!(
        status.nacks[0].error,
        "binding 0.0.0.0:8080: address in use"
    );

    // Reports land in the registry beside the NACK.
    let report = portico_api::pb::Report {
        ready: true,
        applied_version: 0,
        uptime_seconds: 42,
        active_connections: 3,
        rss_bytes: 12 << 20,
        ..Default::default()
    };
    agent.report(report.clone());
    let record = eventually(
        "the report in the registry",
        Duration::from_secs(10),
        || {
            let mut admin = admin.clone();
            async move {
                let agents = admin.agents(AgentsRequest::default()).await.ok()?;
                let record = agents.into_inner().agents.pop()?;
                record.last_report.is_some().then_some(record)
            }
        },
    )
    .await;
    assert_eq!(record.last_report, Some(report));
    assert!(record.connected);
    assert_eq!(record.replica, "cp-1");
    assert_eq!(record.node.map(|n| n.zone).as_deref(), Some("eu-1"));
    assert_eq!(record.last_nack.map(|n| n.version), Some(applied.revision));
}

#[tokio::test]
async fn resume_after_reconnect_sends_only_the_diff() {
    let cp = ControlPlane::embedded();
    let mut admin = cp.admin().await;
    apply(&mut admin, base_config()).await;
    let agent = ScriptedAgent::synced(&cp.endpoint(), node("a1", "eu", "eu-1")).await;
    let applied = agent.config.version;
    drop(agent);

    let changed = apply(&mut admin, vec![backend(9100)]).await;
    let mut agent = ScriptedAgent::connect(&cp.endpoint(), node("a1", "eu", "eu-1"), applied)
        .await
        .expect("reconnect");
    let diff = agent.expect_update().await;
    assert!(!diff.full);
    assert_eq!(diff.version, changed.revision);
    assert_eq!(names(&diff), ["Cluster/backend"]);

    // An agent at the current version gets nothing until the next change.
    drop(agent);
    let mut agent =
        ScriptedAgent::connect(&cp.endpoint(), node("a1", "eu", "eu-1"), changed.revision)
            .await
            .expect("reconnect");
    assert!(
        agent
            .next_update(Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn rollback_restores_the_exact_resources_of_a_revision() {
    let cp = ControlPlane::embedded();
    let mut admin = cp.admin().await;
    let v1 = apply(&mut admin, base_config()).await;
    let listed = |admin: &mut Admin| {
        let mut admin = admin.clone();
        async move {
            let list = admin.list(ListRequest::default()).await.expect("list");
            list.into_inner()
                .resources
                .into_iter()
                .map(|r| r.resource.expect("resource"))
                .collect::<Vec<_>>()
        }
    };
    let before = listed(&mut admin).await;

    apply(
        &mut admin,
        vec![
            catch_all("shop", "other"),
            cluster("other", &[localhost(9200)]),
        ],
    )
    .await;
    let v3 = admin
        .apply(ApplyRequest {
            deletions: vec![ResourceKey::new(Kind::Cluster, "backend")],
            ..Default::default()
        })
        .await
        .expect("delete backend")
        .into_inner();
    assert_ne!(listed(&mut admin).await, before);

    let rolled = admin
        .rollback(RollbackRequest {
            revision: v1.revision,
            message: "back to v1".into(),
            ..Default::default()
        })
        .await
        .expect("rollback")
        .into_inner();
    assert!(rolled.revision > v3.revision);
    assert_eq!(listed(&mut admin).await, before);

    let history = admin
        .history(HistoryRequest::default())
        .await
        .expect("history")
        .into_inner();
    let newest = &history.entries[0];
    assert_eq!(newest.revision, rolled.revision);
    assert_eq!(newest.rollback_of, v1.revision);
    assert_eq!((newest.created, newest.updated, newest.deleted), (1, 1, 1));
    assert_eq!(history.entries.len(), 4);

    let unknown = admin
        .rollback(RollbackRequest {
            revision: v1.revision + 1_000,
            ..Default::default()
        })
        .await
        .expect_err("no such revision");
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn a_stale_expected_revision_is_a_conflict() {
    let cp = ControlPlane::embedded();
    let mut admin = cp.admin().await;
    let v1 = apply(&mut admin, base_config()).await;
    let v2 = apply(&mut admin, vec![backend(9300)]).await;
    let err = admin
        .apply(ApplyRequest {
            resources: vec![backend(9301)],
            expected_revision: Some(v1.revision),
            ..Default::default()
        })
        .await
        .expect_err("conflict");
    assert_eq!(err.code(), Code::Aborted);
    assert!(
        err.message().contains(&v2.revision.to_string()),
        "{}",
        err.message()
    );
    let ok = admin
        .apply(ApplyRequest {
            resources: vec![backend(9301)],
            expected_revision: Some(v2.revision),
            ..Default::default()
        })
        .await
        .expect("apply at the current revision");
    assert!(ok.into_inner().revision > v2.revision);
}

#[tokio::test]
async fn identical_applies_dry_runs_and_invalid_applies_write_nothing() {
    let cp = ControlPlane::embedded();
    let mut admin = cp.admin().await;
    let v1 = apply(&mut admin, base_config()).await;
    let again = apply(&mut admin, base_config()).await;
    assert!(again.noop);
    assert_eq!(again.revision, v1.revision);

    let dry = admin
        .apply(ApplyRequest {
            resources: vec![backend(9400)],
            dry_run: true,
            ..Default::default()
        })
        .await
        .expect("dry run")
        .into_inner();
    assert_eq!(dry.revision, v1.revision);
    assert_eq!(dry.changes.len(), 1);
    assert_eq!(
        dry.changes[0].change(),
        portico_api::pb::ChangeType::Updated
    );

    // An invalid apply, real or dry run, answers with the errors: one request tells the caller
    // every resource and field path.
    let dangling = catch_all("shop", "missing");
    for dry_run in [false, true] {
        let invalid = admin
            .apply(ApplyRequest {
                resources: vec![dangling.clone()],
                dry_run,
                ..Default::default()
            })
            .await
            .expect("validation errors come in the response")
            .into_inner();
        let errors: Vec<_> = invalid
            .errors
            .iter()
            .map(|e| {
                (
                    e.key.clone().unwrap_or_default().to_string(),
                    e.field.as_str(),
                )
            })
            .collect();
        assert_eq!(errors.len(), 1, "dry run {dry_run}: {errors:?}");
        assert_eq!(errors[0].0, "RouteTable/shop", "dry run {dry_run}");
        assert!(
            invalid.errors[0].message.contains("missing"),
            "{:?}",
            invalid.errors
        );
        assert_eq!(invalid.revision, 1, "nothing was written");
    }

    let history = admin
        .history(HistoryRequest::default())
        .await
        .expect("history")
        .into_inner();
    assert_eq!(history.entries.len(), 1, "only the first apply wrote");

    let referenced = admin
        .delete(portico_api::pb::DeleteRequest {
            key: Some(ResourceKey::new(Kind::Cluster, "backend")),
            ..Default::default()
        })
        .await
        .expect_err("backend is referenced by shop");
    assert_eq!(referenced.code(), Code::FailedPrecondition);
    assert!(
        referenced.message().contains("RouteTable/shop"),
        "{}",
        referenced.message()
    );
}

#[tokio::test]
async fn a_bad_hello_is_refused_with_a_clear_message() {
    let cp = ControlPlane::embedded();
    let cases = [
        (node("bad id!", "eu", "eu-1"), "node.id"),
        (node(&"x".repeat(129), "eu", "eu-1"), "node.id"),
        (node("a1", "", "eu-1"), "node.region"),
        (node("a1", "eu", ""), "node.zone"),
    ];
    for (node, field) in cases {
        let err = ScriptedAgent::connect(&cp.endpoint(), node, 0)
            .await
            .err()
            .unwrap_or_else(|| panic!("a hello with a bad {field} was accepted"));
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(field), "{}", err.message());
    }
    let mut labelled = node("a1", "eu", "eu-1");
    for i in 0..100 {
        labelled.labels.insert(format!("k{i}"), "v".into());
    }
    let err = ScriptedAgent::connect(&cp.endpoint(), labelled, 0)
        .await
        .err()
        .expect("too many labels");
    assert!(err.message().contains("labels"), "{}", err.message());
}

#[tokio::test]
async fn a_sigkilled_control_plane_loses_no_applied_change() {
    let mut cp = ControlPlane::embedded();
    let mut admin = cp.admin().await;
    apply(&mut admin, base_config()).await;
    let last = apply(&mut admin, vec![backend(9500)]).await;
    cp.kill();
    cp.restart();
    let mut admin = cp.admin().await;
    let list = list(&mut admin).await;
    assert_eq!(list.revision, last.revision);
    let backend = list
        .resources
        .iter()
        .filter_map(|r| r.resource.clone())
        .find(|r| r.name == "backend");
    assert_eq!(backend, Some(self::backend(9500)));
    let history = admin
        .history(HistoryRequest::default())
        .await
        .expect("history")
        .into_inner();
    assert_eq!(history.entries.len(), 2);
}

#[tokio::test]
async fn metrics_and_probes_answer() {
    let cp = ControlPlane::embedded();
    let mut admin = cp.admin().await;
    apply(&mut admin, base_config()).await;
    let _agent = ScriptedAgent::synced(&cp.endpoint(), node("a1", "eu", "eu-1")).await;
    assert_eq!(cp.http_get("/healthz").map(|r| r.0), Some(200));
    let text = eventually(
        "ACK latency in /metrics",
        Duration::from_secs(10),
        || async {
            cp.http_get("/metrics")
                .map(|r| r.1)
                .filter(|t| t.contains("portico_cp_apply_to_ack_seconds_count 1"))
        },
    )
    .await;
    for name in [
        "portico_cp_connected_agents 1",
        "portico_cp_updates_sent_total 1",
        "portico_cp_store_operation_seconds_bucket",
        "portico_cp_snapshot_build_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[test]
fn an_unreachable_store_at_start_is_one_error_line_and_exit_1() {
    let down = refusing();
    let store = StoreSpec::Etcd {
        endpoint: down.url(),
        prefix: "/portico".into(),
    };
    let mut cmd = command(&store, "cp-1", free_addr(), free_addr());
    cmd.env("RUST_LOG", "off");
    let mut cp = Process::spawn("portico-cp", cmd);
    let status = cp.wait_timeout(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1));
    let stderr = cp.stderr();
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("etcd store"), "{stderr}");
}

#[tokio::test]
async fn agents_receive_only_their_scope() {
    let cp = ControlPlane::embedded();
    let mut admin = cp.admin().await;
    apply(
        &mut admin,
        vec![
            regional("web-eu", 8080, "eu", "eu"),
            catch_all("eu", "eu-backend"),
            cluster("eu-backend", &[localhost(9001)]),
            https_listener("web-us", 8443, "us", vec![sni("us-cert", &[])])
                .with(|l: &mut pb::Listener| l.selector = Some(regions(&["us"]))),
            catch_all("us", "us-backend"),
            cluster("us-backend", &[localhost(9002)]),
            tls_secret("us-cert", "shop.example.com"),
            cluster("unused", &[localhost(9003)]),
        ],
    )
    .await;
    let mut eu = ScriptedAgent::connect(&cp.endpoint(), node("eu-1", "eu", "eu-1a"), 0)
        .await
        .expect("connect eu");
    let mut us = ScriptedAgent::connect(&cp.endpoint(), node("us-1", "us", "us-1a"), 0)
        .await
        .expect("connect us");
    let eu_update = eu.expect_update().await;
    let us_update = us.expect_update().await;
    assert_eq!(
        names(&eu_update),
        ["Listener/web-eu", "RouteTable/eu", "Cluster/eu-backend"]
    );
    assert_eq!(
        names(&us_update),
        [
            "Listener/web-us",
            "RouteTable/us",
            "Cluster/us-backend",
            "Secret/us-cert"
        ]
    );
    eu.ack(&eu_update);
    us.ack(&us_update);

    // A change outside the eu scope still advances the eu agent, with an empty diff.
    let changed = apply(&mut admin, vec![cluster("us-backend", &[localhost(9004)])]).await;
    let eu_update = eu.expect_update().await;
    assert_eq!(eu_update.version, changed.revision);
    assert!(eu_update.upserts.is_empty() && eu_update.removals.is_empty());
    let us_update = us.expect_update().await;
    assert_eq!(names(&us_update), ["Cluster/us-backend"]);

    // Moving the eu listener to us removes it (and what it reaches) from the eu agent.
    eu.ack(&eu_update);
    us.ack(&us_update);
    apply(&mut admin, vec![regional("web-eu", 8080, "eu", "us")]).await;
    let eu_update = eu.expect_update().await;
    assert!(eu_update.upserts.is_empty());
    assert_eq!(eu_update.removals.len(), 3);
    eu.ack(&eu_update);
    assert!(eu.config.resources.is_empty());
}
