//! Configurations for tests: [`valid`], a rich configuration that sets every field agents
//! enforce (and nothing else), with certificates generated at test time; [`accepted`], edge
//! cases on top of it that validation accepts too; and helpers to write YAML documents.
//!
//! Validation tests change one resource of [`valid`] and check the errors; the agent's tests
//! compile every configuration here, so "valid" means "runs on an agent".

use std::sync::OnceLock;

use portico_api::{Resource, ResourceSet, file};
use rcgen::{CertificateParams, CertifiedIssuer, KeyPair};

/// PEM material generated once per test run.
pub struct Pems {
    /// A self-signed certificate for shop.example.com.
    pub web_chain: String,
    /// The key of `web_chain`.
    pub web_key: String,
    /// A leaf for agent.example.com signed by a CA: chain of leaf then CA.
    pub client_chain: String,
    /// The key of `client_chain`'s leaf.
    pub client_key: String,
    /// The CA's certificate alone.
    pub ca_chain: String,
    /// A key that belongs to no certificate above.
    pub other_key: String,
}

/// The PEM material, generated on first use.
pub fn pems() -> &'static Pems {
    static PEMS: OnceLock<Pems> = OnceLock::new();
    PEMS.get_or_init(|| {
        let web = rcgen::generate_simple_self_signed(vec!["shop.example.com".to_string()])
            .expect("self-signed certificate");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let client_key = KeyPair::generate().expect("client key");
        let client = CertificateParams::new(vec!["agent.example.com".to_string()])
            .expect("client params")
            .signed_by(&client_key, &ca)
            .expect("client certificate");
        Pems {
            web_chain: web.cert.pem(),
            web_key: web.signing_key.serialize_pem(),
            client_chain: format!("{}{}", client.pem(), ca.pem()),
            client_key: client_key.serialize_pem(),
            ca_chain: ca.pem(),
            other_key: KeyPair::generate().expect("other key").serialize_pem(),
        }
    })
}

/// Indents a multi-line value for a YAML block scalar at `spaces`.
pub fn block(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

/// A tls Secret document; an empty `key` leaves the private key out (a CA bundle).
pub fn tls_secret(name: &str, chain: &str, key: &str) -> String {
    let mut doc = format!(
        "kind: Secret\nname: {name}\nspec:\n  tls:\n    certificate_chain: |\n{}",
        block(chain, 6)
    );
    if !key.is_empty() {
        doc.push_str(&format!("    private_key: |\n{}", block(key, 6)));
    }
    doc
}

/// The valid configuration as YAML.
pub fn valid_yaml() -> String {
    let p = pems();
    let secrets = [
        tls_secret("web-cert", &p.web_chain, &p.web_key),
        tls_secret("client-cert", &p.client_chain, &p.client_key),
        tls_secret("upstream-ca", &p.ca_chain, ""),
    ];
    format!("{VALID}---\n{}", secrets.join("---\n"))
}

/// The valid configuration.
pub fn valid() -> Vec<Resource> {
    static VALID: OnceLock<Vec<Resource>> = OnceLock::new();
    VALID.get_or_init(|| parse(&valid_yaml())).clone()
}

/// Resources from YAML documents, panicking with every error.
pub fn parse(yaml: &str) -> Vec<Resource> {
    match file::parse("test.yaml".as_ref(), yaml) {
        Ok(loaded) => loaded.into_iter().map(|l| l.resource).collect(),
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            panic!("fixture does not parse:\n{}", lines.join("\n"))
        }
    }
}

/// The valid configuration with `yaml`'s resources added or replacing those of the same key.
pub fn valid_with(yaml: &str) -> ResourceSet {
    let mut set: ResourceSet = valid().into_iter().collect();
    for r in parse(yaml) {
        set.insert(r);
    }
    set
}

