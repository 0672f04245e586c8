//! API listeners, the kinds a listener is for, and what xDS clients cannot be sent, refused on
//! the listeners they run and what those reach.

use super::cases;

/// An API listener `greeter.example.internal` → RouteTable `greeter` → Cluster `greeter`, with
/// `route` as the table's one route and `cluster` as the cluster's spec.
fn grpc(route: &str, cluster: &str) -> String {
    format!(
        "kind: Listener\nname: greeter.example.internal\nspec: {{protocol: API, route_table: greeter}}\n\
         ---\n\
         kind: RouteTable\nname: greeter\nspec:\n  virtual_hosts:\n    - domains: [greeter.example.internal]\n      routes:\n        - {route}\n\
         ---\n\
         kind: Cluster\nname: greeter\nspec: {cluster}\n"
    )
}

const ROUTE: &str = "{match: {prefix: /}, action: {cluster: greeter}}";
const CLUSTER: &str = "{protocol: HTTP2, endpoints: [{address: 10.0.0.1, port: 50051}]}";

#[test]
fn api_listeners_have_no_socket() {
    cases(&[
        (&grpc(ROUTE, CLUSTER), &[]),
        (
            &format!(
                "{}---\nkind: Listener\nname: api.example\nspec: {{protocol: API, route_table: greeter, address: 0.0.0.0, port: 80, merge_slashes: true, limits: {{idle_timeout: 1s}}}}\n",
                grpc(ROUTE, CLUSTER)
            ),
            &[
                "Listener/api.example: address: must be unset: API listeners have no socket",
                "Listener/api.example: port: must be unset",
                "Listener/api.example: limits: must be unset",
                "Listener/api.example: merge_slashes: must be unset",
            ],
        ),
        (
            &format!(
                "{}---\nkind: Listener\nname: api.example\nspec: {{protocol: API, route_table: greeter, selector: {{kinds: [envoy, grpc]}}}}\n",
                grpc(ROUTE, CLUSTER)
            ),
            &[
                "Listener/api.example: selector.kinds[0]: envoy runs HTTP and HTTPS listeners, not API listeners",
            ],
        ),
        (
            "kind: Listener\nname: e\nspec: {protocol: HTTP, port: 9999, route_table: shop, selector: {kinds: [grpc, nginx, portico, portico]}}\n",
            &[
                "Listener/e: selector.kinds[0]: gRPC clients run API listeners only",
                "Listener/e: selector.kinds[1]: unknown kind \"nginx\"",
                "Listener/e: selector.kinds[3]: \"portico\" is listed twice",
            ],
        ),
    ]);
}

#[test]
fn listeners_for_different_kinds_do_not_share_a_socket() {
    // The fixtures' "plain" listener binds 0.0.0.0:80 for every Portico agent.
    let on_80 = |kinds: &str| {
        format!(
            "{}---\nkind: Listener\nname: other\nspec: {{protocol: HTTP, port: 80, route_table: greeter, selector: {{kinds: {kinds}}}}}\n",
            grpc(ROUTE, CLUSTER)
        )
    };
    cases(&[
        (&on_80("[envoy]"), &[]),
        (
            &on_80("[envoy, portico]"),
            &["Listener/plain: port: 0.0.0.0:80 is also bound by Listener/other"],
        ),
    ]);
}

#[test]
fn what_grpc_clients_cannot_be_sent_is_refused_on_what_api_listeners_reach() {
    let via = "(gRPC clients are sent it through Listener/greeter.example.internal)";
    let route = "virtual_hosts[0].routes[0]";
    cases(&[
        (
            &grpc(
                "{match: {prefix: /, methods: [GET], query_params: [{name: q}]}, prefix_rewrite: /x, retry: {attempts: 1}, action: {cluster: greeter}}",
                CLUSTER,
            ),
            &[
                &format!(
                    "RouteTable/greeter: {route}.match.methods: cannot be sent over xDS: gRPC clients send every call as POST"
                ),
                &format!("RouteTable/greeter: {route}.match.query_params: cannot be sent over xDS"),
                &format!(
                    "RouteTable/greeter: {route}.prefix_rewrite: cannot be sent over xDS: gRPC clients do not rewrite paths or headers {via}"
                ),
                &format!("RouteTable/greeter: {route}.retry: cannot be sent over xDS"),
            ],
        ),
        (
            &grpc(
                "{match: {exact: /only-one-segment}, action: {direct_response: {status: 200}}}",
                CLUSTER,
            ),
            &[
                &format!(
                    "RouteTable/greeter: {route}.match.exact: cannot be sent over xDS: gRPC clients match exact paths of the form /service/method only"
                ),
                &format!(
                    "RouteTable/greeter: {route}.action.direct_response: cannot be sent over xDS"
                ),
            ],
        ),
        (
            &grpc(
                ROUTE,
                "{lb_policy: MAGLEV, hash_policy: {cookie: c}, health_check: {path: /}, connect_timeout: 1s, circuit_breakers: {max_requests: 5, max_retries: 1}, endpoints: [{address: backend.internal, port: 50051}]}",
            ),
            &[
                "Cluster/greeter: endpoints[0].address: cannot be sent over xDS: xDS endpoints are IP addresses",
                "Cluster/greeter: protocol: cannot be sent over xDS: gRPC clients speak HTTP/2: set protocol HTTP2",
                "Cluster/greeter: lb_policy: cannot be sent over xDS",
                "Cluster/greeter: hash_policy.cookie: cannot be sent over xDS: gRPC clients hash headers only",
                "Cluster/greeter: health_check: cannot be sent over xDS: gRPC clients do not run active health checks",
                "Cluster/greeter: connect_timeout: cannot be sent over xDS",
                "Cluster/greeter: circuit_breakers.max_retries: cannot be sent over xDS",
            ],
        ),
    ]);
}

