//! Upstream clusters at run time: the endpoints, how one is chosen for a request, and the
//! connections to them.
//!
//! Every proxy worker has its own connections, so a connection is only ever used by the
//! thread that opened it. HTTP/1 goes through `pool`: requests are written straight onto a
//! pooled connection. HTTP/2 goes through hyper-util's client, which multiplexes requests over
//! one connection per endpoint.
//!
//! # Layout
//! - `endpoint`: one endpoint's shared state (health, ejection, in-flight counts, report
//!   counts); `balancer`: availability, locality tiers and each policy's pick; `hash`: the
//!   ring and Maglev tables; `affinity`: request keys and session cookies.
//! - `health`: active health checks; `outlier`: passive ejection.
//! - `pool`: per-worker HTTP/1 connection pools.

mod affinity;
mod balancer;
mod endpoint;
mod hash;
mod health;
mod outlier;
mod pool;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{BoxError, ProxyBody};
use crate::connector::{Connector, UpstreamTls};
use crate::workers;
pub use affinity::{HashPolicy, Key, SessionCookie};
pub use balancer::{Policy, Tiering};
pub use endpoint::{Endpoint, Locality, now_ms};
pub use health::{CheckKind, HealthCheck};
pub use outlier::{Outcome, Settings as OutlierDetection};
pub use pool::{PoolLimits, PooledBody};

/// How long an idle upstream connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Largest response head read from an endpoint when the cluster sets none.
pub const DEFAULT_MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Idle HTTP/1 connections kept per endpoint by each worker.
pub const MAX_IDLE_PER_ENDPOINT: usize = 512;
/// The fewest retries a cluster's retry budget allows in flight on a worker.
const MIN_RETRY_BUDGET: u32 = 3;
/// The retry budget: retries in flight at most this share of requests in flight, in percent.
const RETRY_BUDGET_PERCENT: u32 = 20;

/// How a cluster balances and connects.
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
    /// How an endpoint is chosen within a locality tier.
    pub policy: Policy,
    /// Locality tiers, when the cluster prefers local endpoints.
    pub tiering: Option<Tiering>,
    /// The request key of hashing policies.
    pub hash: Option<HashPolicy>,
    /// Active health checking.
    pub health_check: Option<HealthCheck>,
    /// Passive ejection.
    pub outlier: Option<OutlierDetection>,
    /// Each worker's most requests in flight; 0 for no limit.
    pub max_requests: u32,
    /// Each worker's most retries in flight; 0 for no limit (the retry budget still applies).
    pub max_retries: u32,
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

    /// Whether the endpoint's response head was larger than the cluster accepts.
    pub fn is_head_too_large(&self) -> bool {
        match self {
            SendError::Request(e) => e.is_parse_too_large(),
            _ => false,
        }
    }

    /// Whether an HTTP/2 upstream refused the stream before processing it.
    pub fn is_refused_stream(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = source {
            if let Some(h2) = e.downcast_ref::<h2::Error>() {
                return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            }
            source = e.source();
        }
        false
    }
}

/// Which limit a request overflowed: its cluster answers 503 rather than send it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// `circuit_breakers.max_requests`.
    MaxRequests,
    /// `circuit_breakers.max_retries`.
    MaxRetries,
    /// The retry budget (retries in flight at most a fifth of requests in flight).
    RetryBudget,
    /// `circuit_breakers.max_pending_requests`.
    MaxPending,
}

impl Overflow {
    /// The limit's name, as the `limit` label of `portico_agent_overflow_total`.
    pub fn limit(self) -> &'static str {
        match self {
            Overflow::MaxRequests => "max_requests",
            Overflow::MaxRetries => "max_retries",
            Overflow::RetryBudget => "retry_budget",
            Overflow::MaxPending => "max_pending_requests",
        }
    }
}

enum Transport {
    /// One pool per worker.
    Http1(Vec<Arc<pool::Pool>>),
    /// One client per worker.
    Http2(Vec<Client<Connector, ProxyBody>>),
}

/// A counter alone on its cache line: each worker writes only its own.
#[repr(align(128))]
#[derive(Debug, Default)]
struct PerWorker(AtomicU32);

