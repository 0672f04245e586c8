//! The four kinds of call through an h2c and an HTTPS listener, messages up to the body limit
//! whatever the length of the stream, and `te: trailers` reaching the upstream.

use std::time::Duration;

use futures::StreamExt;
use portico_api::pb;
use portico_grpc_tests::pb::Msg;
use portico_grpc_tests::pb::echo_client::EchoClient;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::support::*;

/// Unary, client-streaming, server-streaming and bidirectional calls, each checked end to end.
async fn four_kinds(client: &mut EchoClient<Channel>) {
    let unary = client.unary(msg("hello")).await.unwrap().into_inner();
    assert_eq!(
        (unary.text.as_str(), unary.server.as_str()),
        ("hello", "up")
    );

    let sent = futures::stream::iter((0..5).map(|i| msg(&i.to_string())));
    let collected = client.collect(sent).await.unwrap().into_inner();
    assert_eq!((collected.text.as_str(), collected.count), ("01234", 5));

    let ask = Msg {
        count: 5,
        ..msg("n")
    };
    let expanded: Vec<String> = client
        .expand(ask)
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().text)
        .collect()
        .await;
    assert_eq!(expanded, ["n-0", "n-1", "n-2", "n-3", "n-4"]);

    // Bidirectional and interleaved: each answer arrives before the next message is sent,
    // which only works when both directions stream through the gateway at once.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut answers = client
        .chat(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for word in ["ping", "pong", "again"] {
        tx.send(msg(word)).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), answers.next())
            .await
            .expect("an answer before the next message")
            .unwrap()
            .unwrap();
        assert_eq!(answer.text, word);
    }
    drop(tx);
    assert!(
        answers.next().await.is_none(),
        "the call ends when the client's stream does"
    );
}

#[tokio::test]
async fn the_four_kinds_of_call_pass_an_h2c_listener() {
    let up = EchoServer::start("up").await;
    let port = free_port();
    let cfg = gateway(
        1,
        port,
        vec![h2_cluster("echo", &[&up])],
        vec![grpc_route("echo", SERVICE, "", "echo")],
    );
    let proxy = proxy_with(&cfg).await;
    four_kinds(&mut client(port).await).await;
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_four_kinds_of_call_pass_an_https_listener() {
    let up = EchoServer::start("up").await;
    let port = free_port();
    let cert = self_signed("grpc.test");
    let pem = cert.secret.certificate_chain.clone();
    let cfg = config(
        1,
        vec![
            https_listener("tls", port, "rt", vec![sni("cert", &["grpc.test"])]),
            secret("cert", cert.secret),
            h2_cluster("echo", &[&up]),
            route_table(
                "rt",
                vec![vhost(
                    "all",
                    &["*"],
                    vec![grpc_route("echo", SERVICE, "", "echo")],
                )],
            ),
        ],
    );
    let proxy = proxy_with(&cfg).await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem))
        .domain_name("grpc.test");
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    four_kinds(&mut EchoClient::new(channel)).await;
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn each_message_is_held_to_the_body_limit_not_the_whole_stream() {
    let up = EchoServer::start("up").await;
    let port = free_port();
    let limit = 64 * 1024;
    let cfg = gateway(
        1,
        port,
        vec![h2_cluster("echo", &[&up])],
        vec![grpc_route("echo", SERVICE, "", "echo")],
    );
    let mut cfg = cfg;
    cfg.resources
        .insert(listener("web", port, "rt").with(|l: &mut pb::Listener| {
            l.limits = Some(pb::ListenerLimits {
                max_request_body_bytes: limit,
                ..Default::default()
            });
        }));
    let proxy = proxy_with(&cfg).await;
    let mut client = client(port).await;
    let big = |n: usize| Msg {
        payload: vec![7; n],
        ..msg("big")
    };
    // Twenty messages just under the limit: 1.2 MB through a 64 KiB limit.
    let stream = futures::stream::iter((0..20).map(move |_| big(60 * 1024)));
    let collected = client.collect(stream).await.unwrap().into_inner();
    assert_eq!(collected.count, 20);
    let under = client.unary(big(60 * 1024)).await.unwrap().into_inner();
    assert_eq!(under.count, 60 * 1024);
    // One message over it: the call fails as gRPC says a too-large message does.
    let over = client.unary(big(100 * 1024)).await.unwrap_err();
    assert_eq!(over.code(), tonic::Code::ResourceExhausted, "{over:?}");
    assert!(over.message().contains("body_too_large"), "{over:?}");
    proxy.shutdown(Duration::from_secs(1)).await;
}
