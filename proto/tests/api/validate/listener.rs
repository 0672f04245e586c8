//! Listener rules, and listeners sharing a socket.

use super::{cases, refused_cases};

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
                "selector.regions[0]: value is required",
                "selector.labels: label keys must not be empty",
            ],
        ),
        (
            "kind: Listener\nname: plain\nspec: {port: 8443, protocol: HTTPS, route_table: shop, tls: {certificates: [{secret: web-cert}], require_client_cert: true}}\n",
            &["Listener/plain: tls.require_client_cert: needs tls.client_ca_secret"],
        ),
        (
            "kind: Listener\nname: plain\nspec: {port: 8443, protocol: HTTPS, route_table: shop, tls: {certificates: [{secret: web-cert}], client_ca_secret: nope}}\n",
            &["Listener/plain: tls.client_ca_secret: secret \"nope\" does not exist"],
        ),
        (
            "kind: Listener\nname: plain\nspec: {port: 8443, protocol: HTTPS, route_table: shop, tls: {certificates: [{secret: web-cert}], client_ca_secret: token}}\n---\nkind: Secret\nname: token\nspec: {opaque: x}\n",
            &["Listener/plain: tls.client_ca_secret: secret \"token\" is not a tls secret"],
        ),
        (
            "kind: Listener\nname: plain\nspec: {port: 80, protocol: HTTP, route_table: shop, policies: [], redirect_to_https: {port: 70000, status: 200}}\n",
            &[
                "Listener/plain: route_table: \"shop\" would be ignored: a listener with redirect_to_https routes nothing",
                "Listener/plain: redirect_to_https.port: port 70000 is not in 1-65535",
                "Listener/plain: redirect_to_https.status: status 200 is not a redirect",
            ],
        ),
        (
            "kind: Listener\nname: plain\nspec: {port: 8443, protocol: HTTPS, tls: {certificates: [{secret: web-cert}]}, redirect_to_https: {}}\n",
            &["Listener/plain: redirect_to_https: only HTTP listeners redirect to HTTPS"],
        ),
        (
            "kind: Listener\nname: plain\nspec: {port: 80, protocol: HTTP, route_table: shop, limits: {max_request_header_bytes: 8191}}\n",
            &["Listener/plain: limits.max_request_header_bytes: 8191 is below the minimum of 8192"],
        ),
    ]);
    // Policies are refused until agents apply them; the names are checked all the same.
    refused_cases(&[(
        "kind: Listener\nname: plain\nspec: {port: 80, protocol: HTTP, route_table: shop, policies: [\"\"]}\n",
        &["Listener/plain: policies[0]: policy name is required"],
    )]);
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
fn names_and_labels_are_bounded_and_in_their_character_set() {
    let long = "n".repeat(254);
    let fine = "n".repeat(253);
    let table = |vhost: &str, route: &str| {
        format!(
            "kind: RouteTable\nname: shop\nspec: {{virtual_hosts: [{{name: '{vhost}', domains: ['*'], routes: [{{name: '{route}', action: {{cluster: cart}}}}]}}]}}\n"
        )
    };
    cases(&[
        (&table(&fine, "v1/get:items"), &[]),
        (
            &table(&long, "has space"),
            &[
                "RouteTable/shop: virtual_hosts[0].name: invalid name \"nnnn",
                "RouteTable/shop: virtual_hosts[0].routes[0].name: invalid name \"has space\": use 1-253 bytes of visible ASCII",
            ],
        ),
        (
            &format!(
                "kind: Cluster\nname: cart\nlabels: {{'a b': x, ok: '{}', tab: \"a\\tb\"}}\nspec: {{}}\n",
                "n".repeat(257)
            ),
            &[
                "Cluster/cart: labels[\"a b\"]: label keys are 1-128 characters",
                "Cluster/cart: labels[\"ok\"]: the value is 257 bytes long; the limit is 256",
                "Cluster/cart: labels[\"tab\"]: the value contains a control character",
            ],
        ),
        (
            &format!(
                "kind: Listener\nname: plain\nspec: {{port: 80, protocol: HTTP, route_table: shop, selector: {{regions: ['{long}'], labels: {{'k k': v}}}}}}\n"
            ),
            &[
                "Listener/plain: selector.regions[0]: invalid name",
                "Listener/plain: selector.labels: label key: invalid name \"k k\"",
            ],
        ),
    ]);
}
