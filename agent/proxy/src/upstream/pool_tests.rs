//! The pool against real upstreams on 127.0.0.1:0 that count the connections they accept and
//! see closed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::body;

const WAIT: Duration = Duration::from_secs(5);

/// Connections an upstream accepted, requests it received, and connections that ended.
#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    requests: AtomicUsize,
    closed: AtomicUsize,
}

struct TestUpstream {
    addr: SocketAddr,
    counts: Arc<Counts>,
    /// `/hold` answers once it gets a permit.
    gate: Arc<Semaphore>,
    stop: CancellationToken,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestUpstream {
    /// A keep-alive HTTP/1 upstream answering "ok".
    async fn start() -> TestUpstream {
        TestUpstream::start_with(false).await
    }

    /// With `close_after_response`, a raw upstream that answers one request per connection
    /// (without saying so) and then closes it, like an upstream's own idle timeout firing.
    async fn start_with(close_after_response: bool) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = TestUpstream {
            addr: listener.local_addr().unwrap(),
            counts: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
            stop: CancellationToken::new(),
        };
        let (counts, gate, stop) = (up.counts.clone(), up.gate.clone(), up.stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                };
                counts.accepted.fetch_add(1, SeqCst);
                let (counts, gate) = (counts.clone(), gate.clone());
                tokio::spawn(async move {
                    if close_after_response {
                        answer_once_and_close(stream, &counts).await;
                    } else {
                        serve(stream, &counts, gate).await;
                    }
                    counts.closed.fetch_add(1, SeqCst);
                });
            }
        });
        up
    }

    fn authority(&self) -> Authority {
        self.addr.to_string().parse().unwrap()
    }
}

async fn serve(stream: tokio::net::TcpStream, counts: &Arc<Counts>, gate: Arc<Semaphore>) {
    let counts = counts.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        counts.requests.fetch_add(1, SeqCst);
        let gate = gate.clone();
        async move {
            if req.uri().path() == "/hold" {
                gate.acquire().await.unwrap().forget();
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

async fn answer_once_and_close(mut stream: tokio::net::TcpStream, counts: &Counts) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    counts.requests.fetch_add(1, SeqCst);
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await;
}

fn limits() -> PoolLimits {
    PoolLimits {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(60),
        max_idle_per_endpoint: 16,
        max_connections: 0,
        max_pending: 0,
    }
}

fn pool(limits: PoolLimits) -> Arc<Pool> {
    Pool::new(1, Connector::new(HttpConnector::new(), None), limits)
}

async fn get(pool: &Arc<Pool>, up: &TestUpstream, path: &str) -> Result<String, SendError> {
    let request = Request::get(path).body(body::empty()).unwrap();
    let response = pool.send(0, &up.authority(), request).await?;
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `get` on a task of its own, for requests that wait.
fn spawn_get(pool: &Arc<Pool>, up: &TestUpstream, path: &'static str) -> JoinHandle<String> {
    let (pool, authority) = (pool.clone(), up.authority());
    tokio::spawn(async move {
        let request = Request::get(path).body(body::empty()).unwrap();
        let response = pool.send(0, &authority, request).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn one_connection_serves_requests_one_after_another() {
    let up = TestUpstream::start().await;
    let pool = pool(limits());
    for _ in 0..5 {
        assert_eq!(get(&pool, &up, "/").await.unwrap(), "ok");
    }
    assert_eq!(up.counts.requests.load(SeqCst), 5);
    assert_eq!(up.counts.accepted.load(SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_replaced_by_a_fresh_one() {
    let up = TestUpstream::start_with(true).await;
    let pool = pool(limits());
    for n in 1..=3 {
        assert_eq!(get(&pool, &up, "/").await.unwrap(), "ok", "request {n}");
        eventually("the upstream to close", || {
            up.counts.closed.load(SeqCst) == n
        })
        .await;
    }
    assert_eq!(up.counts.accepted.load(SeqCst), 3);
}

#[tokio::test]
async fn idle_connections_past_the_limit_are_closed() {
    let up = TestUpstream::start().await;
    let pool = pool(PoolLimits {
        max_idle_per_endpoint: 1,
        ..limits()
    });
    let held: Vec<_> = (0..3).map(|_| spawn_get(&pool, &up, "/hold")).collect();
    eventually("three requests in flight", || {
        up.counts.requests.load(SeqCst) == 3
    })
    .await;
    up.gate.add_permits(3);
    for h in held {
        assert_eq!(h.await.unwrap(), "ok");
    }
    eventually("two connections closed", || {
        up.counts.closed.load(SeqCst) == 2
    })
    .await;
    assert_eq!(get(&pool, &up, "/").await.unwrap(), "ok");
    assert_eq!(up.counts.accepted.load(SeqCst), 3, "the kept one is reused");
    assert_eq!(up.counts.closed.load(SeqCst), 2);
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    let up = TestUpstream::start().await;
    let pool = pool(PoolLimits {
        idle_timeout: Duration::from_millis(200),
        ..limits()
    });
    assert_eq!(get(&pool, &up, "/").await.unwrap(), "ok");
    eventually("the idle connection to close", || {
        up.counts.closed.load(SeqCst) == 1
    })
    .await;
    assert_eq!(get(&pool, &up, "/").await.unwrap(), "ok");
    assert_eq!(up.counts.accepted.load(SeqCst), 2);
}

#[tokio::test]
async fn at_the_connection_limit_requests_wait_then_overflow() {
    let up = TestUpstream::start().await;
    let pool = pool(PoolLimits {
        max_connections: 1,
        max_pending: 1,
        ..limits()
    });
    let first = spawn_get(&pool, &up, "/hold");
    eventually("the first request in flight", || {
        up.counts.requests.load(SeqCst) == 1
    })
    .await;
    let second = spawn_get(&pool, &up, "/");
    eventually("the second request waiting", || pool.lock().waiting == 1).await;
    assert!(matches!(
        get(&pool, &up, "/").await,
        Err(SendError::Overloaded)
    ));
    up.gate.add_permits(1);
    assert_eq!(first.await.unwrap(), "ok");
    assert_eq!(second.await.unwrap(), "ok");
    assert_eq!(up.counts.accepted.load(SeqCst), 1);
}

#[tokio::test]
async fn connect_failures_free_their_place_under_the_limit() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority: Authority = dead.local_addr().unwrap().to_string().parse().unwrap();
    drop(dead);
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
