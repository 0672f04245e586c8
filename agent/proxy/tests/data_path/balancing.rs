//! Load balancing on real traffic: each policy's split, consistent hashing and session
//! affinity, retries hiding a dying upstream, health checks, outlier ejection, circuit
//! breakers, locality tiers and draining.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_api::pb::{self, cluster::LbPolicy, endpoint_health::State, hash_policy};
use portico_proxy::runtime::NodeInfo;
use portico_proxy::{Proxy, ProxyConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// An upstream a test steers: it answers its name, 500 while failing, `/healthz` with 200 or
/// 503, `/slow/<ms>` after a wait; killed, it closes its listener and open connections.
struct Scripted {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    failing: Arc<AtomicBool>,
    /// Requests other than health checks.
    hits: Arc<AtomicUsize>,
    checks: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Scripted {
    async fn start(name: &str) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = Scripted {
            addr: listener.local_addr().unwrap(),
            healthy: Arc::new(AtomicBool::new(true)),
            failing: Arc::new(AtomicBool::new(false)),
            hits: Arc::new(AtomicUsize::new(0)),
            checks: Arc::new(AtomicUsize::new(0)),
            stop: CancellationToken::new(),
        };
        let (name, healthy, failing, hits, checks, stop) = (
            name.to_string(),
            s.healthy.clone(),
            s.failing.clone(),
            s.hits.clone(),
            s.checks.clone(),
            s.stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (name, healthy, failing, hits, checks) = (
                    name.clone(),
                    healthy.clone(),
                    failing.clone(),
                    hits.clone(),
                    checks.clone(),
                );
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let path = req.uri().path().to_string();
                    let (name, healthy, failing, hits, checks) = (
                        name.clone(),
                        healthy.clone(),
                        failing.clone(),
                        hits.clone(),
                        checks.clone(),
                    );
                    async move {
                        let status = if path == "/healthz" {
                            checks.fetch_add(1, Ordering::SeqCst);
                            if healthy.load(Ordering::SeqCst) {
                                StatusCode::OK
                            } else {
                                StatusCode::SERVICE_UNAVAILABLE
                            }
                        } else {
                            hits.fetch_add(1, Ordering::SeqCst);
                            if let Some(ms) =
                                path.strip_prefix("/slow/").and_then(|m| m.parse().ok())
                            {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            if failing.load(Ordering::SeqCst) {
                                StatusCode::INTERNAL_SERVER_ERROR
                            } else {
                                StatusCode::OK
                            }
                        };
                        let mut response = Response::new(Full::new(Bytes::from(name)));
                        *response.status_mut() = status;
                        Ok::<_, Infallible>(response)
                    }
                });
                let stop = stop.clone();
                tokio::spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! { _ = conn => {}, _ = stop.cancelled() => {} }
                });
            }
        });
        s
    }
}

/// An endpoint at `addr` with `weight`, in `region` and `zone`.
fn endpoint(addr: SocketAddr, weight: u32, region: &str, zone: &str) -> pb::Endpoint {
    pb::Endpoint {
        address: addr.ip().to_string(),
        port: addr.port().into(),
        weight,
        region: region.into(),
        zone: zone.into(),
    }
}

/// Cluster "c" over `endpoints`, as `shape` makes it.
fn cluster_of(endpoints: Vec<pb::Endpoint>, shape: impl FnOnce(&mut pb::Cluster)) -> pb::Resource {
    let mut spec = pb::Cluster {
        endpoints,
        ..Default::default()
    };
    shape(&mut spec);
    resource("c", spec)
}

/// A proxy with one worker in `region`/`zone`, serving `cluster` on every path (with `retry`).
async fn serve(
    cluster: pb::Resource,
    retry: Option<pb::RetryPolicy>,
    region: &str,
    zone: &str,
) -> (Proxy, u16) {
    serve_on(1, cluster, retry, region, zone).await
}