/// Edge cases validation accepts, as (what it is, YAML to apply on top of [`valid`] with
/// [`valid_with`]). Each must validate and compile like [`valid`] does.
pub fn accepted() -> Vec<(&'static str, String)> {
    let table = |routes: &str| {
        format!(
            "kind: RouteTable\nname: shop\nspec:\n  virtual_hosts:\n    - domains: [\"*\"]\n      routes:\n{}",
            block(routes, 8)
        )
    };
    let cluster = |spec: &str| format!("kind: Cluster\nname: catalog\nspec: {spec}\n");
    let listener =
        |spec: &str| format!("kind: Listener\nname: plain\nspec: {{route_table: shop, {spec}}}\n");
    vec![
        (
            "a route without a match, a redirect of the path alone",
            table(
                "- {match: {prefix: /old/}, action: {redirect: {path: /new%20page}}}\n- action: {cluster: cart}",
            ),
        ),
        (
            "a redirect to another host keeping the rest, and one with only a status",
            table(
                "- {match: {exact: /a}, action: {redirect: {host: \"[::1]\", status: 307}}}\n- {action: {redirect: {status: 302}}}",
            ),
        ),
        (
            "value conditions left out mean present; present and an inverted regex",
            table(
                "- match:\n    headers: [{name: X-Flag}, {name: x-env, regex: \"prod|staging\", invert: true}]\n    query_params: [{name: debug}, {name: v, present: true}, {name: \"a b\", exact: \"é\"}]\n  action: {cluster: cart}",
            ),
        ),
        (
            "a weighted split where one cluster has no weight",
            table(
                "- action: {weighted_clusters: {clusters: [{cluster: cart, weight: 1}, {cluster: catalog}]}}",
            ),
        ),
        (
            "lowercase methods, a regex path with its own anchors, header values with tabs",
            table(
                "- match: {regex: \"^/v[0-9]+/.*$\", methods: [get, PURGE]}\n  request_headers: {set: [{name: x-note, value: \"a\\tb c\"}]}\n  action: {cluster: cart}",
            ),
        ),
        (
            "a direct response with the largest status and a content type with parameters",
            table(
                "- action: {direct_response: {status: 599, body: \"\", content_type: \"text/html; charset=utf-8\"}}",
            ),
        ),
        (
            "an HTTP2 cluster over TLS trusting a full key pair, named by IP",
            cluster(
                "{endpoints: [{address: 127.0.0.1, port: 9443}], protocol: HTTP2, tls: {enabled: true, server_name: 127.0.0.1, ca_secret: client-cert}}",
            ),
        ),
        (
            "gRPC routes by service and method, gRPC-Web, retries on gRPC statuses",
            table(
                "- {match: {grpc: {service: shop.v1.Users, method: Get}}, action: {cluster: catalog}, grpc_web: true, retry: {attempts: 2, retry_on: [unavailable, resource-exhausted], retry_non_idempotent: true}}\n- {match: {grpc: {service: shop.v1.Users}}, action: {cluster: catalog}}\n- {match: {grpc: {method: Watch}}, action: {cluster: catalog}}",
            ),
        ),
        (
            "a gRPC health check of one service",
            cluster(
                "{endpoints: [{address: 127.0.0.1, port: 9000}], protocol: HTTP2, health_check: {grpc: {service: shop.v1.Users}, interval: 2s}}",
            ),
        ),
        (
            "a cluster without endpoints, with TLS off",
            cluster("{endpoints: [], tls: {enabled: false}}"),
        ),
        (
            "a cluster whose only endpoints are the nodes announcing a service",
            cluster("{service: catalog-api}"),
        ),
        (
            "an IPv6 listener with the smallest header limit",
            listener(
                "address: \"::1\", port: 8080, protocol: HTTP, limits: {max_request_header_bytes: 8192}",
            ),
        ),
        (
            "a cluster over TLS trusting the system roots",
            cluster("{endpoints: [{address: api.example.com, port: 443}], tls: {enabled: true}}"),
        ),
        (
            "an HTTPS listener verifying client certificates when clients present one",
            listener(
                "port: 8443, protocol: HTTPS, tls: {certificates: [{secret: web-cert}], client_ca_secret: upstream-ca}",
            ),
        ),
        (
            "an HTTPS listener requiring client certificates, trusting a CA that has a key",
            listener(
                "port: 8443, protocol: HTTPS, tls: {certificates: [{secret: web-cert}], client_ca_secret: client-cert, require_client_cert: true}",
            ),
        ),
        (
            "an HTTP listener redirecting to HTTPS on the default port",
            "kind: Listener\nname: edge-case\nspec: {port: 8088, protocol: HTTP, redirect_to_https: {}}\n".to_string(),
        ),
        (
            "a TLS 1.3 listener offering HTTP/1.1 alone, the certificate named for no server",
            listener(
                "port: 8443, protocol: HTTPS, tls: {certificates: [{secret: web-cert}], min_version: TLS_1_3, alpn: [http/1.1]}",
            ),
        ),
    ]
}

