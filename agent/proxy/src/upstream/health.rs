//! Active health checks: each endpoint of a cluster checked on its own timer, once per agent
//! (not per worker), by an HTTP GET, a gRPC `grpc.health.v1.Health/Check` call or a TCP
//! connect.
//!
//! An endpoint's first check decides its state at once; after that it takes
//! `unhealthy_threshold` failures in a row to mark it unhealthy and `healthy_threshold`
//! successes to bring it back. A check task holds its cluster weakly and ends when the cluster
//! is gone.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioExecutor;
use tower::Service;

use super::Upstream;
use crate::connector::{Conn, Connector};
use crate::grpc::{self, Code};

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
    /// Call `grpc.health.v1.Health/Check` for `service` over HTTP/2, with `host` (or the
    /// endpoint's address) as :authority; healthy when the answer is SERVING with status OK.
    Grpc {
        service: String,
        host: Option<String>,
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
    let (path, host, expected) = match kind {
        CheckKind::Tcp => return Ok(()),
        CheckKind::Grpc { service, host } => {
            let host = host.as_deref().unwrap_or(authority.as_str());
            return grpc_check(io, host, service).await;
        }
        CheckKind::Http {
            path,
            host,
            expected,
        } => (path, host, expected),
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

/// The path of gRPC's health check method.
const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// One `grpc.health.v1.Health/Check` call for `service` on `io`.
async fn grpc_check(io: Conn, host: &str, service: &str) -> Result<(), String> {
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    // HealthCheckRequest { string service = 1; }
    let mut message = Vec::with_capacity(service.len() + 3);
    if !service.is_empty() {
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let request = Request::post(format!("http://{host}{GRPC_HEALTH_CHECK}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, "portico-health-check")
        .body(Full::new(grpc::frames::frame(0, &message)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("status {}", response.status().as_u16()));
    }
    if let Some(code) = Code::of(response.headers()) {
        return Err(format!("grpc-status {}", code.number()));
    }
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?;
    match collected.trailers().and_then(Code::of) {
        Some(Code::Ok) => {}
        Some(code) => return Err(format!("grpc-status {}", code.number())),
        None => return Err("no grpc-status".into()),
    }
    let body: Bytes = collected.to_bytes();
    let status = grpc::frames::first_message(&body)
        .and_then(|(_, message)| serving_status(message))
        .ok_or("no HealthCheckResponse")?;
    if status == SERVING {
        Ok(())
    } else {
        Err(format!("serving status {status}"))
    }
}

/// Appends `n` as a protobuf varint.
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a protobuf varint from the front of `data`.
fn varint(data: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = data.split_first()?;
        *data = rest;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// `HealthCheckResponse.status` (field 1, an enum) of an encoded response; UNKNOWN (0) when
/// the field is absent, as protobuf reads an absent field.
fn serving_status(mut message: &[u8]) -> Option<u64> {
    let mut status = 0;
    while !message.is_empty() {
        let key = varint(&mut message)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(&mut message)?,
            (_, 0) => {
                varint(&mut message)?;
            }
            (_, 1) => message = message.get(8..)?,
            (_, 2) => {
                let len = usize::try_from(varint(&mut message)?).ok()?;
                message = message.get(len..)?;
            }
            (_, 5) => message = message.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_responses_decode() {
        assert_eq!(serving_status(&[0x08, 0x01]), Some(SERVING));
        assert_eq!(serving_status(&[0x08, 0x02]), Some(2));
        assert_eq!(serving_status(&[]), Some(0));
        // An unknown length-delimited field first.
        assert_eq!(
            serving_status(&[0x12, 0x01, 0xff, 0x08, 0x01]),
            Some(SERVING)
        );
        assert_eq!(serving_status(&[0x08]), None);
        let mut v = Vec::new();
        put_varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        assert_eq!(varint(&mut &v[..]), Some(300));
    }
}
