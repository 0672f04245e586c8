//! What a compile takes from the runtime before it, and what it rebuilds; and config fixtures
//! for the agent's other unit tests.

use http::{HeaderMap, Method};
use pb::{route_action, route_match};
use portico_api::pb::{ResourceKey, Update};

use super::*;

pub(crate) fn resource(name: &str, spec: Spec) -> Resource {
    Resource {
        name: name.into(),
        spec: Some(spec),
        ..Default::default()
    }
}

pub(crate) fn listener(name: &str, port: u32, table: &str) -> Resource {
    resource(
        name,
        Spec::Listener(pb::Listener {
            address: "127.0.0.1".into(),
            port,
            route_table: table.into(),
            ..Default::default()
        }),
    )
}

/// A table on host "*" with one prefix route per `(name, prefix)`, all to `cluster`.
pub(crate) fn table(name: &str, cluster: &str, routes: &[(&str, &str)]) -> Resource {
    let routes = routes
        .iter()
        .map(|(route, prefix)| pb::Route {
            name: route.to_string(),
            r#match: Some(pb::RouteMatch {
                path: Some(route_match::Path::Prefix(prefix.to_string())),
                ..Default::default()
            }),
            action: Some(pb::RouteAction {
                action: Some(route_action::Action::Cluster(cluster.into())),
            }),
            ..Default::default()
        })
        .collect();
    resource(
        name,
        Spec::RouteTable(pb::RouteTable {
            virtual_hosts: vec![pb::VirtualHost {
                domains: vec!["*".into()],
                routes,
                ..Default::default()
            }],
        }),
    )
}

/// A cluster of one endpoint, 127.0.0.1:`port`.
pub(crate) fn cluster(name: &str, port: u32) -> Resource {
    resource(
        name,
        Spec::Cluster(pb::Cluster {
            endpoints: vec![pb::Endpoint {
                address: "127.0.0.1".into(),
                port,
                ..Default::default()
            }],
            ..Default::default()
        }),
    )
}

/// Listener "a" (port 10001) on table "a" to cluster "ca", listener "b" (10002) on table "b"
/// to cluster "cb".
fn two_sites() -> ConfigSet {
    ConfigSet::default().with_update(Update {
        version: 1,
        full: true,
        upserts: vec![
            listener("a", 10001, "a"),
            listener("b", 10002, "b"),
            table("a", "ca", &[("a1", "/a1"), ("a2", "/a2")]),
            table("b", "cb", &[("b1", "/b1")]),
            cluster("ca", 8001),
            cluster("cb", 8002),
        ],
        ..Default::default()
    })
}

fn update(base: &ConfigSet, upserts: Vec<Resource>) -> ConfigSet {
    base.with_update(Update {
        version: base.version + 1,
        upserts,
        ..Default::default()
    })
}

fn compile(config: &ConfigSet, previous: &Runtime) -> Runtime {
    Runtime::compile(config, &NodeInfo::default(), previous, 1).unwrap()
}

fn site(runtime: &Runtime, port: u16) -> &Arc<ListenerRuntime> {
    &runtime.listeners[&SocketAddr::from(([127, 0, 0, 1], port))]
}

/// The name of the route that takes GET `path` on the listener at `port`.
fn route_for(runtime: &Runtime, port: u16, path: &str) -> Option<String> {
    let headers = HeaderMap::new();
    let request = router::RequestView {
        host: "any",
        path,
        query: None,
        method: &Method::GET,
        headers: &headers,
    };
    let (_, route) = site(runtime, port).routes.find(&request)?;
    Some(route.name.to_string())
}

fn upstream(runtime: &Runtime, name: &str) -> Arc<Upstream> {
    runtime.built.clusters[name].1.clone()
}

#[tokio::test]
async fn api_listeners_and_listeners_for_other_kinds_are_never_bound() {
    let mut api = listener("greeter.example.internal", 0, "a");
    let mut envoy = listener("for-envoy", 10003, "b");
    let mut both = listener("for-both", 10004, "b");
    if let Some(Spec::Listener(l)) = &mut api.spec {
        l.address.clear();
        l.protocol = pb::listener::Protocol::Api.into();
    }
    for (r, kinds) in [
        (&mut envoy, &["envoy"][..]),
        (&mut both, &["envoy", "portico"]),
    ] {
        if let Some(Spec::Listener(l)) = &mut r.spec {
            l.protocol = pb::listener::Protocol::Http.into();
            l.selector = Some(pb::AgentSelector {
                kinds: kinds.iter().map(|k| k.to_string()).collect(),
                ..Default::default()
            });
        }
    }
    let config = update(&two_sites(), vec![api, envoy, both]);
    let runtime = compile(&config, &Runtime::default());
    let mut bound: Vec<&str> = runtime.listeners.values().map(|l| &*l.conn.name).collect();
    bound.sort();
    assert_eq!(bound, ["a", "b", "for-both"]);
}

#[tokio::test]
async fn a_changed_table_is_rebuilt_and_the_untouched_one_kept() {
    let v1 = two_sites();
    let first = compile(&v1, &Runtime::default());
    let v2 = update(&v1, vec![table("a", "ca", &[("a1", "/a1"), ("a3", "/a3")])]);
    let second = compile(&v2, &first);

    assert!(Arc::ptr_eq(site(&first, 10002), site(&second, 10002)));
    assert!(Arc::ptr_eq(
        &site(&first, 10002).routes,
        &site(&second, 10002).routes
    ));
    assert!(!Arc::ptr_eq(
        &site(&first, 10001).routes,
        &site(&second, 10001).routes
    ));
    assert_eq!(route_for(&second, 10001, "/a3/x").as_deref(), Some("a3"));
    assert_eq!(route_for(&second, 10001, "/a2/x"), None);
    assert_eq!(route_for(&second, 10002, "/b1").as_deref(), Some("b1"));
    // The connection settings of the rebuilt listener did not change: only its routes did.
    assert_eq!(
        site(&first, 10001).conn.limits,
        site(&second, 10001).conn.limits
    );
}

