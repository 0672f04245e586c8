//! The record of one request: what the access log line and the request metrics say of it,
//! gathered while the request is served and written when its response body ends (or is
//! abandoned).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::uri::Authority;
use http::{HeaderValue, Method};

use crate::access_log::Line;
use crate::body::BodyStats;
use crate::context::ConnCtx;
use crate::grpc::{self, Code};
use crate::metrics as m;
use crate::shared::WorkerRuntime;
use crate::upstream::InFlight;
use crate::{usage, workers};

/// What is known about one request; logged and counted when dropped.
///
/// Everything it holds is owned by the request's worker (its connection, its handle on the
/// runtime, its metric handles), so making and dropping one moves no cache line between cores.
/// The names of the route, cluster and endpoint are copied only for the access log.
pub(crate) struct RequestLog {
    /// The request id.
    pub request_id: HeaderValue,
    /// The method.
    pub method: Method,
    /// The path as received; empty when the access log is off.
    pub path: String,
    /// The metrics of the route and cluster the request went to; resolved at the end for
    /// requests the agent answered before routing.
    pub metrics: Option<Arc<m::RequestHandles>>,
    /// The upstream endpoint forwarded to; only kept for the access log.
    pub upstream: Option<Authority>,
    /// The response status.
    pub status: u16,
    /// Why the agent answered itself, if it did.
    pub reason: Option<&'static str>,
    /// The reason code of a policy's refusal, for usage counts.
    pub rejection: Option<&'static str>,
    /// The consumer an authentication policy identified.
    pub consumer: Option<Arc<str>>,
    /// Request body bytes.
    pub body_in: Option<Arc<BodyStats>>,
    /// Response body bytes sent so far.
    pub bytes_out: u64,
    /// Upstream attempts made (0 when the request was not forwarded).
    pub attempts: u32,
    /// The answering attempt, counted in flight on its endpoint until the response ends.
    pub in_flight: Option<InFlight>,
    /// How the client speaks gRPC, for a gRPC call.
    pub grpc: Option<grpc::Protocol>,
    /// The status a gRPC call ended with, once known (a trailers-only head, the trailers).
    pub grpc_status: Option<Code>,
    start: Instant,
    conn: Arc<ConnCtx>,
    _runtime: WorkerRuntime,
}

impl RequestLog {
    /// Starts the record of a request on `conn`, holding `runtime` until it is dropped.
    pub fn new(
        request_id: HeaderValue,
        conn: Arc<ConnCtx>,
        method: Method,
        path: &str,
        runtime: WorkerRuntime,
    ) -> Self {
        RequestLog {
            request_id,
            method,
            // Only the log line needs its own copy.
            path: if conn.shared.access_log {
                path.to_string()
            } else {
                String::new()
            },
            metrics: None,
            upstream: None,
            status: 0,
            reason: None,
            rejection: None,
            consumer: None,
            body_in: None,
            bytes_out: 0,
            attempts: 0,
            in_flight: None,
            grpc: None,
            grpc_status: None,
            start: Instant::now(),
            conn,
            _runtime: runtime,
        }
    }

    /// Whether the access log line is written.
    pub fn enabled(&self) -> bool {
        self.conn.shared.access_log
    }

    /// Whether the request body went past the listener's limit.
    pub fn body_too_large(&self) -> bool {
        self.body_in
            .as_ref()
            .is_some_and(|s| s.exceeded.load(Ordering::Relaxed))
    }

    /// Whether reading the request body from the client failed.
    pub fn body_failed(&self) -> bool {
        self.body_in
            .as_ref()
            .is_some_and(|s| s.failed.load(Ordering::Relaxed))
    }

    /// Whether the client is still sending a request body the upstream side is reading.
    pub fn body_unfinished(&self) -> bool {
        self.body_in
            .as_ref()
            .is_some_and(|s| s.polled.load(Ordering::Relaxed) && !s.ended.load(Ordering::Relaxed))
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        self.conn.track.end_request();
        let elapsed = self.start.elapsed();
        let listener = &self.conn.listener;
        let metrics = self
            .metrics
            .take()
            .unwrap_or_else(|| m::request_handles(listener, None, None));
        // A call that ended without a status (reset, or abandoned) is what a gRPC client makes
        // of the HTTP answer: UNKNOWN after a 200.
        let grpc = self.grpc.map(|_| {
            self.grpc_status
                .unwrap_or_else(|| Code::from_http(self.status))
        });
        metrics.record(self.status, grpc, elapsed.as_secs_f64());
        let bytes_in = self
            .body_in
            .as_ref()
            .map_or(0, |s| s.bytes.load(Ordering::Relaxed));
        let (route, cluster) = metrics.names();
        self.conn.shared.usage.record(
            workers::current(),
            &usage::Request {
                listener,
                route,
                cluster,
                consumer: self.consumer.as_ref(),
                status: self.status,
                bytes_in,
                bytes_out: self.bytes_out,
                duration: elapsed,
                rejection: self.rejection,
            },
        );
        if !self.enabled() {
            return;
        }
        Line {
            request_id: self.request_id.to_str().unwrap_or_default(),
            listener,
            method: self.method.as_str(),
            path: &self.path,
            route: metrics.route(),
            cluster: metrics.cluster(),
            upstream: self.upstream.as_ref().map_or("", Authority::as_str),
            status: self.status,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            bytes_in,
            bytes_out: self.bytes_out,
            reason: self.reason.unwrap_or(""),
            consumer: self.consumer.as_deref().unwrap_or(""),
            attempts: self.attempts,
            grpc_status: grpc.map_or("", Code::number),
        }
        .write();
    }
}
