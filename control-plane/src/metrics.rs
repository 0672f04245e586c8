//! Metric names (defined here once, all prefixed `portico_cp_`) and the Prometheus recorder.
//!
//! | name | type | what |
//! |---|---|---|
//! | `portico_cp_connected_agents` | gauge | discovery streams open on this replica |
//! | `portico_cp_updates_sent_total` | counter | updates sent to agents |
//! | `portico_cp_updates_coalesced_total` | counter | versions an agent skipped because a newer one was ready when it ACKed |
//! | `portico_cp_apply_to_ack_seconds` | histogram | from this replica publishing a version to an agent ACKing it |
//! | `portico_cp_nacks_total` | counter | updates rejected by agents for their content, and responses rejected by xDS clients |
//! | `portico_cp_ahead_refusals_total` | counter | updates agents refused as older than the config they serve (this replica is behind them) |
//! | `portico_cp_store_operation_seconds{op}` | histogram | store call latency |
//! | `portico_cp_store_errors_total{op}` | counter | failed store calls |
//! | `portico_cp_snapshot_build_seconds` | histogram | building a snapshot from watch events |
//! | `portico_cp_config_revision` | gauge | the config revision this replica serves |
//! | `portico_cp_registry_writes_total` | counter | registry transactions written by the flusher |
//! | `portico_cp_service_endpoints{service}` | gauge | healthy nodes announcing the service, as this replica pushes them |
//! | `portico_cp_service_updates_sent_total` | counter | service-endpoint messages sent to agents |
//! | `portico_cp_unhealthy_endpoints{cluster}` | gauge | endpoints the agents on this replica see unhealthy or ejected, once per agent that sees them |
//! | `portico_cp_budget_writes_total` | counter | fleet budget record writes (grants, counts, deletions of ended windows) |
//! | `portico_cp_budget_granted_total` | counter | requests of fleet budget granted to this replica's agents |
//! | `portico_cp_usage_writes_total` | counter | usage rollup writes (minutes, hours, deletions) |
//! | `portico_cp_leader` | gauge | 1 while this replica leads (does the fleet's singleton work), 0 otherwise |
//! | `portico_cp_streams_refused_total` | counter | agent streams refused with `RESOURCE_EXHAUSTED` beyond `--max-stream-accept-rate` |
//! | `portico_cp_history_pruned_total` | counter | history records pruned beyond `--history-retention` |
//! | `portico_cp_rollouts_total{outcome}` | counter | canary rollouts ended through this replica, by outcome (`promoted`, `aborted`) |
//! | `portico_cp_rollout_stage{stage}` | gauge | 1 for the stage of the canary rollout in the store (`canary`, `baking`, `promoting`, `done`, `aborted`), 0 for the others |
//! | `portico_cp_xds_streams{kind}` | gauge | xDS streams open on this replica, by kind of client (`envoy`, `grpc`) |
//! | `portico_cp_xds_responses_total{type}` | counter | xDS responses sent, by resource type (`Listener`, `RouteConfiguration`, `Cluster`, `ClusterLoadAssignment`, `Secret`) |

use std::sync::OnceLock;

use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Canary rollouts ended, labelled `outcome`.
pub const ROLLOUTS: &str = "portico_cp_rollouts_total";
/// The stage of the canary rollout in the store, labelled `stage`.
pub const ROLLOUT_STAGE: &str = "portico_cp_rollout_stage";
/// 1 while this replica leads.
pub const LEADER: &str = "portico_cp_leader";
/// Streams refused beyond the accept rate.
pub const STREAMS_REFUSED: &str = "portico_cp_streams_refused_total";
/// History records pruned.
pub const HISTORY_PRUNED: &str = "portico_cp_history_pruned_total";
/// Discovery streams open on this replica.
pub const CONNECTED_AGENTS: &str = "portico_cp_connected_agents";
/// Updates sent to agents.
pub const UPDATES_SENT: &str = "portico_cp_updates_sent_total";
/// Versions skipped by coalescing.
pub const UPDATES_COALESCED: &str = "portico_cp_updates_coalesced_total";
/// Publish → ACK latency.
pub const APPLY_TO_ACK: &str = "portico_cp_apply_to_ack_seconds";
/// Updates rejected by agents for their content, and xDS responses rejected by their clients.
pub const NACKS: &str = "portico_cp_nacks_total";
/// Updates agents refused as older than what they serve.
pub const AHEAD_REFUSALS: &str = "portico_cp_ahead_refusals_total";
/// Store call latency, labelled `op`.
pub const STORE_OPERATION: &str = "portico_cp_store_operation_seconds";
/// Failed store calls, labelled `op`.
pub const STORE_ERRORS: &str = "portico_cp_store_errors_total";
/// Snapshot build time.
pub const SNAPSHOT_BUILD: &str = "portico_cp_snapshot_build_seconds";
/// The config revision served.
pub const CONFIG_REVISION: &str = "portico_cp_config_revision";
/// Registry transactions.
pub const REGISTRY_WRITES: &str = "portico_cp_registry_writes_total";
/// Endpoints of each announced service, labelled `service`.
pub const SERVICE_ENDPOINTS: &str = "portico_cp_service_endpoints";
/// Service-endpoint messages sent to agents.
pub const SERVICE_UPDATES_SENT: &str = "portico_cp_service_updates_sent_total";
/// Endpoints seen unhealthy or ejected, per agent that sees them, labelled `cluster`.
pub const UNHEALTHY_ENDPOINTS: &str = "portico_cp_unhealthy_endpoints";

/// Fleet budget record writes.
pub const BUDGET_WRITES: &str = "portico_cp_budget_writes_total";
/// Requests of fleet budget granted.
pub const BUDGET_GRANTED: &str = "portico_cp_budget_granted_total";
/// Usage rollup writes.
pub const USAGE_WRITES: &str = "portico_cp_usage_writes_total";
/// xDS streams open, labelled `kind`.
pub const XDS_STREAMS: &str = "portico_cp_xds_streams";
/// xDS responses sent, labelled `type`.
pub const XDS_RESPONSES: &str = "portico_cp_xds_responses_total";

/// Histogram buckets in seconds, from 100 µs to 10 s.
const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// A Prometheus recorder for the control plane's metrics, with its histogram buckets. The
/// binary installs it as the process's recorder ([`handle`]); `portico dev`, which runs an
/// agent in the same process, routes each binary's metrics to its own recorder instead.
pub fn recorder() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), &BUCKETS)
        .map(|b| b.build_recorder())
        .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder())
}

/// The recorder `/metrics` renders, set on first use.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The control plane's Prometheus handle: on first use, a [`recorder`] installed as the
/// process's recorder, unless [`use_recorder`] named another. Several control planes in one
/// process (tests) share it.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = recorder();
        let handle = recorder.handle();
        // Fails only when another recorder is installed already; ours then just stays empty.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        handle
    })
}

/// Renders `handle` on `/metrics`: the recorder the process routes the control plane's
/// metrics to. False when the control plane's recorder was already set up.
pub fn use_recorder(handle: PrometheusHandle) -> bool {
    HANDLE.set(handle).is_ok()
}

/// The control plane's metrics in the Prometheus text format.
pub fn render() -> String {
    handle().render()
}
