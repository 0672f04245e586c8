//! References between resources, and applies that add and delete.

use portico_api::validate::validate_apply;
use portico_api::{Kind, ResourceKey, ResourceSet};

use super::{cases, refused_cases};
use crate::fixtures::{assert_errors, gateway_with, lines, parse, pems, tls_secret, valid};

#[test]
fn references_resolve_to_fitting_resources() {
    let p = pems();
    cases(&[
        (
            "kind: RouteTable\nname: shop\nspec:\n  virtual_hosts:\n    - domains: [a.com]\n      routes:\n        - {action: {cluster: cart}}\n        - {action: {weighted_clusters: {clusters: [{cluster: x, weight: 1}]}}}\n        - {action: {cluster: cart2}}\n",
            &[
                "RouteTable/shop: virtual_hosts[0].routes[1].action.weighted_clusters.clusters[0].cluster: cluster \"x\" does not exist",
                "RouteTable/shop: virtual_hosts[0].routes[2].action.cluster: cluster \"cart2\" does not exist",
            ],
        ),
        (
            "kind: Listener\nname: web-us\nspec: {port: 443, protocol: HTTPS, route_table: shop, selector: {regions: [us]}, tls: {certificates: [{secret: upstream-ca}, {secret: none}]}}\n",
            &[
                "Listener/web-us: tls.certificates[0].secret: secret \"upstream-ca\" has no private key",
                "Listener/web-us: tls.certificates[1].secret: secret \"none\" does not exist",
            ],
        ),
        (
            "kind: Cluster\nname: cart\nspec: {tls: {enabled: true, ca_secret: upstream-ca, client_certificate_secret: upstream-ca}}\n",
            &[
                "Cluster/cart: tls.client_certificate_secret: secret \"upstream-ca\" has no private key",
            ],
        ),
        // A full pair can serve as a CA bundle too.
        (
            "kind: Cluster\nname: cart\nspec: {tls: {enabled: true, ca_secret: client-cert}}\n",
            &[],
        ),
        (
            &tls_secret("upstream-ca", &p.ca_chain, &p.other_key),
            &["Secret/upstream-ca: tls.private_key: private key does not match"],
        ),
    ]);
    // References to and from the gateway resources.
    refused_cases(&[
        (
            "kind: Listener\nname: plain\nspec: {port: 80, protocol: HTTP, route_table: nope, policies: [auth, gone]}\n",
            &[
                "Listener/plain: route_table: route table \"nope\" does not exist",
                "Listener/plain: policies[1]: policy \"gone\" does not exist",
            ],
        ),
        (
            "kind: RouteTable\nname: shop\nspec:\n  virtual_hosts:\n    - domains: [a.com]\n      routes:\n        - {action: {cluster: cart}, policies: [auth, y]}\n",
            &[
                "RouteTable/shop: virtual_hosts[0].routes[0].policies[1]: policy \"y\" does not exist",
            ],
        ),
        (
            "kind: Policy\nname: jwt\nspec: {jwt_auth: {issuer: i, jwks: '{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}', consumers: [bob, eve]}}\n",
            &["Policy/jwt: jwt_auth.consumers[1]: consumer \"eve\" does not exist"],
        ),
        (
            "kind: Policy\nname: jwt\nspec: {jwt_auth: {issuer: i, jwks_secret: token}}\n---\nkind: Secret\nname: token\nspec: {opaque: '{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-521\", \"x\": \"AA\", \"y\": \"AA\"}]}'}\n",
            &[
                "Policy/jwt: jwt_auth.jwks_secret: secret \"token\": keys[0].crv: unsupported curve \"P-521\"",
            ],
        ),
        (
            "kind: Policy\nname: jwt\nspec: {jwt_auth: {issuer: i, jwks_secret: web-cert}}\n",
            &["Policy/jwt: jwt_auth.jwks_secret: secret \"web-cert\" is not an opaque secret"],
        ),
        (
            "kind: Policy\nname: jwt\nspec: {jwt_auth: {issuer: i, jwks_secret: nothing}}\n",
            &["Policy/jwt: jwt_auth.jwks_secret: secret \"nothing\" does not exist"],
        ),
        (
            "kind: Listener\nname: web-us\nspec: {port: 443, protocol: HTTPS, route_table: shop, selector: {regions: [us]}, tls: {certificates: [{secret: token}]}}\n",
            &["Listener/web-us: tls.certificates[0].secret: secret \"token\" is not a tls secret"],
        ),
        (
            "kind: Cluster\nname: cart\nspec: {tls: {enabled: true, ca_secret: token}}\n",
            &["Cluster/cart: tls.ca_secret: secret \"token\" is not a tls secret"],
        ),
    ]);
}

