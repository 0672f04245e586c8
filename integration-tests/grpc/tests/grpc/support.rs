//! What the gRPC tests share: gateway configs, clients, and gRPC requests made by hand for
//! the checks a generated client would hide.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_api::pb;
use portico_api::{Resource, ResourceSet};
use portico_grpc_tests::pb::Msg;
use portico_grpc_tests::pb::echo_client::EchoClient;
use portico_proxy::config::ConfigSet;
use portico_proxy::{Proxy, ProxyConfig};
use prost::Message;
use tonic::transport::Channel;

pub use portico_grpc_tests::{EchoServer, SERVICE};
pub use portico_test_support::net::{free_port, refusing};
pub use portico_test_support::resources::*;
pub use portico_test_support::tls::self_signed;
pub use portico_test_support::wait::eventually;

/// A config at `version` of `resources`.
pub fn config(version: i64, resources: Vec<Resource>) -> ConfigSet {
    ConfigSet {
        version,
        resources: resources.into_iter().collect::<ResourceSet>(),
        ..Default::default()
    }
}

/// Listener "web" (h2c) on `port` with route table "rt": one virtual host for every domain
/// with `routes`, plus `others` (clusters, policies, secrets).
pub fn gateway(
    version: i64,
    port: u16,
    others: Vec<Resource>,
    routes: Vec<pb::Route>,
) -> ConfigSet {
    let mut resources = vec![
        listener("web", port, "rt"),
        route_table("rt", vec![vhost("all", &["*"], routes)]),
    ];
    resources.extend(others);
    config(version, resources)
}

/// A proxy with `config` applied.
pub async fn proxy_with(config: &ConfigSet) -> Proxy {
    let proxy = Proxy::new(ProxyConfig::default());
    proxy.apply(config).await.unwrap();
    proxy
}

/// An HTTP2 cluster: gRPC servers speak HTTP/2 only.
pub fn h2_cluster(name: &str, servers: &[&EchoServer]) -> Resource {
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    cluster(name, &addrs).with(|c: &mut pb::Cluster| {
        c.protocol = pb::cluster::UpstreamProtocol::Http2 as i32;
    })
}

/// A route to `cluster` matching gRPC `service` and `method` (empty: any).
pub fn grpc_route(name: &str, service: &str, method: &str, cluster: &str) -> pb::Route {
    pb::Route {
        r#match: Some(pb::RouteMatch {
            grpc: Some(pb::GrpcMatch {
                service: service.into(),
                method: method.into(),
            }),
            ..Default::default()
        }),
        ..route(name, None, to(cluster))
    }
}

/// A tonic client of the echo service through the gateway's h2c listener on `port`.
pub async fn client(port: u16) -> EchoClient<Channel> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    EchoClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// A message with `text`.
pub fn msg(text: &str) -> Msg {
    Msg {
        text: text.into(),
        ..Msg::default()
    }
}

/// `message` framed as one gRPC message.
pub fn framed(message: &Msg) -> Bytes {
    let payload = message.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    Bytes::from(out)
}

/// The messages of a gRPC-framed body, and the trailer frame's text (gRPC-Web) if any.
pub fn unframe(mut body: &[u8]) -> (Vec<Msg>, Option<String>) {
    let (mut messages, mut trailer) = (Vec::new(), None);
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let payload = &body[5..5 + len];
        if body[0] & 0x80 != 0 {
            trailer = Some(String::from_utf8(payload.to_vec()).unwrap());
        } else {
            messages.push(Msg::decode(payload).unwrap());
        }
        body = &body[5 + len..];
    }
    assert!(body.is_empty(), "{} bytes after the last frame", body.len());
    (messages, trailer)
}

/// A whole HTTP/2 answer read by hand: head, body, trailers, and whether the head ended the
/// stream (a trailers-only answer).
pub struct Raw {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub trailers: Option<http::HeaderMap>,
    pub head_only: bool,
}

/// Sends one gRPC call by hand over HTTP/2 with prior knowledge to `port`: `path`, the
/// `message` framed, the headers a gRPC client sends plus `extra`.
pub async fn raw_call(port: u16, path: &str, message: &Msg, extra: &[(&str, &str)]) -> Raw {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut request = Request::post(format!("http://grpc.test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(framed(message))).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let head_only = http_body::Body::is_end_stream(response.body());
    let (parts, body) = response.into_parts();
    let collected = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the answer's body within 10s")
        .unwrap();
    Raw {
        status: parts.status.as_u16(),
        headers: parts.headers,
        trailers: collected.trailers().cloned(),
        body: collected.to_bytes(),
        head_only,
    }
}
