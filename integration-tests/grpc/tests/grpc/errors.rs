//! Statuses: an upstream's error status and trailers passed unchanged, deadlines, and every
//! answer the agent gives a gRPC call itself as the gRPC status it stands for.

use std::time::{Duration, Instant};

use futures::StreamExt;
use portico_api::pb::{self, policy};
use portico_grpc_tests::pb::Msg;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn upstream_statuses_and_their_trailers_pass_unchanged() {
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
    // Failing before any message: a trailers-only answer.
    let failing = Msg {
        fail_code: Code::NotFound as u32,
        ..msg("x")
    };
    let status = client.unary(failing).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "asked to fail");
    assert_eq!(status.metadata().get("x-detail").unwrap(), "kept");

    // Failing after two messages: the status comes in real trailers.
    let ask = Msg {
        count: 2,
        fail_code: Code::FailedPrecondition as u32,
        ..msg("s")
    };
    let mut stream = client.expand(ask).await.unwrap().into_inner();
    assert_eq!(stream.next().await.unwrap().unwrap().text, "s-0");
    assert_eq!(stream.next().await.unwrap().unwrap().text, "s-1");
    let status = stream.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "asked to fail");
    assert_eq!(status.metadata().get("x-detail").unwrap(), "kept");

    // By hand: the trailers as the upstream sent them.
    let path = format!("/{SERVICE}/Expand");
    let ask = Msg {
        count: 1,
        fail_code: Code::FailedPrecondition as u32,
        ..msg("t")
    };
    let raw = raw_call(port, &path, &ask, &[]).await;
    assert_eq!(raw.status, 200);
    let trailers = raw.trailers.expect("trailers");
    assert_eq!(trailers["grpc-status"], "9");
    assert_eq!(trailers["grpc-message"], "asked%20to%20fail");
    assert_eq!(trailers["x-detail"], "kept");
    assert_eq!(unframe(&raw.body).0.len(), 1);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn deadlines_end_calls_with_deadline_exceeded() {
    let up = EchoServer::start("up").await;
    let port = free_port();
    // The upstream does not learn the deadline: it is the gateway's to keep.
    let hidden = pb::Route {
        request_headers: Some(pb::HeaderTransform {
            remove: vec!["grpc-timeout".into()],
            ..Default::default()
        }),
        ..grpc_route("echo", SERVICE, "", "echo")
    };
    let mut slow_route = pb::Route {
        timeout: Some(duration(Duration::from_millis(300))),
        ..grpc_route("slow", SERVICE, "", "echo")
    };
    if let Some(m) = slow_route.r#match.as_mut() {
        m.headers = vec![header_exact("x-slow", "1")];
    }
    let cfg = gateway(
        1,
        port,
        vec![h2_cluster("echo", &[&up])],
        vec![slow_route, hidden],
    );
    let proxy = proxy_with(&cfg).await;

    // grpc-timeout before the answer's head.
    let slow = Msg {
        delay_ms: 10_000,
        ..msg("late")
    };
    let started = Instant::now();
    let raw = raw_call(
        port,
        &format!("/{SERVICE}/Unary"),
        &slow,
        &[("grpc-timeout", "300m")],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(raw.status, 200);
    assert!(raw.head_only, "a trailers-only answer");
    assert_eq!(raw.headers["grpc-status"], "4");
    assert_eq!(raw.headers["content-type"], "application/grpc");

    // grpc-timeout while the answer streams: the call ends with trailers saying so.
    let ask = Msg {
        count: 100,
        delay_ms: 100,
        ..msg("m")
    };
    let raw = raw_call(
        port,
        &format!("/{SERVICE}/Expand"),
        &ask,
        &[("grpc-timeout", "450m")],
    )
    .await;
    let (messages, _) = unframe(&raw.body);
    assert!(
        (1..20).contains(&messages.len()),
        "{} messages before the deadline",
        messages.len()
    );
    let trailers = raw.trailers.expect("trailers");
    assert_eq!(trailers["grpc-status"], "4");
    assert!(
        trailers["grpc-message"]
            .to_str()
            .unwrap()
            .contains("deadline exceeded"),
        "{trailers:?}"
    );

    // The route timeout, when it is the smaller of the two.
    let status = slow_call(port).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("upstream_timeout"), "{status:?}");
    let mut client = client(port).await;
    assert_eq!(
        client.unary(msg("fine")).await.unwrap().into_inner().text,
        "fine"
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

/// A call to the route whose timeout is 300ms, answered after 10s, with a client deadline of
/// 30s: only the gateway can end it early.
async fn slow_call(port: u16) -> tonic::Status {
    let raw = raw_call(
        port,
        &format!("/{SERVICE}/Unary"),
        &Msg {
            delay_ms: 10_000,
            ..msg("late")
        },
        &[("grpc-timeout", "30S"), ("x-slow", "1")],
    )
    .await;
    let code = raw.headers["grpc-status"]
        .to_str()
        .unwrap()
        .parse::<i32>()
        .unwrap();
    let message = raw.headers["grpc-message"]
        .to_str()
        .unwrap()
        .replace("%20", " ");
    tonic::Status::new(Code::from_i32(code), message)
}

fn policy_resource(name: &str, p: policy::Policy) -> portico_api::Resource {
    resource(name, pb::Policy { policy: Some(p) })
}

/// A route to `cluster` for every gRPC call, with `policies`.
fn guarded(name: &str, service: &str, cluster: &str, policies: &[&str]) -> pb::Route {
    pb::Route {
        policies: policies.iter().map(|p| p.to_string()).collect(),
        ..grpc_route(name, service, "", cluster)
    }
}

#[tokio::test]
async fn answers_the_agent_gives_itself_are_grpc_statuses() {
    let up = EchoServer::start("up").await;
    let held = EchoServer::start("held").await;
    let dead = refusing();
    let port = free_port();
    let limited = h2_cluster("limited", &[&held]).with(|c: &mut pb::Cluster| {
        c.circuit_breakers = Some(pb::CircuitBreakers {
            max_requests: 1,
            ..Default::default()
        });
    });
    let mut rate = pb::RateLimit {
        requests: 1,
        period: Some(duration(Duration::from_secs(60))),
        scope: pb::rate_limit::Scope::Local as i32,
        ..Default::default()
    };
    rate.burst = 0;
    let resources = vec![
        h2_cluster("echo", &[&up]),
        cluster("gone", &[dead.addr()]).with(|c: &mut pb::Cluster| {
            c.protocol = pb::cluster::UpstreamProtocol::Http2 as i32;
        }),
        limited,
        policy_resource(
            "keys",
            policy::Policy::ApiKeyAuth(pb::ApiKeyAuth::default()),
        ),
        policy_resource(
            "deny",
            policy::Policy::IpFilter(pb::IpFilter {
                deny: vec!["127.0.0.0/8".into(), "::1".into()],
                ..Default::default()
            }),
        ),
        policy_resource("rate", policy::Policy::RateLimit(rate)),
    ];
    let routes = vec![
        guarded("dead", "t.Dead", "gone", &[]),
        pb::Route {
            r#match: Some(pb::RouteMatch {
                grpc: Some(pb::GrpcMatch {
                    service: SERVICE.into(),
                    method: String::new(),
                }),
                headers: vec![header_exact("x-limited", "1")],
                ..Default::default()
            }),
            ..route("limited", None, to("limited"))
        },
        guarded("keys", "t.Keys", "echo", &["keys"]),
        guarded("deny", "t.Deny", "echo", &["deny"]),
        guarded("rate", "t.Rate", "echo", &["rate"]),
        grpc_route("echo", SERVICE, "Unary", "echo"),
    ];
    let proxy = proxy_with(&gateway(1, port, resources, routes)).await;
    let call = |service: &'static str| async move {
        let raw = raw_call(port, &format!("/{service}/Unary"), &msg("x"), &[]).await;
        assert_eq!(raw.status, 200, "{service}: gRPC answers are HTTP 200");
        assert!(raw.head_only, "{service}: a trailers-only answer");
        let code = raw.headers["grpc-status"].to_str().unwrap().to_string();
        let message = raw.headers["grpc-message"].to_str().unwrap().to_string();
        (code, message)
    };
    let cases = [
        (SERVICE, Code::Ok),
        ("t.Dead", Code::Unavailable),
        ("t.Keys", Code::Unauthenticated),
        ("t.Deny", Code::PermissionDenied),
        ("t.Rate", Code::Ok),
        ("t.Rate", Code::ResourceExhausted),
        ("t.Nothing", Code::Unimplemented),
    ];
    for (service, want) in cases {
        if want == Code::Ok {
            let mut client = client(port).await;
            let path_ok = match service {
                SERVICE => client.unary(msg("ok")).await.map(|_| ()),
                _ => {
                    let raw = raw_call(port, &format!("/{service}/Unary"), &msg("x"), &[]).await;
                    assert_eq!(raw.status, 200);
                    Ok(())
                }
            };
            path_ok.unwrap();
            continue;
        }
        let (code, message) = call(service).await;
        assert_eq!(code, (want as i32).to_string(), "{service}: {message}");
        assert!(message.contains("(request id "), "{service}: {message}");
    }
    // A method of the routed service the route does not take: no route.
    let mut generated = client(port).await;
    let status = generated
        .collect(futures::stream::iter([msg("a")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("no_route"), "{status:?}");

    // Overflow: one call in flight is the cluster's limit.
    let mut holder = client(port).await;
    let held_call = tokio::spawn(async move {
        let mut slow = tonic::Request::new(Msg {
            delay_ms: 3_000,
            ..msg("hold")
        });
        slow.metadata_mut().insert(
            "x-limited",
            tonic::metadata::MetadataValue::from_static("1"),
        );
        holder.unary(slow).await
    });
    let path = format!("/{SERVICE}/Unary");
    let overflowed = eventually(
        "a call refused at the cluster's limit",
        Duration::from_secs(5),
        || async {
            let raw = raw_call(port, &path, &msg("x"), &[("x-limited", "1")]).await;
            let code = raw.headers.get("grpc-status")?.to_str().ok()?.to_string();
            let message = raw.headers.get("grpc-message")?.to_str().ok()?.to_string();
            message.contains("overflow").then_some((code, message))
        },
    )
    .await;
    assert_eq!(overflowed.0, "14", "{}", overflowed.1);
    assert_eq!(
        held_call.await.unwrap().unwrap().into_inner().server,
        "held"
    );

    // A request head the agent refuses (a Host unlike :authority): INTERNAL, as gRPC maps 400.
    let raw = raw_call(
        port,
        &format!("/{SERVICE}/Unary"),
        &msg("x"),
        &[("host", "other.test")],
    )
    .await;
    assert_eq!(raw.headers["grpc-status"], "13");
    proxy.shutdown(Duration::from_secs(1)).await;
}
