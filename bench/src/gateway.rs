//! The gateway cells of the data-plane bench: the bench route with policies attached.
//!
//! - `none`: no policy.
//! - `api-key`: API key authentication and a local rate limit per consumer.
//! - `jwt`: JWT authentication (ES256), a local rate limit per consumer, header changes with the
//!   security headers, and compression (the request path ends in `/json10k`, a 10 KB JSON body).
//!
//! Rate limits are set high enough never to refuse: the cells measure their cost, not refusals.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use portico_api::Resource;
use portico_api::pb::{self, policy, rate_limit_key, resource};
use sha2::{Digest, Sha256};

/// The API key of the `api-key` cell.
pub const API_KEY: &str = "pk_bench";

/// Which policies the bench route carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Gateway {
    /// No policy.
    None,
    /// API key and rate limit.
    ApiKey,
    /// JWT (ES256), rate limit, headers and compression.
    Jwt,
}

fn named(name: &str, spec: resource::Spec) -> Resource {
    Resource {
        name: name.into(),
        spec: Some(spec),
        ..Default::default()
    }
}

fn policy(name: &str, p: policy::Policy) -> Resource {
    named(name, resource::Spec::Policy(pb::Policy { policy: Some(p) }))
}

fn limit() -> Resource {
    policy(
        "limit",
        policy::Policy::RateLimit(pb::RateLimit {
            requests: 1_000_000_000,
            key: Some(pb::RateLimitKey {
                key: Some(rate_limit_key::Key::Consumer(true)),
            }),
            ..Default::default()
        }),
    )
}

/// Adds the cell's policies and consumer to `resources` (the data-plane config), attached to
/// every route; returns the header a client sends (name and value), if any.
pub fn apply(
    resources: &mut Vec<Resource>,
    gateway: Gateway,
) -> anyhow::Result<Option<(String, String)>> {
    let names: Vec<String> = match gateway {
        Gateway::None => return Ok(None),
        Gateway::ApiKey => vec!["keys".into(), "limit".into()],
        Gateway::Jwt => vec![
            "jwt".into(),
            "limit".into(),
            "headers".into(),
            "squeeze".into(),
        ],
    };
    for r in resources.iter_mut() {
        if let Some(resource::Spec::RouteTable(t)) = &mut r.spec {
            for route in t.virtual_hosts.iter_mut().flat_map(|v| v.routes.iter_mut()) {
                route.policies = names.clone();
            }
        }
    }
    resources.push(limit());
    let header = match gateway {
        Gateway::None => None,
        Gateway::ApiKey => {
            resources.push(policy(
                "keys",
                policy::Policy::ApiKeyAuth(pb::ApiKeyAuth::default()),
            ));
            resources.push(consumer(vec![pb::ApiKey {
                id: "bench".into(),
                sha256: hex::encode(Sha256::digest(API_KEY.as_bytes())),
            }]));
            Some(("x-api-key".to_string(), API_KEY.to_string()))
        }
        Gateway::Jwt => {
            let (jwks, token) = es256()?;
            resources.push(policy(
                "jwt",
                policy::Policy::JwtAuth(pb::JwtAuth {
                    issuer: "https://bench.test".into(),
                    jwks,
                    ..Default::default()
                }),
            ));
            resources.push(policy(
                "headers",
                policy::Policy::Headers(pb::HeaderPolicy {
                    request: Some(pb::HeaderTransform {
                        set: vec![pb::HeaderValue {
                            name: "x-edge".into(),
                            value: "portico".into(),
                        }],
                        ..Default::default()
                    }),
                    security_headers: true,
                    ..Default::default()
                }),
            ));
            resources.push(policy(
                "squeeze",
                policy::Policy::Compression(pb::Compression {
                    algorithms: vec!["gzip".into()],
                    ..Default::default()
                }),
            ));
            resources.push(consumer(Vec::new()));
            Some(("authorization".to_string(), format!("Bearer {token}")))
        }
    };
    Ok(header)
}

fn consumer(api_keys: Vec<pb::ApiKey>) -> Resource {
    named(
        "bench",
        resource::Spec::Consumer(pb::Consumer {
            api_keys,
            jwt_subjects: vec!["bench".into()],
            plan: String::new(),
        }),
    )
}

/// A new ES256 key: its JWKS, and a token signed with it valid for a day.
fn es256() -> anyhow::Result<(String, String)> {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING as P256, EcdsaKeyPair, KeyPair};
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&P256, &rng)
        .map_err(|_| anyhow::anyhow!("cannot generate a P-256 key"))?;
    let pair = EcdsaKeyPair::from_pkcs8(&P256, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow::anyhow!("cannot read the P-256 key"))?;
    let point = pair.public_key().as_ref();
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "bench",
        "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..]),
    }]});
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 86_400;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("bench".into());
    let claims = serde_json::json!({"sub": "bench", "iss": "https://bench.test", "exp": exp});
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
    )?;
    Ok((jwks.to_string(), token))
}
