//! A real HTTP upstream on a free port, and the resources that route an agent listener to it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_api::pb::{self, Resource, resource::Spec, route_action, route_match};
use tokio::net::TcpListener;

/// An HTTP/1.1 and HTTP/2 server that answers every request with its name and a newline.
/// `GET /slow/<ms>` answers after that many milliseconds. While failing
/// ([`Upstream::set_failing`]) it answers every request 500 instead, health checks included.
/// Stopped when dropped.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts an upstream on 127.0.0.1:0.
    pub async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding an upstream: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("upstream address: {e}"));
        let hits = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let (name, counter) = (Bytes::from(format!("{name}\n")), Arc::clone(&hits));
        let fail = Arc::clone(&failing);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (name, counter, fail) = (name.clone(), Arc::clone(&counter), Arc::clone(&fail));
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let failing = fail.load(Ordering::SeqCst);
                    let delay = req
                        .uri()
                        .path()
                        .strip_prefix("/slow/")
                        .and_then(|ms| ms.parse().ok())
                        .map(Duration::from_millis);
                    let name = name.clone();
                    async move {
                        if let Some(delay) = delay {
                            tokio::time::sleep(delay).await;
                        }
                        let mut response = hyper::Response::new(Full::new(name));
                        if failing {
                            *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                connections.spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            hits,
            failing,
            task,
        }
    }

    /// From now on, answers every request 500 (`true`) or normally (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Requests received so far (counted when they arrive, before any answer).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

/// A listener `name` on 127.0.0.1:`port` whose every request goes to the cluster `name` of
/// `endpoints`, through the route table `name`.
pub fn routed(name: &str, port: u16, endpoints: &[SocketAddr]) -> Vec<Resource> {
    let resource = |spec| Resource {
        name: name.to_string(),
        spec: Some(spec),
        ..Default::default()
    };
    let route = pb::Route {
        name: "all".to_string(),
        r#match: Some(pb::RouteMatch {
            path: Some(route_match::Path::Prefix("/".to_string())),
            ..Default::default()
        }),
        action: Some(pb::RouteAction {
            action: Some(route_action::Action::Cluster(name.to_string())),
        }),
        ..Default::default()
    };
    vec![
        resource(Spec::Listener(pb::Listener {
            address: "127.0.0.1".to_string(),
            port: port.into(),
            protocol: pb::listener::Protocol::Http as i32,
            route_table: name.to_string(),
            ..Default::default()
        })),
        resource(Spec::RouteTable(pb::RouteTable {
            virtual_hosts: vec![pb::VirtualHost {
                name: "any".to_string(),
                domains: vec!["*".to_string()],
                routes: vec![route],
            }],
        })),
        resource(Spec::Cluster(pb::Cluster {
            endpoints: endpoints
                .iter()
                .map(|a| pb::Endpoint {
                    address: a.ip().to_string(),
                    port: a.port().into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })),
    ]
}
