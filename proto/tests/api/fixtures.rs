//! The shared fixtures (`portico_test_support::fixtures`), plus what only these tests need:
//! the gateway resources (a policy of every kind, a quota and a FLEET rate limit among them,
//! consumers, and what attaches them), and error assertions.

use portico_api::ResourceSet;
pub use portico_test_support::fixtures::*;

/// Policies of every kind, consumers, an opaque secret, and a listener and a route table that
/// attach the policies: correct.
const GATEWAY: &str = r#"
kind: Listener
name: gateway
spec:
  port: 8081
  protocol: HTTP
  route_table: gateway
  policies: [auth, limit]
---
kind: RouteTable
name: gateway
spec:
  virtual_hosts:
    - domains: [api.example.com]
      routes:
        - match: {prefix: /v1/}
          action: {cluster: cart}
          retry:
            attempts: 2
            retry_on: [connect-failure, 5xx]
            per_try_timeout: 2.500s
          policies: [cors, quota]
        - action: {cluster: catalog}
          policies: [jwt, ip-filter, validation, headers, gzip]
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
  rate_limit: {requests: 100, period: 60s, key: {consumer: true}, scope: FLEET, plans: {gold: {requests: 1000, period: 60s}}}
---
kind: Policy
name: quota
spec:
  quota: {limit: "1000000", period: MONTH, plans: {gold: "5000000"}}
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
---
kind: Secret
name: token
spec: {opaque: s3cr3t}
"#;

/// The valid configuration with the gateway resources, and then `yaml`'s resources, added
/// or replacing those of the same key.
pub fn gateway_with(yaml: &str) -> ResourceSet {
    let mut set = valid_with(GATEWAY);
    for r in parse(yaml) {
        set.insert(r);
    }
    set
}

/// One item per line, indented, for failure messages.
pub fn lines<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(|i| format!("  {i}\n")).collect()
}

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
