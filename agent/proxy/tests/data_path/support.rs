//! What the data-path tests share: the workspace's test support (upstreams, clients, resource
//! builders, polling), and the proxy-side helpers only these tests need.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;

use futures::StreamExt;
use portico_api::pb;
use portico_api::{Resource, ResourceSet};
use portico_proxy::config::ConfigSet;
use portico_proxy::{Proxy, ProxyConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use portico_test_support::http::{client, get, raw, send, text};
pub use portico_test_support::net::{free_port, refusing};
pub use portico_test_support::resources::*;
pub use portico_test_support::tls::self_signed;
pub use portico_test_support::upstream::{ClosingUpstream, Upstream};
pub use portico_test_support::wait::eventually;

/// A config at `version` of `resources`.
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
        route_table("rt", vec![vhost("all", &["*"], routes)]),
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

/// An upstream named `secure-up` serving TLS for `up.internal` with `certificate`.
pub async fn tls_upstream(certificate: &pb::TlsSecret) -> Upstream {
    let server_tls = portico_proxy::tls::server_config(
        &pb::ListenerTls {
            certificates: vec![sni("up", &["up.internal"])],
            ..Default::default()
        },
        |_| Some(certificate.clone()),
    )
    .unwrap();
    Upstream::start_tls("secure-up", server_tls).await
}

/// Cluster `name` of `endpoint` over TLS to `up.internal`, verified with the CA Secret `ca`
/// (empty: the system roots).
pub fn tls_cluster(name: &str, endpoint: SocketAddr, ca: &str) -> Resource {
    cluster(name, &[endpoint]).with(|c: &mut pb::Cluster| {
        c.tls = Some(pb::UpstreamTls {
            enabled: true,
            server_name: "up.internal".into(),
            ca_secret: ca.into(),
            client_certificate_secret: String::new(),
        })
    })
}

/// A WebSocket echo upstream, until the token is cancelled.
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
