//! Policy rules: the policy kind is set, and each kind's own settings are well-formed.

use super::Errors;
use super::field::{self, MAX_PERIOD_SECS};
use crate::pb::{
    Cors, JwtAuth, Policy, RateLimit, RequestValidation, policy, quota, rate_limit, rate_limit_key,
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
            consumers(&a.consumers, "api_key_auth", e);
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
        }
        Some(policy::Policy::Cors(c)) => cors(c, e),
        Some(policy::Policy::IpFilter(f)) => {
            for (list, cidrs) in [("allow", &f.allow), ("deny", &f.deny)] {
                for (i, c) in cidrs.iter().enumerate() {
                    e.check(format!("ip_filter.{list}[{i}]"), field::cidr(c));
                }
            }
        }
        Some(policy::Policy::RequestValidation(v)) => request_validation(v, e),
        Some(policy::Policy::Headers(h)) => {
            field::header_transform(e, "headers.request", h.request.as_ref());
            field::header_transform(e, "headers.response", h.response.as_ref());
        }
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
    let keys = serde_json::from_str::<serde_json::Value>(&j.jwks)
        .map_err(|err| format!("jwks is not JSON: {err}"))
        .and_then(|v| match v.get("keys") {
            Some(serde_json::Value::Array(_)) => Ok(()),
            _ => Err("jwks must be an object with a \"keys\" array".to_string()),
        });
    e.check("jwt_auth.jwks", keys);
    if !j.header.is_empty() {
        e.check("jwt_auth.header", field::header_name(&j.header));
    }
    consumers(&j.consumers, "jwt_auth", e);
}

fn rate(r: &RateLimit, e: &mut Errors) {
    if r.requests == 0 {
        e.add("rate_limit.requests", "requests must be above zero");
    }
    field::at_most(e, "rate_limit.requests", r.requests.into(), MAX_RATE);
    field::at_most(e, "rate_limit.burst", r.burst.into(), MAX_RATE);
    field::duration(e, "rate_limit.period", r.period.as_ref(), MAX_PERIOD_SECS);
    if let Some(rate_limit_key::Key::Header(name)) = r.key.as_ref().and_then(|k| k.key.as_ref()) {
        e.check("rate_limit.key.header", field::header_name(name));
    }
    field::known_enum::<rate_limit::Scope>(e, "rate_limit.scope", r.scope);
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
}
