//! Limits, malformed requests and upstream failures: every answer the proxy gives itself.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{Full, StreamBody};
use portico_api::pb;
use portico_proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(5);

/// A proxy on a fresh port forwarding everything to `up`, with `limits`.
async fn limited_proxy(up: std::net::SocketAddr, limits: pb::ListenerLimits) -> (Proxy, u16) {
    let port = free_port();
    let l = listener("web", port, "rt").with(|l: &mut pb::Listener| l.limits = Some(limits));
    let mut slow = route("slow", prefix("/slow"), to("up"));
    slow.timeout = Some(duration(Duration::from_millis(300)));
    let cfg = config(
        1,
        vec![
            l,
            cluster("up", &[up]),
            route_table(
                "rt",
                vec![vhost(
                    "all",
                    &["*"],
                    vec![slow, route("all", prefix("/"), to("up"))],
                )],
            ),
        ],
    );
    (proxy_with(&cfg).await, port)
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_up_front_and_while_streaming() {
    let up = Upstream::start("up").await;
    let limits = pb::ListenerLimits {
        max_request_body_bytes: 1000,
        ..Default::default()
    };
    let (proxy, port) = limited_proxy(up.addr, limits).await;

    let declared = raw(
        port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    assert_eq!(up.hits(), 0, "never forwarded");

    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = (0..20)
        .map(|_| Ok(http_body::Frame::data(Bytes::from(vec![b'x'; 100]))))
        .collect();
    let streamed = Request::post(format!("http://127.0.0.1:{port}/echo"))
        .body(StreamBody::new(futures::stream::iter(chunks)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = client.request(streamed).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let fits = Request::post(format!("http://127.0.0.1:{port}/echo"))
        .body(Full::new(Bytes::from(vec![b'y'; 1000])))
        .unwrap();
    let answer = send(&crate::support::client(), fits).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body.len(), 1000);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_slow_request_head_gets_408_and_idle_connections_close_quietly() {
    let up = Upstream::start("up").await;
    let limits = pb::ListenerLimits {
        header_read_timeout: Some(duration(Duration::from_millis(300))),
        idle_timeout: Some(duration(Duration::from_millis(400))),
        ..Default::default()
    };
    let (proxy, port) = limited_proxy(up.addr, limits).await;

    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, slow.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("x-request-id: "), "{answer}");

    // A kept-alive connection that finished a request and then sends nothing is closed
    // without an answer once idle. The proxy serves on its own threads, so the clock starts
    // before the request is sent: the idle period cannot begin earlier.
    let started = Instant::now();
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, idle.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let all = String::from_utf8_lossy(&all);
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
    assert!(!all.contains("408"), "idle close is silent: {all}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn upstream_failures_map_to_502_and_504() {
    let up = Upstream::start("up").await;
    let (proxy, port) = limited_proxy(up.addr, pb::ListenerLimits::default()).await;
    let timeout = get(port, "x", "/slow/2000").await;
    assert_eq!(timeout.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        timeout
            .body
            .contains(timeout.headers["x-request-id"].to_str().unwrap())
    );

    let dead = refusing();
    let down_port = free_port();
    let cfg = config(
        2,
        vec![
            listener("down", down_port, "rt"),
            cluster("gone", &[dead.addr()]),
            route_table(
                "rt",
                vec![vhost("all", &["*"], vec![route("all", None, to("gone"))])],
            ),
        ],
    );
    let down = proxy_with(&cfg).await;
    let refused = get(down_port, "x", "/").await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY);
    assert!(
        refused
            .body
            .contains(refused.headers["x-request-id"].to_str().unwrap())
    );
    down.shutdown(Duration::from_secs(1)).await;
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn malformed_requests_get_400_and_oversized_heads_431() {
    let up = Upstream::start("up").await;
    let limits = pb::ListenerLimits {
        max_request_header_bytes: 16 * 1024,
        ..Default::default()
    };
    let (proxy, port) = limited_proxy(up.addr, limits).await;
    // The last field: whether the handler answered (with a request id) rather than hyper's
    // parser (which answers 400 with an empty body and closes).
    let cases: &[(&str, &[u8], &str, bool)] = &[
        (
            "content-length and transfer-encoding",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 400",
            true,
        ),
        (
            "transfer-encoding first",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 400",
            true,
        ),
        (
            "conflicting content-lengths",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
            "HTTP/1.1 400",
            false,
        ),
        (
            "obsolete line folding",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
            "HTTP/1.1 400",
            false,
        ),
        ("missing host", b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400", true),
        ("bad escape", b"GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400", true),
        ("http/1.0 without host is fine", b"GET / HTTP/1.0\r\n\r\n", "HTTP/1.0 200", true),
    ];
    for (what, request, expected, by_handler) in cases {
        let answer = raw(port, request, WAIT).await;
        assert!(answer.starts_with(expected), "{what}: {answer}");
        assert_eq!(
            answer.contains("x-request-id"),
            *by_handler,
            "{what}: {answer}"
        );
    }
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let answer = raw(port, huge.as_bytes(), WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(up.hits(), 1, "only the HTTP/1.0 request");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn connections_past_the_limit_wait_for_a_free_slot() {
    let up = Upstream::start("up").await;
    let limits = pb::ListenerLimits {
        max_connections: 1,
        ..Default::default()
    };
    let (proxy, port) = limited_proxy(up.addr, limits).await;
    let mut first = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    eventually("one active connection", WAIT, || async {
        (proxy.active_connections() == 1).then_some(())
    })
    .await;

    let mut second = tokio::spawn(raw(
        port,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        WAIT,
    ));
    let early = tokio::time::timeout(Duration::from_millis(200), &mut second).await;
    assert!(
        early.is_err(),
        "second connection waits while the first is open"
    );
    drop(first);
    let answer = second.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn silent_connections_cannot_hold_every_slot() {
    let up = Upstream::start("up").await;
    let limits = pb::ListenerLimits {
        max_connections: 4,
        header_read_timeout: Some(duration(Duration::from_millis(300))),
        ..Default::default()
    };
    let (proxy, port) = limited_proxy(up.addr, limits).await;
    // Twice the limit of sockets that connect and say nothing.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    eventually("the slots taken", WAIT, || async {
        (proxy.active_connections() == 4).then_some(())
    })
    .await;
    // A real client still gets an answer: silent sockets are closed after the header read
    // timeout, not the keep-alive idle timeout (60 s here).
    let answer = tokio::time::timeout(WAIT, get(port, "x", "/")).await;
    assert_eq!(
        answer.expect("served within the timeout").status,
        StatusCode::OK
    );
    let mut closed = 0;
    for mut s in silent {
        let mut buf = Vec::new();
        if tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
            .await
            .is_ok()
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 8, "every silent socket is closed");
    proxy.shutdown(Duration::from_secs(1)).await;
}
