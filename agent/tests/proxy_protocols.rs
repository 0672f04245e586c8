//! Protocols through the real proxy: HTTP/2 with prior knowledge, HTTP/2 upstreams, HTTPS with
//! SNI certificate selection and ALPN, and WebSocket upgrades.
#![allow(clippy::unwrap_used)]

mod proxy_support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_api::pb::{self, resource::Spec};
use proxy_support::*;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn http2_prior_knowledge_clients_and_http2_upstreams() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let mut h2_cluster = cluster("h2", &[up.addr]);
    if let Some(Spec::Cluster(c)) = h2_cluster.spec.as_mut() {
        c.protocol = pb::cluster::UpstreamProtocol::Http2 as i32;
    }
    let cfg = config(
        1,
        vec![
            listener("web", port, "rt"),
            cluster("h1", &[up.addr]),
            h2_cluster,
            table(
                "rt",
                vec![vhost(
                    "all",
                    &["*"],
                    vec![
                        route("to-h2", prefix("/h2"), to("h2")),
                        route("to-h1", prefix("/"), to("h1")),
                    ],
                )],
            ),
        ],
    );
    let proxy = proxy_with(&cfg).await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    for (path, upstream_sees) in [("/h1/x", "host: shop.example"), ("/h2/x", "GET http://")] {
        let req = Request::get(format!("http://shop.example/{}", &path[1..]))
            .body(Full::default())
            .unwrap();
        // Resolve the name to the proxy while keeping it as :authority.
        let (mut parts, body) = req.into_parts();
        parts.uri = format!("http://127.0.0.1:{port}{path}").parse().unwrap();
        parts
            .headers
            .insert("host", "shop.example".parse().unwrap());
        let response = client
            .request(Request::from_parts(parts, body))
            .await
            .unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK);
        let text = String::from_utf8(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        assert!(text.contains(upstream_sees), "{path}: {text}");
    }
    proxy.shutdown(Duration::from_secs(1)).await;
}

fn self_signed(name: &str) -> (pb::TlsSecret, CertificateDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let der = cert.cert.der().clone();
    (
        pb::TlsSecret {
            certificate_chain: cert.cert.pem(),
            private_key: cert.signing_key.serialize_pem(),
        },
        der,
    )
}

fn secret(name: &str, tls: pb::TlsSecret) -> portico_api::Resource {
    resource(
        name,
        Spec::Secret(pb::Secret {
            secret: Some(pb::secret::Secret::Tls(tls)),
        }),
    )
}

#[tokio::test]
async fn https_selects_the_certificate_by_sni_and_negotiates_alpn() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let (a_secret, a_der) = self_signed("a.test");
    let (b_secret, b_der) = self_signed("b.test");
    let mut l = listener("tls", port, "rt");
    let spec = listener_spec(&mut l);
    spec.protocol = pb::listener::Protocol::Https as i32;
    spec.tls = Some(pb::ListenerTls {
        certificates: vec![
            pb::SniCertificate {
                server_names: vec!["a.test".into()],
                secret: "a".into(),
            },
            pb::SniCertificate {
                server_names: vec!["b.test".into()],
                secret: "b".into(),
            },
        ],
        ..Default::default()
    });
    let cfg = config(
        1,
        vec![
            l,
            secret("a", a_secret),
            secret("b", b_secret),
            cluster("up", &[up.addr]),
            table(
                "rt",
                vec![vhost("all", &["*"], vec![route("all", None, to("up"))])],
            ),
        ],
    );
    let proxy = proxy_with(&cfg).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(a_der.clone()).unwrap();
    roots.add(b_der.clone()).unwrap();
    for (name, expected_cert, alpn) in [("a.test", &a_der, "h2"), ("b.test", &b_der, "http/1.1")] {
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        tls.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
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
        let text = String::from_utf8(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        assert!(text.contains("x-forwarded-proto: https"), "{text}");
        assert!(text.contains(&format!("host: {name}")), "{text}");
    }
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn websockets_are_passed_through_both_ways() {
    let (ws_addr, ws_stop) = websocket_echo().await;
    let port = free_port();
    let cfg = config(
        1,
        vec![
            listener("web", port, "rt"),
            cluster("ws", &[ws_addr]),
            table(
                "rt",
                vec![vhost(
                    "all",
                    &["*"],
                    vec![route("ws", prefix("/ws"), to("ws"))],
                )],
            ),
        ],
    );
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
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    ws.close(None).await.unwrap();
    proxy.shutdown(Duration::from_secs(1)).await;
    ws_stop.cancel();
}
