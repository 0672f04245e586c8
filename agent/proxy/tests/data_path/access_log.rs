//! The access log: one JSON line per request under the `portico::access` target.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use portico_proxy::access_log::TARGET;

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
async fn every_request_writes_one_json_line_with_its_facts() {
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(move || writer.clone())
        .init();
    let up = Upstream::start("up").await;
    let port = free_port();
    let cfg = config(
        1,
        vec![
            listener("web", port, "rt"),
            cluster("up", &[up.addr]),
            route_table(
                "rt",
                vec![vhost(
                    "all",
                    &["*"],
                    vec![route("main", prefix("/app"), to("up"))],
                )],
            ),
        ],
    );
    let proxy = proxy_with(&cfg).await;
    let ok = get(port, "x", "/app/echo-me").await;
    let missing = get(port, "x", "/nowhere").await;
    let bad = raw(
        port,
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");

    let logged = eventually("three access log lines", Duration::from_secs(5), || async {
        let l = lines.access_lines();
        (l.len() >= 3).then_some(l)
    })
    .await;
    assert_eq!(logged.len(), 3, "{logged:?}");
    let by_id = |id: &str| {
        logged
            .iter()
            .find(|l| l["request_id"] == id)
            .cloned()
            .unwrap()
    };
    let first = by_id(ok.headers["x-request-id"].to_str().unwrap());
    assert_eq!(first["listener"], "web");
    assert_eq!(first["route"], "main");
    assert_eq!(first["cluster"], "up");
    assert_eq!(first["upstream"], up.addr.to_string());
    assert_eq!(first["status"], 200);
    assert_eq!(first["path"], "/app/echo-me");
    assert_eq!(first["bytes_out"], ok.body.len());
    assert_eq!(first["reason"], "");
    assert!(first["duration_ms"].as_f64().unwrap() > 0.0);
    let second = by_id(missing.headers["x-request-id"].to_str().unwrap());
    assert_eq!(second["status"], 404);
    assert_eq!(second["reason"], "no_route");
    let third = logged.iter().find(|l| l["status"] == 400).unwrap();
    assert_eq!(third["reason"], "malformed_head");
    proxy.shutdown(Duration::from_secs(1)).await;
}
