//! The admin endpoint: `/healthz`, `/readyz`, `/metrics` and `/config`, over HTTP/1.1.
//!
//! Meant for a local port (default 127.0.0.1:9901): `/config` shows the applied resources,
//! with secret material redacted, and the endpoints of the announced services.

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
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
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

/// A Prometheus recorder for the agent's metrics: request durations as histograms. The binary
/// installs it as the process's recorder ([`prometheus`]); `portico dev`, which runs a control
/// plane in the same process, routes each binary's metrics to its own recorder instead.
pub fn recorder() -> PrometheusRecorder {
    let durations = Matcher::Full(portico_proxy::metrics::REQUEST_DURATION_SECONDS.to_string());
    match PrometheusBuilder::new().set_buckets_for_metric(durations, &DURATION_BUCKETS) {
        Ok(with_buckets) => with_buckets.build_recorder(),
        // Only an empty bucket list is refused.
        Err(_) => PrometheusBuilder::new().build_recorder(),
    }
}

/// The recorder `/metrics` renders, set on first use.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The agent's Prometheus handle: on first use, a [`recorder`] installed as the process's
/// recorder, unless [`share_recorder`] named another. Several agents in one process (tests)
/// share it; if another recorder was installed first, `/metrics` stays empty.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        handle
    })
}

/// Renders `handle` on `/metrics`: the recorder the process routes the agent's metrics to.
/// False when the agent's recorder was already set up.
pub fn share_recorder(handle: PrometheusHandle) -> bool {
    HANDLE.set(handle).is_ok()
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
        "/readyz" if state.ready() => match state.ahead() {
            None => text(StatusCode::OK, "ready\n"),
            // Still ready: it serves its config. The detail is for whoever looks.
            Some(ahead) => reply(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                format!(
                    "ready\nahead of the control plane: serving version {}, the control plane \
                     offers version {}, refused (see portico-agent --accept-lower-version)\n",
                    ahead.served, ahead.offered
                ),
            ),
        },
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
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
    /// The endpoints of each announced service a cluster names, by service.
    services: std::collections::BTreeMap<String, Vec<portico_api::pb::Endpoint>>,
}

/// Fails only on a value the JSON mapping cannot express (e.g. an enum number unknown to
/// this build).
fn config_json(state: &State) -> serde_json::Result<String> {
    let applied = state.applied().unwrap_or_default();
    let view = ConfigView {
        version: applied.version,
        resources: applied.resources.iter().map(redacted).collect(),
        services: applied
            .services
            .iter()
            .map(|(name, endpoints)| (name.clone(), endpoints.to_vec()))
            .collect(),
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
    fn request_durations_are_histograms() {
        let recorder = recorder();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!(portico_proxy::metrics::REQUEST_DURATION_SECONDS, "route" => "r")
                .record(0.003);
        });
        let text = recorder.handle().render();
        assert!(
            text.contains(
                "portico_agent_request_duration_seconds_bucket{route=\"r\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("quantile"), "{text}");
    }
}
