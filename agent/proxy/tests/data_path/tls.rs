//! Listener TLS beyond certificate selection: certificates rotated under open connections,
//! client certificates verified against a CA Secret, HTTP→HTTPS redirect listeners, and
//! upstream TLS trusting the system roots.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use portico_api::pb;
use portico_proxy::config::ConfigSet;
use portico_test_support::tls::{Ca, SelfSigned};
use rustls_pki_types::{CertificateDer, ServerName};

/// The HTTPS listener "tls" on `port` serving Secret "cert" to every name, with `edit` applied
/// to its TLS settings, routing everything to `up`, plus `secrets`.
fn https(
    version: i64,
    port: u16,
    up: std::net::SocketAddr,
    secrets: Vec<portico_api::Resource>,
    edit: impl FnOnce(&mut pb::ListenerTls),
) -> ConfigSet {
    let listener =
        https_listener("tls", port, "rt", vec![sni("cert", &[])]).with(|l: &mut pb::Listener| {
            if let Some(tls) = l.tls.as_mut() {
                edit(tls);
            }
        });
    let mut resources = vec![
        listener,
        cluster("up", &[up]),
        route_table(
            "rt",
            vec![vhost("all", &["*"], vec![route("all", None, to("up"))])],
        ),
    ];
    resources.extend(secrets);
    config(version, resources)
}

/// A TLS client config trusting `roots`, presenting `identity` when given, speaking HTTP/1.1.
fn client_tls(
    roots: &[CertificateDer<'static>],
    identity: Option<&SelfSigned>,
) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store);
    let mut tls = match identity {
        Some(id) => {
            use rustls_pki_types::pem::PemObject;
            let chain = vec![id.der.clone()];
            let key =
                rustls_pki_types::PrivateKeyDer::from_pem_slice(id.secret.private_key.as_bytes())
                    .unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(tls))
}

/// An HTTP/1.1 connection over TLS to 127.0.0.1:`port` for `name`: the certificate the server
/// presented and a sender, or the handshake's error.
async fn connect(
    port: u16,
    name: &str,
    tls: &tokio_rustls::TlsConnector,
) -> Result<(CertificateDer<'static>, SendRequest<Full<Bytes>>), std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let stream = tls
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await?;
    let presented = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok((presented, sender))
}

/// `GET /` on `sender`: the status, or the error when the connection fails.
async fn get_on(sender: &mut SendRequest<Full<Bytes>>, host: &str) -> Result<StatusCode, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = Request::get("/")
        .header("host", host)
        .body(Full::default())
        .unwrap();
    let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = response.status();
    text(response).await;
    Ok(status)
}

/// A request over a new TLS connection: the status, or why there was none.
async fn request(port: u16, tls: &tokio_rustls::TlsConnector) -> Result<StatusCode, String> {
    let (_, mut sender) = connect(port, "a.test", tls)
        .await
        .map_err(|e| e.to_string())?;
    get_on(&mut sender, "a.test").await
}