/// A cluster's requests and retries in flight, per worker.
#[derive(Debug)]
struct Counters {
    requests: Box<[PerWorker]>,
    retries: Box<[PerWorker]>,
}

/// What a request in flight holds on its worker: the endpoint and the cluster's counters. A
/// worker takes its own handles, so counting a request in and out touches no reference count
/// another core writes.
#[derive(Debug)]
struct Handle {
    endpoint: Arc<Endpoint>,
    counters: Arc<Counters>,
    worker: usize,
}

/// A request counted in flight on an endpoint (and as a retry, for retries) until dropped.
#[derive(Debug)]
pub struct InFlight {
    handle: Arc<Handle>,
    retry: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let h = &self.handle;
        h.endpoint.end(h.worker);
        h.counters.requests[h.worker]
            .0
            .fetch_sub(1, Ordering::Relaxed);
        if self.retry {
            h.counters.retries[h.worker]
                .0
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One attempt's endpoint, chosen by the cluster's policy.
#[derive(Debug)]
pub struct Pick {
    /// The endpoint's index in the cluster.
    pub index: usize,
    /// Counts the attempt in flight until dropped.
    pub in_flight: InFlight,
    /// The session cookie to set on the response, for a new session.
    pub set_cookie: Option<HeaderValue>,
}

/// A cluster at run time: its endpoints, how one is chosen, and the connections.
pub struct Upstream {
    name: Arc<str>,
    endpoints: Vec<Arc<Endpoint>>,
    balancer: balancer::Balancer,
    hash: Option<HashPolicy>,
    /// Session tokens of the endpoints, for session affinity.
    tokens: Vec<u64>,
    outlier: Option<OutlierDetection>,
    health_check: Option<HealthCheck>,
    checking: AtomicBool,
    /// Per worker, a handle per endpoint.
    handles: Box<[Vec<Arc<Handle>>]>,
    counters: Arc<Counters>,
    max_requests: u32,
    max_retries: u32,
    transport: Transport,
    connector: Connector,
    http2: bool,
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
    pub fn new(name: &str, endpoints: Vec<Arc<Endpoint>>, config: UpstreamConfig) -> Self {
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
                .http2_max_header_list_size(config.limits.max_response_head as u32)
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
        let counters = Arc::new(Counters {
            requests: (0..pools).map(|_| PerWorker::default()).collect(),
            retries: (0..pools).map(|_| PerWorker::default()).collect(),
        });
        let handles = (0..pools)
            .map(|worker| {
                endpoints
                    .iter()
                    .map(|e| {
                        Arc::new(Handle {
                            endpoint: e.clone(),
                            counters: counters.clone(),
                            worker,
                        })
                    })
                    .collect()
            })
            .collect();
        let name: Arc<str> = name.into();
        let upstream = Upstream {
            balancer: balancer::Balancer::new(&endpoints, config.policy, config.tiering, pools),
            tokens: endpoints
                .iter()
                .map(|e| affinity::token(e.authority.as_str()))
                .collect(),
            hash: config.hash,
            outlier: config.outlier,
            health_check: config.health_check,
            checking: AtomicBool::new(false),
            handles,
            counters,
            max_requests: config.max_requests,
            max_retries: config.max_retries,
            connect_errors: crate::metrics::upstream_connect_errors(&name),
            name,
            endpoints,
            transport,
            connector,
            http2: config.http2,
        };
        upstream.publish_health();
        upstream
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
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// The endpoint at `authority`, to carry its state into the cluster compiled next.
    pub fn endpoint(&self, authority: &Authority) -> Option<&Arc<Endpoint>> {
        self.endpoints.iter().find(|e| &e.authority == authority)
    }

    /// The HTTP version spoken to the endpoints.
    pub fn version(&self) -> Version {
        match self.transport {
            Transport::Http1(_) => Version::HTTP_11,
            Transport::Http2(_) => Version::HTTP_2,
        }
    }

    /// The key the cluster's hash policy takes from a request, if it hashes.
    pub fn key(&self, head: &Parts, client: IpAddr) -> Key {
        match &self.hash {
            Some(policy) => policy.key(head, client),
            None => Key::None,
        }
    }

    /// Chooses the endpoint of an attempt and counts it in flight: `key` from [`Upstream::key`],
    /// `avoid` the endpoint the previous attempt failed on, `retry` whether this is one.
    /// `Ok(None)` when the cluster has no endpoint.
    pub fn pick(
        &self,
        key: &Key,
        avoid: Option<usize>,
        retry: bool,
    ) -> Result<Option<Pick>, Overflow> {
        let worker = workers::current() % self.handles.len();
        let requests = self.counters.requests[worker].0.load(Ordering::Relaxed);
        if retry {
            let retries = self.counters.retries[worker].0.load(Ordering::Relaxed);
            if self.max_retries > 0 && retries >= self.max_retries {
                return Err(Overflow::MaxRetries);
            }
            if retries >= (requests * RETRY_BUDGET_PERCENT / 100).max(MIN_RETRY_BUDGET) {
                return Err(Overflow::RetryBudget);
            }
        } else if self.max_requests > 0 && requests >= self.max_requests {
            return Err(Overflow::MaxRequests);
        }
        let (index, set_cookie) = match key {
            Key::None => (self.balancer.pick(&self.endpoints, None, avoid), None),
            Key::Hash(h) => (self.balancer.pick(&self.endpoints, Some(*h), avoid), None),
            Key::Session(token) => {
                let named =
                    self.tokens.iter().position(|t| t == token).filter(|i| {
                        Some(*i) != avoid && self.balancer.availability().is_usable(*i)
                    });
                match named {
                    Some(i) => (Some(i), None),
                    None => (
                        self.balancer.pick(&self.endpoints, Some(*token), avoid),
                        None,
                    ),
                }
            }
            Key::NewSession => {
                let index = self.balancer.pick(&self.endpoints, None, avoid);
                let cookie = match (&self.hash, index) {
                    (Some(HashPolicy::Session(s)), Some(i)) => s.set_cookie(self.tokens[i]),
                    _ => None,
                };
                (index, cookie)
            }
        };
        let Some(index) = index else {
            return Ok(None);
        };
        let handle = self.handles[worker][index].clone();
        handle.endpoint.begin(worker);
        self.counters.requests[worker]
            .0
            .fetch_add(1, Ordering::Relaxed);
        if retry {
            self.counters.retries[worker]
                .0
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(Pick {
            index,
            in_flight: InFlight { handle, retry },
            set_cookie,
        }))
    }

    /// Records how an attempt on endpoint `index` went: report counts and outlier detection.
    pub fn record(&self, index: usize, outcome: Outcome) {
        if outcome != Outcome::Success
            && let Some(e) = self.endpoints.get(index)
        {
            e.count_error();
        }
        if let Some(outlier) = &self.outlier
            && outlier.record(&self.endpoints, index, outcome)
        {
            crate::metrics::outlier_ejection(&self.name);
            self.refresh();
        }
    }

    /// Recomputes which endpoints are available after one's state changed.
    fn refresh(&self) {
        let before = self.balancer.availability().panic;
        let now = self.balancer.rebuild(&self.endpoints);
        if now.panic && !before {
            tracing::warn!(cluster = %self.name, "no endpoint is healthy: using all of them");
            crate::metrics::lb_panic(&self.name);
        }
        self.publish_health();
    }

    /// Sets each endpoint's `portico_agent_endpoint_healthy` gauge.
    fn publish_health(&self) {
        let available = self.balancer.availability();
        for (i, e) in self.endpoints.iter().enumerate() {
            crate::metrics::endpoint_healthy(&self.name, &e.authority, available.is_usable(i));
        }
    }

    /// Starts the cluster's active health checks, once, on `handle`'s runtime.
    pub fn start_health_checks(self: &Arc<Self>, handle: &tokio::runtime::Handle) {
        if let Some(check) = &self.health_check
            && !self.checking.swap(true, Ordering::AcqRel)
        {
            health::spawn(self, check, handle);
        }
    }

    /// The cluster's endpoints as one report shows them.
    pub fn report(&self) -> portico_api::pb::ClusterHealth {
        let now = endpoint::now_ms();
        portico_api::pb::ClusterHealth {
            cluster: self.name.to_string(),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| e.report(now, false))
                .collect(),
            panic: self.balancer.availability().panic,
        }
    }

    /// Sends `request` (origin-form URI) to endpoint `endpoint` over a connection of the
    /// current worker.
    pub async fn send(
        &self,
        endpoint: usize,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        let authority = &self
            .endpoints
            .get(endpoint)
            .ok_or(SendError::NoEndpoint(endpoint))?
            .authority;
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

    /// Plain HTTP/1, round robin, with the default limits and `pools` pools.
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
                max_response_head: DEFAULT_MAX_RESPONSE_HEAD,
            },
            pools,
            policy: Policy::RoundRobin,
            tiering: None,
            hash: None,
            health_check: None,
            outlier: None,
            max_requests: 0,
            max_retries: 0,
        }
    }