#[test]
fn what_envoy_cannot_be_sent_is_refused_on_listeners_for_envoy_only() {
    let via = "(Envoy proxies are sent it through Listener/edge)";
    let edge = |limits: &str, cluster: &str| {
        format!(
            "kind: Listener\nname: edge\nspec: {{protocol: HTTP, port: 9090, route_table: edge, selector: {{kinds: [envoy]}}, limits: {limits}}}\n\
             ---\n\
             kind: RouteTable\nname: edge\nspec:\n  virtual_hosts:\n    - domains: [\"*\"]\n      routes:\n        - {{match: {{prefix: /, methods: [GET]}}, retry: {{attempts: 1}}, action: {{cluster: edge}}}}\n\
             ---\n\
             kind: Cluster\nname: edge\nspec: {cluster}\n"
        )
    };
    cases(&[
        // Methods, retries, health checks and least request all map to Envoy.
        (
            &edge(
                "{idle_timeout: 5s, max_request_header_bytes: 16384}",
                "{lb_policy: LEAST_REQUEST, health_check: {path: /}, endpoints: [{address: 10.0.0.1, port: 80}]}",
            ),
            &[],
        ),
        (
            &edge(
                "{max_connections: 10, max_request_body_bytes: 100, max_request_header_bytes: 10000}",
                "{locality: {prefer_local: true}, endpoints: [{address: 10.0.0.1, port: 80}]}",
            ),
            &[
                &format!(
                    "Listener/edge: limits.max_request_body_bytes: cannot be sent over xDS: Envoy has no limit on streamed request bodies {via}"
                ),
                "Listener/edge: limits.max_connections: cannot be sent over xDS",
                "Listener/edge: limits.max_request_header_bytes: cannot be sent over xDS: Envoy counts the request head limit in KiB",
                "Cluster/edge: locality: cannot be sent over xDS",
            ],
        ),
        // The same limits on a listener for Portico agents only are fine.
        (
            "kind: Listener\nname: edge\nspec: {protocol: HTTP, port: 9090, route_table: shop, limits: {max_connections: 10, max_request_body_bytes: 100}}\n",
            &[],
        ),
    ]);
}

#[test]
fn redirect_listeners_and_client_certificates_are_refused_for_envoy() {
    cases(&[
        (
            "kind: Listener\nname: edge\nspec: {protocol: HTTP, port: 9090, selector: {kinds: [envoy]}, redirect_to_https: {port: 443}}\n",
            &[
                "Listener/edge: redirect_to_https: cannot be sent over xDS: the HTTPS redirect listener is not translated to xDS yet",
            ],
        ),
        (
            "kind: Listener\nname: edge\nspec: {protocol: HTTPS, port: 9443, route_table: shop, selector: {kinds: [envoy]}, tls: {certificates: [{secret: web-cert}], client_ca_secret: upstream-ca}}\n",
            &[
                "Listener/edge: tls.client_ca_secret: cannot be sent over xDS: client certificate verification is not translated",
                // What the fixture's route table reaches, refused for Envoy as well.
                "Cluster/cart: endpoints[1].address: cannot be sent over xDS",
                "Cluster/cart: tls: cannot be sent over xDS",
            ],
        ),
        // For Portico agents both work.
        (
            "kind: Listener\nname: edge\nspec: {protocol: HTTP, port: 9090, redirect_to_https: {port: 443}}\n",
            &[],
        ),
    ]);
}