/// [`serve`] with `workers` proxy workers.
async fn serve_on(
    workers: usize,
    cluster: pb::Resource,
    retry: Option<pb::RetryPolicy>,
    region: &str,
    zone: &str,
) -> (Proxy, u16) {
    let port = free_port();
    let mut all = route("all", prefix("/"), to("c"));
    all.retry = retry;
    let cfg = web(1, port, vec![cluster], vec![all]);
    let proxy = Proxy::new(ProxyConfig {
        node: NodeInfo {
            region: region.into(),
            zone: zone.into(),
            ..Default::default()
        },
        access_log: false,
        workers,
    });
    proxy.apply(&cfg).await.unwrap();
    (proxy, port)
}

/// GETs `path` `n` times, `parallel` at a time; counts the answers by body and status.
async fn spread(
    port: u16,
    path: &str,
    n: usize,
    parallel: usize,
    header: impl Fn(usize) -> Option<(&'static str, String)>,
) -> (HashMap<String, usize>, HashMap<u16, usize>) {
    let client = client();
    let mut bodies = HashMap::new();
    let mut statuses = HashMap::new();
    let mut i = 0;
    while i < n {
        let batch = (i..(i + parallel).min(n)).map(|k| {
            let mut req = Request::get(format!("http://127.0.0.1:{port}{path}"));
            if let Some((name, value)) = header(k) {
                req = req.header(name, value);
            }
            send(&client, req.body(Full::new(Bytes::new())).unwrap())
        });
        for a in join_all(batch).await {
            // The agent's own answers name a request id: counted by status only.
            if a.status.is_success() || a.status == StatusCode::INTERNAL_SERVER_ERROR {
                *bodies.entry(a.body).or_insert(0) += 1;
            }
            *statuses.entry(a.status.as_u16()).or_insert(0) += 1;
        }
        i += parallel;
    }
    (bodies, statuses)
}

fn share(counts: &HashMap<String, usize>, name: &str, total: usize) -> f64 {
    counts.get(name).copied().unwrap_or(0) as f64 / total as f64
}

#[tokio::test]
async fn each_policy_splits_requests_by_weight() {
    let ups = [
        Scripted::start("a").await,
        Scripted::start("b").await,
        Scripted::start("c").await,
    ];
    let weights = [3, 1, 1];
    let endpoints: Vec<pb::Endpoint> = ups
        .iter()
        .zip(weights)
        .map(|(u, w)| endpoint(u.addr, w, "", ""))
        .collect();
    let n = 5_000;
    for (policy, hashed) in [
        (LbPolicy::WeightedRoundRobin, false),
        (LbPolicy::LeastRequest, false),
        (LbPolicy::RingHash, true),
        (LbPolicy::Maglev, true),
    ] {
        let c = cluster_of(endpoints.clone(), |c| {
            c.lb_policy = policy.into();
            if hashed {
                c.hash_policy = Some(pb::HashPolicy {
                    key: Some(hash_policy::Key::Header("x-user".into())),
                });
            }
        });
        let (proxy, port) = serve(c, None, "", "").await;
        // One at a time: the least-request policy then sees an idle cluster every time.
        let parallel = if policy == LbPolicy::LeastRequest {
            1
        } else {
            16
        };
        let (counts, statuses) = spread(port, "/", n, parallel, |k| {
            hashed.then(|| ("x-user", format!("user-{k}")))
        })
        .await;
        assert_eq!(statuses.get(&200), Some(&n), "{policy:?}: {statuses:?}");
        for (name, expected) in [("a", 0.6), ("b", 0.2), ("c", 0.2)] {
            let got = share(&counts, name, n);
            assert!(
                (got - expected).abs() <= 0.03,
                "{policy:?}: {name} took {got:.3}, weight share {expected}: {counts:?}"
            );
        }
        proxy.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn hashing_sticks_and_removing_an_endpoint_moves_few_keys() {
    let mut ups = Vec::new();
    for i in 0..10 {
        ups.push(Scripted::start(&format!("u{i}")).await);
    }
    let endpoints: Vec<pb::Endpoint> = ups.iter().map(|u| endpoint(u.addr, 1, "", "")).collect();
    for policy in [LbPolicy::RingHash, LbPolicy::Maglev] {
        let shaped = |endpoints: Vec<pb::Endpoint>| {
            cluster_of(endpoints, |c| {
                c.lb_policy = policy.into();
                c.hash_policy = Some(pb::HashPolicy {
                    key: Some(hash_policy::Key::QueryParam("user".into())),
                });
            })
        };
        let (proxy, port) = serve(shaped(endpoints.clone()), None, "", "").await;
        let client = client();
        let owners = |keys: std::ops::Range<usize>| {
            let client = client.clone();
            async move {
                let mut owners = Vec::new();
                let keys: Vec<usize> = keys.collect();
                for chunk in keys.chunks(32) {
                    let batch = chunk.iter().map(|k| {
                        let req = Request::get(format!("http://127.0.0.1:{port}/?user={k}"))
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        send(&client, req)
                    });
                    owners.extend(join_all(batch).await.into_iter().map(|a| a.body));
                }
                owners
            }
        };
        let before = owners(0..10_000).await;
        // Stickiness: one key, a thousand times, one endpoint.
        let sticky: Vec<String> = {
            let mut seen = Vec::new();
            for _ in 0..1_000 {
                let req = Request::get(format!("http://127.0.0.1:{port}/?user=ann"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                seen.push(send(&client, req).await.body);
            }
            seen
        };
        assert!(sticky.iter().all(|s| s == &sticky[0]), "{policy:?}");
        let mut fewer = endpoints.clone();
        fewer.remove(4);
        let fewer = web(
            2,
            port,
            vec![shaped(fewer)],
            vec![route("all", prefix("/"), to("c"))],
        );
        proxy.apply(&fewer).await.unwrap();
        let after = owners(0..10_000).await;
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let own = before.iter().filter(|b| *b == "u4").count();
        assert!(moved <= 1_500, "{policy:?}: {moved} of 10,000 keys moved");
        assert!(
            moved >= own,
            "{policy:?}: the removed endpoint's {own} keys moved"
        );
        assert!(after.iter().all(|a| a != "u4"));
        proxy.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_session_cookie_keeps_a_client_on_its_endpoint() {
    let ups = [Scripted::start("a").await, Scripted::start("b").await];
    let c = cluster_of(
        ups.iter().map(|u| endpoint(u.addr, 1, "", "")).collect(),
        |c| {
            c.lb_policy = LbPolicy::Maglev.into();
            c.hash_policy = Some(pb::HashPolicy {
                key: Some(hash_policy::Key::SessionCookie(pb::SessionCookie {
                    name: "sticky".into(),
                    ttl: Some(pbjson_types::Duration {
                        seconds: 3600,
                        nanos: 0,
                    }),
                    path: String::new(),
                })),
            });
        },
    );
    let (proxy, port) = serve(c, None, "", "").await;
    let first = get(port, "x", "/").await;
    let cookie = first.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("sticky=") && cookie.contains("Max-Age=3600"),
        "{cookie}"
    );
    let value = cookie.split(';').next().unwrap().to_string();
    let (counts, _) = spread(port, "/", 200, 8, |_| Some(("cookie", value.clone()))).await;
    assert_eq!(counts.get(&first.body), Some(&200), "{counts:?}");
    // Without the cookie, requests spread over both.
    let (counts, _) = spread(port, "/", 40, 4, |_| None).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn retries_hide_an_upstream_killed_under_load() {
    let a = Scripted::start("a").await;
    let b = Scripted::start("b").await;
    let c = Scripted::start("c").await;
    let endpoints = vec![
        endpoint(a.addr, 1, "", ""),
        endpoint(b.addr, 1, "", ""),
        endpoint(c.addr, 1, "", ""),
    ];
    // What an SRE sets up: retries for the requests caught by the failure, outlier detection
    // so that new requests stop going to the dead endpoint.
    let retry = pb::RetryPolicy {
        attempts: 2,
        retry_on: vec!["connect-failure".into(), "reset".into(), "5xx".into()],
        ..Default::default()
    };
    let cluster = cluster_of(endpoints, |c| {
        c.outlier_detection = Some(pb::OutlierDetection {
            consecutive_gateway_failures: 2,
            ..Default::default()
        });
    });
    let (proxy, port) = serve_on(2, cluster, Some(retry), "", "").await;
    let load = tokio::spawn(async move { spread(port, "/slow/2", 3_000, 8, |_| None).await });
    eventually("load on b", Duration::from_secs(10), || async {
        (b.hits.load(Ordering::SeqCst) > 200).then_some(())
    })
    .await;
    drop(b);
    let (counts, statuses) = load.await.unwrap();
    assert_eq!(statuses.get(&200), Some(&3_000), "{statuses:?}");
    assert!(
        counts.contains_key("a") && counts.contains_key("c"),
        "{counts:?}"
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_retried_body_is_sent_whole_and_only_idempotent_methods_retry_by_default() {
    let refused = refusing();
    let dead = refused.addr();
    let up = Upstream::start("echo").await;
    let endpoints = vec![endpoint(dead, 1, "", ""), endpoint(up.addr, 1, "", "")];
    for non_idempotent in [true, false] {
        let retry = pb::RetryPolicy {
            attempts: 1,
            retry_on: vec!["connect-failure".into()],
            retry_non_idempotent: non_idempotent,
            ..Default::default()
        };
        let (proxy, port) = serve(cluster_of(endpoints.clone(), |_| {}), Some(retry), "", "").await;
        // One worker, round robin: the first request tries the refusing endpoint first.
        let req = Request::post(format!("http://127.0.0.1:{port}/echo"))
            .body(Full::new(Bytes::from_static(b"the whole body")))
            .unwrap();
        let answer = send(&client(), req).await;
        if non_idempotent {
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(answer.body, "the whole body");
        } else {
            assert_eq!(
                answer.status,
                StatusCode::BAD_GATEWAY,
                "a POST is not retried"
            );
        }
        proxy.shutdown(Duration::from_secs(1)).await;
    }
}

/// A health check every 100 ms, two results in a row to flip.
fn checked(c: &mut pb::Cluster) {
    c.health_check = Some(pb::HealthCheck {
        path: "/healthz".into(),
        interval: Some(pbjson_types::Duration {
            seconds: 0,
            nanos: 100_000_000,
        }),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        ..Default::default()
    });
}

/// Whether the next `n` requests all went to `only`.
async fn all_to(port: u16, only: &[&str], n: usize) -> bool {
    let (counts, _) = spread(port, "/", n, 4, |_| None).await;
    counts.keys().all(|k| only.contains(&k.as_str()))
}

#[tokio::test]
async fn health_checks_take_an_endpoint_out_and_bring_it_back() {
    let a = Scripted::start("a").await;
    let b = Scripted::start("b").await;
    let (proxy, port) = serve(
        cluster_of(
            vec![endpoint(a.addr, 1, "", ""), endpoint(b.addr, 1, "", "")],
            checked,
        ),
        None,
        "",
        "",
    )
    .await;
    eventually("first checks", Duration::from_secs(5), || async {
        (a.checks.load(Ordering::SeqCst) > 0 && b.checks.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    a.healthy.store(false, Ordering::SeqCst);
    // interval × threshold, with room for a loaded machine.
    eventually("a out", Duration::from_secs(5), || async {
        all_to(port, &["b"], 20).await.then_some(())
    })
    .await;
    let report = proxy.cluster_health();
    let state = |addr: SocketAddr| {
        report[0]
            .endpoints
            .iter()
            .find(|e| e.address == addr.to_string())
            .map(|e| (e.state(), e.reason.clone()))
    };
    assert_eq!(
        state(a.addr),
        Some((State::Unhealthy, "status 503".to_string()))
    );
    assert_eq!(state(b.addr).map(|s| s.0), Some(State::Healthy));
    a.healthy.store(true, Ordering::SeqCst);
    eventually("a back", Duration::from_secs(5), || async {
        let (counts, _) = spread(port, "/", 20, 4, |_| None).await;
        counts.contains_key("a").then_some(())
    })
    .await;
    // Neither healthy: both take traffic rather than none (panic mode).
    a.healthy.store(false, Ordering::SeqCst);
    b.healthy.store(false, Ordering::SeqCst);
    eventually("panic", Duration::from_secs(5), || async {
        proxy.cluster_health()[0].panic.then_some(())
    })
    .await;
    let (counts, statuses) = spread(port, "/", 20, 4, |_| None).await;
    assert_eq!(statuses.get(&200), Some(&20));
    assert!(
        counts.contains_key("a") && counts.contains_key("b"),
        "{counts:?}"
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_tcp_check_marks_a_closed_port_unhealthy() {
    let refused = refusing();
    let dead = refused.addr();
    let b = Scripted::start("b").await;
    let (proxy, port) = serve(
        cluster_of(
            vec![endpoint(dead, 1, "", ""), endpoint(b.addr, 1, "", "")],
            |c| {
                checked(c);
                if let Some(h) = c.health_check.as_mut() {
                    h.path.clear();
                    h.tcp = true;
                }
            },
        ),
        None,
        "",
        "",
    )
    .await;
    eventually("the closed port out", Duration::from_secs(5), || async {
        let (_, statuses) = spread(port, "/", 10, 2, |_| None).await;
        (statuses.get(&200) == Some(&10)).then_some(())
    })
    .await;
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn failing_endpoints_are_ejected_and_return() {
    let a = Scripted::start("a").await;
    let b = Scripted::start("b").await;
    a.failing.store(true, Ordering::SeqCst);
    let (proxy, port) = serve(
        cluster_of(
            vec![endpoint(a.addr, 1, "", ""), endpoint(b.addr, 1, "", "")],
            |c| {
                c.outlier_detection = Some(pb::OutlierDetection {
                    consecutive_5xx: 3,
                    base_ejection_time: Some(pbjson_types::Duration {
                        seconds: 0,
                        nanos: 500_000_000,
                    }),
                    ..Default::default()
                });
            },
        ),
        None,
        "",
        "",
    )
    .await;
    // Round robin: a answers every other request, 500 each time, until its third in a row.
    let (_, statuses) = spread(port, "/", 6, 1, |_| None).await;
    assert_eq!(statuses.get(&500), Some(&3), "{statuses:?}");
    assert!(all_to(port, &["b"], 20).await, "a is ejected");
    let ejected = &proxy.cluster_health()[0].endpoints[0];
    assert_eq!(ejected.state(), State::Ejected);
    assert_eq!(ejected.reason, "consecutive 5xx");
    a.failing.store(false, Ordering::SeqCst);
    eventually("a returns", Duration::from_secs(5), || async {
        let (counts, _) = spread(port, "/", 10, 2, |_| None).await;
        counts.contains_key("a").then_some(())
    })
    .await;
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn circuit_breakers_answer_503_overflow() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let slow = Scripted::start("slow").await;
    let refused = refusing();
    let dead = refused.addr();
    // max_requests: one request in flight per worker (one worker).
    let (proxy, port) = serve(
        cluster_of(vec![endpoint(slow.addr, 1, "", "")], |c| {
            c.circuit_breakers = Some(pb::CircuitBreakers {
                max_requests: 1,
                ..Default::default()
            });
        }),
        None,
        "",
        "",
    )
    .await;
    let held = tokio::spawn(async move { get(port, "x", "/slow/1000").await });
    eventually(
        "the slow request in flight",
        Duration::from_secs(5),
        || async { (slow.hits.load(Ordering::SeqCst) == 1).then_some(()) },
    )
    .await;
    let refused = get(port, "x", "/").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(held.await.unwrap().status, StatusCode::OK);
    assert_eq!(
        get(port, "x", "/").await.status,
        StatusCode::OK,
        "room again"
    );
    proxy.shutdown(Duration::from_secs(1)).await;

    // max_retries: one retry in flight; a second failing request is not retried.
    let retry = pb::RetryPolicy {
        attempts: 1,
        retry_on: vec!["connect-failure".into()],
        ..Default::default()
    };
    let (proxy, port) = serve(
        cluster_of(
            vec![endpoint(dead, 1, "", ""), endpoint(slow.addr, 1, "", "")],
            |c| {
                c.circuit_breakers = Some(pb::CircuitBreakers {
                    max_retries: 1,
                    ..Default::default()
                });
            },
        ),
        Some(retry),
        "",
        "",
    )
    .await;
    // Round robin from the refusing endpoint: the first request is retried to the slow one.
    let retried = tokio::spawn(async move { get(port, "x", "/slow/1000").await });
    eventually("the retry in flight", Duration::from_secs(5), || async {
        (slow.hits.load(Ordering::SeqCst) == 3).then_some(())
    })
    .await;
    let second = get(port, "x", "/").await;
    assert_eq!(
        second.status,
        StatusCode::BAD_GATEWAY,
        "not retried: {}",
        second.body
    );
    assert_eq!(retried.await.unwrap().status, StatusCode::OK);
    proxy.shutdown(Duration::from_secs(1)).await;
    let text = recorder.render();
    for limit in ["max_requests", "max_retries"] {
        let line = format!("portico_agent_overflow_total{{cluster=\"c\",limit=\"{limit}\"}} 1");
        assert!(text.contains(&line), "{line} in\n{text}");
    }
}

#[tokio::test]
async fn local_endpoints_first_and_spill_over_when_too_few_are_healthy() {
    let mut local = Vec::new();
    let mut near = Vec::new();
    for i in 0..2 {
        local.push(Scripted::start(&format!("local{i}")).await);
        near.push(Scripted::start(&format!("near{i}")).await);
    }
    let far = Scripted::start("far").await;
    let mut endpoints: Vec<pb::Endpoint> = local
        .iter()
        .map(|u| endpoint(u.addr, 1, "eu", "eu-1"))
        .collect();
    endpoints.extend(near.iter().map(|u| endpoint(u.addr, 1, "eu", "eu-2")));
    endpoints.push(endpoint(far.addr, 1, "us", "us-1"));
    let (proxy, port) = serve(
        cluster_of(endpoints, |c| {
            checked(c);
            c.locality = Some(pb::LocalityPolicy {
                prefer_local: true,
                failover_threshold_percent: 70,
            });
        }),
        None,
        "eu",
        "eu-1",
    )
    .await;
    assert!(all_to(port, &["local0", "local1"], 40).await);
    // Half the zone down, below 70%: the zone takes 50/70 of the traffic, the region the rest.
    local[0].healthy.store(false, Ordering::SeqCst);
    eventually("spill to the region", Duration::from_secs(5), || async {
        let (counts, _) = spread(port, "/", 400, 8, |_| None).await;
        let zone = share(&counts, "local1", 400);
        let region = share(&counts, "near0", 400) + share(&counts, "near1", 400);
        let spilled = (zone - 5.0 / 7.0).abs() < 0.1
            && (region - 2.0 / 7.0).abs() < 0.1
            && !counts.contains_key("local0")
            && !counts.contains_key("far");
        spilled.then_some(())
    })
    .await;
    // The whole region down: everything to the rest of the world.
    for u in local.iter().chain(&near) {
        u.healthy.store(false, Ordering::SeqCst);
    }
    eventually("spill to the world", Duration::from_secs(5), || async {
        all_to(port, &["far"], 20).await.then_some(())
    })
    .await;
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_removed_endpoint_drains_its_in_flight_requests() {
    let a = Scripted::start("a").await;
    let b = Scripted::start("b").await;
    let both = vec![endpoint(a.addr, 1, "", ""), endpoint(b.addr, 1, "", "")];
    let (proxy, port) = serve(cluster_of(both, |_| {}), None, "", "").await;
    let proxy = Arc::new(proxy);
    // Round robin from a: the slow request lands there.
    let in_flight = tokio::spawn(async move { get(port, "x", "/slow/1000").await });
    eventually("a slow request on a", Duration::from_secs(5), || async {
        (a.hits.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let only_b = web(
        2,
        port,
        vec![cluster_of(vec![endpoint(b.addr, 1, "", "")], |_| {})],
        vec![route("all", prefix("/"), to("c"))],
    );
    proxy.apply(&only_b).await.unwrap();
    let draining = proxy.cluster_health()[0]
        .endpoints
        .iter()
        .find(|e| e.address == a.addr.to_string())
        .map(|e| e.state());
    assert_eq!(draining, Some(State::Draining));
    assert!(all_to(port, &["b"], 10).await, "no new request goes to a");
    let answer = in_flight.await.unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "a"));
    eventually("a drained", Duration::from_secs(5), || async {
        let gone = proxy.cluster_health()[0]
            .endpoints
            .iter()
            .all(|e| e.address != a.addr.to_string());
        gone.then_some(())
    })
    .await;
    Arc::try_unwrap(proxy)
        .ok()
        .unwrap()
        .shutdown(Duration::from_secs(1))
        .await;
}
