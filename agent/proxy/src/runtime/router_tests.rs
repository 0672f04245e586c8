//! Table-driven tests of route table compilation and matching.

use super::*;
use http::HeaderValue;
use pb::{HeaderMatch, QueryParamMatch, RouteMatch, route_action};

fn route(name: &str, path: Option<route_match::Path>) -> pb::Route {
    pb::Route {
        name: name.into(),
        r#match: Some(RouteMatch {
            path,
            ..Default::default()
        }),
        action: Some(pb::RouteAction {
            action: Some(route_action::Action::DirectResponse(pb::DirectResponse {
                status: 200,
                body: name.into(),
                content_type: String::new(),
            })),
        }),
        ..Default::default()
    }
}

fn exact(p: &str) -> Option<route_match::Path> {
    Some(route_match::Path::Exact(p.into()))
}
fn prefix(p: &str) -> Option<route_match::Path> {
    Some(route_match::Path::Prefix(p.into()))
}
fn regex(p: &str) -> Option<route_match::Path> {
    Some(route_match::Path::Regex(p.into()))
}

fn vhost(name: &str, domains: &[&str], routes: Vec<pb::Route>) -> pb::VirtualHost {
    pb::VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
    }
}

fn table(hosts: Vec<pb::VirtualHost>) -> RouteTable {
    compile(
        "t",
        &pb::RouteTable {
            virtual_hosts: hosts,
        },
        &HashMap::new(),
    )
    .unwrap()
}

/// The "host/route" that takes the request, or None.
fn check(
    t: &RouteTable,
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Option<String> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut map = HeaderMap::new();
    for (n, v) in headers {
        map.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let view = RequestView {
        host,
        path,
        query,
        method: &method,
        headers: &map,
    };
    t.find(&view).map(|(h, r)| format!("{}/{}", h.name, r.name))
}

#[test]
fn hosts_resolve_exact_then_longest_wildcard_then_default() {
    let t = table(vec![
        vhost(
            "exact",
            &["shop.example.com", "Other.Example:8080"],
            vec![route("r", None)],
        ),
        vhost("wide", &["*.example.com"], vec![route("r", None)]),
        vhost("narrow", &["*.api.example.com"], vec![route("r", None)]),
        vhost("default", &["*"], vec![route("r", None)]),
    ]);
    let cases = [
        ("shop.example.com", "exact/r"),
        ("other.example", "exact/r"),
        ("x.example.com", "wide/r"),
        ("v1.api.example.com", "narrow/r"),
        ("api.example.com", "wide/r"),
        ("example.com", "default/r"),
        ("elsewhere.org", "default/r"),
    ];
    for (host, expected) in cases {
        assert_eq!(
            check(&t, "GET", host, "/", &[]).as_deref(),
            Some(expected),
            "{host}"
        );
    }
    let no_default = table(vec![vhost("only", &["a.example"], vec![route("r", None)])]);
    assert_eq!(check(&no_default, "GET", "b.example", "/", &[]), None);
}

#[test]
fn paths_match_exact_prefix_and_regex_first_match_wins() {
    let t = table(vec![vhost(
        "h",
        &["*"],
        vec![
            route("exact-login", exact("/login")),
            route("api-v2", prefix("/api/v2")),
            route("api", prefix("/api")),
            route("slash-prefix", prefix("/static/")),
            route("item", regex("/items/[0-9]+")),
            route("shadowed", exact("/api/v2/x")),
            route("root", prefix("/")),
        ],
    )]);
    let cases = [
        ("/login", "h/exact-login"),
        ("/login/x", "h/root"),
        ("/api", "h/api"),
        ("/api/", "h/api"),
        ("/api/users", "h/api"),
        ("/apix", "h/root"),
        ("/api/v2", "h/api-v2"),
        ("/api/v2/x", "h/api-v2"),
        ("/api/v20", "h/api"),
        ("/static/a.css", "h/slash-prefix"),
        ("/static", "h/root"),
        ("/items/42", "h/item"),
        ("/items/42/x", "h/root"),
        ("/items/abc", "h/root"),
        ("/", "h/root"),
    ];
    for (path, expected) in cases {
        assert_eq!(
            check(&t, "GET", "any", path, &[]).as_deref(),
            Some(expected),
            "{path}"
        );
    }
}

type Headers<'a> = &'a [(&'a str, &'a str)];

#[test]
fn methods_headers_and_query_params_narrow_a_match() {
    let mut post_only = route("post", prefix("/x"));
    post_only.r#match.as_mut().unwrap().methods = vec!["post".into(), "PUT".into()];
    let mut canary = route("canary", prefix("/x"));
    canary.r#match.as_mut().unwrap().headers = vec![HeaderMatch {
        name: "X-Canary".into(),
        value: Some(header_match::Value::Exact("yes".into())),
        invert: false,
    }];
    let mut not_bot = route("not-bot", prefix("/x"));
    not_bot.r#match.as_mut().unwrap().headers = vec![HeaderMatch {
        name: "user-agent".into(),
        value: Some(header_match::Value::Regex(".*bot.*".into())),
        invert: true,
    }];
    let mut beta = route("beta", prefix("/q"));
    beta.r#match.as_mut().unwrap().query_params = vec![QueryParamMatch {
        name: "beta".into(),
        value: Some(query_param_match::Value::Exact("on now".into())),
    }];
    let mut has_id = route("has-id", prefix("/q"));
    has_id.r#match.as_mut().unwrap().query_params = vec![QueryParamMatch {
        name: "id".into(),
        value: Some(query_param_match::Value::Present(true)),
    }];
    let t = table(vec![vhost(
        "h",
        &["*"],
        vec![
            post_only,
            canary,
            not_bot,
            beta,
            has_id,
            route("fallback", None),
        ],
    )]);
    let cases: &[(&str, &str, Headers, &str)] = &[
        ("POST", "/x", &[], "h/post"),
        ("PUT", "/x/1", &[], "h/post"),
        ("GET", "/x", &[("x-canary", "yes")], "h/canary"),
        (
            "GET",
            "/x",
            &[("x-canary", "no"), ("user-agent", "curl")],
            "h/not-bot",
        ),
        ("GET", "/x", &[("user-agent", "googlebot/2")], "h/fallback"),
        ("GET", "/x", &[], "h/not-bot"),
        ("GET", "/q?beta=on%20now", &[], "h/beta"),
        ("GET", "/q?a=1&beta=on+now", &[], "h/beta"),
        ("GET", "/q?beta=off&id", &[], "h/has-id"),
        ("GET", "/q?beta=off", &[], "h/fallback"),
    ];
    for (method, target, headers, expected) in cases {
        assert_eq!(
            check(&t, method, "any", target, headers).as_deref(),
            Some(*expected),
            "{method} {target} {headers:?}"
        );
    }
}

