//! Shared parts of the proxy integration tests: real upstream servers on port 0, config
//! builders, a real client, and polling with a deadline.
#![allow(dead_code, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_api::pb::{self, resource::Spec, route_action, route_match};
use portico_api::{Resource, ResourceSet};
use portico_proxy::config::ConfigSet;
use portico_proxy::{Proxy, ProxyConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub type TestBody = BoxBody<Bytes, hyper::Error>;

/// A port that was free a moment ago: listeners take fixed ports from config.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// An address that refuses connections: a socket bound to it but not listening. Hold the
/// socket for the test, so no other test (or an outgoing connection's source port) takes it.
pub fn refusing() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A real HTTP/1.1 + HTTP/2 upstream on 127.0.0.1:0 that answers with what it received:
/// first line its name, second line "METHOD URI", then one "name: value" line per header.
/// `/slow/<ms>` waits that long first; `/echo` streams the request body back.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted.
    pub accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn upstream_answer(name: String, req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_string();
    if let Some(ms) = path.strip_prefix("/slow/").and_then(|m| m.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path == "/echo" {
        return Response::new(req.into_body().boxed());
    }
    let mut text = format!("{name}\n{} {}\n", req.method(), req.uri());
    for (n, v) in req.headers() {
        text.push_str(&format!("{n}: {}\n", v.to_str().unwrap_or("?")));
    }
    let mut response = Response::new(Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed());
    response
        .headers_mut()
        .insert("x-upstream", name.parse().unwrap());
    response
        .headers_mut()
        .insert("connection", "x-hop".parse().unwrap());
    response.headers_mut().insert("x-hop", "1".parse().unwrap());
    response
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        Upstream::start_with(name, None).await
    }

    /// An upstream serving HTTPS with `tls`.
    pub async fn start_tls(name: &str, tls: Arc<rustls::ServerConfig>) -> Upstream {
        Upstream::start_with(name, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn start_with(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let hits = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (n, s, h, a) = (
            name.to_string(),
            stop.clone(),
            hits.clone(),
            accepted.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                a.fetch_add(1, Ordering::SeqCst);
                let (n, h) = (n.clone(), h.clone());
                let svc = hyper::service::service_fn(move |req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let n = n.clone();
                    async move { Ok::<_, Infallible>(upstream_answer(n, req).await) }
                });
                let s = s.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(stream), svc);
                            tokio::select! { _ = conn => {}, _ = s.cancelled() => {} }
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let conn = builder.serve_connection(TokioIo::new(stream), svc);
                            tokio::select! { _ = conn => {}, _ = s.cancelled() => {} }
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            name: name.to_string(),
            hits,
            accepted,
            stop,
        }
    }
}

/// A WebSocket echo upstream.
pub async fn websocket_echo() -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = s.cancelled() => return,
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            };
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let (sink, stream) = ws.split();
                let _ = stream
                    .filter(|m| {
                        futures::future::ready(
                            m.as_ref().is_ok_and(|m| m.is_text() || m.is_binary()),
                        )
                    })
                    .forward(sink)
                    .await;
            });
        }
    });
    (addr, stop)
}

// ---- config builders -----------------------------------------------------------------------

pub fn resource(name: &str, spec: Spec) -> Resource {
    Resource {
        name: name.into(),
        spec: Some(spec),
        ..Default::default()
    }
}

pub fn listener(name: &str, port: u16, table: &str) -> Resource {
    resource(
        name,
        Spec::Listener(pb::Listener {
            address: "127.0.0.1".into(),
            port: port.into(),
            protocol: pb::listener::Protocol::Http as i32,
            route_table: table.into(),
            ..Default::default()
        }),
    )
}

pub fn listener_spec(r: &mut Resource) -> &mut pb::Listener {
    match r.spec.as_mut() {
        Some(Spec::Listener(l)) => l,
        _ => panic!("not a listener"),
    }
}

pub fn cluster(name: &str, endpoints: &[SocketAddr]) -> Resource {
    resource(
        name,
        Spec::Cluster(pb::Cluster {
            endpoints: endpoints
                .iter()
                .map(|a| pb::Endpoint {
                    address: a.ip().to_string(),
                    port: a.port().into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    )
}

pub fn table(name: &str, hosts: Vec<pb::VirtualHost>) -> Resource {
    resource(
        name,
        Spec::RouteTable(pb::RouteTable {
            virtual_hosts: hosts,
        }),
    )
}

pub fn vhost(name: &str, domains: &[&str], routes: Vec<pb::Route>) -> pb::VirtualHost {
    pb::VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
    }
}

pub fn route(
    name: &str,
    path: Option<route_match::Path>,
    action: route_action::Action,
) -> pb::Route {
    pb::Route {
        name: name.into(),
        r#match: Some(pb::RouteMatch {
            path,
            ..Default::default()
        }),
        action: Some(pb::RouteAction {
            action: Some(action),
        }),
        ..Default::default()
    }
}

pub fn prefix(p: &str) -> Option<route_match::Path> {
    Some(route_match::Path::Prefix(p.into()))
}

pub fn exact(p: &str) -> Option<route_match::Path> {
    Some(route_match::Path::Exact(p.into()))
}

pub fn to(cluster: &str) -> route_action::Action {
    route_action::Action::Cluster(cluster.into())
}

pub fn direct(status: u32, body: &str) -> route_action::Action {
    route_action::Action::DirectResponse(pb::DirectResponse {
        status,
        body: body.into(),
        content_type: String::new(),
    })
}

pub fn config(version: i64, resources: Vec<Resource>) -> ConfigSet {
    ConfigSet {
        version,
        resources: resources.into_iter().collect::<ResourceSet>(),
        ..Default::default()
    }
}

/// Listener "web" on `port` with route table "rt": one virtual host for every domain with
/// `routes`, plus `others` (clusters, secrets).
pub fn web(version: i64, port: u16, others: Vec<Resource>, routes: Vec<pb::Route>) -> ConfigSet {
    let mut resources = vec![
        listener("web", port, "rt"),
        table("rt", vec![vhost("all", &["*"], routes)]),
    ];
    resources.extend(others);
    config(version, resources)
}

/// A proxy with `config` applied.
pub async fn proxy_with(config: &ConfigSet) -> Proxy {
    let proxy = Proxy::new(ProxyConfig::default());
    proxy.apply(config).await.unwrap();
    proxy
}

// ---- client --------------------------------------------------------------------------------

/// A response, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The first body line: which upstream answered.
    pub fn upstream(&self) -> &str {
        self.body.lines().next().unwrap_or("")
    }

    /// The value of a header the upstream received, from the echoed lines.
    pub fn seen(&self, header: &str) -> Option<&str> {
        self.body
            .lines()
            .skip(2)
            .find_map(|l| l.strip_prefix(header)?.strip_prefix(": "))
    }
}

/// The whole body of `response` as text.
pub async fn text(response: Response<Incoming>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Answer {
    let response = client.request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// GET `http://127.0.0.1:<port><target>` with Host `host`.
pub async fn get(port: u16, host: &str, target: &str) -> Answer {
    let req = Request::get(format!("http://127.0.0.1:{port}{target}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(&client(), req).await
}

/// Writes `raw` on a new connection and reads until the server closes it or `timeout`.
pub async fn raw(port: u16, raw: &[u8], timeout: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
