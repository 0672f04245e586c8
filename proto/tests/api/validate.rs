//! Validation rules, table-driven: each case replaces or adds resources in the valid fixture
//! configuration and lists the errors it must produce, in order, and no others.

use portico_api::validate::{validate_apply, validate_set};
use portico_api::{Kind, ResourceKey, ResourceSet};

use crate::fixtures::{assert_errors, lines, parse, pems, tls_secret, valid, valid_with};

/// Validates the fixtures with `yaml`'s resources in, and checks that each expected substring
/// is in its own error, in order, and that there are no other errors.
fn check(yaml: &str, expected: &[&str]) {
    assert_errors(yaml, &validate_set(&valid_with(yaml)), expected);
}

fn cases(table: &[(&str, &[&str])]) {
    for (yaml, expected) in table {
        check(yaml, expected);
    }
}

#[test]
fn valid_fixtures_have_no_errors() {
    check("", &[]);
    assert!(validate_set(&ResourceSet::new()).is_empty());
}

#[test]
fn names_and_specs() {
    let mut set: ResourceSet = valid().into_iter().collect();
    set.insert(portico_api::Resource {
        name: "empty".into(),
        ..Default::default()
    });
    assert_errors(
        "spec-less resource",
        &validate_set(&set),
        &["Unspecified/empty: spec is not set"],
    );
    cases(&[
        (
            "kind: Consumer\nname: Bad_Name\nspec: {}\n",
            &["Consumer/Bad_Name: name: invalid name \"Bad_Name\""],
        ),
        (
            "kind: Consumer\nname: -a\nspec: {}\n",
            &["Consumer/-a: name: invalid name"],
        ),
        (
            "kind: Consumer\nname: a-\nspec: {}\n",
            &["Consumer/a-: name: invalid name"],
        ),
        (
            &format!("kind: Consumer\nname: {}\nspec: {{}}\n", "a".repeat(64)),
            &["name: invalid name"],
        ),
        (
            &format!("kind: Consumer\nname: {}\nspec: {{}}\n", "a".repeat(63)),
            &[],
        ),
        ("kind: Consumer\nname: '0'\nspec: {}\n", &[]),
    ]);
}

#[test]
fn listener_rules() {
    cases(&[
        (
            "kind: Listener\nname: plain\nspec: {port: 0, protocol: HTTP, route_table: shop}\n",
            &["Listener/plain: port: port 0 is not in 1-65535"],
        ),
        (
            "kind: Listener\nname: plain\nspec: {port: 70000, protocol: HTTP, route_table: shop}\n",
            &["Listener/plain: port: port 70000 is not in 1-65535"],
        ),
        (
            "kind: Listener\nname: plain\nspec: {address: localhost, port: 80, protocol: HTTP, route_table: shop}\n",
            &["Listener/plain: address: invalid address \"localhost\": expected an IP address"],
        ),
        (
            "kind: Listener\nname: plain\nspec: {port: 80, route_table: shop}\n",
            &["Listener/plain: protocol: protocol is required"],
        ),
        (
            "kind: Listener\nname: plain\nspec: {port: 80, protocol: HTTP}\n",
            &["Listener/plain: route_table: route_table is required"],
        ),
        (
            "kind: Listener\nname: plain\nspec: {port: 8443, protocol: HTTPS, route_table: shop}\n",
            &["Listener/plain: tls.certificates: HTTPS requires at least one certificate"],
        ),
        (
            "kind: Listener\nname: plain\nspec: {port: 8443, protocol: HTTPS, route_table: shop, tls: {}}\n",
            &["Listener/plain: tls.certificates: HTTPS requires at least one certificate"],
        ),
        (
            "kind: Listener\nname: plain\nspec: {port: 80, protocol: HTTP, route_table: shop, tls: {certificates: [{secret: web-cert}]}}\n",
            &["Listener/plain: tls: tls is set but protocol is HTTP"],
        ),
        (
            r#"kind: Listener
name: plain
spec:
  port: 8443
  protocol: HTTPS
  route_table: shop
  tls:
    certificates:
      - {server_names: [a.example.com, "bad name"], secret: web-cert}
      - {server_names: [A.example.com], secret: ""}
    alpn: [h3]
  limits:
    max_request_body_bytes: "100000000000"
    max_request_header_bytes: 2000000
    max_connections: 2000000
    header_read_timeout: 0s
    idle_timeout: 7200s
  policies: [""]
  selector: {regions: [""], labels: {"": x}}
"#,
            &[
                "tls.certificates[0].server_names[1]: invalid domain \"bad name\"",
                "tls.certificates[1].secret: secret is required",
                "tls.certificates[1].server_names[0]: server name \"A.example.com\" is also used by tls.certificates[0]",
                "tls.alpn[0]: unknown value \"h3\"; expected one of: h2, http/1.1",
                "limits.max_request_body_bytes: 100000000000 is above the limit of 68719476736",
                "limits.max_request_header_bytes: 2000000 is above the limit of 1048576",
                "limits.max_connections: 2000000 is above the limit of 1000000",
                "limits.header_read_timeout: must be positive",
                "limits.idle_timeout: must be at most 3600s",
                "policies[0]: policy name is required",
                "selector.regions[0]: value is required",
                "selector.labels: label keys must not be empty",
            ],
        ),
    ]);
}

