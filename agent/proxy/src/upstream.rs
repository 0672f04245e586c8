//! Upstream clusters at run time: round robin over the endpoints, and the connections to them.
//!
//! Every proxy worker has its own connections, so a connection is only ever used by the
//! thread that opened it. HTTP/1 goes through `pool`: requests are written straight onto a
//! pooled connection. HTTP/2 goes through hyper-util's client, which multiplexes requests over
//! one connection per endpoint.

mod pool;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{BoxError, ProxyBody};
use crate::connector::{Connector, UpstreamTls};
use crate::workers;
pub use pool::{PoolLimits, PooledBody};

/// How long an idle upstream connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle HTTP/1 connections kept per endpoint by each worker.
pub const MAX_IDLE_PER_ENDPOINT: usize = 512;

/// How a cluster's connections are made.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// Speak HTTP/2 (prior knowledge, or ALPN over TLS) rather than HTTP/1.1.
    pub http2: bool,
    /// TLS to the endpoints, if any.
    pub tls: Option<UpstreamTls>,
    /// Each worker's HTTP/1 pool limits.
    pub limits: PoolLimits,
    /// Connection pools: one per proxy worker (at least one).
    pub pools: usize,
}

/// Why a request could not be sent upstream or got no response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The chosen endpoint does not exist (any more).
    #[error("no endpoint {0}")]
    NoEndpoint(usize),
    /// The connection could not be opened.
    #[error("connect to {endpoint}")]
    Connect {
        endpoint: Authority,
        #[source]
        source: BoxError,
    },
    /// The connection did not open within the cluster's connect timeout.
    #[error("connect to {endpoint}: timed out after {timeout:?}")]
    ConnectTimeout {
        endpoint: Authority,
        timeout: Duration,
    },
    /// The cluster is at its connection limit and its queue of waiting requests is full.
    #[error("connection limit reached and the queue of waiting requests is full")]
    Overloaded,
    /// The connection failed while the request was sent or the response head awaited.
    #[error(transparent)]
    Request(hyper::Error),
    /// The HTTP/2 client failed.
    #[error(transparent)]
    Client(hyper_util::client::legacy::Error),
}

impl SendError {
    /// Whether the failure was in reaching the endpoint: nothing was sent.
    pub fn is_connect(&self) -> bool {
        match self {
            SendError::Connect { .. } | SendError::ConnectTimeout { .. } => true,
            SendError::Client(e) => e.is_connect(),
            _ => false,
        }
    }
}

/// A cursor alone on its cache line.
#[repr(align(128))]
#[derive(Default)]
struct Cursor(AtomicUsize);

enum Transport {
    /// One pool per worker.
    Http1(Vec<Arc<pool::Pool>>),
    /// One client per worker.
    Http2(Vec<Client<Connector, ProxyBody>>),
}

/// A cluster at run time: its endpoints, the round-robin cursor and the connections.
pub struct Upstream {
    name: Arc<str>,
    endpoints: Vec<Authority>,
    /// Round-robin cursors, one per worker: a shared one would move its cache line between
    /// cores on every request.
    next: Box<[Cursor]>,
    transport: Transport,
    connect_errors: metrics::Counter,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Cluster `name` over `endpoints`.
    pub fn new(name: &str, endpoints: Vec<Authority>, config: UpstreamConfig) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.limits.connect_timeout));
        let connector = Connector::new(http, config.tls);
        let pools = config.pools.max(1);
        let transport = if config.http2 {
            let mut builder = Client::builder(TokioExecutor::new());
            builder
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(config.limits.idle_timeout)
                .http2_only(true);
            Transport::Http2(
                (0..pools)
                    .map(|_| builder.build(connector.clone()))
                    .collect(),
            )
        } else {
            Transport::Http1(
                (0..pools)
                    .map(|_| pool::Pool::new(endpoints.len(), connector.clone(), config.limits))
                    .collect(),
            )
        };
        let name: Arc<str> = name.into();
        Upstream {
            connect_errors: crate::metrics::upstream_connect_errors(&name),
            name,
            endpoints,
            next: (0..pools).map(|_| Cursor::default()).collect(),
            transport,
        }
    }

    /// Counts a failed attempt to connect to one of the endpoints.
    pub fn count_connect_error(&self) {
        self.connect_errors.increment(1);
    }

    /// The cluster's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The cluster's endpoints.
    pub fn endpoints(&self) -> &[Authority] {
        &self.endpoints
    }

    /// The HTTP version spoken to the endpoints.
    pub fn version(&self) -> Version {
        match self.transport {
            Transport::Http1(_) => Version::HTTP_11,
            Transport::Http2(_) => Version::HTTP_2,
        }
    }

    /// The next endpoint in the current worker's round-robin order, with its index; `None` when
    /// the cluster has none.
    pub fn pick(&self) -> Option<(usize, &Authority)> {
        if self.endpoints.is_empty() {
            return None;
        }
        let cursor = &self.next[workers::current() % self.next.len()];
        let i = cursor.0.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        self.endpoints.get(i).map(|a| (i, a))
    }

    /// Sends `request` (origin-form URI) to endpoint `endpoint` over a connection of the
    /// current worker.
    pub async fn send(
        &self,
        endpoint: usize,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        let authority = self
            .endpoints
            .get(endpoint)
            .ok_or(SendError::NoEndpoint(endpoint))?;
        let worker = workers::current();
        match &self.transport {
            Transport::Http1(pools) => {
                if !request.headers().contains_key(header::HOST)
                    && let Ok(host) = HeaderValue::from_str(authority.as_str())
                {
                    request.headers_mut().insert(header::HOST, host);
                }
                let pool = &pools[worker % pools.len()];
                pool.send(endpoint, authority, request).await
            }
            Transport::Http2(clients) => {
                let mut uri = request.uri().clone().into_parts();
                uri.scheme = Some(Scheme::HTTP);
                uri.authority = Some(authority.clone());
                if let Ok(uri) = Uri::from_parts(uri) {
                    *request.uri_mut() = uri;
                }
                let client = &clients[worker % clients.len()];
                let response = client.request(request).await.map_err(SendError::Client)?;
                Ok(response.map(PooledBody::plain))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Plain HTTP/1 with the default limits and `pools` pools.
    pub(super) fn config(pools: usize) -> UpstreamConfig {
        UpstreamConfig {
            http2: false,
            tls: None,
            limits: PoolLimits {
                connect_timeout: Duration::from_secs(1),
                idle_timeout: IDLE_TIMEOUT,
                max_idle_per_endpoint: MAX_IDLE_PER_ENDPOINT,
                max_connections: 0,
                max_pending: 0,
            },
            pools,
        }
    }

    #[tokio::test]
    async fn round_robin_visits_every_endpoint_in_turn() {
        let endpoints: Vec<Authority> = ["a:1", "b:2", "c:3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let upstream = Upstream::new("c", endpoints, config(1));
        let picks: Vec<String> = (0..6)
            .map(|_| upstream.pick().unwrap().1.to_string())
            .collect();
        assert_eq!(picks, ["a:1", "b:2", "c:3", "a:1", "b:2", "c:3"]);
        let empty = Upstream::new("e", Vec::new(), config(1));
        assert!(empty.pick().is_none());
    }
}