#[tokio::test]
async fn a_changed_cluster_rebuilds_only_the_tables_that_forward_to_it() {
    let v1 = two_sites();
    let first = compile(&v1, &Runtime::default());
    let second = compile(&update(&v1, vec![cluster("ca", 9001)]), &first);

    assert!(!Arc::ptr_eq(
        &upstream(&first, "ca"),
        &upstream(&second, "ca")
    ));
    assert!(Arc::ptr_eq(
        &upstream(&first, "cb"),
        &upstream(&second, "cb")
    ));
    assert!(!Arc::ptr_eq(
        &site(&first, 10001).routes,
        &site(&second, 10001).routes
    ));
    assert!(Arc::ptr_eq(site(&first, 10002), site(&second, 10002)));
}

#[tokio::test]
async fn resources_sent_again_unchanged_are_reused() {
    let v1 = two_sites();
    let first = compile(&v1, &Runtime::default());
    // A full update brings new copies of the same resources.
    let again = ConfigSet::default().with_update(Update {
        version: 2,
        full: true,
        upserts: v1.resources.clone().into_iter().collect(),
        ..Default::default()
    });
    assert!(!Arc::ptr_eq(
        v1.resources.get_shared(Kind::RouteTable, "a").unwrap(),
        again.resources.get_shared(Kind::RouteTable, "a").unwrap()
    ));
    assert!(first.serves(&again));
    let second = compile(&again, &first);
    for port in [10001, 10002] {
        assert!(Arc::ptr_eq(site(&first, port), site(&second, port)));
    }
    assert!(Arc::ptr_eq(
        &upstream(&first, "ca"),
        &upstream(&second, "ca")
    ));
}

#[tokio::test]
async fn a_listener_change_keeps_its_route_table() {
    let v1 = two_sites();
    let first = compile(&v1, &Runtime::default());
    let second = compile(&update(&v1, vec![listener("a", 10003, "a")]), &first);

    assert_eq!(second.listeners.len(), 2);
    assert!(Arc::ptr_eq(
        &site(&first, 10001).routes,
        &site(&second, 10003).routes
    ));
    assert!(Arc::ptr_eq(site(&first, 10002), site(&second, 10002)));
}

#[tokio::test]
async fn a_removed_table_fails_even_when_its_listener_is_unchanged() {
    let v1 = two_sites();
    let first = compile(&v1, &Runtime::default());
    let v2 = v1.with_update(Update {
        version: 2,
        removals: vec![ResourceKey::new(Kind::RouteTable, "b")],
        ..Default::default()
    });
    let e = Runtime::compile(&v2, &NodeInfo::default(), &first, 1).unwrap_err();
    assert_eq!(
        (e.key.name.as_str(), e.field.as_str()),
        ("b", "route_table")
    );
}

#[tokio::test]
async fn only_an_equal_config_is_served_as_is() {
    let v1 = two_sites();
    let runtime = compile(&v1, &Runtime::default());
    let empty_diff = update(&v1, vec![]);
    assert!(runtime.serves(&empty_diff));
    let moved = runtime.at_version(empty_diff.version);
    assert_eq!(moved.version, 2);
    assert!(Arc::ptr_eq(&moved.built, &runtime.built));
    assert!(Arc::ptr_eq(site(&moved, 10001), site(&runtime, 10001)));

    assert!(!runtime.serves(&update(&v1, vec![cluster("cb", 8003)])));
    assert!(!runtime.serves(&v1.with_update(Update {
        version: 2,
        removals: vec![ResourceKey::new(Kind::Cluster, "cb")],
        ..Default::default()
    })));
}

fn tls_secret(name: &str, host: &str) -> Resource {
    let cert = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    resource(
        name,
        Spec::Secret(pb::Secret {
            secret: Some(pb::secret::Secret::Tls(pb::TlsSecret {
                certificate_chain: cert.cert.pem(),
                private_key: cert.signing_key.serialize_pem(),
            })),
        }),
    )
}

#[tokio::test]
async fn an_https_listener_is_rebuilt_when_its_certificate_changes() {
    let mut https = listener("a", 10001, "a");
    if let Some(Spec::Listener(l)) = &mut https.spec {
        l.protocol = pb::listener::Protocol::Https.into();
        l.tls = Some(pb::ListenerTls {
            certificates: vec![pb::SniCertificate {
                server_names: vec!["a.example".into()],
                secret: "cert".into(),
            }],
            ..Default::default()
        });
    }
    let v1 = update(
        &two_sites(),
        vec![
            https,
            tls_secret("cert", "a.example"),
            tls_secret("other", "b"),
        ],
    );
    let first = compile(&v1, &Runtime::default());
    let unrelated = compile(&update(&v1, vec![tls_secret("other", "c")]), &first);
    assert!(Arc::ptr_eq(site(&first, 10001), site(&unrelated, 10001)));

    let renewed = compile(
        &update(&v1, vec![tls_secret("cert", "a.example")]),
        &unrelated,
    );
    assert!(!Arc::ptr_eq(site(&unrelated, 10001), site(&renewed, 10001)));
    assert!(Arc::ptr_eq(
        &site(&unrelated, 10001).routes,
        &site(&renewed, 10001).routes
    ));
    assert!(Arc::ptr_eq(site(&unrelated, 10002), site(&renewed, 10002)));
}
