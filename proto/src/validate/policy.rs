//! Policy rules: the policy kind is set, and each kind's own settings are well-formed: header
//! names a policy writes are not framing or hop-by-hop headers (the rule routes share,
//! `field::written_header`), a JWKS holds keys agents can verify with, a JSON Schema compiles.

use super::Errors;
use super::field::{self, MAX_PERIOD_SECS};
use crate::pb::{
    Cors, HeaderPolicy, JwtAuth, Policy, RateLimit, RequestValidation, policy, quota, rate_limit,
    rate_limit_key,
};

const COMPRESSION: &[&str] = &["br", "gzip"];
const MAX_BODY_BYTES: u64 = 1 << 36;
const MAX_RATE: u64 = 1_000_000_000;

pub(crate) fn check(p: &Policy, e: &mut Errors) {
    match &p.policy {
        None => e.add(
            "",
            "a policy kind is required (api_key_auth, jwt_auth, rate_limit, ...)",
        ),
        Some(policy::Policy::ApiKeyAuth(a)) => {
            if !a.header.is_empty() {
                e.check("api_key_auth.header", field::header_name(&a.header));
            }
            if !a.query_param.is_empty() && a.query_param.contains(['&', '=', '#']) {
                e.add(
                    "api_key_auth.query_param",
                    format!("invalid query parameter name {:?}", a.query_param),
                );
            }
            consumers(&a.consumers, "api_key_auth", e);
            if !a.consumer_header.is_empty() {
                e.check(
                    "api_key_auth.consumer_header",
                    field::written_header(&a.consumer_header),
                );
            }
        }
        Some(policy::Policy::JwtAuth(j)) => jwt(j, e),
        Some(policy::Policy::RateLimit(r)) => rate(r, e),
        Some(policy::Policy::Quota(q)) => {
            if q.limit == 0 {
                e.add("quota.limit", "limit must be above zero");
            }
            match quota::Period::try_from(q.period) {
                Ok(quota::Period::Unspecified) => e.add("quota.period", "period is required"),
                Ok(_) => {}
                Err(_) => e.add("quota.period", format!("unknown enum value {}", q.period)),
            }
            for (plan, limit) in &q.plans {
                let at = format!("quota.plans[{plan:?}]");
                if plan.is_empty() {
                    e.add(&at, "plan name must not be empty");
                }
                if *limit == 0 {
                    e.add(&at, "limit must be above zero");
                }
            }
        }
        Some(policy::Policy::Cors(c)) => cors(c, e),
        Some(policy::Policy::IpFilter(f)) => {
            for (list, cidrs) in [
                ("allow", &f.allow),
                ("deny", &f.deny),
                ("trusted_proxies", &f.trusted_proxies),
            ] {
                for (i, c) in cidrs.iter().enumerate() {
                    e.check(format!("ip_filter.{list}[{i}]"), field::cidr(c));
                }
            }
        }
        Some(policy::Policy::RequestValidation(v)) => request_validation(v, e),
        Some(policy::Policy::Headers(h)) => headers(h, e),
        Some(policy::Policy::Compression(c)) => {
            for (i, a) in c.algorithms.iter().enumerate() {
                e.check(
                    format!("compression.algorithms[{i}]"),
                    field::one_of(a, COMPRESSION),
                );
            }
            field::at_most(e, "compression.min_bytes", c.min_bytes, 1 << 30);
            for (i, t) in c.content_types.iter().enumerate() {
                e.check(
                    format!("compression.content_types[{i}]"),
                    field::media_type(t, true),
                );
            }
        }
    }
}

fn consumers(names: &[String], at: &str, e: &mut Errors) {
    for (i, c) in names.iter().enumerate() {
        e.check(
            format!("{at}.consumers[{i}]"),
            field::required(c, "consumer name"),
        );
    }
}

fn jwt(j: &JwtAuth, e: &mut Errors) {
    e.check("jwt_auth.issuer", field::required(&j.issuer, "issuer"));
    match (j.jwks.is_empty(), j.jwks_secret.is_empty()) {
        (true, true) => e.add("jwt_auth.jwks", "jwks or jwks_secret is required"),
        (false, false) => e.add(
            "jwt_auth.jwks_secret",
            "set either jwks or jwks_secret, not both",
        ),
        (false, true) => {
            for (field, message) in jwks(&j.jwks) {
                e.add(join("jwt_auth.jwks", &field), message);
            }
        }
        // The Secret's value is checked where it is referenced (`refs`).
        (true, false) => {}
    }
    if !j.header.is_empty() {
        e.check("jwt_auth.header", field::header_name(&j.header));
    }
    if !j.cookie.is_empty() {
        e.check("jwt_auth.cookie", field::cookie_name(&j.cookie));
    }
    consumers(&j.consumers, "jwt_auth", e);
    for (claim, header) in &j.forward_claims {
        let at = format!("jwt_auth.forward_claims[{claim:?}]");
        if claim.is_empty() {
            e.add(&at, "claim name must not be empty");
        }
        e.check(&at, field::written_header(header));
    }
    if !j.consumer_header.is_empty() {
        e.check(
            "jwt_auth.consumer_header",
            field::written_header(&j.consumer_header),
        );
    }
}

