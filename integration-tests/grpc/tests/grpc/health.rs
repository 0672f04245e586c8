//! gRPC health checks (`grpc.health.v1.Health/Check`, served by tonic-health) taking an
//! endpoint out of balancing and bringing it back.

use std::collections::BTreeSet;
use std::time::Duration;

use portico_api::pb;

use crate::support::*;

/// The servers that answered `n` calls.
async fn answering(port: u16, n: usize) -> BTreeSet<String> {
    let mut client = client(port).await;
    let mut servers = BTreeSet::new();
    for _ in 0..n {
        servers.insert(client.unary(msg("who")).await.unwrap().into_inner().server);
    }
    servers
}

#[tokio::test]
async fn a_grpc_health_check_takes_a_not_serving_endpoint_out_and_back() {
    let (a, b) = (EchoServer::start("a").await, EchoServer::start("b").await);
    let port = free_port();
    let checked = h2_cluster("echo", &[&a, &b]).with(|c: &mut pb::Cluster| {
        c.health_check = Some(pb::HealthCheck {
            grpc: Some(pb::GrpcHealthCheck {
                service: SERVICE.into(),
            }),
            interval: Some(duration(Duration::from_millis(50))),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            ..Default::default()
        });
    });
    let cfg = gateway(
        1,
        port,
        vec![checked],
        vec![grpc_route("echo", SERVICE, "", "echo")],
    );
    let proxy = proxy_with(&cfg).await;
    let both: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
    let wait = Duration::from_secs(10);
    eventually("both endpoints serving", wait, || async {
        (answering(port, 6).await == both).then_some(())
    })
    .await;

    b.set_serving(false).await;
    let only_a: BTreeSet<String> = ["a".to_string()].into();
    eventually("b taken out after NOT_SERVING", wait, || async {
        (answering(port, 10).await == only_a).then_some(())
    })
    .await;
    let report = proxy.cluster_health();
    let b_health = report
        .iter()
        .flat_map(|c| &c.endpoints)
        .find(|e| e.address == b.addr.to_string())
        .expect("b in the report");
    assert_eq!(
        b_health.state(),
        pb::endpoint_health::State::Unhealthy,
        "{b_health:?}"
    );
    assert!(b_health.reason.contains("serving status 2"), "{b_health:?}");

    b.set_serving(true).await;
    eventually("b back once SERVING", wait, || async {
        (answering(port, 6).await == both).then_some(())
    })
    .await;
    proxy.shutdown(Duration::from_secs(1)).await;
}
