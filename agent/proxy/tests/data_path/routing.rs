//! Routing through the real proxy: hosts, paths, methods, headers, query parameters, weighted
//! splits, redirects, fixed answers, header rules and path normalisation.
#![allow(clippy::unwrap_used)]

use crate::support::*;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use portico_api::pb;

#[tokio::test]
async fn requests_reach_the_upstream_of_their_host_path_method_header_and_query() {
    let (a, b, c) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    );
    let port = free_port();
    let mut post_only = route("writes", prefix("/api"), to("b"));
    post_only.r#match.as_mut().unwrap().methods = vec!["POST".into()];
    let mut canary = route("canary", prefix("/api"), to("c"));
    canary.r#match.as_mut().unwrap().headers = vec![header_exact("x-canary", "1")];
    let mut beta = route("beta", prefix("/api"), to("c"));
    beta.r#match.as_mut().unwrap().query_params = vec![query_present("beta")];
    let cfg = config(
        1,
        vec![
            listener("web", port, "rt"),
            cluster("a", &[a.addr]),
            cluster("b", &[b.addr]),
            cluster("c", &[c.addr]),
            route_table(
                "rt",
                vec![
                    vhost(
                        "shop",
                        &["shop.example"],
                        vec![
                            route("login", exact("/login"), to("b")),
                            post_only,
                            canary,
                            beta,
                            route("api", prefix("/api"), to("a")),
                        ],
                    ),
                    vhost(
                        "wild",
                        &["*.example"],
                        vec![route("all", prefix("/"), to("b"))],
                    ),
                    vhost(
                        "deeper",
                        &["*.eu.example"],
                        vec![route("all", prefix("/"), to("c"))],
                    ),
                    vhost("default", &["*"], vec![route("home", exact("/"), to("a"))]),
                ],
            ),
        ],
    );
    let proxy = proxy_with(&cfg).await;
    let cases = [
        ("GET", "shop.example", "/login", &[][..], "b"),
        ("GET", "shop.example:8080", "/api/items", &[], "a"),
        ("POST", "shop.example", "/api/items", &[], "b"),
        (
            "GET",
            "shop.example",
            "/api/items",
            &[("x-canary", "1")],
            "c",
        ),
        ("GET", "shop.example", "/api/items?beta", &[], "c"),
        ("GET", "SHOP.example", "/api", &[], "a"),
        ("GET", "m.example", "/anything", &[], "b"),
        ("GET", "fr.eu.example", "/anything", &[], "c"),
        ("GET", "other.org", "/", &[], "a"),
    ];
    for (method, host, target, headers, expected) in cases {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!("http://127.0.0.1:{port}{target}"))
            .header("host", host);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let answer = send(&client(), req.body(Full::default()).unwrap()).await;
        assert_eq!(answer.status, StatusCode::OK, "{method} {host}{target}");
        assert_eq!(answer.upstream(), expected, "{method} {host}{target}");
    }
    let missing = get(port, "other.org", "/nothing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let id = missing.headers["x-request-id"].to_str().unwrap();
    assert!(
        missing.body.contains(id),
        "404 body names the request id: {}",
        missing.body
    );
    proxy.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn weighted_clusters_split_within_five_percent() {
    let (stable, canary) = (
        Upstream::start("stable").await,
        Upstream::start("canary").await,
    );
    let port = free_port();
    let split = weighted(&[("stable", 80), ("canary", 20)]);
    let cfg = config(
        1,
        vec![
            listener("web", port, "rt"),
            cluster("stable", &[stable.addr]),
            cluster("canary", &[canary.addr]),
            route_table(
                "rt",
                vec![vhost("all", &["*"], vec![route("split", None, split)])],
            ),
        ],
    );
    let proxy = proxy_with(&cfg).await;
    let client = client();
    let total = 2000;
    for _ in 0..total {
        let req = Request::get(format!("http://127.0.0.1:{port}/"))
            .body(Full::default())
            .unwrap();
        assert_eq!(send(&client, req).await.status, StatusCode::OK);
    }
    let canary_share = canary.hits() as f64 / total as f64;
    assert!(
        (canary_share - 0.20).abs() <= 0.05,
        "canary got {canary_share}"
    );
    assert_eq!(stable.hits() + canary.hits(), total);
    proxy.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn redirects_and_direct_responses_are_answered_by_the_proxy() {
    let port = free_port();
    let to_https = redirect(pb::Redirect {
        scheme: "https".into(),
        status: 308,
        ..Default::default()
    });
    let moved = redirect(pb::Redirect {
        path: "/new".into(),
        ..Default::default()
    });
    let cfg = config(
        1,
        vec![
            listener("web", port, "rt"),
            route_table(
                "rt",
                vec![vhost(
                    "all",
                    &["*"],
                    vec![
                        route("secure", prefix("/secure"), to_https),
                        route("moved", exact("/old"), moved),
                        route("teapot", exact("/tea"), direct(418, "short and stout")),
                    ],
                )],
            ),
        ],
    );
    let proxy = proxy_with(&cfg).await;
    let secure = get(port, "shop.example:8080", "/secure/x?a=1").await;
    assert_eq!(secure.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        secure.headers["location"],
        "https://shop.example/secure/x?a=1"
    );
    let moved = get(port, "shop.example:8080", "/old").await;
    assert_eq!(moved.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(moved.headers["location"], "http://shop.example:8080/new");
    let tea = get(port, "x", "/tea").await;
    assert_eq!(tea.status.as_u16(), 418);
    assert_eq!(tea.body, "short and stout");
    assert_eq!(tea.headers["content-type"], "text/plain");
    proxy.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn header_rules_forwarding_headers_and_request_ids() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let mut r = route("api", prefix("/api"), to("up"));
    r.prefix_rewrite = "/v2".into();
    r.request_headers = Some(pb::HeaderTransform {
        set: vec![pb::HeaderValue {
            name: "x-env".into(),
            value: "prod".into(),
        }],
        remove: vec!["x-internal".into()],
        ..Default::default()
    });
    r.response_headers = Some(pb::HeaderTransform {
        add: vec![pb::HeaderValue {
            name: "x-served-by".into(),
            value: "portico".into(),
        }],
        ..Default::default()
    });
    let cfg = config(
        1,
        vec![
            listener("web", port, "rt"),
            cluster("up", &[up.addr]),
            route_table("rt", vec![vhost("all", &["*"], vec![r])]),
        ],
    );
    let proxy = proxy_with(&cfg).await;
    let req = Request::get(format!("http://127.0.0.1:{port}/api/items?q=1"))
        .header("host", "shop.example")
        .header("x-internal", "secret")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, x-hop-secret")
        .header("x-hop-secret", "1")
        .header("x-request-id", "given-id")
        .body(Full::default())
        .unwrap();
    let answer = send(&client(), req).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body.lines().nth(1), Some("GET /v2/items?q=1"));
    assert_eq!(answer.seen("x-env"), Some("prod"));
    assert_eq!(answer.seen("x-internal"), None);
    assert_eq!(answer.seen("x-hop-secret"), None);
    assert_eq!(answer.seen("connection"), None);
    assert_eq!(answer.seen("host"), Some("shop.example"));
    assert_eq!(
        answer.seen("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(answer.seen("x-forwarded-proto"), Some("http"));
    assert_eq!(answer.seen("x-forwarded-host"), Some("shop.example"));
    assert_eq!(answer.seen("x-request-id"), Some("given-id"));
    assert_eq!(answer.headers["x-request-id"], "given-id");
    assert_eq!(answer.headers["x-served-by"], "portico");
    assert!(
        !answer.headers.contains_key("x-hop"),
        "hop-by-hop response header removed"
    );

    let fresh = get(port, "shop.example", "/api/x").await;
    let id = fresh.headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(fresh.seen("x-request-id"), Some(id));
    proxy.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn normalised_paths_cannot_reach_a_route_through_another_prefix() {
    let (public, admin) = (
        Upstream::start("public").await,
        Upstream::start("admin").await,
    );
    let port = free_port();
    let l = listener("web", port, "rt").with(|l: &mut pb::Listener| l.merge_slashes = true);
    let cfg = config(
        1,
        vec![
            l,
            cluster("public", &[public.addr]),
            cluster("admin", &[admin.addr]),
            route_table(
                "rt",
                vec![vhost(
                    "all",
                    &["*"],
                    vec![
                        route("admin", prefix("/admin"), direct(403, "forbidden")),
                        route("public", prefix("/public"), to("public")),
                    ],
                )],
            ),
        ],
    );
    let proxy = proxy_with(&cfg).await;
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin/users",
        "/public//../admin",
        "//admin",
        "/%61dmin",
    ] {
        let answer = raw(
            port,
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            std::time::Duration::from_secs(5),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{target}: {answer}");
    }
    let ok = raw(
        port,
        b"GET /public/./a/../b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(
        ok.contains("GET /public/b\n"),
        "upstream gets the normalised path: {ok}"
    );
    assert_eq!(admin.hits(), 0);
    proxy.shutdown(std::time::Duration::from_secs(1)).await;
}