#[test]
fn listeners_must_not_share_a_socket_on_overlapping_agents() {
    let listener = |name: &str, address: &str, port: u32, selector: &str| {
        format!(
            "kind: Listener\nname: {name}\nspec: {{address: '{address}', port: {port}, protocol: HTTP, route_table: shop, selector: {selector}}}\n"
        )
    };
    let pair = |a: String, b: String| format!("{a}---\n{b}");
    let clash = "Listener/y: port: ";
    cases(&[
        (
            &pair(listener("x", "", 8080, "{}"), listener("y", "", 8080, "{}")),
            &["Listener/y: port: 0.0.0.0:8080 is also bound by Listener/x on agents both select"],
        ),
        (
            &pair(listener("x", "", 8080, "{}"), listener("y", "", 8081, "{}")),
            &[],
        ),
        (
            &pair(
                listener("x", "10.0.0.1", 8080, "{}"),
                listener("y", "10.0.0.2", 8080, "{}"),
            ),
            &[],
        ),
        (
            &pair(
                listener("x", "10.0.0.1", 8080, "{}"),
                listener("y", "0.0.0.0", 8080, "{}"),
            ),
            &[clash],
        ),
        (
            &pair(
                listener("x", "::", 8080, "{}"),
                listener("y", "::1", 8080, "{}"),
            ),
            &[clash],
        ),
        (
            &pair(
                listener("x", "::", 8080, "{}"),
                listener("y", "10.0.0.1", 8080, "{}"),
            ),
            &[],
        ),
        (
            &pair(
                listener("x", "", 8080, "{regions: [eu]}"),
                listener("y", "", 8080, "{regions: [us]}"),
            ),
            &[],
        ),
        (
            &pair(
                listener("x", "", 8080, "{regions: [eu, us]}"),
                listener("y", "", 8080, "{regions: [us]}"),
            ),
            &[clash],
        ),
        (
            &pair(
                listener("x", "", 8080, "{regions: [eu]}"),
                listener("y", "", 8080, "{zones: [us-1a]}"),
            ),
            &[clash],
        ),
        (
            &pair(
                listener("x", "", 8080, "{zones: [a]}"),
                listener("y", "", 8080, "{zones: [b]}"),
            ),
            &[],
        ),
        (
            &pair(
                listener("x", "", 8080, "{labels: {env: prod}}"),
                listener("y", "", 8080, "{labels: {env: staging}}"),
            ),
            &[],
        ),
        (
            &pair(
                listener("x", "", 8080, "{labels: {env: prod}}"),
                listener("y", "", 8080, "{labels: {tier: edge}}"),
            ),
            &[clash],
        ),
        // The fixtures' web (eu-west) and web-us (us-east) share 0.0.0.0:443; a third one
        // without a selector overlaps both and is reported once, against the first.
        (
            &listener("zz", "", 443, "{}"),
            &["Listener/zz: port: 0.0.0.0:443 is also bound by Listener/web on agents both select"],
        ),
    ]);
}