const VALID: &str = r#"
kind: Listener
name: web
labels: {team: storefront, tier: edge}
spec:
  address: 0.0.0.0
  port: 443
  protocol: HTTPS
  tls:
    certificates:
      - server_names: [shop.example.com, "*.shop.example.com"]
        secret: web-cert
    min_version: TLS_1_2
    alpn: [h2, http/1.1]
  limits:
    max_request_body_bytes: 10485760
    header_read_timeout: 10s
    idle_timeout: 60s
    max_connections: 10000
    max_request_header_bytes: 65536
  route_table: shop
  selector:
    regions: [eu-west]
    zones: [eu-west-1a, eu-west-1b]
    labels: {role: edge}
  merge_slashes: true
---
kind: Listener
name: plain
spec:
  port: 80
  protocol: HTTP
  routeTable: shop
---
kind: Listener
name: to-https
spec:
  port: 8000
  protocol: HTTP
  redirect_to_https: {port: 443, status: 308}
---
kind: Listener
name: web-us
spec:
  port: 443
  protocol: HTTPS
  tls: {certificates: [{secret: web-cert}]}
  route_table: shop
  selector: {regions: [us-east]}
---
kind: RouteTable
name: shop
spec:
  virtual_hosts:
    - name: shop
      domains: [shop.example.com, "*.shop.example.com"]
      routes:
        - name: api
          match:
            prefix: /api/
            methods: [GET, POST]
            headers:
              - {name: x-debug, present: true, invert: true}
              - {name: user-agent, regex: "^curl/.*"}
            query_params:
              - {name: version, exact: "2"}
          action: {cluster: cart}
          prefix_rewrite: /
          request_headers:
            add: [{name: x-forwarded-prefix, value: /api}]
            set: [{name: x-edge, value: portico}]
            remove: [cookie]
          response_headers:
            remove: [server]
          timeout: 15s
        - name: canary
          match: {exact: /checkout}
          action:
            weighted_clusters:
              clusters:
                - {cluster: cart, weight: 90}
                - {cluster: catalog, weight: 10}
        - match: {regex: "^/items/[0-9]+$"}
          action: {cluster: catalog}
        - match: {prefix: /old}
          action:
            redirect: {scheme: https, host: www.example.com, port: 8443, path: /new, status: 308}
    - name: default
      domains: ["*"]
      routes:
        - action:
            direct_response: {status: 404, body: not here, content_type: text/plain}
---
kind: Cluster
name: cart
spec:
  endpoints:
    - {address: 10.0.0.1, port: 8080, weight: 1}
    - {address: cart.internal, port: 8080}
  lb_policy: ROUND_ROBIN
  circuit_breakers: {max_connections: 1000, max_pending_requests: 100}
  connect_timeout: 0.250s
  tls:
    enabled: true
    server_name: cart.internal
    ca_secret: upstream-ca
    client_certificate_secret: client-cert
  protocol: HTTP1
---
kind: Cluster
name: catalog
spec:
  endpoints: [{address: "::1", port: 9000}]
  protocol: HTTP2
  connect_timeout: 2s
"#;
