//! References with field paths, redaction of secret material, and reachability for scoping.

use portico_api::file;
use portico_api::pb::{resource::Spec, secret};
use portico_api::reference::{REDACTED, reachable, redacted, references};
use portico_api::{Kind, ResourceKey, ResourceSet};

use crate::fixtures::{gateway_with, pems};

fn get(set: &ResourceSet, kind: Kind, name: &str) -> portico_api::Resource {
    set.get(kind, name).cloned().expect("fixture resource")
}

/// The fixtures, with the gateway resources that refer to policies and consumers.
fn fixtures() -> ResourceSet {
    gateway_with("")
}

/// Checks the references of one fixture resource as "Kind/name at field" lines.
fn check(kind: Kind, name: &str, expected: &[&str]) {
    let set = fixtures();
    let got: Vec<String> = references(&get(&set, kind, name))
        .iter()
        .map(|r| format!("{} at {}", r.target, r.field))
        .collect();
    assert_eq!(got, expected, "references of {kind}/{name}");
}

#[test]
fn references_name_target_and_field_for_every_kind() {
    check(
        Kind::Listener,
        "web",
        &[
            "RouteTable/shop at route_table",
            "Secret/web-cert at tls.certificates[0].secret",
        ],
    );
    check(
        Kind::Listener,
        "gateway",
        &[
            "RouteTable/gateway at route_table",
            "Policy/auth at policies[0]",
            "Policy/limit at policies[1]",
        ],
    );
    check(
        Kind::RouteTable,
        "shop",
        &[
            "Cluster/cart at virtual_hosts[0].routes[0].action.cluster",
            "Cluster/cart at virtual_hosts[0].routes[1].action.weighted_clusters.clusters[0].cluster",
            "Cluster/catalog at virtual_hosts[0].routes[1].action.weighted_clusters.clusters[1].cluster",
            "Cluster/catalog at virtual_hosts[0].routes[2].action.cluster",
        ],
    );
    check(
        Kind::RouteTable,
        "gateway",
        &[
            "Cluster/cart at virtual_hosts[0].routes[0].action.cluster",
            "Policy/cors at virtual_hosts[0].routes[0].policies[0]",
            "Policy/quota at virtual_hosts[0].routes[0].policies[1]",
            "Cluster/catalog at virtual_hosts[0].routes[1].action.cluster",
            "Policy/jwt at virtual_hosts[0].routes[1].policies[0]",
            "Policy/ip-filter at virtual_hosts[0].routes[1].policies[1]",
            "Policy/validation at virtual_hosts[0].routes[1].policies[2]",
            "Policy/headers at virtual_hosts[0].routes[1].policies[3]",
            "Policy/gzip at virtual_hosts[0].routes[1].policies[4]",
        ],
    );
    check(
        Kind::Cluster,
        "cart",
        &[
            "Secret/upstream-ca at tls.ca_secret",
            "Secret/client-cert at tls.client_certificate_secret",
        ],
    );
    check(Kind::Cluster, "catalog", &[]);
    check(
        Kind::Policy,
        "auth",
        &["Consumer/alice at api_key_auth.consumers[0]"],
    );
    check(
        Kind::Policy,
        "jwt",
        &["Consumer/bob at jwt_auth.consumers[0]"],
    );
    check(Kind::Policy, "limit", &[]);
    check(Kind::Consumer, "alice", &[]);
    check(Kind::Secret, "web-cert", &[]);
}

#[test]
fn redaction_hides_keys_and_opaque_values_but_keeps_chains() {
    let set = fixtures();
    let tls = redacted(&get(&set, Kind::Secret, "web-cert"));
    let Some(Spec::Secret(s)) = &tls.spec else {
        panic!("secret spec")
    };
    let Some(secret::Secret::Tls(t)) = &s.secret else {
        panic!("tls secret")
    };
    assert_eq!(t.private_key, REDACTED);
    assert_eq!(t.certificate_chain, pems().web_chain);

    let opaque = redacted(&get(&set, Kind::Secret, "token"));
    let rendered = file::to_yaml(&[opaque]).expect("render");
    assert!(
        rendered.contains(REDACTED) && !rendered.contains("s3cr3t"),
        "{rendered}"
    );

    let ca = get(&set, Kind::Secret, "upstream-ca");
    assert_eq!(redacted(&ca), ca, "no key: nothing to hide");
    let cluster = get(&set, Kind::Cluster, "cart");
    assert_eq!(redacted(&cluster), cluster);
}

#[test]
fn reachable_follows_references_transitively() {
    let set = fixtures();
    let keys = |s: &ResourceSet| s.iter().map(|r| r.key().to_string()).collect::<Vec<_>>();

    let from_cluster = reachable(&set, [ResourceKey::new(Kind::Cluster, "cart")]);
    assert_eq!(
        keys(&from_cluster),
        ["Cluster/cart", "Secret/client-cert", "Secret/upstream-ca"]
    );

    let from_plain = reachable(&set, [ResourceKey::new(Kind::Listener, "plain")]);
    // Not web-cert: only the web listeners reach it.
    assert_eq!(
        keys(&from_plain),
        [
            "Listener/plain",
            "RouteTable/shop",
            "Cluster/cart",
            "Cluster/catalog",
            "Secret/client-cert",
            "Secret/upstream-ca",
        ]
    );

    let from_gateway = reachable(&set, [ResourceKey::new(Kind::Listener, "gateway")]);
    // Consumers through the policies that name them, on the listener and on routes.
    assert_eq!(
        keys(&from_gateway),
        [
            "Listener/gateway",
            "RouteTable/gateway",
            "Cluster/cart",
            "Cluster/catalog",
            "Policy/auth",
            "Policy/cors",
            "Policy/gzip",
            "Policy/headers",
            "Policy/ip-filter",
            "Policy/jwt",
            "Policy/limit",
            "Policy/quota",
            "Policy/validation",
            "Consumer/alice",
            "Consumer/bob",
            "Secret/client-cert",
            "Secret/upstream-ca",
        ]
    );

    let missing = reachable(&set, [ResourceKey::new(Kind::Listener, "nope")]);
    assert!(missing.is_empty());
}