    /// Endpoints of weight 1 at `authorities`.
    pub(super) fn endpoints(authorities: &[&str], workers: usize) -> Vec<Arc<Endpoint>> {
        authorities
            .iter()
            .map(|a| {
                Arc::new(Endpoint::new(
                    a.parse().unwrap(),
                    1,
                    Locality::default(),
                    workers,
                ))
            })
            .collect()
    }

    fn picked(upstream: &Upstream) -> String {
        let pick = upstream.pick(&Key::None, None, false).unwrap().unwrap();
        upstream.endpoints()[pick.index].authority.to_string()
    }

    #[tokio::test]
    async fn round_robin_visits_every_endpoint_in_turn() {
        let upstream = Upstream::new("c", endpoints(&["a:1", "b:2", "c:3"], 1), config(1));
        let picks: Vec<String> = (0..6).map(|_| picked(&upstream)).collect();
        assert_eq!(picks, ["a:1", "b:2", "c:3", "a:1", "b:2", "c:3"]);
        let empty = Upstream::new("e", Vec::new(), config(1));
        assert!(empty.pick(&Key::None, None, false).unwrap().is_none());
    }

    #[tokio::test]
    async fn requests_and_retries_in_flight_are_limited() {
        let mut limited = config(1);
        limited.max_requests = 2;
        limited.max_retries = 1;
        let upstream = Upstream::new("c", endpoints(&["a:1", "b:2"], 1), limited);
        let first = upstream.pick(&Key::None, None, false).unwrap().unwrap();
        let second = upstream.pick(&Key::None, None, false).unwrap().unwrap();
        assert_eq!(
            upstream.pick(&Key::None, None, false).unwrap_err(),
            Overflow::MaxRequests
        );
        let retry = upstream
            .pick(&Key::None, Some(first.index), true)
            .unwrap()
            .unwrap();
        assert_ne!(
            retry.index, first.index,
            "a retry avoids the endpoint that failed"
        );
        assert_eq!(
            upstream.pick(&Key::None, None, true).unwrap_err(),
            Overflow::MaxRetries
        );
        assert_eq!(
            upstream.endpoints()[0].in_flight() + upstream.endpoints()[1].in_flight(),
            3
        );
        drop((first, second, retry));
        assert_eq!(
            upstream.endpoints()[0].in_flight() + upstream.endpoints()[1].in_flight(),
            0
        );
        assert!(upstream.pick(&Key::None, None, false).unwrap().is_some());
    }

    #[tokio::test]
    async fn the_retry_budget_allows_a_fifth_of_requests_and_at_least_three() {
        let upstream = Upstream::new("c", endpoints(&["a:1"], 1), config(1));
        let retries: Vec<_> = (0..3)
            .map(|_| upstream.pick(&Key::None, None, true).unwrap().unwrap())
            .collect();
        assert_eq!(
            upstream.pick(&Key::None, None, true).unwrap_err(),
            Overflow::RetryBudget
        );
        let requests: Vec<_> = (0..17)
            .map(|_| upstream.pick(&Key::None, None, false).unwrap().unwrap())
            .collect();
        // 20 in flight: room for a fourth retry.
        let fourth = upstream.pick(&Key::None, None, true).unwrap().unwrap();
        assert_eq!(
            upstream.pick(&Key::None, None, true).unwrap_err(),
            Overflow::RetryBudget
        );
        drop((retries, requests, fourth));
    }
}
