//! The access log and request metrics: one line and one count per request, written when the
//! response body ends (or is abandoned), under the tracing target [`TARGET`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Method};
use http_body::{Body, Frame, SizeHint};

use super::body::{BodyStats, BoxError, ResponseBody};
use super::service::{ConnCtx, WorkerRuntime};
use crate::metrics as m;

/// The tracing target of access log lines.
pub const TARGET: &str = "portico::access";

/// What is known about one request; logged and counted when dropped.
///
/// Everything it holds is owned by the request's worker (its connection, its handle on the
/// runtime, its metric handles), so making and dropping one moves no cache line between cores.
/// The names of the route, cluster and endpoint are copied only for the access log.
pub struct RequestLog {
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
    /// Request body bytes.
    pub body_in: Option<Arc<BodyStats>>,
    bytes_out: u64,
    start: Instant,
    conn: Arc<ConnCtx>,
    _runtime: WorkerRuntime,
}

impl RequestLog {
    /// Starts the record of a request on `conn`, holding `runtime` until it is dropped.
    pub(crate) fn new(
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
            body_in: None,
            bytes_out: 0,
            start: Instant::now(),
            conn,
            _runtime: runtime,
        }
    }

    /// Whether the access log line is written.
    pub fn enabled(&self) -> bool {
        self.conn.shared.access_log
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
        metrics.record(self.status, elapsed.as_secs_f64());
        if !self.enabled() {
            return;
        }
        let bytes_in = self
            .body_in
            .as_ref()
            .map_or(0, |s| s.bytes.load(Ordering::Relaxed));
        tracing::info!(
            target: TARGET,
            request_id = self.request_id.to_str().unwrap_or_default(),
            listener = %listener,
            method = %self.method,
            path = %self.path,
            route = metrics.route(),
            cluster = metrics.cluster(),
            upstream = self.upstream.as_ref().map_or("", Authority::as_str),
            status = self.status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            bytes_in,
            bytes_out = self.bytes_out,
            reason = self.reason.unwrap_or(""),
            "request"
        );
    }
}

/// Logs and counts an answer hyper or the connection wrapper gave before any handler ran.
pub fn rejected(listener: &Arc<str>, request_id: &str, status: u16, reason: &'static str) {
    metrics::counter!(
        m::REQUESTS_TOTAL,
        m::LABEL_LISTENER => listener.clone(),
        m::LABEL_ROUTE => "",
        m::LABEL_CLUSTER => "",
        m::LABEL_STATUS_CLASS => m::status_class(status),
    )
    .increment(1);
    tracing::info!(
        target: TARGET,
        request_id,
        listener = %listener,
        status,
        reason,
        "request"
    );
}

/// A response body that counts the bytes sent and carries the request's log until it ends.
pub struct LoggedBody {
    inner: ResponseBody,
    log: RequestLog,
}

impl LoggedBody {
    /// Wraps `inner`; `log` is written when this body is dropped.
    pub fn new(inner: ResponseBody, log: RequestLog) -> Self {
        LoggedBody { inner, log }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.log.bytes_out += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
