//! Gateway policies, compiled: what a `Policy` resource becomes on an agent, built once per
//! config apply (and kept across applies while its sources do not change), never per request.
//!
//! A request's policies run in one fixed order of kinds ([`Stage`]), the listener's before the
//! route's within a kind; the per-request state and the phase that runs them live in
//! `service::policy`. A policy that refuses a request returns a [`Rejection`], which carries the
//! status and the reason code the access log, `portico_agent_rejections_total` and usage
//! counters show.
//!
//! Where state lives: everything here is immutable once compiled, except the rate limiters'
//! buckets (`rate_limit`), which are shared by the proxy workers and live as long as the
//! compiled policy, so a config change that leaves a rate-limit policy alone keeps its buckets.
//! Fleet budgets (`fleet`: quotas and FLEET rate limits) are kept by the proxy, not the
//! policy (`crate::budgets`), by policy name, key and window, so they outlive any apply.
//!
//! # Layout
//! - [`consumer`]: the consumer directory (API key hashes, JWT subjects, plans).
//! - [`ip_filter`], [`cors`], [`api_key`], [`jwt`], [`validation`], [`rate_limit`],
//!   [`fleet`], [`headers`], [`compression`]: one policy kind each (`fleet` for `quota` and
//!   `rate_limit` of scope FLEET).

pub mod api_key;
pub mod compression;
pub mod consumer;
pub mod cors;
pub mod fleet;
pub mod headers;
pub mod ip_filter;
pub mod jwt;
pub mod rate_limit;
pub mod validation;

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use portico_api::pb::{self, policy};
use portico_api::{Kind, ResourceSet};

use crate::compile::{CompileError, compile_error};
pub use consumer::{Consumer, Consumers};

/// Where a policy kind runs in a request, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// IP filtering.
    IpFilter,
    /// CORS: answers preflights; decorates responses.
    Cors,
    /// API key and JWT authentication.
    Auth,
    /// Request validation.
    Validation,
    /// Rate limits (LOCAL, then FLEET, in the order attached).
    RateLimit,
    /// Quotas.
    Quota,
    /// Work on the response only (headers, compression); request header changes run last,
    /// just before the request goes upstream.
    Response,
}

/// One compiled policy.
#[derive(Debug)]
pub enum Policy {
    /// `ip_filter`.
    IpFilter(ip_filter::IpFilter),
    /// `cors`.
    Cors(cors::Cors),
    /// `api_key_auth`.
    ApiKey(api_key::ApiKeyAuth),
    /// `jwt_auth`.
    Jwt(Box<jwt::JwtAuth>),
    /// `request_validation`.
    Validation(Box<validation::RequestValidation>),
    /// `rate_limit` of scope LOCAL.
    RateLimit(rate_limit::RateLimit),
    /// `quota`, or `rate_limit` of scope FLEET.
    Fleet(fleet::FleetLimit),
    /// `headers`.
    Headers(headers::HeaderPolicy),
    /// `compression`.
    Compression(compression::Compression),
}

impl Policy {
    /// Where the policy runs.
    pub fn stage(&self) -> Stage {
        match self {
            Policy::IpFilter(_) => Stage::IpFilter,
            Policy::Cors(_) => Stage::Cors,
            Policy::ApiKey(_) | Policy::Jwt(_) => Stage::Auth,
            Policy::Validation(_) => Stage::Validation,
            Policy::RateLimit(_) => Stage::RateLimit,
            Policy::Fleet(f) if f.is_quota() => Stage::Quota,
            Policy::Fleet(_) => Stage::RateLimit,
            Policy::Headers(_) | Policy::Compression(_) => Stage::Response,
        }
    }
}

/// What compiling a policy reads besides its own resource.
pub struct Env<'a> {
    /// Every resource, for Secrets.
    pub set: &'a ResourceSet,
    /// The consumers, for authentication policies.
    pub consumers: &'a Arc<Consumers>,
}

/// Whether the policy reads the consumer directory (and is compiled again when it changes).
pub fn reads_consumers(spec: &pb::Policy) -> bool {
    matches!(
        spec.policy,
        Some(policy::Policy::ApiKeyAuth(_) | policy::Policy::JwtAuth(_))
    )
}

/// The Secrets a policy reads.
pub fn secret_names(spec: &pb::Policy) -> impl Iterator<Item = &str> {
    match &spec.policy {
        Some(policy::Policy::JwtAuth(j)) if !j.jwks_secret.is_empty() => {
            Some(j.jwks_secret.as_str())
        }
        _ => None,
    }
    .into_iter()
}

