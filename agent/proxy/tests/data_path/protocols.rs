//! Protocols through the real proxy: HTTP/2 with prior knowledge, HTTP/2 upstreams, HTTPS with
//! SNI certificate selection and ALPN, and WebSocket upgrades.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_api::pb;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn http2_prior_knowledge_clients_and_http2_upstreams() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let h2_cluster = cluster("h2", &[up.addr])
        .with(|c: &mut pb::Cluster| c.protocol = pb::cluster::UpstreamProtocol::Http2 as i32);
    let cfg = web(
        1,
        port,
        vec![cluster("h1", &[up.addr]), h2_cluster],
        vec![
            route("to-h2", prefix("/h2"), to("h2")),
            route("to-h1", prefix("/"), to("h1")),
        ],
    );
    let proxy = proxy_with(&cfg).await;
    // HTTP/2 with prior knowledge to the proxy's address, naming shop.example as :authority.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (path, upstream_sees) in [("/h1/x", "host: shop.example"), ("/h2/x", "GET http://")] {
        let req = Request::get(format!("http://shop.example{path}"))
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK);
        let text = text(response).await;
        assert!(text.contains(upstream_sees), "{path}: {text}");
    }
    // A Host that differs from :authority could route one host and forward another.
    let conflicting = Request::get("http://shop.example/h1/x")
        .header("host", "admin.example")
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = sender.send_request(conflicting).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    proxy.shutdown(Duration::from_secs(1)).await;
}

/// `https` and `secrets`, with every request routed to the upstream at `up`.
fn https_config(
    https: portico_api::Resource,
    secrets: Vec<portico_api::Resource>,
    up: std::net::SocketAddr,
) -> portico_proxy::config::ConfigSet {
    let mut resources = vec![
        https,
        cluster("up", &[up]),
        route_table(
            "rt",
            vec![vhost("all", &["*"], vec![route("all", None, to("up"))])],
        ),
    ];
    resources.extend(secrets);
    config(1, resources)
}

