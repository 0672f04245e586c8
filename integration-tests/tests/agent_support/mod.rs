//! What the agent end-to-end tests share: a control plane on an embedded store, applying
//! resources through the Admin API, and reading the agent registry.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use portico_api::pb::RolloutStatusResponse;
use portico_api::pb::{AgentRecord, AgentsRequest, ApplyRequest, Resource, RolloutStatusRequest};
use portico_integration_tests::cp::{ControlPlane, StoreSpec};
use portico_integration_tests::net::eventually;

/// How long the control plane may take to register an agent or collect its answer.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// A control plane with an embedded store in `dir` (which outlives restarts).
pub fn control_plane(dir: &tempfile::TempDir) -> ControlPlane {
    ControlPlane::start(StoreSpec::Embedded(dir.path().join("store")), "cp-1")
}

/// Applies `resources` through the Admin API; returns the new config revision.
pub async fn apply(cp: &ControlPlane, resources: Vec<Resource>) -> i64 {
    let response = cp
        .admin()
        .await
        .apply(ApplyRequest {
            resources,
            message: "agent test".to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.errors.is_empty(), "apply: {:?}", response.errors);
    response.revision
}

/// The registry's record of `node_id`.
pub async fn agent_record(cp: &ControlPlane, node_id: &str) -> Option<AgentRecord> {
    let agents = cp
        .admin()
        .await
        .agents(AgentsRequest::default())
        .await
        .ok()?;
    agents
        .into_inner()
        .agents
        .into_iter()
        .find(|a| a.node.as_ref().is_some_and(|n| n.id == node_id))
}

/// Waits until the registry's record of `node_id` satisfies `check`; returns it.
pub async fn wait_for_record(
    cp: &ControlPlane,
    node_id: &str,
    what: &str,
    check: impl Fn(&AgentRecord) -> bool,
) -> AgentRecord {
    eventually(what, SYNC_TIMEOUT, || async {
        agent_record(cp, node_id).await.filter(&check)
    })
    .await
}

/// Waits until the rollout status of `revision` satisfies `check`; returns it.
pub async fn wait_for_rollout(
    cp: &ControlPlane,
    revision: i64,
    what: &str,
    check: impl Fn(&RolloutStatusResponse) -> bool,
) -> RolloutStatusResponse {
    eventually(what, SYNC_TIMEOUT, || async {
        let status = cp
            .admin()
            .await
            .rollout_status(RolloutStatusRequest { revision })
            .await
            .ok()?
            .into_inner();
        check(&status).then_some(status)
    })
    .await
}