/// The key types and curves agents verify tokens with, and the algorithms a key may name.
const KEY_TYPES: &[&str] = &["RSA", "EC", "OKP", "oct"];
const CURVES: &[(&str, &[&str])] = &[("EC", &["P-256", "P-384"]), ("OKP", &["Ed25519"])];
const ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// The errors of a JSON Web Key Set, as (field path below the set, message): it is JSON with a
/// non-empty `keys` array, and each key has a known type, curve and algorithm and the
/// base64url parameters its type needs.
pub(crate) fn jwks(text: &str) -> Vec<(String, String)> {
    let one = |message: String| vec![(String::new(), message)];
    let value = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => v,
        Err(err) => return one(format!("jwks is not JSON: {err}")),
    };
    let Some(serde_json::Value::Array(keys)) = value.get("keys") else {
        return one("jwks must be an object with a \"keys\" array".into());
    };
    if keys.is_empty() {
        return one("jwks has no keys".into());
    }
    let mut out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let at = |f: &str| format!("keys[{i}].{f}");
        let text = |f: &str| key.get(f).and_then(serde_json::Value::as_str);
        let Some(kty) = text("kty") else {
            out.push((at("kty"), "kty is required".into()));
            continue;
        };
        if !KEY_TYPES.contains(&kty) {
            out.push((
                at("kty"),
                format!(
                    "unknown key type {kty:?}; expected one of: {}",
                    KEY_TYPES.join(", ")
                ),
            ));
            continue;
        }
        if let Some(alg) = key.get("alg") {
            match alg.as_str() {
                Some(a) if ALGORITHMS.contains(&a) => {}
                _ => out.push((
                    at("alg"),
                    format!(
                        "unsupported algorithm {alg}; expected one of: {}",
                        ALGORITHMS.join(", ")
                    ),
                )),
            }
        }
        if let Some((_, curves)) = CURVES.iter().find(|(t, _)| *t == kty) {
            match text("crv") {
                Some(c) if curves.contains(&c) => {}
                other => out.push((
                    at("crv"),
                    format!(
                        "unsupported curve {:?} for key type {kty}; expected one of: {}",
                        other.unwrap_or(""),
                        curves.join(", ")
                    ),
                )),
            }
        }
        let params: &[&str] = match kty {
            "RSA" => &["n", "e"],
            "EC" => &["x", "y"],
            "OKP" => &["x"],
            _ => &["k"],
        };
        for p in params {
            match text(p) {
                Some(v) if base64url(v) => {}
                Some(_) => out.push((at(p), "not base64url".into())),
                None => out.push((at(p), format!("{p} is required for key type {kty}"))),
            }
        }
    }
    out
}

