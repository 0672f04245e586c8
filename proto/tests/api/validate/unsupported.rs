//! What agents do not enforce yet is refused, naming the field and saying so.

use portico_api::validate::unsupported;

use super::cases;
use crate::fixtures::parse;

/// The message of every refusal starts with this.
const NOT_YET: &str = "not supported yet: ";

#[test]
fn each_unsupported_field_is_refused_with_its_path() {
    let cluster = |spec: &str| format!("kind: Cluster\nname: api\nspec: {spec}\n");
    let refused = [(
        cluster("{protocol: HTTP2, circuit_breakers: {max_connections: 10}}"),
        format!(
            "Cluster/api: circuit_breakers.max_connections: {NOT_YET}agents limit the connections of HTTP1 clusters only"
        ),
    )];
    for (yaml, expected) in &refused {
        cases(&[(yaml.as_str(), &[expected.as_str()])]);
        // The public list of refusals says the same.
        let listed: Vec<String> = parse(yaml)
            .iter()
            .flat_map(unsupported)
            .map(|e| e.to_string())
            .collect();
        assert_eq!(listed, std::slice::from_ref(expected), "{yaml}");
    }

    // Both connection limits of an HTTP2 cluster.
    let http1_only = "agents limit the connections of HTTP1 clusters only";
    cases(&[(
        &cluster(
            "{protocol: HTTP2, circuit_breakers: {max_connections: 10, max_pending_requests: 10}}",
        ),
        &[
            &format!("Cluster/api: circuit_breakers.max_connections: {NOT_YET}{http1_only}"),
            &format!("Cluster/api: circuit_breakers.max_pending_requests: {NOT_YET}{http1_only}"),
        ],
    )]);
}

#[test]
fn unknown_policies_and_consumers_are_named_at_their_field() {
    let route = |route: &str| {
        format!(
            "kind: RouteTable\nname: shop\nspec:\n  virtual_hosts:\n    - domains: [a.example.com]\n      routes:\n        - {{action: {{cluster: cart}}}}\n        - {route}\n"
        )
    };
    cases(&[
        (
            "kind: Listener\nname: plain\nspec: {port: 80, protocol: HTTP, route_table: shop, policies: [p]}\n",
            &["Listener/plain: policies[0]: policy \"p\" does not exist"],
        ),
        (
            &route("{action: {cluster: cart}, policies: [p]}"),
            &[
                "RouteTable/shop: virtual_hosts[0].routes[1].policies[0]: policy \"p\" does not exist",
            ],
        ),
        (
            "kind: Policy\nname: keys\nspec: {api_key_auth: {consumers: [nobody]}}\n",
            &["Policy/keys: api_key_auth.consumers[0]: consumer \"nobody\" does not exist"],
        ),
    ]);
}

#[test]
fn what_agents_enforce_is_not_refused() {
    let cluster = |spec: &str| format!("kind: Cluster\nname: api\nspec: {spec}\n");
    let route = |route: &str| {
        format!(
            "kind: RouteTable\nname: shop\nspec:\n  virtual_hosts:\n    - domains: [a.example.com]\n      routes:\n        - {route}\n"
        )
    };
    cases(&[
        (&cluster("{lb_policy: ROUND_ROBIN}"), &[]),
        (&cluster("{lb_policy: WEIGHTED_ROUND_ROBIN}"), &[]),
        (&cluster("{lb_policy: LEAST_REQUEST}"), &[]),
        (
            &cluster("{lb_policy: RING_HASH, hash_policy: {source_ip: true}}"),
            &[],
        ),
        (
            &cluster(
                "{lb_policy: MAGLEV, hash_policy: {session_cookie: {name: sticky, ttl: 3600s}}}",
            ),
            &[],
        ),
        (
            &cluster(
                "{endpoints: [{address: a, port: 1, weight: 3, region: eu, zone: eu-1}], locality: {prefer_local: true}}",
            ),
            &[],
        ),
        (
            &cluster(
                "{health_check: {path: /healthz, host: a.internal}, outlier_detection: {consecutive_5xx: 3}}",
            ),
            &[],
        ),
        (&cluster("{health_check: {tcp: true}}"), &[]),
        (
            &cluster("{circuit_breakers: {max_requests: 100, max_retries: 3}}"),
            &[],
        ),
        (
            &route(
                "{action: {cluster: cart}, retry: {attempts: 2, retry_on: [5xx, refused-stream], per_try_timeout: 1s}}",
            ),
            &[],
        ),
        (&cluster("{lb_policy: LB_POLICY_UNSPECIFIED}"), &[]),
        (
            &cluster(
                "{endpoints: [{address: a, port: 1, weight: 0}, {address: b, port: 1, weight: 1}]}",
            ),
            &[],
        ),
        (
            &cluster(
                "{circuit_breakers: {max_connections: 10, max_pending_requests: 5, max_requests: 0, max_retries: 0}}",
            ),
            &[],
        ),
        (&cluster("{protocol: HTTP2, circuit_breakers: {}}"), &[]),
        (
            &cluster("{tls: {enabled: true, ca_secret: upstream-ca}, protocol: HTTP2}"),
            &[],
        ),
        (&cluster("{tls: {enabled: false}}"), &[]),
        // The gateway: policies of every kind agents apply, attached to a listener and a
        // route, consumers, and an opaque secret holding a JWKS.
        (
            "kind: Policy\nname: deny\nspec: {ip_filter: {deny: [10.0.0.0/8], trusted_proxies: [192.168.0.0/16]}}\n---\nkind: Listener\nname: plain\nspec: {port: 80, protocol: HTTP, route_table: shop, policies: [deny]}\n",
            &[],
        ),
        (
            &format!(
                "kind: Policy\nname: limit\nspec: {{rate_limit: {{requests: 5, scope: LOCAL, key: {{consumer: true}}, plans: {{gold: {{requests: 50}}}}}}}}\n---\n{}",
                route("{action: {cluster: cart}, policies: [limit]}")
            ),
            &[],
        ),
        (
            "kind: Consumer\nname: carol\nspec: {jwt_subjects: [carol], plan: gold}\n",
            &[],
        ),
        ("kind: Secret\nname: token\nspec: {opaque: s3cr3t}\n", &[]),
        (
            "kind: Policy\nname: jwt\nspec: {jwt_auth: {issuer: i, jwks_secret: keys, cookie: session, forward_claims: {email: x-email}}}\n---\nkind: Secret\nname: keys\nspec: {opaque: '{\"keys\": [{\"kty\": \"OKP\", \"crv\": \"Ed25519\", \"x\": \"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}'}\n",
            &[],
        ),
    ]);
}