#[test]
fn bad_routes_fail_to_compile_with_their_field() {
    let bad_regex = vec![vhost(
        "h",
        &["*"],
        vec![route("ok", None), route("bad", regex("("))],
    )];
    let mut missing_cluster = route("c", None);
    missing_cluster.action = Some(pb::RouteAction {
        action: Some(route_action::Action::Cluster("nope".into())),
    });
    let mut bad_redirect = route("r", None);
    bad_redirect.action = Some(pb::RouteAction {
        action: Some(route_action::Action::Redirect(pb::Redirect {
            status: 200,
            ..Default::default()
        })),
    });
    let cases = [
        (bad_regex, "virtual_hosts[0].routes[1].match.regex"),
        (
            vec![vhost("h", &["*"], vec![missing_cluster])],
            "virtual_hosts[0].routes[0].action.cluster",
        ),
        (
            vec![vhost("h", &["*"], vec![bad_redirect])],
            "virtual_hosts[0].routes[0].action.redirect.status",
        ),
        (
            vec![vhost("h", &["*x.com"], vec![])],
            "virtual_hosts[0].domains",
        ),
    ];
    for (hosts, field) in cases {
        let e = compile(
            "t",
            &pb::RouteTable {
                virtual_hosts: hosts,
            },
            &HashMap::new(),
        )
        .unwrap_err();
        assert_eq!(e.field, field, "{e}");
    }
}

#[test]
fn candidates_do_not_grow_with_unrelated_routes() {
    let routes: Vec<pb::Route> = (0..10_000)
        .map(|i| route(&format!("r{i}"), prefix(&format!("/svc{i}"))))
        .chain((0..1_000).map(|i| route(&format!("e{i}"), exact(&format!("/e/{i}")))))
        .collect();
    let t = table(vec![vhost("h", &["*"], routes)]);
    let host = t.virtual_host("x").unwrap();
    let mut candidates = Vec::new();
    host.index.candidates("/svc9999/a/b", &mut candidates);
    assert_eq!(candidates, [9999]);
    candidates.clear();
    host.index.candidates("/e/7", &mut candidates);
    assert_eq!(candidates, [10_007]);
    assert_eq!(
        check(&t, "GET", "x", "/svc5000/x", &[]).as_deref(),
        Some("h/r5000")
    );
}