#[test]
fn route_table_rules() {
    let route = |route: &str| {
        format!(
            "kind: RouteTable\nname: shop\nspec:\n  virtual_hosts:\n    - domains: [shop.example.com]\n      routes:\n        - {route}\n"
        )
    };
    let at = "RouteTable/shop: virtual_hosts[0].routes[0]";
    cases(&[
        (&route("{action: {cluster: cart}}"), &[]),
        (
            &route("{match: {prefix: /a}}"),
            &[&format!("{at}.action: an action is required")],
        ),
        (
            &route("{action: {cluster: cart}, match: {exact: a}}"),
            &["routes[0].match.exact: must start with '/'"],
        ),
        (
            &route("{action: {cluster: cart}, match: {prefix: a}}"),
            &["routes[0].match.prefix: must start with '/'"],
        ),
        (
            &route("{action: {cluster: cart}, match: {regex: '(a'}}"),
            &["routes[0].match.regex: invalid regex"],
        ),
        (
            &route(&format!(
                "{{action: {{cluster: cart}}, match: {{regex: '{}'}}}}",
                "a".repeat(5000)
            )),
            &["routes[0].match.regex: regex is 5000 bytes long; the limit is 4096"],
        ),
        (
            &route("{action: {cluster: cart}, match: {regex: '\\w{1000}\\w{1000}'}}"),
            &["routes[0].match.regex: invalid regex: "],
        ),
        (
            &route(
                "{action: {cluster: cart}, match: {methods: [GET, 'BAD METHOD'], headers: [{name: 'x y', exact: a}, {name: x, regex: '['}], query_params: [{name: '', present: true}, {name: q, regex: '+'}]}}",
            ),
            &[
                "match.methods[1]: invalid method \"BAD METHOD\"",
                "match.headers[0].name: invalid header name \"x y\"",
                "match.headers[1].regex: invalid regex",
                "match.query_params[0].name: name is required",
                "match.query_params[1].regex: invalid regex",
            ],
        ),
        (
            &route("{action: {cluster: cart}, prefix_rewrite: /x}"),
            &["routes[0].prefix_rewrite: prefix_rewrite needs a prefix match"],
        ),
        (
            &route("{action: {cluster: cart}, match: {prefix: /a}, prefix_rewrite: x}"),
            &["routes[0].prefix_rewrite: must start with '/'"],
        ),
        (
            &route(
                "{action: {cluster: cart}, request_headers: {add: [{name: 'a:b', value: x}], set: [{name: ok, value: \"a\\nb\"}], remove: ['']}, response_headers: {remove: ['bad header']}}",
            ),
            &[
                "routes[0].request_headers.add[0].name: invalid header name \"a:b\"",
                "routes[0].request_headers.set[0].value: header value contains a control character",
                "routes[0].request_headers.remove[0]: invalid header name \"\"",
                "routes[0].response_headers.remove[0]: invalid header name",
            ],
        ),
        (
            &route(
                "{action: {cluster: cart}, timeout: 7200s, retry: {attempts: 11, retry_on: [5xx, sometimes], per_try_timeout: -1s}}",
            ),
            &[
                "routes[0].timeout: must be at most 3600s",
                "routes[0].retry.attempts: 11 retries is above the limit of 10",
                "routes[0].retry.retry_on[1]: unknown value \"sometimes\"",
                "routes[0].retry.per_try_timeout: must be positive",
            ],
        ),
        (
            &route("{action: {cluster: ''}}"),
            &["routes[0].action.cluster: cluster is required"],
        ),
        (
            &route("{action: {weighted_clusters: {}}}"),
            &["action.weighted_clusters.clusters: at least one cluster is required"],
        ),
        (
            &route(
                "{action: {weighted_clusters: {clusters: [{cluster: cart}, {cluster: catalog}]}}}",
            ),
            &["action.weighted_clusters.clusters: weights must sum above zero"],
        ),
        (
            &route(
                "{action: {weighted_clusters: {clusters: [{cluster: cart, weight: 10001}, {cluster: '', weight: 1}]}}}",
            ),
            &[
                "weighted_clusters.clusters[0].weight: weight 10001 is above the limit of 10000",
                "weighted_clusters.clusters[1].cluster: cluster is required",
            ],
        ),
        (&route("{action: {redirect: {status: 301}}}"), &[]),
        (&route("{action: {redirect: {path: /x}}}"), &[]),
        (
            &route(
                "{action: {redirect: {status: 200, scheme: ftp, host: 'a b', port: 70000, path: x}}}",
            ),
            &[
                "action.redirect.status: status 200 is not a redirect",
                "action.redirect.scheme: unknown value \"ftp\"",
                "action.redirect.host: invalid host name \"a b\"",
                "action.redirect.port: port 70000 is not in 1-65535",
                "action.redirect.path: must start with '/'",
            ],
        ),
        (&route("{action: {direct_response: {status: 200}}}"), &[]),
        (&route("{action: {direct_response: {status: 599}}}"), &[]),
        (
            &route("{action: {direct_response: {}}}"),
            &["action.direct_response.status: status 0 is not in 200-599"],
        ),
        (
            &route("{action: {direct_response: {status: 600}}}"),
            &["action.direct_response.status: status 600 is not in 200-599"],
        ),
        (
            &route("{action: {direct_response: {status: 199}}}"),
            &["status 199 is not in 200-599"],
        ),
        (
            &route("{action: {cluster: cart}, policies: ['']}"),
            &["routes[0].policies[0]: policy name is required"],
        ),
        (
            "kind: RouteTable\nname: shop\nspec:\n  virtual_hosts:\n    - domains: [a.example.com, 'a.example.com:80', '*.b.example.com', '*']\n    - domains: [A.example.com, '*', 'x.*.com']\n    - {}\n",
            &[
                "virtual_hosts[0].domains[1]: invalid domain \"a.example.com:80\"",
                "virtual_hosts[1].domains[0]: domain \"A.example.com\" is also used by virtual_hosts[0]",
                "virtual_hosts[1].domains[1]: domain \"*\" is also used by virtual_hosts[0]",
                "virtual_hosts[1].domains[2]: invalid domain \"x.*.com\"",
                "virtual_hosts[2].domains: at least one domain is required",
            ],
        ),
        (
            "kind: RouteTable\nname: shop\nspec: {virtual_hosts: [{domains: [a.com, a.com]}]}\n",
            &["virtual_hosts[0].domains[1]: domain \"a.com\" is listed twice"],
        ),
    ]);
}