/// A TLS client trusting `roots`, offering `alpn` when given.
fn tls_client(roots: &[CertificateDer<'static>], alpn: Option<&str>) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    tls.alpn_protocols = alpn.map(|a| a.as_bytes().to_vec()).into_iter().collect();
    tokio_rustls::TlsConnector::from(Arc::new(tls))
}

#[tokio::test]
async fn https_selects_the_certificate_by_sni_and_negotiates_alpn() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let (a, b) = (self_signed("a.test"), self_signed("b.test"));
    let cfg = https_config(
        https_listener(
            "tls",
            port,
            "rt",
            vec![sni("a", &["a.test"]), sni("b", &["b.test"])],
        ),
        vec![secret("a", a.secret), secret("b", b.secret)],
        up.addr,
    );
    let proxy = proxy_with(&cfg).await;
    let roots = [a.der.clone(), b.der.clone()];
    for (name, expected_cert, alpn) in [("a.test", &a.der, "h2"), ("b.test", &b.der, "http/1.1")] {
        let connector = tls_client(&roots, Some(alpn));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let stream = connector
            .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
            .await
            .unwrap();
        let (_, session) = stream.get_ref();
        assert_eq!(
            session.peer_certificates().unwrap()[0],
            *expected_cert,
            "{name}"
        );
        assert_eq!(session.alpn_protocol(), Some(alpn.as_bytes()));
        let req = Request::get(format!("https://{name}/secure"))
            .header("host", name)
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = if alpn == "h2" {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut req = req;
            req.headers_mut().remove("host");
            sender.send_request(req).await.unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut req = req;
            *req.uri_mut() = "/secure".parse().unwrap();
            sender.send_request(req).await.unwrap()
        };
        assert_eq!(response.status(), StatusCode::OK);
        let text = text(response).await;
        assert!(text.contains("x-forwarded-proto: https"), "{text}");
        assert!(text.contains(&format!("host: {name}")), "{text}");
    }
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn websockets_are_passed_through_both_ways() {
    let (ws_addr, ws_stop) = websocket_echo().await;
    let port = free_port();
    let mut cfg = web(
        1,
        port,
        vec![cluster("ws", &[ws_addr])],
        vec![route("ws", prefix("/ws"), to("ws"))],
    );
    // Upgraded traffic must not be mistaken for a slow request head.
    let head_timeout = Duration::from_millis(200);
    let l = listener("web", port, "rt").with(|l: &mut pb::Listener| {
        l.limits = Some(pb::ListenerLimits {
            header_read_timeout: Some(duration(head_timeout)),
            ..Default::default()
        })
    });
    cfg.resources.insert(l);
    let proxy = proxy_with(&cfg).await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async("ws://chat.example/ws", tcp)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "through the proxy"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    // Not a wait for an event: the stream must outlive the head timeout, twice over.
    tokio::time::sleep(head_timeout * 2).await;
    assert_eq!(
        proxy.active_connections(),
        1,
        "an upgraded stream counts as a connection"
    );
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    ws.close(None).await.unwrap();
    drop(ws);
    eventually(
        "the upgraded stream is released",
        Duration::from_secs(5),
        || async { (proxy.active_connections() == 0).then_some(()) },
    )
    .await;
    proxy.shutdown(Duration::from_secs(1)).await;
    ws_stop.cancel();
}

#[tokio::test]
async fn clusters_can_reach_their_endpoints_over_tls() {
    let up_cert = self_signed("up.internal");
    let other_ca = self_signed("someone.else");
    let up = tls_upstream(&up_cert.secret).await;
    let port = free_port();
    let cfg = web(
        1,
        port,
        vec![
            secret("up-ca", up_cert.ca()),
            secret("wrong-ca", other_ca.ca()),
            tls_cluster("trusted", up.addr, "up-ca"),
            tls_cluster("untrusted", up.addr, "wrong-ca"),
        ],
        vec![
            route("bad", prefix("/untrusted"), to("untrusted")),
            route("good", prefix("/"), to("trusted")),
        ],
    );
    let proxy = proxy_with(&cfg).await;
    let good = get(port, "x", "/hello").await;
    assert_eq!(good.status, StatusCode::OK, "{}", good.body);
    assert_eq!(good.upstream(), "secure-up");
    let bad = get(port, "x", "/untrusted").await;
    assert_eq!(bad.status, StatusCode::BAD_GATEWAY, "{}", bad.body);
    assert_eq!(up.hits(), 1);

    let mut missing = cfg.clone();
    missing
        .resources
        .insert(tls_cluster("trusted", up.addr, "nope"));
    let err = proxy.apply(&missing).await.unwrap_err();
    assert!(
        err.to_string().contains("Cluster/trusted: tls.ca_secret"),
        "{err}"
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn http2_header_lists_over_the_limit_get_431_and_the_connection_lives_on() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let mut cfg = web(
        1,
        port,
        vec![cluster("up", &[up.addr])],
        vec![route("all", None, to("up"))],
    );
    let l = listener("web", port, "rt").with(|l: &mut pb::Listener| {
        l.limits = Some(pb::ListenerLimits {
            max_request_header_bytes: 16 * 1024,
            ..Default::default()
        })
    });
    cfg.resources.insert(l);
    let proxy = proxy_with(&cfg).await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = |big: Option<usize>| {
        let mut req = Request::get(format!("http://127.0.0.1:{port}/"));
        if let Some(size) = big {
            req = req.header("x-big", "a".repeat(size));
        }
        req.body(Full::<Bytes>::default()).unwrap()
    };
    let refused = sender.send_request(request(Some(20 * 1024))).await.unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(up.hits(), 0);
    let fits = sender.send_request(request(Some(1024))).await.unwrap();
    assert_eq!(
        fits.status(),
        StatusCode::OK,
        "the same connection still serves"
    );
    assert_eq!(up.hits(), 1);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn https_slow_request_heads_get_408_and_stalled_handshakes_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start("up").await;
    let port = free_port();
    let cert = self_signed("slow.test");
    let l = https_listener("tls", port, "rt", vec![sni("cert", &["slow.test"])]).with(
        |l: &mut pb::Listener| {
            l.limits = Some(pb::ListenerLimits {
                header_read_timeout: Some(duration(Duration::from_millis(300))),
                ..Default::default()
            })
        },
    );
    let cfg = https_config(l, vec![secret("cert", cert.secret)], up.addr);
    let proxy = proxy_with(&cfg).await;
    let wait = Duration::from_secs(5);

    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut slow = tls_client(&[cert.der], None)
        .connect(ServerName::try_from("slow.test").unwrap(), tcp)
        .await
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: slow.test\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    // The server may close without a TLS close_notify; what was read before still counts.
    let _ = tokio::time::timeout(wait, slow.read_to_end(&mut answer))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("x-request-id: "), "{answer}");

    // A client that connects and never starts the handshake holds no slot for long.
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(wait, stalled.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the stalled handshake is closed within {wait:?}"
    );
    assert!(
        rest.is_empty(),
        "nothing is sent before a handshake: {rest:?}"
    );
    assert_eq!(up.hits(), 0);
    proxy.shutdown(Duration::from_secs(1)).await;
}
