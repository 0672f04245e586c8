//! Metric names (defined here once, all prefixed `portico_cp_`) and the Prometheus recorder.
//!
//! | name | type | what |
//! |---|---|---|
//! | `portico_cp_connected_agents` | gauge | discovery streams open on this replica |
//! | `portico_cp_updates_sent_total` | counter | updates sent to agents |
//! | `portico_cp_updates_coalesced_total` | counter | versions an agent skipped because a newer one was ready when it ACKed |
//! | `portico_cp_apply_to_ack_seconds` | histogram | from this replica publishing a version to an agent ACKing it |
//! | `portico_cp_nacks_total` | counter | updates rejected by agents |
//! | `portico_cp_store_operation_seconds{op}` | histogram | store call latency |
//! | `portico_cp_store_errors_total{op}` | counter | failed store calls |
//! | `portico_cp_snapshot_build_seconds` | histogram | building a snapshot from watch events |
//! | `portico_cp_config_revision` | gauge | the config revision this replica serves |
//! | `portico_cp_registry_writes_total` | counter | registry transactions written by the flusher |

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Discovery streams open on this replica.
pub const CONNECTED_AGENTS: &str = "portico_cp_connected_agents";
/// Updates sent to agents.
pub const UPDATES_SENT: &str = "portico_cp_updates_sent_total";
/// Versions skipped by coalescing.
pub const UPDATES_COALESCED: &str = "portico_cp_updates_coalesced_total";
/// Publish → ACK latency.
pub const APPLY_TO_ACK: &str = "portico_cp_apply_to_ack_seconds";
/// Updates rejected by agents.
pub const NACKS: &str = "portico_cp_nacks_total";
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

/// Histogram buckets in seconds, from 100 µs to 10 s.
const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// The process-wide Prometheus handle. The recorder is global, so several control planes in one
/// process (tests, `portico dev`) share it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), &BUCKETS)
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Fails only when another recorder is installed already; ours then just stays empty.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The control plane's own metric families, rendered: the recorder is process-wide, and under
/// `portico dev` it also holds the agent's.
pub fn render() -> String {
    let text = handle().render();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        if name.starts_with("portico_cp_") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