#[test]
fn cluster_rules() {
    let cluster = |spec: &str| format!("kind: Cluster\nname: catalog\nspec: {spec}\n");
    cases(&[
        (
            &cluster("{endpoints: [{address: a.internal, port: 1}]}"),
            &[],
        ),
        (
            &cluster("{endpoints: [{port: 0}, {address: 'bad host', port: 65536, weight: 10001}]}"),
            &[
                "Cluster/catalog: endpoints[0].address: address is required",
                "endpoints[0].port: port 0 is not in 1-65535",
                "endpoints[1].address: invalid host name \"bad host\"",
                "endpoints[1].port: port 65536 is not in 1-65535",
                "endpoints[1].weight: weight 10001 is above the limit of 10000",
            ],
        ),
        (
            &cluster("{lb_policy: MAGLEV}"),
            &["hash_policy: RING_HASH and MAGLEV need a hash_policy"],
        ),
        (
            &cluster("{lb_policy: RING_HASH, hash_policy: {}}"),
            &["hash_policy: a key (header, cookie or source_ip) is required"],
        ),
        (
            &cluster("{lb_policy: RING_HASH, hash_policy: {header: 'a b'}}"),
            &["hash_policy.header: invalid header name"],
        ),
        (
            &cluster("{hash_policy: {cookie: ''}}"),
            &["hash_policy.cookie: cookie name is required"],
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
                "{outlier_detection: {consecutive_5xx: 5000, base_ejection_time: 0s, max_ejection_percent: 101}, circuit_breakers: {max_requests: 2000000}, connect_timeout: 3601s}",
            ),
            &[
                "outlier_detection.base_ejection_time: must be positive",
                "outlier_detection.consecutive_5xx: 5000 is above the limit of 1000",
                "outlier_detection.max_ejection_percent: 101 is above the limit of 100",
                "circuit_breakers.max_requests: 2000000 is above the limit of 1000000",
                "connect_timeout: must be at most 3600s",
            ],
        ),
        (
            &cluster(
                "{tls: {enabled: true, server_name: 'not valid'}, locality: {failover_threshold_percent: 150}, service: 'a/b'}",
            ),
            &[
                "tls.server_name: invalid host name \"not valid\"",
                "locality.failover_threshold_percent: 150 is above the limit of 100",
                "service: invalid host name \"a/b\"",
            ],
        ),
    ]);
}

