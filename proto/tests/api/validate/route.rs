//! RouteTable rules.

use super::{cases, refused_cases};

fn route(route: &str) -> String {
    format!(
        "kind: RouteTable\nname: shop\nspec:\n  virtual_hosts:\n    - domains: [shop.example.com]\n      routes:\n        - {route}\n"
    )
}

#[test]
fn route_table_rules() {
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
            &route(
                "{action: {cluster: cart}, match: {headers: [{name: x, present: false}], query_params: [{name: q, present: false}]}}",
            ),
            &[
                "match.headers[0].present: must be true (to match requests without the header, add invert: true)",
                "match.query_params[0].present: must be true",
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
            &route("{action: {cluster: cart}, match: {prefix: /a}, prefix_rewrite: '/a b'}"),
            &["routes[0].prefix_rewrite: invalid path \"/a b\": percent-encode spaces"],
        ),
        (
            &route("{action: {cluster: cart}, match: {prefix: /a}, prefix_rewrite: /b?c=d}"),
            &["routes[0].prefix_rewrite: invalid path"],
        ),
        (
            &route("{action: {cluster: cart}, match: {prefix: /a}, prefix_rewrite: /b%20c/}"),
            &[],
        ),
        (
            &route(
                "{action: {cluster: cart}, request_headers: {add: [{name: 'a:b', value: x}], set: [{name: ok, value: \"a\\nb\"}], remove: ['']}, response_headers: {remove: ['bad header'], add: [{name: x, value: café}]}}",
            ),
            &[
                "routes[0].request_headers.add[0].name: invalid header name \"a:b\"",
                "routes[0].request_headers.set[0].value: header value contains a control character",
                "routes[0].request_headers.remove[0]: invalid header name \"\"",
                "routes[0].response_headers.add[0].value: header value contains a non-ASCII character",
                "routes[0].response_headers.remove[0]: invalid header name",
            ],
        ),
        (
            // Framing and hop-by-hop headers: the agent writes them per hop, and a rule that
            // set one would truncate bodies or hang the upstream.
            &route(
                "{action: {cluster: cart}, request_headers: {set: [{name: Content-Length, value: '0'}], add: [{name: transfer-encoding, value: chunked}], remove: [host]}, response_headers: {set: [{name: connection, value: close}], remove: [Keep-Alive, te, trailer, upgrade, proxy-connection]}}",
            ),
            &[
                "routes[0].request_headers.add[0].name: \"transfer-encoding\" is a framing or hop-by-hop header: the agent writes it for each hop",
                "routes[0].request_headers.set[0].name: \"Content-Length\" is a framing or hop-by-hop header",
                "routes[0].request_headers.remove[0]: \"host\" is a framing or hop-by-hop header",
                "routes[0].response_headers.set[0].name: \"connection\" is a framing or hop-by-hop header",
                "routes[0].response_headers.remove[0]: \"Keep-Alive\" is a framing",
                "routes[0].response_headers.remove[1]: \"te\" is a framing",
                "routes[0].response_headers.remove[2]: \"trailer\" is a framing",
                "routes[0].response_headers.remove[3]: \"upgrade\" is a framing",
                "routes[0].response_headers.remove[4]: \"proxy-connection\" is a framing",
            ],
        ),
        (
            &route("{action: {cluster: cart}, timeout: 7200s}"),
            &["routes[0].timeout: must be at most 3600s"],
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
            &route("{action: {redirect: {path: '/a?b'}}}"),
            &["action.redirect.path: invalid path \"/a?b\""],
        ),
        (
            &route("{action: {redirect: {path: /né}}}"),
            &["action.redirect.path: invalid path"],
        ),
        (
            &route(
                "{action: {direct_response: {status: 200, content_type: text/plain; charset=ü}}}",
            ),
            &["action.direct_response.content_type: header value contains a non-ASCII character"],
        ),
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
fn regex_paths_of_a_host_must_fit_in_one_set() {
    // Each fits the limit of one regex; agents match them as one set, which eleven outgrow.
    let table = |count: usize| {
        let routes: String = (0..count)
            .map(|i| {
                format!(
                    "        - {{match: {{regex: '/{i}\\w{{20}}'}}, action: {{cluster: cart}}}}\n"
                )
            })
            .collect();
        format!(
            "kind: RouteTable\nname: shop\nspec:\n  virtual_hosts:\n    - domains: [a.example.com]\n      routes:\n{routes}"
        )
    };
    let bad = "kind: RouteTable\nname: shop\nspec:\n  virtual_hosts:\n    - domains: [a.example.com]\n      routes:\n        - {match: {regex: /a}, action: {cluster: cart}}\n        - {match: {regex: '(b'}, action: {cluster: cart}}\n";
    cases(&[
        (
            bad,
            &["virtual_hosts[0].routes[1].match.regex: invalid regex"],
        ),
        (&table(10), &[]),
        (
            &table(11),
            &[
                "RouteTable/shop: virtual_hosts[0].routes: the regex paths of this virtual host are too large together",
            ],
        ),
    ]);
}

#[test]
fn retry_rules() {
    cases(&[
        (
            &route(
                "{action: {cluster: cart}, retry: {attempts: 11, retry_on: [5xx, sometimes], per_try_timeout: -1s, base_interval: 0s, buffer_bytes: 20000000}}",
            ),
            &[
                "routes[0].retry.attempts: 11 retries is above the limit of 10",
                "routes[0].retry.retry_on[1]: unknown value \"sometimes\"",
                "routes[0].retry.per_try_timeout: must be positive",
                "routes[0].retry.base_interval: must be positive",
                "routes[0].retry.buffer_bytes: 20000000 is above the limit of 16777216",
            ],
        ),
        (
            &route(
                "{action: {cluster: cart}, retry: {attempts: 2, retry_on: [retriable-status-codes], retriable_status_codes: [429, 700]}}",
            ),
            &["routes[0].retry.retriable_status_codes[1]: status 700 is not in 100-599"],
        ),
        (
            &route(
                "{action: {cluster: cart}, retry: {attempts: 2, retry_on: [retriable-status-codes]}}",
            ),
            &["routes[0].retry.retriable_status_codes: required by retry_on"],
        ),
        (
            &route(
                "{action: {cluster: cart}, retry: {attempts: 3, retry_on: [connect-failure, refused-stream, reset, 5xx, gateway-error], max_interval: 1s, retry_non_idempotent: true}}",
            ),
            &[],
        ),
        (
            &route(
                "{action: {cluster: cart}, retry: {attempts: 2, retry_on: [unavailable, resource-exhausted, cancelled, deadline-exceeded, internal], retry_non_idempotent: true}}",
            ),
            &[],
        ),
        (
            &route(
                "{action: {cluster: cart}, retry: {attempts: 2, retry_on: [reset, unavailable]}}",
            ),
            &[
                "routes[0].retry.retry_on[1]: \"unavailable\" retries gRPC calls, which are POST requests: it needs retry_non_idempotent: true",
            ],
        ),
    ]);
}

#[test]
fn grpc_rules() {
    cases(&[
        (
            &route(
                "{action: {cluster: cart}, grpc_web: true, match: {grpc: {service: pkg.v1.Users, method: Get}}}",
            ),
            &[],
        ),
        (
            &route("{action: {cluster: cart}, match: {grpc: {service: pkg.Users}}}"),
            &[],
        ),
        (
            &route("{action: {cluster: cart}, match: {grpc: {method: Get_2}}}"),
            &[],
        ),
        (
            &route("{action: {cluster: cart}, match: {prefix: /a, grpc: {}}}"),
            &[
                "routes[0].match.grpc: is a path condition itself: set it or exact, prefix or regex, not both",
                "routes[0].match.grpc: set service, method or both",
            ],
        ),
        (
            &route(
                "{action: {cluster: cart}, match: {grpc: {service: 'pkg..Users', method: 'Get/x'}}}",
            ),
            &[
                "routes[0].match.grpc.service: \"pkg..Users\" is not a gRPC service name",
                "routes[0].match.grpc.method: \"Get/x\" is not a gRPC method name",
            ],
        ),
        (
            &route("{action: {direct_response: {status: 200}}, grpc_web: true}"),
            &["routes[0].grpc_web: needs a forwarding action"],
        ),
    ]);
}

/// The checks of fields agents do not enforce yet.
#[test]
fn rules_of_refused_route_fields() {
    refused_cases(&[(
        &route("{action: {cluster: cart}, policies: ['']}"),
        &["routes[0].policies[0]: policy name is required"],
    )]);
}
