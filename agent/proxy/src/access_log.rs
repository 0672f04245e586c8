//! The access log: one line per request under the tracing target [`TARGET`], in one format
//! whether the request was forwarded, answered by the agent, or refused before any handler
//! ran.

use std::sync::Arc;

use crate::metrics as m;

/// The tracing target of access log lines.
pub const TARGET: &str = "portico::access";

/// The facts of one request as its access log line shows them.
#[derive(Debug, Default)]
pub(crate) struct Line<'a> {
    pub request_id: &'a str,
    pub listener: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub cluster: &'a str,
    pub upstream: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Why the agent answered itself; empty when the upstream answered.
    pub reason: &'a str,
    /// Upstream attempts made, retries included (0 when not forwarded).
    pub attempts: u32,
    /// The consumer an authentication policy identified; empty when none.
    pub consumer: &'a str,
    /// The gRPC status number a gRPC call ended with; empty for other requests.
    pub grpc_status: &'a str,
}

impl Line<'_> {
    /// Writes the line.
    pub fn write(&self) {
        tracing::info!(
            target: TARGET,
            request_id = self.request_id,
            listener = self.listener,
            method = self.method,
            path = self.path,
            route = self.route,
            cluster = self.cluster,
            upstream = self.upstream,
            status = self.status,
            duration_ms = self.duration_ms,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            reason = self.reason,
            attempts = self.attempts,
            consumer = self.consumer,
            grpc_status = self.grpc_status,
            "request"
        );
    }
}

/// Logs and counts an answer hyper or the connection wrapper gave before any handler ran.
pub(crate) fn rejected(listener: &Arc<str>, request_id: &str, status: u16, reason: &'static str) {
    metrics::counter!(
        m::REQUESTS_TOTAL,
        m::LABEL_LISTENER => listener.clone(),
        m::LABEL_ROUTE => "",
        m::LABEL_CLUSTER => "",
        m::LABEL_STATUS_CLASS => m::status_class(status),
        m::LABEL_GRPC_STATUS => "",
    )
    .increment(1);
    Line {
        request_id,
        listener,
        status,
        reason,
        ..Line::default()
    }
    .write();
}