#[test]
fn policy_rules() {
    let policy = |spec: &str| format!("kind: Policy\nname: limit\nspec: {spec}\n");
    let at = "Policy/limit: ";
    cases(&[
        (&policy("{}"), &["Policy/limit: a policy kind is required"]),
        (
            &policy("{api_key_auth: {header: 'x key', consumers: ['']}}"),
            &[
                "api_key_auth.header: invalid header name \"x key\"",
                "api_key_auth.consumers[0]: consumer name is required",
            ],
        ),
        (
            &policy("{jwt_auth: {jwks: '{\"keys\": []}'}}"),
            &[&format!("{at}jwt_auth.issuer: issuer is required")],
        ),
        (
            &policy("{jwt_auth: {issuer: i, jwks: 'not json'}}"),
            &["jwt_auth.jwks: jwks is not JSON"],
        ),
        (
            &policy("{jwt_auth: {issuer: i, jwks: '{\"keys\": {}}'}}"),
            &["jwt_auth.jwks: jwks must be an object with a \"keys\" array"],
        ),
        (
            &policy("{jwt_auth: {issuer: i, jwks: '[]', header: 'a b'}}"),
            &[
                "jwt_auth.jwks: jwks must be an object",
                "jwt_auth.header: invalid header name",
            ],
        ),
        (
            &policy("{rate_limit: {}}"),
            &["rate_limit.requests: requests must be above zero"],
        ),
        (
            &policy(
                "{rate_limit: {requests: 2000000000, burst: 2000000000, period: 172800s, key: {header: 'a b'}}}",
            ),
            &[
                "rate_limit.requests: 2000000000 is above the limit of 1000000000",
                "rate_limit.burst: 2000000000 is above the limit",
                "rate_limit.period: must be at most 86400s",
                "rate_limit.key.header: invalid header name",
            ],
        ),
        (&policy("{rate_limit: {requests: 1, period: 0.001s}}"), &[]),
        (
            &policy("{quota: {}}"),
            &[
                "quota.limit: limit must be above zero",
                "quota.period: period is required",
            ],
        ),
        (
            &policy(
                "{cors: {allow_origins: ['*', 'example.com', 'https://a.com/path', 'https://a.com:99999', 'http://[::1]:8080'], allow_credentials: true, allow_methods: ['GE T'], allow_headers: ['a b'], expose_headers: ['c d'], max_age: 108000s}}",
            ),
            &[
                "cors.allow_origins[1]: invalid origin \"example.com\"",
                "cors.allow_origins[2]: invalid origin",
                "cors.allow_origins[3]: invalid origin",
                "cors.allow_credentials: credentials cannot be allowed for origin \"*\"",
                "cors.allow_methods[0]: invalid method",
                "cors.allow_headers[0]: invalid header name",
                "cors.expose_headers[0]: invalid header name",
                "cors.max_age: must be at most 86400s",
            ],
        ),
        (
            &policy("{ip_filter: {allow: [10.0.0.0/8, 10.0.0.0/33, '::/0'], deny: [nope]}}"),
            &[
                "ip_filter.allow[1]: invalid CIDR \"10.0.0.0/33\"",
                "ip_filter.deny[0]: invalid CIDR \"nope\"",
            ],
        ),
        (
            &policy(
                "{request_validation: {max_body_bytes: \"100000000000\", required_headers: ['a b'], allowed_content_types: [json, 'text/*'], allowed_methods: ['a b']}}",
            ),
            &[
                "request_validation.max_body_bytes: 100000000000 is above the limit",
                "request_validation.required_headers[0]: invalid header name",
                "request_validation.allowed_content_types[0]: invalid media type \"json\"",
                "request_validation.allowed_content_types[1]: invalid media type \"text/*\"",
                "request_validation.allowed_methods[0]: invalid method",
            ],
        ),
        (
            &policy(
                "{headers: {request: {add: [{name: '', value: x}]}, response: {set: [{name: x, value: \"\\u0000\"}]}}}",
            ),
            &[
                "headers.request.add[0].name: invalid header name",
                "headers.response.set[0].value: header value contains a control character",
            ],
        ),
        (
            &policy(
                "{compression: {algorithms: [gzip, zstd], min_bytes: \"2000000000\", content_types: ['text/*', html]}}",
            ),
            &[
                "compression.algorithms[1]: unknown value \"zstd\"; expected one of: br, gzip",
                "compression.min_bytes: 2000000000 is above the limit of 1073741824",
                "compression.content_types[1]: invalid media type \"html\"",
            ],
        ),
    ]);
}

