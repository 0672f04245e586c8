//! The admin endpoint: `/healthz`, `/readyz`, `/metrics` and `/config`, over HTTP/1.1.
//!
//! Meant for a local port (default 127.0.0.1:9901): `/config` shows the applied resources,
//! with secret material redacted.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use portico_api::Resource;
use portico_api::reference::redacted;
use tokio::net::TcpListener;

use crate::state::State;

/// Histograms are folded into their summaries this often, whether or not anyone scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Admin requests are short; this bounds how long shutdown waits for them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Backoff after a failed accept (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Request-duration buckets in seconds, 250 µs to 10 s. A histogram adds up across agents
/// where a summary's quantiles do not, and costs one bucket increment per request instead of
/// folding every sample into a quantile sketch.
const DURATION_BUCKETS: [f64; 14] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The agent's exporter: request durations as histograms.
fn exporter() -> PrometheusBuilder {
    let builder = PrometheusBuilder::new();
    let durations = Matcher::Full(portico_proxy::metrics::REQUEST_DURATION_SECONDS.to_string());
    match builder.set_buckets_for_metric(durations, &DURATION_BUCKETS) {
        Ok(with_buckets) => with_buckets,
        // Only an empty bucket list is refused.
        Err(_) => PrometheusBuilder::new(),
    }
}

/// The recorder `/metrics` renders, set on first use.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use.
///
/// There is one global recorder per process; several agents in one process (tests) share it.
/// If another recorder was installed first and not handed over with [`share_recorder`],
/// `/metrics` renders an empty recorder of its own and the agent's metrics go to the other one.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| match exporter().install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics will be empty");
            PrometheusBuilder::new().build_recorder().handle()
        }
    })
}

/// Renders `handle`, the recorder another part of this process installed (`portico dev` runs
/// the control plane beside the agent), on `/metrics`. False when the agent's recorder was
/// already set up.
pub fn share_recorder(handle: PrometheusHandle) -> bool {
    HANDLE.set(handle).is_ok()
}

/// The agent's own metric families from `text`: a shared recorder also holds others'.
fn own_families(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        if name.starts_with("portico_agent_") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Serves the admin endpoint on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let metrics = prometheus().clone();
    let graceful = GracefulShutdown::new();
    let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            _ = upkeep.tick() => {
                metrics.run_upkeep();
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        let metrics = metrics.clone();
        let service = service_fn(move |req| {
            let response = respond(&req, &state, &metrics);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection failed");
            }
        });
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    Ok(())
}

fn respond(
    req: &Request<Incoming>,
    state: &State,
    metrics: &PrometheusHandle,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            own_families(&metrics.render()),
        ),
        "/config" => match config_json(state) {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                format!("rendering the config: {e}\n"),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The body of `/config`.
#[derive(serde::Serialize)]
struct ConfigView {
    version: i64,
    /// In the proto3 JSON mapping, secrets redacted.
    resources: Vec<Resource>,
}

/// Fails only on a value the JSON mapping cannot express (e.g. an enum number unknown to
/// this build).
fn config_json(state: &State) -> serde_json::Result<String> {
    let applied = state.applied().unwrap_or_default();
    let view = ConfigView {
        version: applied.version,
        resources: applied.resources.iter().map(redacted).collect(),
    };
    Ok(serde_json::to_string_pretty(&view)? + "\n")
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body.to_string())
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_durations_are_histograms_and_only_agent_families_are_shown() {
        let recorder = exporter().build_recorder();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!(portico_proxy::metrics::REQUEST_DURATION_SECONDS, "route" => "r")
                .record(0.003);
            metrics::counter!("portico_cp_updates_sent_total").increment(1);
        });
        let text = own_families(&recorder.handle().render());
        assert!(
            text.contains(
                "portico_agent_request_duration_seconds_bucket{route=\"r\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("quantile"), "{text}");
        assert!(!text.contains("portico_cp_"), "{text}");
    }
}
