//! Retries on gRPC statuses: a call an endpoint answers UNAVAILABLE is tried on another.

use std::time::Duration;

use portico_api::pb;

use crate::support::*;

#[tokio::test]
async fn calls_answered_unavailable_are_retried_on_another_endpoint() {
    let bad = EchoServer::failing("bad", tonic::Code::Unavailable).await;
    let good = EchoServer::start("good").await;
    let port = free_port();
    let retried = pb::Route {
        retry: Some(pb::RetryPolicy {
            attempts: 2,
            retry_on: vec!["unavailable".into()],
            retry_non_idempotent: true,
            ..Default::default()
        }),
        ..grpc_route("retried", SERVICE, "", "echo")
    };
    let plain = grpc_route("plain", "portico.test.echo.Plain", "", "echo");
    let cfg = gateway(
        1,
        port,
        vec![h2_cluster("echo", &[&bad, &good])],
        vec![retried],
    );
    let proxy = proxy_with(&cfg).await;
    let mut client = client(port).await;
    for i in 0..10 {
        let answer = client.unary(msg("again")).await;
        assert_eq!(answer.unwrap().into_inner().server, "good", "call {i}");
    }
    // Without the retry condition, the bad endpoint's status reaches the client.
    let without = pb::Route {
        retry: Some(pb::RetryPolicy {
            attempts: 2,
            retry_on: vec!["internal".into()],
            retry_non_idempotent: true,
            ..Default::default()
        }),
        ..grpc_route("retried", SERVICE, "", "echo")
    };
    let cfg = gateway(
        2,
        port,
        vec![h2_cluster("echo", &[&bad, &good])],
        vec![without, plain],
    );
    proxy.apply(&cfg).await.unwrap();
    let mut failures = 0;
    for _ in 0..10 {
        if let Err(status) = client.unary(msg("again")).await {
            assert_eq!(status.code(), tonic::Code::Unavailable);
            assert_eq!(status.message(), "bad fails");
            failures += 1;
        }
    }
    assert_eq!(
        failures, 5,
        "round robin sends every other call to the bad endpoint"
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}