#[test]
fn ports_are_stripped_from_hosts() {
    let cases = [
        ("shop.example:8443", "shop.example"),
        ("shop.example", "shop.example"),
        ("[::1]:80", "[::1]"),
        ("[::1]", "[::1]"),
        ("::1", "::1"),
        ("a:b", "a:b"),
    ];
    for (host, expected) in cases {
        assert_eq!(strip_port(host), expected, "{host}");
    }
}

#[test]
fn recompile_keeps_unchanged_routes_and_their_index() {
    let spec = |routes: Vec<pb::Route>| pb::RouteTable {
        virtual_hosts: vec![vhost("h", &["*"], routes)],
    };
    let routes = |third: pb::Route| {
        vec![
            route("r0", prefix("/r0")),
            route("r1", exact("/r1")),
            third,
            route("r3", regex("/r3/[0-9]+")),
        ]
    };
    let v1 = spec(routes(route("r2", prefix("/r2"))));
    let first = compile("t", &v1, &HashMap::new()).unwrap();
    let recompile_to = |next: &pb::RouteTable| {
        recompile(
            "t",
            next,
            (&HashMap::new(), &Default::default()),
            Some((&v1, &first)),
        )
        .unwrap()
    };
    let host = |t: &RouteTable| t.hosts[0].routes.clone();
    let index = |t: &RouteTable| t.hosts[0].index.clone();

    // A renamed route: the others and the index are kept.
    let renamed = recompile_to(&spec(routes(route("r2-new", prefix("/r2")))));
    for i in [0, 1, 3] {
        assert!(Arc::ptr_eq(&host(&first)[i], &host(&renamed)[i]), "{i}");
    }
    assert!(!Arc::ptr_eq(&host(&first)[2], &host(&renamed)[2]));
    assert!(Arc::ptr_eq(&index(&first), &index(&renamed)));
    assert_eq!(
        check(&renamed, "GET", "x", "/r2/a", &[]).as_deref(),
        Some("h/r2-new")
    );

    // A moved route: the index is rebuilt.
    let moved = recompile_to(&spec(routes(route("r2", prefix("/elsewhere")))));
    assert!(Arc::ptr_eq(&host(&first)[0], &host(&moved)[0]));
    assert!(!Arc::ptr_eq(&index(&first), &index(&moved)));
    assert_eq!(check(&moved, "GET", "x", "/r2/a", &[]), None);
    assert_eq!(
        check(&moved, "GET", "x", "/elsewhere", &[]).as_deref(),
        Some("h/r2")
    );
    assert_eq!(
        check(&moved, "GET", "x", "/r3/7", &[]).as_deref(),
        Some("h/r3")
    );

    // A route inserted in front shifts the rest: nothing is taken, all still route.
    let mut shifted = vec![route("new", exact("/new"))];
    shifted.extend(routes(route("r2", prefix("/r2"))));
    let shifted = recompile_to(&spec(shifted));
    assert!(!Arc::ptr_eq(&host(&first)[0], &host(&shifted)[1]));
    for (path, want) in [("/new", "h/new"), ("/r0/x", "h/r0"), ("/r1", "h/r1")] {
        assert_eq!(
            check(&shifted, "GET", "x", path, &[]).as_deref(),
            Some(want)
        );
    }
}

#[test]
fn prefix_keys_are_looked_up_at_every_slash() {
    let t = table(vec![vhost(
        "h",
        &["*"],
        vec![
            route("deep", prefix("/a/b/c")),
            route("slash", prefix("/a/")),
            route("root", prefix("/")),
            route("star", prefix("*")),
        ],
    )]);
    let cases = [
        ("/a/b/c/d", Some("h/deep")),
        ("/a/b/c", Some("h/deep")),
        ("/a/b/cd", Some("h/slash")),
        ("/a/b", Some("h/slash")),
        ("/a", Some("h/root")),
        ("/", Some("h/root")),
        ("*", Some("h/star")),
    ];
    for (path, want) in cases {
        assert_eq!(check(&t, "GET", "x", path, &[]).as_deref(), want, "{path}");
    }
}

/// Route matching through the index picks what checking every route in order picks.
mod properties {
    use super::*;
    use portico_test_support::fuzz::CASES;
    use proptest::prelude::*;

    const SEGMENTS: &[&str] = &["a", "b", "a.b", "", "ab"];
    const REGEXES: &[&str] = &["/a.*", "/[ab]/b", "/a/?", ".*b", "/(a|b)+"];

