//! Cluster rules.

use super::cases;

fn cluster(spec: &str) -> String {
    format!("kind: Cluster\nname: catalog\nspec: {spec}\n")
}

#[test]
fn cluster_rules() {
    cases(&[
        (
            &cluster("{endpoints: [{address: a.internal, port: 1}]}"),
            &[],
        ),
        (
            &cluster("{endpoints: [{port: 0}, {address: 'bad host', port: 65536}]}"),
            &[
                "Cluster/catalog: endpoints[0].address: address is required",
                "endpoints[0].port: port 0 is not in 1-65535",
                "endpoints[1].address: invalid host name \"bad host\"",
                "endpoints[1].port: port 65536 is not in 1-65535",
            ],
        ),
        (
            &cluster(
                "{circuit_breakers: {max_connections: 2000000, max_pending_requests: 1000001}, connect_timeout: 3601s}",
            ),
            &[
                "circuit_breakers.max_connections: 2000000 is above the limit of 1000000",
                "circuit_breakers.max_pending_requests: 1000001 is above the limit of 1000000",
                "connect_timeout: must be at most 3600s",
            ],
        ),
        (
            &cluster("{circuit_breakers: {max_pending_requests: 10}}"),
            &["circuit_breakers.max_pending_requests: needs max_connections"],
        ),
        (
            &cluster("{tls: {enabled: true, server_name: 'not valid', ca_secret: upstream-ca}}"),
            &["tls.server_name: invalid server name \"not valid\""],
        ),
        (
            &cluster("{tls: {enabled: true, server_name: '[::1]', ca_secret: upstream-ca}}"),
            &[
                "tls.server_name: invalid server name \"[::1]\": expected a DNS name or an IP address",
            ],
        ),
        (
            &cluster("{tls: {enabled: true, server_name: '::1', ca_secret: upstream-ca}}"),
            &[],
        ),
        (
            &cluster(
                "{tls: {server_name: a.internal, ca_secret: upstream-ca, client_certificate_secret: client-cert}}",
            ),
            &[
                "tls.server_name: \"a.internal\" would be ignored: tls.enabled is false",
                "tls.ca_secret: \"upstream-ca\" would be ignored: tls.enabled is false",
                "tls.client_certificate_secret: \"client-cert\" would be ignored",
            ],
        ),
    ]);
}

#[test]
fn load_balancing_rules() {
    cases(&[
        (
            &cluster("{endpoints: [{address: a, port: 1, weight: 10001}]}"),
            &["Cluster/catalog: endpoints[0].weight: weight 10001 is above the limit of 10000"],
        ),
        (
            &cluster("{lb_policy: MAGLEV}"),
            &["hash_policy: RING_HASH and MAGLEV need a hash_policy"],
        ),
        (
            &cluster("{lb_policy: RING_HASH, hash_policy: {}}"),
            &[
                "hash_policy: a key (header, cookie, source_ip, query_param or session_cookie) is required",
            ],
        ),
        (
            &cluster("{lb_policy: RING_HASH, hash_policy: {header: 'a b'}}"),
            &["hash_policy.header: invalid header name"],
        ),
        (
            &cluster("{lb_policy: MAGLEV, hash_policy: {cookie: ''}}"),
            &["hash_policy.cookie: cookie name is required"],
        ),
        (
            &cluster("{lb_policy: MAGLEV, hash_policy: {query_param: ''}}"),
            &["hash_policy.query_param: query parameter name is required"],
        ),
        (
            &cluster(
                "{lb_policy: MAGLEV, hash_policy: {session_cookie: {name: 'a b', path: x, ttl: 40000000s}}}",
            ),
            &[
                "hash_policy.session_cookie.name: \"a b\" is not a cookie name",
                "hash_policy.session_cookie.path: must start with '/'",
                "hash_policy.session_cookie.ttl: must be at most 31536000s",
            ],
        ),
        (
            &cluster("{lb_policy: LEAST_REQUEST, hash_policy: {source_ip: true}}"),
            &["hash_policy: would be ignored: only RING_HASH and MAGLEV hash requests"],
        ),
        (
            &cluster("{lb_policy: RING_HASH, hash_policy: {source_ip: true}}"),
            &[],
        ),
        (
            &cluster(
                "{health_check: {path: healthz, interval: 90000s, timeout: 0.5s, healthy_threshold: 1001, expected_statuses: [200, 99, 600]}}",
            ),
            &[
                "health_check.path: must start with '/'",
                "health_check.interval: must be at most 86400s",
                "health_check.healthy_threshold: 1001 is above the limit of 1000",
                "health_check.expected_statuses[1]: status 99 is not in 100-599",
                "health_check.expected_statuses[2]: status 600 is not in 100-599",
            ],
        ),
        (
            &cluster(
                "{protocol: HTTP2, health_check: {grpc: {service: pkg.Users}, host: api.internal}}",
            ),
            &[],
        ),
        (
            &cluster(
                "{health_check: {grpc: {}, tcp: true, path: /healthz, expected_statuses: [200]}}",
            ),
            &[
                "health_check.path: would be ignored: a grpc check asks grpc.health.v1.Health/Check",
                "health_check.expected_statuses: would be ignored",
                "health_check.tcp: would be ignored",
                "health_check.grpc: gRPC speaks HTTP/2: the cluster needs protocol HTTP2",
            ],
        ),
        (
            &cluster("{health_check: {tcp: true, path: /healthz, host: 'bad host'}}"),
            &[
                "health_check.path: would be ignored: a tcp check only opens a connection",
                "health_check.host: would be ignored",
                "health_check.host: invalid host name \"bad host\"",
            ],
        ),
        (
            &cluster(
                "{outlier_detection: {consecutive_5xx: 5000, consecutive_gateway_failures: 1001, base_ejection_time: 0s, max_ejection_percent: 101}, circuit_breakers: {max_requests: 2000000, max_retries: 1000001}}",
            ),
            &[
                "outlier_detection.base_ejection_time: must be positive",
                "outlier_detection.consecutive_5xx: 5000 is above the limit of 1000",
                "outlier_detection.consecutive_gateway_failures: 1001 is above the limit of 1000",
                "outlier_detection.max_ejection_percent: 101 is above the limit of 100",
                "circuit_breakers.max_requests: 2000000 is above the limit of 1000000",
                "circuit_breakers.max_retries: 1000001 is above the limit of 1000000",
            ],
        ),
        (
            &cluster("{locality: {failover_threshold_percent: 150}}"),
            &["locality.failover_threshold_percent: 150 is above the limit of 100"],
        ),
        // A service name follows the rule nodes announce names by.
        (&cluster("{service: catalog-v2}"), &[]),
        (
            &cluster("{service: 'a/b'}"),
            &["Cluster/catalog: service: invalid service name \"a/b\""],
        ),
        (
            &cluster("{service: Catalog}"),
            &["service: invalid service name \"Catalog\""],
        ),
    ]);
}
