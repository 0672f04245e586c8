//! Upstreams and clients that break the rules: an HTTP/1.0 upstream, a protocol switch nobody
//! asked for, an oversized response head, a malformed chunked body, a body that never
//! finishes. Each gets the answer that puts the fault where it is.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(5);

/// An upstream that reads each request head (and the body its Content-Length announces) and
/// writes `answer`, on every connection, until dropped.
struct Canned {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Canned {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Canned {
    async fn start(answer: Vec<u8>) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() < end + 4 + length {
                            continue;
                        }
                        buf.drain(..end + 4 + length);
                        if stream.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Canned { addr, task }
    }
}

/// A proxy forwarding every path to `up` with a `timeout`.
async fn proxy_to(up: SocketAddr, timeout: Duration) -> (portico_proxy::Proxy, u16) {
    let port = free_port();
    let mut all = route("all", prefix("/"), to("up"));
    all.timeout = Some(duration(timeout));
    let proxy = proxy_with(&web(1, port, vec![cluster("up", &[up])], vec![all])).await;
    (proxy, port)
}

#[tokio::test]
async fn an_http_1_0_upstream_does_not_downgrade_the_client() {
    let up = Canned::start(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()).await;
    let (proxy, port) = proxy_to(up.addr, WAIT).await;
    let two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answer = raw(port, two, WAIT).await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert!(!answer.contains("HTTP/1.0"), "{answer}");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_protocol_switch_nobody_asked_for_is_a_502() {
    let up = Canned::start(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: weird\r\nConnection: upgrade\r\n\r\n"
            .to_vec(),
    )
    .await;
    let (proxy, port) = proxy_to(up.addr, WAIT).await;
    let answer = get(port, "x", "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_oversized_upstream_head_is_a_502() {
    let big = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
        "a".repeat(100 * 1024)
    );
    let up = Canned::start(big.into_bytes()).await;
    let (proxy, port) = proxy_to(up.addr, WAIT).await;
    let answer = get(port, "x", "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    // Within the default 64 KiB it passes.
    let fits = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
        "a".repeat(32 * 1024)
    );
    let up = Canned::start(fits.into_bytes()).await;
    let (fine, port) = proxy_to(up.addr, WAIT).await;
    assert_eq!(get(port, "x", "/").await.status, StatusCode::OK);
    proxy.shutdown(Duration::from_secs(1)).await;
    fine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn client_body_faults_are_400_and_408_not_upstream_faults() {
    let up = Upstream::start("echo").await;
    let (proxy, port) = proxy_to(up.addr, Duration::from_millis(500)).await;
    let malformed = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n\r\n";
    let answer = raw(port, malformed, WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // An upstream that answers once it has the whole body, as most do.
    let whole = Canned::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()).await;
    let (waiting, port) = proxy_to(whole.addr, Duration::from_millis(500)).await;
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    slow.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, slow.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    proxy.shutdown(Duration::from_secs(1)).await;
    waiting.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_host_routed_is_the_host_forwarded() {
    let shop = Upstream::start("shop").await;
    let admin = Upstream::start("admin").await;
    let port = free_port();
    let cfg = config(
        1,
        vec![
            listener("web", port, "rt"),
            route_table(
                "rt",
                vec![
                    vhost(
                        "shop",
                        &["shop.example"],
                        vec![route("s", prefix("/"), to("shop"))],
                    ),
                    vhost(
                        "admin",
                        &["admin.example"],
                        vec![route("a", prefix("/"), to("admin"))],
                    ),
                    vhost(
                        "other",
                        &["*"],
                        vec![route(
                            "away",
                            prefix("/"),
                            redirect(portico_api::pb::Redirect {
                                path: "/moved".into(),
                                ..Default::default()
                            }),
                        )],
                    ),
                ],
            ),
            cluster("shop", &[shop.addr]),
            cluster("admin", &[admin.addr]),
        ],
    );
    let proxy = proxy_with(&cfg).await;
    // Absolute form: its authority wins and is what the upstream sees as Host.
    let absolute = raw(
        port,
        b"GET http://admin.example/x HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(absolute.contains("\r\n\r\nadmin\n"), "{absolute}");
    assert!(absolute.contains("host: admin.example"), "{absolute}");
    assert!(!absolute.contains("host: shop.example"), "{absolute}");
    // Two Host headers: refused rather than routed by one and forwarded with both.
    let duplicate = raw(
        port,
        b"GET / HTTP/1.1\r\nHost: shop.example\r\nHost: admin.example\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(duplicate.starts_with("HTTP/1.1 400"), "{duplicate}");
    // One trailing dot is the same host.
    let dotted = raw(
        port,
        b"GET / HTTP/1.1\r\nHost: ADMIN.example.\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(dotted.contains("\r\n\r\nadmin\n"), "{dotted}");
    assert!(dotted.contains("host: admin.example\n"), "{dotted}");
    // A Host that is not a host never reaches a redirect's Location.
    let bad = raw(
        port,
        b"GET / HTTP/1.1\r\nHost: evil.example/\"><x>\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    assert!(!bad.to_ascii_lowercase().contains("location"), "{bad}");
    proxy.shutdown(Duration::from_secs(1)).await;
}
