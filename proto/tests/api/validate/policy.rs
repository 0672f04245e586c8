//! Policy rules: each kind's settings, the JWKS a JWT policy verifies with, the header names a
//! policy may write.

use super::refused_cases;

#[test]
fn policy_rules() {
    let policy = |spec: &str| format!("kind: Policy\nname: limit\nspec: {spec}\n");
    let at = "Policy/limit: ";
    refused_cases(&[
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
            &[
                &format!("{at}jwt_auth.issuer: issuer is required"),
                "jwt_auth.jwks: jwks has no keys",
            ],
        ),
        (
            &policy("{jwt_auth: {issuer: i}}"),
            &["jwt_auth.jwks: jwks or jwks_secret is required"],
        ),
        (
            &policy(
                "{jwt_auth: {issuer: i, jwks: '{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}', jwks_secret: token}}",
            ),
            &[
                "jwt_auth.jwks_secret: set either jwks or jwks_secret, not both",
                "jwt_auth.jwks_secret: secret \"token\": jwks is not JSON",
            ],
        ),
        (
            &policy(
                "{jwt_auth: {issuer: i, jwks: '{\"keys\": [{\"kty\": \"DSA\"}, {\"kty\": \"RSA\", \"n\": \"AQAB\", \"alg\": \"RS1\"}, {\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"a+b\"}, {\"kty\": \"OKP\", \"crv\": \"Ed448\", \"x\": \"AA\"}, {\"kid\": \"x\"}]}'}}",
            ),
            &[
                &format!(
                    "{at}jwt_auth.jwks.keys[0].kty: unknown key type \"DSA\"; expected one of: RSA, EC, OKP, oct"
                ),
                "jwt_auth.jwks.keys[1].alg: unsupported algorithm \"RS1\"",
                "jwt_auth.jwks.keys[1].e: e is required for key type RSA",
                "jwt_auth.jwks.keys[2].x: not base64url",
                "jwt_auth.jwks.keys[2].y: y is required for key type EC",
                "jwt_auth.jwks.keys[3].crv: unsupported curve \"Ed448\"",
                "jwt_auth.jwks.keys[4].kty: kty is required",
            ],
        ),
        (
            &policy(
                "{jwt_auth: {issuer: i, jwks: '{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}', cookie: 'a b', consumer_header: host, forward_claims: {email: x-email, sub: content-length, '': x-empty}}}",
            ),
            &[
                "jwt_auth.cookie: \"a b\" is not a cookie name",
                "jwt_auth.forward_claims[\"\"]: claim name must not be empty",
                "jwt_auth.forward_claims[\"sub\"]: \"content-length\" is a framing or hop-by-hop header",
                "jwt_auth.consumer_header: \"host\" is a framing or hop-by-hop header",
            ],
        ),
        (
            &policy("{api_key_auth: {query_param: 'a=b', consumer_header: Connection}}"),
            &[
                "api_key_auth.query_param: invalid query parameter name \"a=b\"",
                "api_key_auth.consumer_header: \"Connection\" is a framing or hop-by-hop header",
            ],
        ),
        (
            &policy(
                "{rate_limit: {requests: 10, plans: {gold: {requests: 0, burst: 2000000000}, '': {requests: 1}}}}",
            ),
            &[
                "rate_limit.plans[\"\"]: plan name must not be empty",
                "rate_limit.plans[\"gold\"].requests: requests must be above zero",
                "rate_limit.plans[\"gold\"].burst: 2000000000 is above the limit",
            ],
        ),
        (
            &policy("{ip_filter: {trusted_proxies: [10.0.0.0/8, 'x']}}"),
            &["ip_filter.trusted_proxies[1]: invalid CIDR \"x\""],
        ),
        (
            &policy(
                "{headers: {request: {set: [{name: Host, value: x}], remove: [transfer-encoding]}, response: {add: [{name: content-length, value: '1'}]}, content_security_policy: \"a\\u0001\"}}",
            ),
            &[
                "headers.request.set[0].name: \"Host\" is a framing or hop-by-hop header",
                "headers.request.remove[0]: \"transfer-encoding\" is a framing or hop-by-hop header",
                "headers.response.add[0].name: \"content-length\" is a framing",
                "headers.content_security_policy: header value contains a control character",
            ],
        ),
        (
            &policy(
                "{request_validation: {json_schema: '{\"type\": \"nope\"}', max_json_bytes: \"100000000000\"}}",
            ),
            &[
                "request_validation.max_json_bytes: 100000000000 is above the limit",
                "request_validation.json_schema: invalid JSON Schema",
            ],
        ),
        (
            &policy("{request_validation: {json_schema: '{'}}"),
            &["request_validation.json_schema: json_schema is not JSON"],
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
            &policy("{quota: {plans: {'': 5, gold: 0}}}"),
            &[
                "quota.limit: limit must be above zero",
                "quota.period: period is required",
                "quota.plans[\"\"]: plan name must not be empty",
                "quota.plans[\"gold\"]: limit must be above zero",
            ],
        ),
        (
            &policy(
                "{rate_limit: {requests: 10, scope: FLEET, burst: 20, key: {client_ip: true}, period: 0.5s, plans: {gold: {requests: 5, burst: 1}}}}",
            ),
            &[
                "rate_limit.key.client_ip: applies to rate limits of scope LOCAL only: FLEET budgets are kept per consumer or per route",
                "rate_limit.burst: applies to rate limits of scope LOCAL only",
                "rate_limit.period: a FLEET limit's period is at least 1s",
                "rate_limit.plans[\"gold\"].burst: applies to rate limits of scope LOCAL only",
            ],
        ),
        (
            &policy("{rate_limit: {requests: 10, scope: FLEET, key: {header: x-tenant}}}"),
            &["rate_limit.key.header: applies to rate limits of scope LOCAL only"],
        ),
        (
            &policy(
                "{rate_limit: {requests: 10, scope: FLEET, key: {consumer: true}, period: 60s}}",
            ),
            &[],
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
