//! A proxy with one route, and a tiny upstream, for load tools such as `wrk`.
//!
//! `proxy_bench upstream` serves "ok" on a free port and prints its address;
//! `proxy_bench proxy 18080 127.0.0.1:PORT` serves `http://127.0.0.1:18080/` through the proxy
//! to that upstream (`proxy 18080 127.0.0.1:PORT 1` to serve on one worker thread instead of one
//! per core). Run them as two processes so the proxy's threads do only proxy work.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_api::pb::{self, resource::Spec, route_action, route_match};
use portico_api::{Resource, ResourceSet};
use portico_proxy::config::ConfigSet;
use portico_proxy::{Proxy, ProxyConfig};

fn resource(name: &str, spec: Spec) -> Resource {
    Resource {
        name: name.into(),
        spec: Some(spec),
        ..Default::default()
    }
}

// The proxy runs on its own worker threads; this thread only applies the config and waits.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("upstream") => upstream().await,
        Some("proxy") => match (args.get(2), args.get(3)) {
            (Some(port), Some(upstream)) => {
                let workers = args.get(4).map_or(Ok(0), |w| w.parse())?;
                proxy(port.parse()?, upstream.parse()?, workers).await
            }
            _ => anyhow::bail!("usage: proxy_bench proxy PORT UPSTREAM_ADDR [WORKERS]"),
        },
        _ => anyhow::bail!("usage: proxy_bench upstream | proxy PORT UPSTREAM_ADDR [WORKERS]"),
    }
}

async fn upstream() -> anyhow::Result<()> {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", upstream.local_addr()?);
    while let Ok((stream, _)) = upstream.accept().await {
        let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
        });
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
    Ok(())
}

async fn proxy(
    port: u16,
    upstream_addr: std::net::SocketAddr,
    workers: usize,
) -> anyhow::Result<()> {
    let resources: ResourceSet = [
        resource(
            "bench",
            Spec::Listener(pb::Listener {
                address: "127.0.0.1".into(),
                port: port.into(),
                protocol: pb::listener::Protocol::Http as i32,
                route_table: "bench".into(),
                ..Default::default()
            }),
        ),
        resource(
            "bench",
            Spec::Cluster(pb::Cluster {
                endpoints: vec![pb::Endpoint {
                    address: upstream_addr.ip().to_string(),
                    port: upstream_addr.port().into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        ),
        resource(
            "bench",
            Spec::RouteTable(pb::RouteTable {
                virtual_hosts: vec![pb::VirtualHost {
                    name: "all".into(),
                    domains: vec!["*".into()],
                    routes: vec![pb::Route {
                        r#match: Some(pb::RouteMatch {
                            path: Some(route_match::Path::Prefix("/".into())),
                            ..Default::default()
                        }),
                        action: Some(pb::RouteAction {
                            action: Some(route_action::Action::Cluster("bench".into())),
                        }),
                        ..Default::default()
                    }],
                }],
            }),
        ),
    ]
    .into_iter()
    .collect();
    let proxy = Proxy::new(ProxyConfig {
        access_log: false,
        workers,
        ..Default::default()
    });
    proxy
        .apply(&ConfigSet {
            version: 1,
            resources,
            ..Default::default()
        })
        .await?;
    println!("proxy http://127.0.0.1:{port}/ -> upstream http://{upstream_addr}/");
    tokio::signal::ctrl_c().await?;
    proxy.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}
