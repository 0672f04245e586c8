//! gRPC-Web through a route that opts in: unary and server-streaming calls made with a plain
//! HTTP/1.1 client, in the binary and the base64 text forms, with CORS from the gateway's
//! policy.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portico_api::pb::{self, policy};
use portico_grpc_tests::pb::Msg;

use crate::support::*;

const ORIGIN: &str = "https://app.test";

/// What a plain HTTP client reads back.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

/// A request from a browser page at [`ORIGIN`], over HTTP/1.1.
async fn browser(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Answer {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("origin", ORIGIN);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_11);
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the whole answer within 10s")
        .unwrap()
        .to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

#[tokio::test]
async fn grpc_web_calls_are_translated_both_ways_with_cors() {
    let up = EchoServer::start("up").await;
    let port = free_port();
    let cors = resource(
        "cors",
        pb::Policy {
            policy: Some(policy::Policy::Cors(pb::Cors {
                allow_origins: vec![ORIGIN.into()],
                allow_methods: vec!["POST".into()],
                allow_headers: vec![
                    "content-type".into(),
                    "x-grpc-web".into(),
                    "x-user-agent".into(),
                ],
                expose_headers: vec!["grpc-status".into(), "grpc-message".into()],
                ..Default::default()
            })),
        },
    );
    let web_route = pb::Route {
        grpc_web: true,
        policies: vec!["cors".into()],
        ..grpc_route("web", SERVICE, "", "echo")
    };
    let cfg = gateway(
        1,
        port,
        vec![h2_cluster("echo", &[&up]), cors],
        vec![web_route],
    );
    let proxy = proxy_with(&cfg).await;
    let unary = format!("/{SERVICE}/Unary");
    let expand = format!("/{SERVICE}/Expand");

    // The preflight a browser sends first, answered by the CORS policy.
    let preflight = browser(
        port,
        "OPTIONS",
        &unary,
        &[
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type,x-grpc-web,x-user-agent",
            ),
        ],
        Bytes::new(),
    )
    .await;
    assert!(preflight.status < 300, "{}", preflight.status);
    assert_eq!(preflight.headers["access-control-allow-origin"], ORIGIN);

    // Unary, binary form.
    let binary = [
        ("content-type", "application/grpc-web+proto"),
        ("x-grpc-web", "1"),
    ];
    let answer = browser(port, "POST", &unary, &binary, framed(&msg("hi"))).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "application/grpc-web+proto");
    assert_eq!(answer.headers["access-control-allow-origin"], ORIGIN);
    let exposed = answer.headers["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("grpc-status"), "{exposed}");
    let (messages, trailer) = unframe(&answer.body);
    assert_eq!(messages.len(), 1);
    assert_eq!(
        (messages[0].text.as_str(), messages[0].server.as_str()),
        ("hi", "up")
    );
    let trailer = trailer.expect("a trailer frame");
    assert!(trailer.contains("grpc-status: 0\r\n"), "{trailer:?}");

    // Server streaming, text form: the whole body is base64.
    let text = [
        ("content-type", "application/grpc-web-text"),
        ("accept", "application/grpc-web-text"),
        ("x-grpc-web", "1"),
    ];
    let ask = Msg {
        count: 3,
        ..msg("s")
    };
    let encoded = Bytes::from(STANDARD.encode(framed(&ask)));
    let answer = browser(port, "POST", &expand, &text, encoded).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.headers["content-type"],
        "application/grpc-web-text+proto"
    );
    let decoded = STANDARD.decode(&answer.body).unwrap();
    let (messages, trailer) = unframe(&decoded);
    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["s-0", "s-1", "s-2"]);
    assert!(trailer.unwrap().contains("grpc-status: 0\r\n"));

    // An error status before any message: in the head, as gRPC-Web clients read it.
    let failing = Msg {
        fail_code: 5,
        ..msg("x")
    };
    let answer = browser(port, "POST", &unary, &binary, framed(&failing)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["grpc-status"], "5");
    assert_eq!(answer.headers["grpc-message"], "asked%20to%20fail");

    // An answer the agent gives itself: gRPC-Web shaped too.
    let answer = browser(port, "POST", "/other.Svc/Get", &binary, framed(&msg("x"))).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["grpc-status"], "12");
    assert_eq!(answer.headers["content-type"], "application/grpc-web+proto");
    proxy.shutdown(Duration::from_secs(1)).await;
}