#[test]
fn apply_rules() {
    let stored: ResourceSet = valid().into_iter().collect();
    let key = |kind, name: &str| ResourceKey::new(kind, name);
    let spare = parse("kind: Cluster\nname: spare\nspec: {}\n");

    let result = validate_apply(&stored, &spare, &[key(Kind::Secret, "upstream-ca")]);
    let applied = result.expect_err("upstream-ca is still referenced by Cluster/cart");
    assert_errors(
        "delete upstream-ca",
        &applied,
        &["Secret/upstream-ca: cannot delete: referenced by Cluster/cart at tls.ca_secret"],
    );

    let errors =
        validate_apply(&stored, &[], &[key(Kind::Cluster, "cart")]).expect_err("cart is in use");
    assert_errors(
        "delete cart",
        &errors,
        &[
            "Cluster/cart: cannot delete: referenced by RouteTable/shop at virtual_hosts[0].routes[0].action.cluster",
            "Cluster/cart: cannot delete: referenced by RouteTable/shop at virtual_hosts[0].routes[1].action.weighted_clusters.clusters[0].cluster",
        ],
    );

    // Dropping the references in the same apply makes the deletion fine.
    let cart = parse("kind: Cluster\nname: cart\nspec: {endpoints: [{address: a, port: 1}]}\n");
    let secrets = [
        key(Kind::Secret, "upstream-ca"),
        key(Kind::Secret, "client-cert"),
    ];
    let result = validate_apply(&stored, &cart, &secrets).map_err(|e| lines(&e));
    let result = result.expect("secrets no longer used");
    assert!(!result.contains(Kind::Secret, "upstream-ca"));

    let upserts = [spare.clone(), spare.clone()].concat();
    let errors = validate_apply(&stored, &upserts, &[]).expect_err("spare twice");
    assert_errors(
        "spare twice",
        &errors,
        &["Cluster/spare: defined more than once in this apply"],
    );

    let errors = validate_apply(&stored, &spare, &[key(Kind::Cluster, "spare")]).expect_err("both");
    assert_errors(
        "apply and delete",
        &errors,
        &["Cluster/spare: both applied and deleted in this apply"],
    );

    let bad =
        parse("kind: Listener\nname: plain\nspec: {port: 80, protocol: HTTP, route_table: gone}\n");
    let errors = validate_apply(&stored, &bad, &[]).expect_err("dangling");
    assert_errors(
        "dangling",
        &errors,
        &["Listener/plain: route_table: route table \"gone\" does not exist"],
    );

    // Rules about one resource alone judge what is applied, not what is stored.
    let odd = "kind: Listener\nname: odd\nspec: {port: 0, protocol: HTTP, route_table: shop}\n";
    let mut odd_stored = stored.clone();
    odd_stored.insert(parse(odd).remove(0));
    validate_apply(&odd_stored, &spare, &[]).expect("stored resources are not re-judged alone");
    let errors = validate_apply(&stored, &parse(odd), &[]).expect_err("port 0");
    assert_errors(
        "port 0",
        &errors,
        &["Listener/odd: port: port 0 is not in 1-65535"],
    );

    let result =
        validate_apply(&stored, &spare, &[key(Kind::Listener, "plain")]).expect("valid apply");
    assert!(result.contains(Kind::Cluster, "spare"));
    assert!(!result.contains(Kind::Listener, "plain"));
    assert_eq!(result.len(), stored.len());
}

#[test]
fn refusals_judge_what_is_applied_not_what_is_stored() {
    // Stored before agents were known not to enforce it, e.g. by an older control plane.
    let h2 = "kind: Cluster\nname: h2\nspec: {protocol: HTTP2, circuit_breakers: {max_connections: 10}}\n";
    let stored = gateway_with(h2);
    let spare = parse("kind: Cluster\nname: spare\nspec: {}\n");
    let result = validate_apply(&stored, &spare, &[]).map_err(|e| lines(&e));
    assert!(
        result
            .expect("unrelated apply")
            .contains(Kind::Cluster, "spare")
    );

    let errors =
        validate_apply(&stored, &parse(h2), &[]).expect_err("an HTTP2 connection limit is refused");
    assert_errors(
        "cluster",
        &errors,
        &["Cluster/h2: circuit_breakers.max_connections: not supported yet"],
    );

    // Removing what is refused is always possible.
    let deletions = [
        ResourceKey::new(Kind::Listener, "gateway"),
        ResourceKey::new(Kind::RouteTable, "gateway"),
        ResourceKey::new(Kind::Cluster, "h2"),
    ]
    .into_iter()
    .chain(
        stored
            .iter()
            .filter(|r| matches!(r.key().kind(), Kind::Policy | Kind::Consumer))
            .map(|r| r.key()),
    )
    .collect::<Vec<_>>();
    let result = validate_apply(&stored, &[], &deletions).map_err(|e| lines(&e));
    let result = result.expect("deleting the gateway resources");
    assert_eq!(result.of_kind(Kind::Policy).count(), 0);
}