#[tokio::test]
async fn rotated_certificates_serve_new_handshakes_while_open_connections_stay() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let (old, new) = (self_signed("a.test"), self_signed("a.test"));
    let v1 = https(
        1,
        port,
        up.addr,
        vec![secret("cert", old.secret.clone())],
        |_| {},
    );
    let proxy = proxy_with(&v1).await;
    let tls = client_tls(&[old.der.clone(), new.der.clone()], None);
    let (presented, mut held) = connect(port, "a.test", &tls).await.unwrap();
    assert_eq!(presented, old.der);
    assert_eq!(get_on(&mut held, "a.test").await, Ok(StatusCode::OK));

    // The push replaces the Secret's material; the listener keeps its socket.
    let v2 = https(
        2,
        port,
        up.addr,
        vec![secret("cert", new.secret.clone())],
        |_| {},
    );
    proxy.apply(&v2).await.unwrap();
    let (presented, mut fresh) = connect(port, "a.test", &tls).await.unwrap();
    assert_eq!(
        presented, new.der,
        "a new handshake gets the new certificate"
    );
    assert_eq!(get_on(&mut fresh, "a.test").await, Ok(StatusCode::OK));

    // The connection opened before the rotation was not closed, and still serves.
    for _ in 0..3 {
        assert_eq!(get_on(&mut held, "a.test").await, Ok(StatusCode::OK));
    }
    assert_eq!(up.hits(), 5);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn required_client_certificates_are_verified_against_the_ca_secret() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let server = self_signed("a.test");
    let (clients, strangers) = (Ca::new("clients"), Ca::new("strangers"));
    let secrets = vec![
        secret("cert", server.secret.clone()),
        secret("clients", clients.trust()),
    ];
    let cfg = https(1, port, up.addr, secrets, |tls| {
        tls.client_ca_secret = "clients".into();
        tls.require_client_cert = true;
    });
    let proxy = proxy_with(&cfg).await;
    let roots = [server.der.clone()];

    let member = clients.issue("client.a.test");
    let ok = request(port, &client_tls(&roots, Some(&member))).await;
    assert_eq!(ok, Ok(StatusCode::OK));
    // No certificate, or one from another CA: the handshake fails, nothing is forwarded.
    let none = request(port, &client_tls(&roots, None)).await;
    assert!(none.is_err(), "{none:?}");
    let stranger = strangers.issue("client.a.test");
    let wrong = request(port, &client_tls(&roots, Some(&stranger))).await;
    assert!(wrong.is_err(), "{wrong:?}");
    let own = self_signed("client.a.test");
    let self_signed_client = request(port, &client_tls(&roots, Some(&own))).await;
    assert!(self_signed_client.is_err(), "{self_signed_client:?}");
    assert_eq!(up.hits(), 1);
    // The failures cost the listener nothing.
    let again = request(port, &client_tls(&roots, Some(&member))).await;
    assert_eq!(again, Ok(StatusCode::OK));

    // Without require_client_cert, a client may come without a certificate, but one it
    // presents must still verify.
    let optional = https(
        2,
        port,
        up.addr,
        cfg.resources
            .of_kind(portico_api::Kind::Secret)
            .cloned()
            .collect(),
        |tls| {
            tls.client_ca_secret = "clients".into();
        },
    );
    proxy.apply(&optional).await.unwrap();
    assert_eq!(
        request(port, &client_tls(&roots, None)).await,
        Ok(StatusCode::OK)
    );
    assert_eq!(
        request(port, &client_tls(&roots, Some(&member))).await,
        Ok(StatusCode::OK)
    );
    let wrong = request(port, &client_tls(&roots, Some(&stranger))).await;
    assert!(wrong.is_err(), "{wrong:?}");
    assert_eq!(up.hits(), 4);

    // A client CA Secret that does not exist is named in the error.
    let missing = https(
        3,
        port,
        up.addr,
        vec![secret("cert", server.secret.clone())],
        |tls| {
            tls.client_ca_secret = "gone".into();
        },
    );
    let err = proxy.apply(&missing).await.unwrap_err().to_string();
    assert!(err.contains("Listener/tls: tls: client_ca_secret"), "{err}");
    assert!(err.contains("\"gone\" does not exist"), "{err}");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn http_listeners_redirect_every_request_to_https() {
    let port = free_port();
    let redirecting = |version: i64, redirect: pb::HttpsRedirect| {
        let l = listener("to-https", port, "").with(|l: &mut pb::Listener| {
            l.redirect_to_https = Some(redirect);
        });
        config(version, vec![l])
    };
    let proxy = proxy_with(&redirecting(
        1,
        pb::HttpsRedirect {
            port: 8443,
            status: 0,
        },
    ))
    .await;
    let answer = get(port, "shop.example:8080", "/a/./b/?q=1&r").await;
    assert_eq!(answer.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        answer.headers["location"],
        "https://shop.example:8443/a/b/?q=1&r"
    );

    // The default port is left out; 308 keeps the method and body.
    proxy
        .apply(&redirecting(
            2,
            pb::HttpsRedirect {
                port: 443,
                status: 308,
            },
        ))
        .await
        .unwrap();
    let answer = get(port, "Shop.Example", "/cart").await;
    assert_eq!(answer.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(answer.headers["location"], "https://shop.example/cart");

    // The head checks run first: no Host, no redirect.
    let no_host = raw(port, b"GET /x HTTP/1.0\r\n\r\n", Duration::from_secs(5)).await;
    assert!(no_host.starts_with("HTTP/1.0 400"), "{no_host}");
    let bad_host = raw(
        port,
        b"GET /x HTTP/1.1\r\nHost: a\"b\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(bad_host.starts_with("HTTP/1.1 400"), "{bad_host}");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn upstream_tls_without_a_ca_secret_trusts_the_system_roots() {
    // The upstream's certificate comes from a CA no system trusts: the handshake fails and the
    // request gets 502, while the config itself applies (the system roots loaded).
    let up_ca = Ca::new("private");
    let up_cert = up_ca.issue("up.internal");
    let up = tls_upstream(&up_cert.secret).await;
    let port = free_port();
    let cfg = web(
        1,
        port,
        vec![
            secret("private-ca", up_ca.trust()),
            tls_cluster("system", up.addr, ""),
            tls_cluster("private", up.addr, "private-ca"),
        ],
        vec![
            route("system", prefix("/system"), to("system")),
            route("private", prefix("/"), to("private")),
        ],
    );
    let proxy = proxy_with(&cfg).await;
    let refused = get(port, "x", "/system").await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{}", refused.body);
    let trusted = get(port, "x", "/private").await;
    assert_eq!(trusted.status, StatusCode::OK, "{}", trusted.body);
    assert_eq!(trusted.upstream(), "secure-up");
    assert_eq!(up.hits(), 1);
    // The system roots are the host's CA bundle, read once and shared.
    let roots = portico_proxy::tls::system_roots().unwrap();
    assert!(!roots.is_empty());
    assert!(Arc::ptr_eq(
        &roots,
        &portico_proxy::tls::system_roots().unwrap()
    ));
    proxy.shutdown(Duration::from_secs(1)).await;
}
