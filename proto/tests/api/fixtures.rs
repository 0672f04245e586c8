//! A rich, valid configuration using every kind and most fields, with certificates generated
//! at test time; tests parse it, change one resource, and check the result.

use std::sync::OnceLock;

use portico_api::{Resource, ResourceSet, file};
use rcgen::{CertificateParams, CertifiedIssuer, KeyPair};

/// PEM material generated once per test run.
pub struct Pems {
    /// A self-signed certificate for shop.example.com.
    pub web_chain: String,
    pub web_key: String,
    /// A leaf signed by a CA: chain of leaf then CA.
    pub client_chain: String,
    pub client_key: String,
    /// The CA's certificate alone.
    pub ca_chain: String,
    /// A key that belongs to no certificate above.
    pub other_key: String,
}

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

/// A tls Secret document.
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
        "kind: Secret\nname: token\nspec: {opaque: s3cr3t}\n".to_string(),
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
        Err(errors) => panic!("fixture does not parse:\n{}", lines(&errors)),
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

pub fn lines<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(|i| format!("  {i}\n")).collect()
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
  policies: [auth, limit]
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
          retry:
            attempts: 2
            retry_on: [connect-failure, 5xx]
            per_try_timeout: 2.500s
          policies: [cors, quota]
        - name: canary
          match: {exact: /checkout}
          action:
            weighted_clusters:
              clusters:
                - {cluster: cart, weight: 90}
                - {cluster: catalog, weight: 10}
        - match: {regex: "^/items/[0-9]+$"}
          action: {cluster: catalog}
          policies: [jwt, ip-filter, validation, headers, gzip]
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
    - {address: 10.0.0.1, port: 8080, weight: 3, region: eu-west, zone: eu-west-1a}
    - {address: cart.internal, port: 8080}
  lb_policy: RING_HASH
  hash_policy: {header: x-session}
  health_check:
    path: /healthz
    interval: 5s
    timeout: 1s
    healthy_threshold: 2
    unhealthy_threshold: 3
    expected_statuses: [200, 204]
  outlier_detection: {consecutive_5xx: 5, base_ejection_time: 30s, max_ejection_percent: 50}
  circuit_breakers: {max_connections: 1000, max_pending_requests: 100, max_requests: 1000, max_retries: 3}
  connect_timeout: 0.250s
  tls:
    enabled: true
    server_name: cart.internal
    ca_secret: upstream-ca
    client_certificate_secret: client-cert
  protocol: HTTP2
  locality: {prefer_local: true, failover_threshold_percent: 70}
---
kind: Cluster
name: catalog
spec:
  endpoints: [{address: "::1", port: 9000}]
  lb_policy: LEAST_REQUEST
  service: catalog
---
kind: Policy
name: auth
spec:
  api_key_auth: {header: x-api-key, query_param: key, consumers: [alice]}
---
kind: Policy
name: jwt
spec:
  jwt_auth:
    issuer: https://issuer.example.com
    audiences: [shop]
    jwks: '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'
    consumers: [bob]
---
kind: Policy
name: limit
spec:
  rate_limit: {requests: 100, period: 1s, burst: 200, key: {client_ip: true}, scope: FLEET}
---
kind: Policy
name: quota
spec:
  quota: {limit: "1000000", period: MONTH}
---
kind: Policy
name: cors
spec:
  cors:
    allow_origins: ["https://shop.example.com", "http://localhost:3000"]
    allow_methods: [GET, POST]
    allow_headers: [content-type]
    expose_headers: [x-request-id]
    max_age: 600s
    allow_credentials: true
---
kind: Policy
name: ip-filter
spec:
  ip_filter: {allow: [10.0.0.0/8, "2001:db8::/32", 192.168.1.7], deny: [10.6.0.0/16]}
---
kind: Policy
name: validation
spec:
  request_validation:
    max_body_bytes: 1048576
    required_headers: [content-type]
    allowed_content_types: [application/json]
    allowed_methods: [GET, POST]
---
kind: Policy
name: headers
spec:
  headers:
    request: {set: [{name: x-edge, value: "1"}]}
    response: {remove: [x-powered-by]}
    security_headers: true
---
kind: Policy
name: gzip
spec:
  compression: {algorithms: [br, gzip], min_bytes: 1024, content_types: [text/*, application/json]}
---
kind: Consumer
name: alice
labels: {plan: gold}
spec:
  api_keys:
    - {id: k1, sha256: 2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b}
  plan: gold
---
kind: Consumer
name: bob
spec:
  jwt_subjects: [bob@example.com]
"#;

/// Checks that each expected substring is in its own error, in order, and that there are no
/// other errors; shows the input on failure.
pub fn assert_errors<E: std::fmt::Display>(input: &str, errors: &[E], expected: &[&str]) {
    let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let matched = got.len() == expected.len()
        && expected
            .iter()
            .zip(&got)
            .all(|(want, got)| got.contains(want));
    assert!(
        matched,
        "input:\n{input}\nexpected errors containing:\n{}got:\n{}",
        lines(expected),
        lines(&got)
    );
}