#[test]
fn consumer_rules() {
    let sha = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
    cases(&[
        (
            &format!(
                "kind: Consumer\nname: carol\nspec: {{api_keys: [{{id: a, sha256: {}}}, {{id: a, sha256: abc}}]}}\n",
                sha.to_uppercase()
            ),
            &[
                "Consumer/carol: api_keys[0].sha256: must be the SHA-256 of the key as 64 lowercase hex digits",
                "api_keys[1].sha256: must be the SHA-256",
                "api_keys[1].id: key id \"a\" is used twice",
            ],
        ),
        (
            &format!(
                "kind: Consumer\nname: carol\nspec: {{api_keys: [{{sha256: {sha}}}], jwt_subjects: ['bob@example.com', '']}}\n"
            ),
            &[
                "Consumer/carol: jwt_subjects[1]: subject must not be empty",
                "Consumer/carol: api_keys[0].sha256: the same key belongs to Consumer/alice",
                "Consumer/carol: jwt_subjects[0]: subject \"bob@example.com\" also belongs to Consumer/bob",
            ],
        ),
    ]);
}

#[test]
fn secret_rules() {
    let p = pems();
    let chain = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    cases(&[
        (
            "kind: Secret\nname: token\nspec: {}\n",
            &["Secret/token: a secret value (tls or opaque) is required"],
        ),
        (
            &tls_secret("web-cert", &p.web_chain, &p.other_key),
            &[
                "Secret/web-cert: tls.private_key: private key does not match the first certificate of the chain",
            ],
        ),
        (
            &tls_secret("web-cert", &p.client_chain, &p.web_key),
            &["tls.private_key: private key does not match"],
        ),
        (&tls_secret("web-cert", &p.client_chain, &p.client_key), &[]),
        (
            &tls_secret("web-cert", &p.web_chain, "garbage"),
            &["tls.private_key: invalid PEM private key"],
        ),
        (
            &tls_secret("web-cert", "garbage", &p.web_key),
            &["Secret/web-cert: tls.certificate_chain: no PEM certificate found"],
        ),
        (
            &tls_secret("web-cert", &p.web_key, &p.web_key),
            &["tls.certificate_chain: no PEM certificate found"],
        ),
        (
            &tls_secret("web-cert", chain, &p.web_key),
            &["tls.certificate_chain: certificate 0 does not parse"],
        ),
        (
            &tls_secret(
                "spare",
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "",
            ),
            &["Secret/spare: tls.certificate_chain: invalid PEM"],
        ),
    ]);
}

