//! Upstream connection pooling seen from the outside: real upstreams count the connections
//! the proxy opens to them.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::support::*;
use portico_api::pb;
use portico_proxy::{Proxy, ProxyConfig};

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
    assert_eq!(up.hits(), 5);
    assert_eq!(up.accepted(), 1);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_not_reused() {
    let up = ClosingUpstream::start().await;
    let port = free_port();
    let cfg = web(
        1,
        port,
        vec![cluster("up", &[up.addr])],
        vec![route("all", prefix("/"), to("up"))],
    );
    let proxy = one_worker_proxy(&cfg).await;
    for n in 1..=3 {
        let answer = get(port, "x", "/").await;
        assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "ok"));
        eventually("the upstream to close", WAIT, || async {
            (up.closed() == n).then_some(())
        })
        .await;
    }
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_cluster_connection_limit_queues_requests_for_a_free_connection() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let limited = cluster("up", &[up.addr]).with(|c: &mut pb::Cluster| {
        c.circuit_breakers = Some(pb::CircuitBreakers {
            max_connections: 1,
            ..Default::default()
        })
    });
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
    assert_eq!(up.hits(), 3);
    assert_eq!(up.accepted(), 1, "the requests took turns");
    proxy.shutdown(Duration::from_secs(1)).await;
}
