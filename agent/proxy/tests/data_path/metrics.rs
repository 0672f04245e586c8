//! Data-path metrics, read back through the Prometheus exporter the admin endpoint uses.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::support::*;
use portico_proxy::metrics as m;

#[tokio::test]
async fn requests_connections_errors_and_applies_are_counted() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    m::describe();
    let up = Upstream::start("up").await;
    let port = free_port();
    let dead = refusing();
    let cfg = web(
        7,
        port,
        vec![cluster("up", &[up.addr]), cluster("gone", &[dead.addr()])],
        vec![
            route("dead", prefix("/dead"), to("gone")),
            route("main", prefix("/"), to("up")),
        ],
    );
    let proxy = proxy_with(&cfg).await;
    assert_eq!(get(port, "x", "/ok").await.status, 200);
    assert_eq!(get(port, "x", "/dead").await.status, 502);
    let mut broken = cfg.clone();
    broken.resources.insert(listener("web", port, "missing"));
    assert!(proxy.apply(&broken).await.is_err());

    let expected = [
        format!(
            "{}{{listener=\"web\",route=\"main\",cluster=\"up\",status_class=\"2xx\",grpc_status=\"\"}} 1",
            m::REQUESTS_TOTAL
        ),
        format!(
            "{}{{listener=\"web\",route=\"dead\",cluster=\"gone\",status_class=\"5xx\",grpc_status=\"\"}} 1",
            m::REQUESTS_TOTAL
        ),
        format!("{}{{cluster=\"gone\"}} 1", m::UPSTREAM_CONNECT_ERRORS_TOTAL),
        format!("{} 7", m::CONFIG_VERSION),
        format!("{} 1", m::APPLIES_TOTAL),
        format!("{}{{reason=\"compile\"}} 1", m::APPLY_FAILURES_TOTAL),
    ];
    let text = eventually("every metric recorded", Duration::from_secs(5), || async {
        let text = handle.render();
        expected
            .iter()
            .all(|l| text.contains(l.as_str()))
            .then_some(text)
    })
    .await;
    assert!(
        text.contains(&format!(
            "{}_count{{listener=\"web\",route=\"main\"}} 1",
            m::REQUEST_DURATION_SECONDS
        )) || text.contains(&format!(
            "{}{{listener=\"web\",route=\"main\",quantile=",
            m::REQUEST_DURATION_SECONDS
        )),
        "{text}"
    );
    assert!(text.contains(m::ACTIVE_CONNECTIONS), "{text}");
    proxy.shutdown(Duration::from_secs(1)).await;
}
