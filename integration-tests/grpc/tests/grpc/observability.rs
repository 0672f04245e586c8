//! The gRPC status in `portico_agent_requests_total` (`grpc_status`) and in the access log.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portico_grpc_tests::pb::Msg;
use portico_proxy::access_log::TARGET;
use portico_proxy::metrics as m;

use crate::support::*;

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn access_lines(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == TARGET)
            .collect()
    }
}

#[tokio::test]
async fn grpc_statuses_are_counted_and_logged() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(move || writer.clone())
        .init();
    let up = EchoServer::start("up").await;
    let port = free_port();
    let cfg = gateway(
        1,
        port,
        vec![h2_cluster("echo", &[&up])],
        vec![grpc_route("echo", SERVICE, "", "echo")],
    );
    let proxy = proxy_with(&cfg).await;
    let mut client = client(port).await;
    client.unary(msg("ok")).await.unwrap();
    client.unary(msg("ok")).await.unwrap();
    let failing = Msg {
        fail_code: 5,
        ..msg("x")
    };
    client.unary(failing).await.unwrap_err();
    // Failing in the trailers, after a message.
    let ask = Msg {
        count: 1,
        fail_code: 9,
        ..msg("s")
    };
    let mut stream = client.expand(ask).await.unwrap().into_inner();
    while let Some(Ok(_)) = stream.message().await.transpose() {}
    drop(stream);
    // Answered by the agent.
    let raw = raw_call(port, "/no.Such/Call", &msg("x"), &[]).await;
    assert_eq!(raw.headers["grpc-status"], "12");

    let series = |route: &str, cluster: &str, grpc: &str, n: u32| {
        format!(
            "{}{{listener=\"web\",route=\"{route}\",cluster=\"{cluster}\",status_class=\"2xx\",grpc_status=\"{grpc}\"}} {n}",
            m::REQUESTS_TOTAL
        )
    };
    let expected = [
        series("echo", "echo", "0", 2),
        series("echo", "echo", "5", 1),
        series("echo", "echo", "9", 1),
        series("", "", "12", 1),
    ];
    eventually(
        "the calls counted by gRPC status",
        Duration::from_secs(5),
        || async {
            let text = handle.render();
            expected
                .iter()
                .all(|l| text.contains(l.as_str()))
                .then_some(())
        },
    )
    .await;
    let statuses = eventually("five access log lines", Duration::from_secs(5), || async {
        let statuses: Vec<String> = lines
            .access_lines()
            .iter()
            .map(|l| l["grpc_status"].as_str().unwrap_or("missing").to_string())
            .collect();
        (statuses.len() == 5).then_some(statuses)
    })
    .await;
    assert_eq!(statuses, ["0", "0", "5", "9", "12"]);
    proxy.shutdown(Duration::from_secs(1)).await;
}
