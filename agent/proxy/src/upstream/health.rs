//! Active health checks: each endpoint of a cluster checked on its own timer, once per agent
//! (not per worker), by an HTTP GET or a TCP connect.
//!
//! An endpoint's first check decides its state at once; after that it takes
//! `unhealthy_threshold` failures in a row to mark it unhealthy and `healthy_threshold`
//! successes to bring it back. A check task holds its cluster weakly and ends when the cluster
//! is gone.

use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Request, Uri};
use http_body_util::Empty;
use hyper_util::rt::TokioExecutor;
use tower::Service;

use super::Upstream;
use crate::connector::{Conn, Connector};

/// A cluster's health check, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// How: an HTTP request, or a TCP connect only.
    pub kind: CheckKind,
    /// Time between checks, before jitter.
    pub interval: Duration,
    /// Time allowed per check.
    pub timeout: Duration,
    /// Consecutive successes that make an endpoint healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make an endpoint unhealthy.
    pub unhealthy_threshold: u32,
}

/// What a check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// GET `path`, with `host` (or the endpoint's address) as Host; healthy when the status is
    /// one of `expected` (empty: 200–399).
    Http {
        path: String,
        host: Option<String>,
        expected: Vec<u16>,
    },
    /// Open a TCP (and TLS, when the cluster uses it) connection.
    Tcp,
}

/// Starts checking every endpoint of `upstream` on the runtime of `handle`.
pub(super) fn spawn(
    upstream: &Arc<Upstream>,
    check: &HealthCheck,
    handle: &tokio::runtime::Handle,
) {
    for index in 0..upstream.endpoints.len() {
        let task = run(Arc::downgrade(upstream), index, check.clone());
        handle.spawn(task);
    }
}

/// Checks endpoint `index` of `upstream` until the cluster is gone.
async fn run(upstream: Weak<Upstream>, index: usize, check: HealthCheck) {
    // Spread the first checks of many endpoints and agents over one interval.
    let first = check.interval.mul_f64(rand::random_range(0.0..0.1));
    tokio::time::sleep(first).await;
    let mut successes = 0;
    let mut failures = 0;
    let mut decided = false;
    loop {
        let (connector, endpoint, http2) = {
            let Some(u) = upstream.upgrade() else { return };
            let Some(e) = u.endpoints.get(index) else {
                return;
            };
            (u.connector.clone(), e.clone(), u.http2)
        };
        let result = tokio::time::timeout(
            check.timeout,
            probe(&check.kind, connector, &endpoint.authority, http2),
        )
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {:?}", check.timeout)));
        let verdict = match result {
            Ok(()) => {
                successes += 1;
                failures = 0;
                (!decided || successes >= check.healthy_threshold).then_some((true, String::new()))
            }
            Err(reason) => {
                failures += 1;
                successes = 0;
                (!decided || failures >= check.unhealthy_threshold).then_some((false, reason))
            }
        };
        decided = true;
        if let Some((healthy, reason)) = verdict
            && let Some(u) = upstream.upgrade()
            && endpoint.set_healthy(healthy, &reason)
        {
            if healthy {
                tracing::info!(cluster = %u.name, endpoint = %endpoint.authority, "endpoint healthy");
            } else {
                tracing::warn!(cluster = %u.name, endpoint = %endpoint.authority, reason, "endpoint unhealthy");
            }
            u.refresh();
        }
        drop(endpoint);
        // Jitter keeps the checks of many agents from arriving together.
        let jitter = check.interval.mul_f64(rand::random_range(0.0..0.1));
        tokio::time::sleep(check.interval + jitter).await;
    }
}

/// One check of the endpoint at `authority`; `Err` says why it failed.
async fn probe(
    kind: &CheckKind,
    mut connector: Connector,
    authority: &http::uri::Authority,
    http2: bool,
) -> Result<(), String> {
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|e| e.to_string())?;
    let io: Conn = connector
        .call(uri)
        .await
        .map_err(|e| format!("connect: {}", portico_api::error::Chain(e.as_ref())))?;
    let CheckKind::Http {
        path,
        host,
        expected,
    } = kind
    else {
        return Ok(());
    };
    let host = host.clone().unwrap_or_else(|| authority.to_string());
    let request = Request::get(path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "portico-health-check")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let status = if http2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let mut request = request;
        *request.uri_mut() = format!("http://{authority}{path}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?;
        sender.send_request(request).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        sender.send_request(request).await
    }
    .map_err(|e| format!("request: {e}"))?
    .status()
    .as_u16();
    let ok = if expected.is_empty() {
        (200..400).contains(&status)
    } else {
        expected.contains(&status)
    };
    if ok {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}
