//! Upstream connection pooling seen from the outside: real upstreams count the connections
//! the proxy opens to them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use crate::support::*;
use portico_api::pb::{self, resource::Spec};
use portico_proxy::{Proxy, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(5);

/// A proxy with one worker, so every request uses the same pool.
async fn one_worker_proxy(config: &portico_proxy::config::ConfigSet) -> Proxy {
    let proxy = Proxy::new(ProxyConfig {
        workers: 1,
        ..ProxyConfig::default()
    });
    proxy.apply(config).await.unwrap();
    proxy
}

#[tokio::test]
async fn requests_from_many_clients_share_one_upstream_connection() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let cfg = web(
        1,
        port,
        vec![cluster("up", &[up.addr])],
        vec![route("all", prefix("/"), to("up"))],
    );
    let proxy = one_worker_proxy(&cfg).await;
    for _ in 0..5 {
        // Each `get` opens a new client connection.
        assert_eq!(get(port, "x", "/").await.status, 200);
    }
    assert_eq!(up.hits.load(SeqCst), 5);
    assert_eq!(up.accepted.load(SeqCst), 1);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_not_reused() {
    // Answers one request per connection, keep-alive by its headers, then closes: as an
    // upstream does when its own idle timeout fires.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = Arc::new(AtomicUsize::new(0));
    let c = closed.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            drop(stream);
            c.fetch_add(1, SeqCst);
        }
    });
    let port = free_port();
    let cfg = web(
        1,
        port,
        vec![cluster("up", &[addr])],
        vec![route("all", prefix("/"), to("up"))],
    );
    let proxy = one_worker_proxy(&cfg).await;
    for n in 1..=3 {
        let answer = get(port, "x", "/").await;
        assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "ok"));
        eventually("the upstream to close", WAIT, || async {
            (closed.load(SeqCst) == n).then_some(())
        })
        .await;
    }
    server.abort();
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_cluster_connection_limit_queues_requests_for_a_free_connection() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let mut limited = cluster("up", &[up.addr]);
    if let Some(Spec::Cluster(spec)) = limited.spec.as_mut() {
        spec.circuit_breakers = Some(pb::CircuitBreakers {
            max_connections: 1,
            ..Default::default()
        });
    }
    let cfg = web(
        1,
        port,
        vec![limited],
        vec![route("all", prefix("/"), to("up"))],
    );
    let proxy = one_worker_proxy(&cfg).await;
    let answers = futures::future::join_all((0..3).map(|_| get(port, "x", "/slow/100"))).await;
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert_eq!(up.hits.load(SeqCst), 3);
    assert_eq!(up.accepted.load(SeqCst), 1, "the requests took turns");
    proxy.shutdown(Duration::from_secs(1)).await;
}
