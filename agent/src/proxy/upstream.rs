//! Upstream pools and load balancing: one pooled keep-alive client per cluster, and round robin
//! over its endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};

use super::connector::{Connector, UpstreamTls};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::ProxyBody;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A cluster at run time: its endpoints, the round-robin cursor and the connection pool.
pub struct Upstream {
    name: String,
    endpoints: Vec<Authority>,
    next: AtomicUsize,
    version: Version,
    client: Client<Connector, ProxyBody>,
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
    /// An upstream speaking HTTP/2 when `http2` (prior knowledge, or ALPN over TLS), else
    /// HTTP/1.1; over TLS when `tls` is set.
    pub fn new(
        name: &str,
        endpoints: Vec<Authority>,
        http2: bool,
        connect_timeout: Duration,
        tls: Option<UpstreamTls>,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let connector = Connector::new(http, tls);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http2_only(http2)
            .build(connector);
        Upstream {
            name: name.to_string(),
            endpoints,
            next: AtomicUsize::new(0),
            version: if http2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            },
            client,
        }
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The HTTP version spoken to the endpoints.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The next endpoint in round-robin order; `None` when the cluster has none.
    pub fn pick(&self) -> Option<&Authority> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        self.endpoints.get(i)
    }

    /// Sends `request` (with an absolute URI) over a pooled connection.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(request).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_robin_visits_every_endpoint_in_turn() {
        let endpoints: Vec<Authority> = ["a:1", "b:2", "c:3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let upstream = Upstream::new("c", endpoints, false, Duration::from_secs(1), None);
        let picks: Vec<String> = (0..6)
            .map(|_| upstream.pick().unwrap().to_string())
            .collect();
        assert_eq!(picks, ["a:1", "b:2", "c:3", "a:1", "b:2", "c:3"]);
        let empty = Upstream::new("e", Vec::new(), false, Duration::from_secs(1), None);
        assert!(empty.pick().is_none());
    }
}
