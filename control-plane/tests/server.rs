//! The library entry point as `portico dev` uses it: a control plane in-process on port 0 with
//! the embedded store, stopped through its shutdown future.

use std::time::Duration;

use portico_api::pb::admin_client::AdminClient;
use portico_api::pb::discovery_client::DiscoveryClient;
use portico_api::pb::{AgentMessage, ApplyRequest, Hello, Node, agent_message};
use portico_control_plane::config::Config;
use portico_control_plane::server;
use portico_test_support::resources::cluster;
use tokio::net::TcpListener;

#[tokio::test]
async fn runs_in_process_and_stops_on_shutdown_with_streams_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = Config::embedded(dir.path().join("data"));
    let server = tokio::spawn(server::run(listener, metrics, config, async {
        let _ = stopped.await;
    }));

    let mut admin = AdminClient::connect(endpoint.clone()).await.expect("admin");
    let applied = admin
        .apply(ApplyRequest {
            resources: vec![cluster("backend", &[])],
            ..Default::default()
        })
        .await
        .expect("apply")
        .into_inner();
    assert!(applied.revision > 0);

    let (tx, rx) = futures::channel::mpsc::unbounded();
    tx.unbounded_send(AgentMessage {
        message: Some(agent_message::Message::Hello(Hello {
            node: Some(Node {
                id: "a1".into(),
                region: "eu".into(),
                zone: "eu-1".into(),
                ..Default::default()
            }),
            applied_version: 0,
        })),
    })
    .expect("queue hello");
    let mut discovery = DiscoveryClient::connect(endpoint).await.expect("discovery");
    let mut updates = discovery.stream(rx).await.expect("stream").into_inner();
    let first = updates.message().await.expect("update").expect("an update");
    assert!(first.message.is_some());

    stop.send(()).expect("server running");
    let result = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops within 10s with a stream open")
        .expect("server task");
    assert!(result.is_ok(), "{result:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), updates.message()).await;
    assert!(
        matches!(end, Ok(Ok(None)) | Ok(Err(_))),
        "the stream ended: {end:?}"
    );
}