#[test]
fn references_resolve_to_fitting_resources() {
    let p = pems();
    cases(&[
        (
            "kind: Listener\nname: plain\nspec: {port: 80, protocol: HTTP, route_table: nope, policies: [auth, gone]}\n",
            &[
                "Listener/plain: route_table: route table \"nope\" does not exist",
                "Listener/plain: policies[1]: policy \"gone\" does not exist",
            ],
        ),
        (
            "kind: RouteTable\nname: shop\nspec:\n  virtual_hosts:\n    - domains: [a.com]\n      routes:\n        - {action: {cluster: cart}}\n        - {action: {weighted_clusters: {clusters: [{cluster: x, weight: 1}]}}, policies: [y]}\n        - {action: {cluster: cart2}}\n",
            &[
                "RouteTable/shop: virtual_hosts[0].routes[1].action.weighted_clusters.clusters[0].cluster: cluster \"x\" does not exist",
                "RouteTable/shop: virtual_hosts[0].routes[1].policies[0]: policy \"y\" does not exist",
                "RouteTable/shop: virtual_hosts[0].routes[2].action.cluster: cluster \"cart2\" does not exist",
            ],
        ),
        (
            "kind: Policy\nname: jwt\nspec: {jwt_auth: {issuer: i, jwks: '{\"keys\": []}', consumers: [bob, eve]}}\n",
            &["Policy/jwt: jwt_auth.consumers[1]: consumer \"eve\" does not exist"],
        ),
        (
            "kind: Listener\nname: web-us\nspec: {port: 443, protocol: HTTPS, route_table: shop, selector: {regions: [us]}, tls: {certificates: [{secret: token}, {secret: upstream-ca}, {secret: none}]}}\n",
            &[
                "Listener/web-us: tls.certificates[0].secret: secret \"token\" is not a tls secret",
                "Listener/web-us: tls.certificates[1].secret: secret \"upstream-ca\" has no private key",
                "Listener/web-us: tls.certificates[2].secret: secret \"none\" does not exist",
            ],
        ),
        (
            "kind: Cluster\nname: cart\nspec: {tls: {enabled: true, ca_secret: token, client_certificate_secret: upstream-ca}}\n",
            &[
                "Cluster/cart: tls.ca_secret: secret \"token\" is not a tls secret",
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
}

#[test]
fn every_error_is_reported_in_resource_order() {
    let yaml = "kind: Secret\nname: token\nspec: {}\n---\nkind: Listener\nname: plain\nspec: {port: 0, protocol: HTTP, route_table: x}\n";
    check(
        yaml,
        &[
            "Listener/plain: port: port 0",
            "Listener/plain: route_table: route table \"x\" does not exist",
            "Secret/token: a secret value",
        ],
    );
}

#[test]
fn apply_rules() {
    let stored: ResourceSet = valid().into_iter().collect();
    let key = |kind, name: &str| ResourceKey::new(kind, name);

    let result = validate_apply(
        &stored,
        &parse("kind: Consumer\nname: carol\nspec: {}\n"),
        &[key(Kind::Consumer, "bob")],
    );
    let applied = result.expect_err("bob is still referenced by Policy/jwt");
    assert_errors(
        "delete bob",
        &applied,
        &["Consumer/bob: cannot delete: referenced by Policy/jwt at jwt_auth.consumers[0]"],
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

    let dup = parse("kind: Consumer\nname: carol\nspec: {}\n");
    let upserts = [dup.clone(), dup].concat();
    let errors = validate_apply(&stored, &upserts, &[]).expect_err("carol twice");
    assert_errors(
        "carol twice",
        &errors,
        &["Consumer/carol: defined more than once in this apply"],
    );

    let carol = parse("kind: Consumer\nname: carol\nspec: {}\n");
    let errors =
        validate_apply(&stored, &carol, &[key(Kind::Consumer, "carol")]).expect_err("both");
    assert_errors(
        "apply and delete",
        &errors,
        &["Consumer/carol: both applied and deleted in this apply"],
    );

    let bad =
        parse("kind: Listener\nname: plain\nspec: {port: 80, protocol: HTTP, route_table: gone}\n");
    let errors = validate_apply(&stored, &bad, &[]).expect_err("dangling");
    assert_errors(
        "dangling",
        &errors,
        &["Listener/plain: route_table: route table \"gone\" does not exist"],
    );

    let result =
        validate_apply(&stored, &carol, &[key(Kind::Secret, "token")]).expect("valid apply");
    assert!(result.contains(Kind::Consumer, "carol"));
    assert!(!result.contains(Kind::Secret, "token"));
    assert_eq!(result.len(), stored.len());
}
