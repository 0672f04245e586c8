//! The pool against real upstreams on 127.0.0.1:0 that count the connections they accept and
//! see closed.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use portico_test_support::net::refusing;
use portico_test_support::upstream::{ClosingUpstream, Upstream};
use portico_test_support::wait;
use tokio::task::JoinHandle;

use super::*;
use crate::body;

const WAIT: Duration = Duration::from_secs(5);

fn authority(addr: SocketAddr) -> Authority {
    addr.to_string().parse().unwrap()
}

fn limits() -> PoolLimits {
    PoolLimits {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(60),
        max_idle_per_endpoint: 16,
        max_connections: 0,
        max_pending: 0,
        max_response_head: crate::upstream::DEFAULT_MAX_RESPONSE_HEAD,
    }
}

fn pool(limits: PoolLimits) -> Arc<Pool> {
    Pool::new(1, Connector::new(HttpConnector::new(), None), limits)
}

/// GETs `path` from the upstream at `addr` through `pool`: the first line of the body, which
/// names the upstream that answered.
async fn get(pool: &Arc<Pool>, addr: SocketAddr, path: &str) -> Result<String, SendError> {
    let request = Request::get(path).body(body::empty()).unwrap();
    let response = pool.send(0, &authority(addr), request).await?;
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// `get` on a task of its own, for requests that wait.
fn spawn_get(pool: &Arc<Pool>, addr: SocketAddr, path: &'static str) -> JoinHandle<String> {
    let pool = pool.clone();
    tokio::spawn(async move { get(&pool, addr, path).await.unwrap() })
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    wait::eventually(what, WAIT, || async { check().then_some(()) }).await;
}

#[tokio::test]
async fn one_connection_serves_requests_one_after_another() {
    let up = Upstream::start("up").await;
    let pool = pool(limits());
    for _ in 0..5 {
        assert_eq!(get(&pool, up.addr, "/").await.unwrap(), "up");
    }
    assert_eq!(up.hits(), 5);
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_replaced_by_a_fresh_one() {
    let up = ClosingUpstream::start().await;
    let pool = pool(limits());
    for n in 1..=3 {
        assert_eq!(get(&pool, up.addr, "/").await.unwrap(), "ok", "request {n}");
        eventually("the upstream to close", || up.closed() == n).await;
    }
    assert_eq!(up.accepted(), 3);
}

#[tokio::test]
async fn idle_connections_past_the_limit_are_closed() {
    let up = Upstream::start("up").await;
    let pool = pool(PoolLimits {
        max_idle_per_endpoint: 1,
        ..limits()
    });
    let held: Vec<_> = (0..3).map(|_| spawn_get(&pool, up.addr, "/hold")).collect();
    eventually("three requests in flight", || up.hits() == 3).await;
    up.release(3);
    for h in held {
        assert_eq!(h.await.unwrap(), "up");
    }
    eventually("two connections closed", || up.closed() == 2).await;
    assert_eq!(get(&pool, up.addr, "/").await.unwrap(), "up");
    assert_eq!(up.accepted(), 3, "the kept one is reused");
    assert_eq!(up.closed(), 2);
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    let up = Upstream::start("up").await;
    let pool = pool(PoolLimits {
        idle_timeout: Duration::from_millis(200),
        ..limits()
    });
    assert_eq!(get(&pool, up.addr, "/").await.unwrap(), "up");
    eventually("the idle connection to close", || up.closed() == 1).await;
    assert_eq!(get(&pool, up.addr, "/").await.unwrap(), "up");
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn at_the_connection_limit_requests_wait_then_overflow() {
    let up = Upstream::start("up").await;
    let pool = pool(PoolLimits {
        max_connections: 1,
        max_pending: 1,
        ..limits()
    });
    let first = spawn_get(&pool, up.addr, "/hold");
    eventually("the first request in flight", || up.hits() == 1).await;
    let second = spawn_get(&pool, up.addr, "/");
    eventually("the second request waiting", || pool.lock().waiting == 1).await;
    assert!(matches!(
        get(&pool, up.addr, "/").await,
        Err(SendError::Overloaded)
    ));
    up.release(1);
    assert_eq!(first.await.unwrap(), "up");
    assert_eq!(second.await.unwrap(), "up");
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn connect_failures_free_their_place_under_the_limit() {
    let dead = refusing();
    let authority = authority(dead.addr());
    let pool = pool(PoolLimits {
        max_connections: 1,
        ..limits()
    });
    for _ in 0..2 {
        let request = Request::get("/").body(body::empty()).unwrap();
        let Err(err) = pool.send(0, &authority, request).await else {
            panic!("a closed port answered");
        };
        assert!(err.is_connect(), "{err}");
    }
    assert_eq!(pool.lock().open, 0);
}
