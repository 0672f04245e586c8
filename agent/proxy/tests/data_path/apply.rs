//! Atomic apply: config changes under load, failed applies that change nothing, listener
//! removal and shutdown that drain in-flight requests.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use portico_proxy::ApplyError;

const WAIT: Duration = Duration::from_secs(10);

fn single_route(
    version: i64,
    port: u16,
    upstreams: &[&Upstream],
    target: &str,
) -> portico_proxy::config::ConfigSet {
    let mut resources = vec![
        listener("web", port, "rt"),
        route_table(
            "rt",
            vec![vhost(
                "all",
                &["*"],
                vec![route("main", prefix("/"), to(target))],
            )],
        ),
    ];
    resources.extend(upstreams.iter().map(|u| cluster(&u.name, &[u.addr])));
    config(version, resources)
}

#[tokio::test]
async fn config_changes_under_load_fail_no_request() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let port = free_port();
    let proxy = proxy_with(&single_route(1, port, &[&a], "a")).await;

    let stop = tokio_util::sync::CancellationToken::new();
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let client = client();
            while !stop.is_cancelled() {
                let req = Request::get(format!("http://127.0.0.1:{port}/x"))
                    .body(Full::default())
                    .unwrap();
                let good = match client.request(req).await {
                    Ok(r) => r.status() == StatusCode::OK && r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                let counter = if good { &ok } else { &failed };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let served = |u: &Upstream, n: usize| (u.hits() >= n).then_some(());
    eventually("load on a", WAIT, || async { served(&a, 200) }).await;
    proxy
        .apply(&single_route(2, port, &[&a, &b], "b"))
        .await
        .unwrap();
    let b_before = b.hits();
    eventually("load moved to b", WAIT, || async {
        served(&b, b_before + 200)
    })
    .await;
    // A new route table with more routes, and a new cluster replacing b.
    let c = Upstream::start("c").await;
    let mut cfg = single_route(3, port, &[&a, &c], "c");
    cfg.resources.insert(route_table(
        "rt",
        vec![vhost(
            "all",
            &["*"],
            vec![
                route("exact", exact("/exact"), to("a")),
                route("main", prefix("/"), to("c")),
            ],
        )],
    ));
    proxy.apply(&cfg).await.unwrap();
    eventually("load moved to c", WAIT, || async { served(&c, 200) }).await;
    stop.cancel();
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "{} succeeded",
        ok.load(Ordering::SeqCst)
    );
    assert!(ok.load(Ordering::SeqCst) >= 600);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn route_changes_apply_to_connections_already_open() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let port = free_port();
    let proxy = proxy_with(&single_route(1, port, &[&a, &b], "a")).await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut ask = async || {
        let req = Request::get("/")
            .header("host", "x")
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        response.headers()["x-upstream"]
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(ask().await, "a");
    proxy
        .apply(&single_route(2, port, &[&a, &b], "b"))
        .await
        .unwrap();
    assert_eq!(ask().await, "b", "same connection, new route");
    assert_eq!(proxy.version(), 2);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn failed_applies_change_nothing_and_close_what_they_bound() {
    let a = Upstream::start("a").await;
    let port = free_port();
    let proxy = proxy_with(&single_route(1, port, &[&a], "a")).await;

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let extra_port = free_port();
    let mut cfg = single_route(2, port, &[&a], "a");
    cfg.resources.insert(route_table(
        "rt",
        vec![vhost(
            "all",
            &["*"],
            vec![route("main", prefix("/"), direct(418, "new"))],
        )],
    ));
    cfg.resources.insert(listener("extra", extra_port, "rt"));
    cfg.resources.insert(listener("taken", taken_port, "rt"));
    let err = proxy.apply(&cfg).await.unwrap_err();
    assert!(matches!(err, ApplyError::Bind { .. }), "{err}");
    assert!(err.to_string().contains(&taken_port.to_string()), "{err}");
    assert_eq!(
        get(port, "x", "/").await.upstream(),
        "a",
        "old config still served"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", extra_port)).is_err(),
        "a listener bound during the failed apply is closed again"
    );

    let mut bad = single_route(3, port, &[&a], "a");
    bad.resources.insert(route_table(
        "rt",
        vec![vhost(
            "all",
            &["*"],
            vec![route("bad", regex("("), to("a"))],
        )],
    ));
    let err = proxy.apply(&bad).await.unwrap_err();
    assert!(matches!(err, ApplyError::Compile(_)), "{err}");
    assert!(
        err.to_string()
            .contains("RouteTable/rt: virtual_hosts[0].routes[0].match.regex"),
        "{err}"
    );
    let dangling = single_route(4, port, &[&a], "missing");
    assert!(matches!(
        proxy.apply(&dangling).await,
        Err(ApplyError::Compile(_))
    ));
    assert_eq!(get(port, "x", "/").await.upstream(), "a");
    assert_eq!(proxy.version(), 1);
    drop(taken);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_address_another_process_shares_with_reuseport_is_refused() {
    let a = Upstream::start("a").await;
    // Another process of the same user, listening with SO_REUSEPORT: binding beside it would
    // split the traffic between it and the agent.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.set_reuseport(true).unwrap();
    other.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = other.local_addr().unwrap().port();
    let other = other.listen(16).unwrap();
    let proxy = portico_proxy::Proxy::default();
    let err = proxy
        .apply(&single_route(1, port, &[&a], "a"))
        .await
        .unwrap_err();
    assert!(matches!(err, ApplyError::Bind { .. }), "{err}");
    assert!(err.to_string().contains("already in use"), "{err}");
    drop(other);
    proxy
        .apply(&single_route(2, port, &[&a], "a"))
        .await
        .unwrap();
    assert_eq!(get(port, "x", "/").await.upstream(), "a");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_removed_listener_stops_accepting_and_drains_in_flight_requests() {
    let a = Upstream::start("a").await;
    let (old_port, new_port) = (free_port(), free_port());
    let proxy = proxy_with(&single_route(1, old_port, &[&a], "a")).await;
    let slow = tokio::spawn(get(old_port, "x", "/slow/800"));
    eventually("the slow request reached the upstream", WAIT, || async {
        (a.hits() == 1).then_some(())
    })
    .await;
    proxy
        .apply(&single_route(2, new_port, &[&a], "a"))
        .await
        .unwrap();
    eventually("the old port refuses connections", WAIT, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", old_port))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert_eq!(get(new_port, "x", "/").await.status, StatusCode::OK);
    let answer = slow.await.unwrap();
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "in-flight request finished: {}",
        answer.body
    );
    proxy
        .apply(&single_route(3, old_port, &[&a], "a"))
        .await
        .unwrap();
    let back = get(old_port, "x", "/").await;
    assert_eq!(back.status, StatusCode::OK, "the port can come back");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn shutdown_waits_for_in_flight_requests() {
    let a = Upstream::start("a").await;
    let port = free_port();
    let proxy = proxy_with(&single_route(1, port, &[&a], "a")).await;
    let slow = tokio::spawn(get(port, "x", "/slow/500"));
    eventually("the slow request reached the upstream", WAIT, || async {
        (a.hits() == 1).then_some(())
    })
    .await;
    assert_eq!(proxy.active_connections(), 1);
    proxy.shutdown(Duration::from_secs(5)).await;
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    assert_eq!(proxy.active_connections(), 0);
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
    let after = proxy.apply(&single_route(2, port, &[&a], "a")).await;
    assert!(after.is_err(), "no apply after shutdown");
}