    fn path() -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(SEGMENTS), 0..4)
            .prop_map(|s| format!("/{}", s.join("/")))
    }

    fn path_match() -> impl Strategy<Value = Option<route_match::Path>> {
        prop_oneof![
            Just(None),
            path().prop_map(|p| exact(&p)),
            path().prop_map(|p| prefix(&p)),
            proptest::sample::select(REGEXES).prop_map(regex),
        ]
    }

    /// A route: a path condition, maybe a method and a header condition.
    fn spec_route() -> impl Strategy<Value = (Option<route_match::Path>, bool, Option<bool>)> {
        (
            path_match(),
            any::<bool>(),
            proptest::option::of(any::<bool>()),
        )
    }

    fn compile_routes(specs: &[(Option<route_match::Path>, bool, Option<bool>)]) -> Vec<pb::Route> {
        specs
            .iter()
            .enumerate()
            .map(|(i, (path, get_only, header))| {
                let mut r = route(&i.to_string(), path.clone());
                let m = r.r#match.get_or_insert_default();
                if *get_only {
                    m.methods = vec!["GET".into()];
                }
                if let Some(invert) = header {
                    m.headers = vec![HeaderMatch {
                        name: "x-h".into(),
                        value: Some(header_match::Value::Exact("1".into())),
                        invert: *invert,
                    }];
                }
                r
            })
            .collect()
    }

    /// The first route, in order, whose conditions all hold: matching without the index.
    fn linear(specs: &[pb::Route], host: &VirtualHost, req: &RequestView<'_>) -> Option<String> {
        let mut query = None;
        specs.iter().zip(&host.routes).find_map(|(spec, route)| {
            let holds = match spec.r#match.as_ref().and_then(|m| m.path.as_ref()) {
                None => true,
                Some(route_match::Path::Exact(p)) => req.path == p,
                Some(route_match::Path::Prefix(p)) => prefix_holds(p, req.path),
                Some(route_match::Path::Regex(re)) => {
                    anchored(re).is_ok_and(|r| r.is_match(req.path))
                }
            };
            (holds && route.matches(req, &mut query)).then(|| route.name.to_string())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn the_index_finds_what_checking_every_route_finds(
            specs in proptest::collection::vec(spec_route(), 0..5),
            requests in proptest::collection::vec((path(), any::<bool>(), 0u8..3), 1..4),
        ) {
            let routes = compile_routes(&specs);
            let t = table(vec![vhost("all", &["*"], routes.clone())]);
            let host = t.virtual_host("any.example").expect("the default host");
            for (path, get, header) in requests {
                let method = if get { Method::GET } else { Method::POST };
                let mut headers = HeaderMap::new();
                if header > 0 {
                    headers.insert("x-h", HeaderValue::from_static(if header == 1 { "1" } else { "2" }));
                }
                let req = RequestView { host: "any.example", path: &path, query: None, method: &method, headers: &headers };
                let found = t.find(&req).map(|(_, r)| r.name.to_string());
                prop_assert_eq!(&found, &linear(&routes, host, &req), "{}", path);
                prop_assert_eq!(found, t.find(&req).map(|(_, r)| r.name.to_string()));
            }
        }
    }
}

fn grpc(name: &str, service: &str, method: &str) -> pb::Route {
    let mut r = route(name, None);
    if let Some(m) = r.r#match.as_mut() {
        m.grpc = Some(pb::GrpcMatch {
            service: service.into(),
            method: method.into(),
        });
    }
    r
}

#[test]
fn grpc_matches_route_by_service_and_method() {
    let t = table(vec![vhost(
        "h",
        &["*"],
        vec![
            grpc("get", "pkg.v1.Users", "Get"),
            grpc("users", "pkg.v1.Users", ""),
            grpc("watch", "", "Watch"),
            route("rest", prefix("/")),
        ],
    )]);
    for (path, want) in [
        ("/pkg.v1.Users/Get", "h/get"),
        ("/pkg.v1.Users/List", "h/users"),
        ("/pkg.v1.Users/Watch", "h/users"),
        ("/other.Svc/Watch", "h/watch"),
        ("/other.Svc/Watcher", "h/rest"),
        ("/pkg.v1.Users", "h/rest"),
        ("/pkg.v1.UsersX/Get", "h/rest"),
    ] {
        assert_eq!(
            check(&t, "POST", "x", path, &[]).as_deref(),
            Some(want),
            "{path}"
        );
    }
    let mut both = grpc("both", "a.B", "C");
    if let Some(m) = both.r#match.as_mut() {
        m.path = exact("/x");
    }
    let refused = compile(
        "t",
        &pb::RouteTable {
            virtual_hosts: vec![vhost("h", &["*"], vec![both])],
        },
        &HashMap::new(),
    );
    assert!(refused.is_err());
}