/// Compiles policy `name`.
pub fn compile(name: &str, spec: &pb::Policy, env: &Env<'_>) -> Result<Policy, CompileError> {
    let err =
        |(field, message): (String, String)| compile_error(Kind::Policy, name, field, message);
    let compiled = match &spec.policy {
        None => return Err(err(("".into(), "a policy kind is required".into()))),
        Some(policy::Policy::IpFilter(f)) => Policy::IpFilter(ip_filter::IpFilter::compile(f)),
        Some(policy::Policy::Cors(c)) => Policy::Cors(cors::Cors::compile(c).map_err(err)?),
        Some(policy::Policy::ApiKeyAuth(a)) => {
            Policy::ApiKey(api_key::ApiKeyAuth::compile(a, env.consumers).map_err(err)?)
        }
        Some(policy::Policy::JwtAuth(j)) => {
            Policy::Jwt(Box::new(jwt::JwtAuth::compile(j, env).map_err(err)?))
        }
        Some(policy::Policy::RequestValidation(v)) => Policy::Validation(Box::new(
            validation::RequestValidation::compile(v).map_err(err)?,
        )),
        Some(policy::Policy::RateLimit(r)) => match fleet::FleetLimit::compile(name, spec) {
            Some(f) => Policy::Fleet(f),
            None => Policy::RateLimit(rate_limit::RateLimit::compile(r).map_err(err)?),
        },
        Some(policy::Policy::Headers(h)) => {
            Policy::Headers(headers::HeaderPolicy::compile(h).map_err(err)?)
        }
        Some(policy::Policy::Compression(c)) => {
            Policy::Compression(compression::Compression::compile(c).map_err(err)?)
        }
        Some(policy::Policy::Quota(_)) => match fleet::FleetLimit::compile(name, spec) {
            Some(f) => Policy::Fleet(f),
            None => return Err(err(("quota.period".into(), "period is required".into()))),
        },
    };
    Ok(compiled)
}

/// The compiled policies by name.
pub type Policies = HashMap<String, Arc<Policy>>;

/// The policies attached at one place (a listener or a route), in stage order (the order of
/// attachment within a stage).
#[derive(Debug, Default)]
pub struct Chain {
    policies: Vec<Arc<Policy>>,
}

impl Chain {
    /// The chain of `names`, resolved in `policies`; `None` when `names` is empty, so that
    /// places without policies cost one branch per request. `field` names the list, for errors.
    pub fn resolve(
        names: &[String],
        policies: &Policies,
        field: &str,
    ) -> Result<Option<Arc<Chain>>, (String, String)> {
        if names.is_empty() {
            return Ok(None);
        }
        let mut list = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let p = policies.get(name).ok_or_else(|| {
                (
                    format!("{field}[{i}]"),
                    format!("policy {name:?} does not exist"),
                )
            })?;
            list.push(p.clone());
        }
        // Stable: policies of one stage keep the order they were attached in.
        list.sort_by_key(|p| p.stage());
        Ok(Some(Arc::new(Chain { policies: list })))
    }

    /// The policies, in stage order.
    pub fn policies(&self) -> &[Arc<Policy>] {
        &self.policies
    }

    /// Whether every policy of the chain is still the one `policies` names `names` (the chain
    /// was resolved from `names`).
    pub fn kept(chain: Option<&Arc<Chain>>, names: &[String], policies: &Policies) -> bool {
        match chain {
            None => names.is_empty(),
            Some(chain) => {
                let mut by_stage: Vec<Option<&Arc<Policy>>> =
                    names.iter().map(|n| policies.get(n)).collect();
                by_stage.sort_by_key(|p| p.map(|p| p.stage()));
                chain.policies.len() == by_stage.len()
                    && chain
                        .policies
                        .iter()
                        .zip(by_stage)
                        .all(|(a, b)| b.is_some_and(|b| Arc::ptr_eq(a, b)))
            }
        }
    }
}

/// Why a policy refused a request: the answer's status, the reason code, and what else the
/// answer says.
#[derive(Debug)]
pub struct Rejection {
    /// The status answered.
    pub status: StatusCode,
    /// The reason code (`ip_denied`, `auth_missing`, `rate_limited`, `quota_exhausted`, ...).
    pub reason: &'static str,
    /// A sentence for the client, when the status alone does not tell what to fix (the
    /// failing path of a JSON Schema check).
    pub detail: Option<String>,
    /// Headers the answer carries (Retry-After, Allow, WWW-Authenticate).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Rejection {
    /// A rejection with `status` and `reason` and nothing else.
    pub fn new(status: StatusCode, reason: &'static str) -> Rejection {
        Rejection {
            status,
            reason,
            detail: None,
            headers: Vec::new(),
        }
    }

    /// The same, with `header` on the answer.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Rejection {
        self.headers.push((name, value));
        self
    }
}

/// The header that carries the consumer's name upstream, unless a policy names another.
pub static CONSUMER_HEADER: HeaderName = HeaderName::from_static("x-portico-consumer");

/// A header name from config; validation checked it.
pub(crate) fn header_name(name: &str, field: &str) -> Result<HeaderName, (String, String)> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| (field.to_string(), format!("invalid header name {name:?}")))
}

/// `name`, or `default` when empty.
pub(crate) fn header_or(
    name: &str,
    default: &HeaderName,
    field: &str,
) -> Result<HeaderName, (String, String)> {
    if name.is_empty() {
        Ok(default.clone())
    } else {
        header_name(name, field)
    }
}