/// Unpadded base64url text that decodes.
fn base64url(s: &str) -> bool {
    !s.is_empty()
        && s.len() % 4 != 1
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `at.below`, or `at` when `below` is empty.
fn join(at: &str, below: &str) -> String {
    if below.is_empty() {
        at.to_string()
    } else {
        format!("{at}.{below}")
    }
}

fn headers(h: &HeaderPolicy, e: &mut Errors) {
    for (at, t) in [
        ("headers.request", h.request.as_ref()),
        ("headers.response", h.response.as_ref()),
    ] {
        field::header_transform(e, at, t);
    }
    if !h.content_security_policy.is_empty() {
        e.check(
            "headers.content_security_policy",
            field::header_value(&h.content_security_policy),
        );
    }
}

fn rate(r: &RateLimit, e: &mut Errors) {
    limit("rate_limit", (r.requests, r.period.as_ref(), r.burst), e);
    for (plan, p) in &r.plans {
        let at = format!("rate_limit.plans[{plan:?}]");
        if plan.is_empty() {
            e.add(&at, "plan name must not be empty");
        }
        limit(&at, (p.requests, p.period.as_ref(), p.burst), e);
    }
    let key = r.key.as_ref().and_then(|k| k.key.as_ref());
    if let Some(rate_limit_key::Key::Header(name)) = key {
        e.check("rate_limit.key.header", field::header_name(name));
    }
    field::known_enum::<rate_limit::Scope>(e, "rate_limit.scope", r.scope);
    if r.scope == rate_limit::Scope::Fleet as i32 {
        fleet(r, key, e);
    }
}

/// What a FLEET limit cannot have: its budget is counted per window, per consumer or route.
fn fleet(r: &RateLimit, key: Option<&rate_limit_key::Key>, e: &mut Errors) {
    let local_only = "applies to rate limits of scope LOCAL only";
    match key {
        Some(rate_limit_key::Key::ClientIp(_)) => e.add(
            "rate_limit.key.client_ip",
            format!("{local_only}: FLEET budgets are kept per consumer or per route"),
        ),
        Some(rate_limit_key::Key::Header(_)) => e.add(
            "rate_limit.key.header",
            format!("{local_only}: FLEET budgets are kept per consumer or per route"),
        ),
        _ => {}
    }
    let periods = std::iter::once(("rate_limit".to_string(), r.period.as_ref(), r.burst)).chain(
        r.plans.iter().map(|(plan, p)| {
            (
                format!("rate_limit.plans[{plan:?}]"),
                p.period.as_ref(),
                p.burst,
            )
        }),
    );
    for (at, period, burst) in periods {
        if burst > 0 {
            e.add(
                format!("{at}.burst"),
                format!("{local_only}: a FLEET limit counts requests per window of its period"),
            );
        }
        let ms = period.map_or(1000, |d| {
            d.seconds.saturating_mul(1000) + i64::from(d.nanos) / 1_000_000
        });
        if ms < crate::budget::MIN_FLEET_PERIOD.as_millis() as i64 {
            e.add(
                format!("{at}.period"),
                "a FLEET limit's period is at least 1s",
            );
        }
    }
}

/// One token-bucket limit: (requests, period, burst).
fn limit(
    at: &str,
    (requests, period, burst): (u32, Option<&pbjson_types::Duration>, u32),
    e: &mut Errors,
) {
    if requests == 0 {
        e.add(format!("{at}.requests"), "requests must be above zero");
    }
    field::at_most(e, &format!("{at}.requests"), requests.into(), MAX_RATE);
    field::at_most(e, &format!("{at}.burst"), burst.into(), MAX_RATE);
    field::duration(e, &format!("{at}.period"), period, MAX_PERIOD_SECS);
}

fn cors(c: &Cors, e: &mut Errors) {
    for (i, origin) in c.allow_origins.iter().enumerate() {
        e.check(format!("cors.allow_origins[{i}]"), cors_origin(origin));
    }
    if c.allow_credentials && c.allow_origins.iter().any(|o| o == "*") {
        e.add(
            "cors.allow_credentials",
            "credentials cannot be allowed for origin \"*\"",
        );
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        e.check(format!("cors.allow_methods[{i}]"), field::method(m));
    }
    for (list, names) in [
        ("allow_headers", &c.allow_headers),
        ("expose_headers", &c.expose_headers),
    ] {
        for (i, h) in names.iter().enumerate() {
            e.check(format!("cors.{list}[{i}]"), field::header_name(h));
        }
    }
    field::duration(e, "cors.max_age", c.max_age.as_ref(), MAX_PERIOD_SECS);
}

/// "*" or "scheme://host[:port]".
fn cors_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    let valid = authority.is_some_and(|a| {
        let (host, port) = match a.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
            _ => (a, None),
        };
        field::host_pattern(host, false).is_ok()
            && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid origin {origin:?}: expected \"*\" or \"https://host[:port]\""
        ))
    }
}

fn request_validation(v: &RequestValidation, e: &mut Errors) {
    field::at_most(
        e,
        "request_validation.max_body_bytes",
        v.max_body_bytes,
        MAX_BODY_BYTES,
    );
    for (i, h) in v.required_headers.iter().enumerate() {
        e.check(
            format!("request_validation.required_headers[{i}]"),
            field::header_name(h),
        );
    }
    for (i, t) in v.allowed_content_types.iter().enumerate() {
        e.check(
            format!("request_validation.allowed_content_types[{i}]"),
            field::media_type(t, false),
        );
    }
    for (i, m) in v.allowed_methods.iter().enumerate() {
        e.check(
            format!("request_validation.allowed_methods[{i}]"),
            field::method(m),
        );
    }
    field::at_most(
        e,
        "request_validation.max_json_bytes",
        v.max_json_bytes,
        MAX_JSON_BYTES,
    );
    if !v.json_schema.is_empty() {
        e.check(
            "request_validation.json_schema",
            json_schema(&v.json_schema).map(|_| ()),
        );
    }
}

/// The largest JSON body a schema validates: such bodies are held in memory whole.
const MAX_JSON_BYTES: u64 = 64 << 20;

/// A compiled JSON Schema, from its JSON text.
pub fn json_schema(text: &str) -> Result<jsonschema::Validator, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|err| format!("json_schema is not JSON: {err}"))?;
    jsonschema::validator_for(&value).map_err(|err| format!("invalid JSON Schema: {err}"))
}
