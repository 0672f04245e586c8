//! What agents do not enforce yet is refused, naming the field and saying so.

use portico_api::validate::unsupported;

use super::cases;
use crate::fixtures::parse;

/// The message of every refusal starts with this.
const NOT_YET: &str = "not supported yet: ";

#[test]
fn each_unsupported_field_is_refused_with_its_path() {
    let cluster = |spec: &str| format!("kind: Cluster\nname: api\nspec: {spec}\n");
    let route = |route: &str| {
        format!(
            "kind: RouteTable\nname: shop\nspec:\n  virtual_hosts:\n    - domains: [a.example.com]\n      routes:\n        - {{action: {{cluster: cart}}}}\n        - {route}\n"
        )
    };
    let policies = "agents do not apply policies";
    let at = "virtual_hosts[0].routes[1]";
    let refused = [
        (
            "kind: Policy\nname: deny\nspec: {ip_filter: {deny: [10.0.0.0/8]}}\n".to_string(),
            format!("Policy/deny: {NOT_YET}{policies}"),
        ),
        (
            "kind: Consumer\nname: carol\nspec: {jwt_subjects: [carol]}\n".to_string(),
            format!("Consumer/carol: {NOT_YET}agents do not identify consumers"),
        ),
        (
            "kind: Secret\nname: token\nspec: {opaque: s3cr3t}\n".to_string(),
            format!("Secret/token: opaque: {NOT_YET}nothing reads opaque secrets"),
        ),
        (
            cluster("{protocol: HTTP2, circuit_breakers: {max_connections: 10}}"),
            format!(
                "Cluster/api: circuit_breakers.max_connections: {NOT_YET}agents limit the connections of HTTP1 clusters only"
            ),
        ),
        (
            cluster("{tls: {enabled: true}}"),
            format!(
                "Cluster/api: tls.ca_secret: {NOT_YET}agents do not trust the system roots; name a Secret holding the CA certificates"
            ),
        ),
    ];
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

    // Both connection limits of an HTTP2 cluster; references to policies, refused where they
    // are made, besides the policies.
    let http1_only = "agents limit the connections of HTTP1 clusters only";
    cases(&[
        (
            &cluster(
                "{protocol: HTTP2, circuit_breakers: {max_connections: 10, max_pending_requests: 10}}",
            ),
            &[
                &format!("Cluster/api: circuit_breakers.max_connections: {NOT_YET}{http1_only}"),
                &format!(
                    "Cluster/api: circuit_breakers.max_pending_requests: {NOT_YET}{http1_only}"
                ),
            ],
        ),
        (
            "kind: Listener\nname: plain\nspec: {port: 80, protocol: HTTP, route_table: shop, policies: [p]}\n",
            &[
                &format!("Listener/plain: policies: {NOT_YET}{policies}"),
                "Listener/plain: policies[0]: policy \"p\" does not exist",
            ],
        ),
        (
            &route("{action: {cluster: cart}, policies: [p]}"),
            &[
                &format!("RouteTable/shop: {at}.policies: {NOT_YET}{policies}"),
                &format!("RouteTable/shop: {at}.policies[0]: policy \"p\" does not exist"),
            ],
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
    ]);
}
