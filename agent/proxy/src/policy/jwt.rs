//! `jwt_auth`: a JWT verified with the keys of a JWKS (inline or from an opaque Secret),
//! its claims checked, its subject mapped to a Consumer, and chosen claims sent upstream.
//! Signatures are checked by `jsonwebtoken` (ring).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portico_api::Kind;
use portico_api::pb::{self, resource::Spec, secret};
use serde_json::Value;

use super::{CONSUMER_HEADER, Consumer, Consumers, Env, Rejection, header_name, header_or};

/// Leeway on `exp` and `nbf`, for clocks that disagree.
const LEEWAY_SECS: u64 = 60;

/// A compiled `jwt_auth` policy.
#[derive(Debug)]
pub struct JwtAuth {
    keys: Vec<Key>,
    /// One validation per algorithm a key can verify.
    validations: HashMap<AlgorithmKey, Validation>,
    header: HeaderName,
    cookie: Option<String>,
    allowed: Option<HashSet<String>>,
    consumers: Arc<Consumers>,
    forward: Vec<(String, HeaderName)>,
    /// Where the consumer's name goes upstream.
    pub consumer_header: HeaderName,
}

/// `Algorithm` as a map key.
type AlgorithmKey = &'static str;

fn algorithm_key(a: Algorithm) -> AlgorithmKey {
    match a {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// One verification key.
struct Key {
    kid: Option<String>,
    /// The algorithms the key verifies: its `alg` alone when it names one, else those of its
    /// type (and curve).
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The JWKS text of `spec`: inline, or the value of the opaque Secret it names.
fn jwks_text<'a>(spec: &'a pb::JwtAuth, env: &'a Env<'_>) -> Result<&'a str, (String, String)> {
    if spec.jwks_secret.is_empty() {
        return Ok(&spec.jwks);
    }
    let field = "jwt_auth.jwks_secret".to_string();
    match env
        .set
        .get(Kind::Secret, &spec.jwks_secret)
        .and_then(|r| r.spec.as_ref())
    {
        Some(Spec::Secret(pb::Secret {
            secret: Some(secret::Secret::Opaque(value)),
        })) => Ok(value),
        _ => Err((
            field,
            format!("secret {:?} is not an opaque secret", spec.jwks_secret),
        )),
    }
}

fn keys(text: &str, field: &str) -> Result<Vec<Key>, (String, String)> {
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| (field.to_string(), format!("not a JWKS: {e}")))?;
    let mut out = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.iter().enumerate() {
        let at = || format!("{field}.keys[{i}]");
        let family: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::OctetKey(_) => {
                vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
            }
            AlgorithmParameters::RSA(_) => vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => return Err((at(), "unsupported curve".into())),
            },
            AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
                EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
                _ => return Err((at(), "unsupported curve".into())),
            },
        };
        let algorithms = match jwk.common.key_algorithm {
            None => family,
            Some(named) => {
                let alg = named
                    .to_string()
                    .parse::<Algorithm>()
                    .map_err(|_| (at(), format!("unsupported algorithm {named}")))?;
                if !family.contains(&alg) {
                    return Err((at(), format!("algorithm {named} does not fit the key type")));
                }
                vec![alg]
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| (at(), e.to_string()))?;
        out.push(Key {
            kid: jwk.common.key_id.clone(),
            algorithms,
            key,
        });
    }
    Ok(out)
}

impl JwtAuth {
    /// Compiles the policy.
    pub fn compile(spec: &pb::JwtAuth, env: &Env<'_>) -> Result<JwtAuth, (String, String)> {
        let field = if spec.jwks_secret.is_empty() {
            "jwt_auth.jwks"
        } else {
            "jwt_auth.jwks_secret"
        };
        let keys = keys(jwks_text(spec, env)?, field)?;
        let mut validations = HashMap::new();
        for alg in keys.iter().flat_map(|k| &k.algorithms) {
            validations.entry(algorithm_key(*alg)).or_insert_with(|| {
                let mut v = Validation::new(*alg);
                v.leeway = LEEWAY_SECS;
                v.validate_nbf = true;
                v.set_issuer(&[&spec.issuer]);
                v.set_required_spec_claims(&["exp", "iss"]);
                if spec.audiences.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&spec.audiences);
                }
                v
            });
        }
        for (i, name) in spec.consumers.iter().enumerate() {
            if env.consumers.get(name).is_none() {
                return Err((
                    format!("jwt_auth.consumers[{i}]"),
                    format!("consumer {name:?} does not exist"),
                ));
            }
        }
        let mut forward = Vec::new();
        for (claim, h) in &spec.forward_claims {
            let at = format!("jwt_auth.forward_claims[{claim:?}]");
            forward.push((claim.clone(), header_name(h, &at)?));
        }
        Ok(JwtAuth {
            keys,
            validations,
            header: header_or(&spec.header, &header::AUTHORIZATION, "jwt_auth.header")?,
            cookie: (!spec.cookie.is_empty()).then(|| spec.cookie.clone()),
            allowed: (!spec.consumers.is_empty()).then(|| spec.consumers.iter().cloned().collect()),
            consumers: env.consumers.clone(),
            forward,
            consumer_header: header_or(
                &spec.consumer_header,
                &CONSUMER_HEADER,
                "jwt_auth.consumer_header",
            )?,
        })
    }

    /// Verifies the request's token; returns the consumer its subject names, if any. The
    /// forwarded claims' headers are replaced by the token's claims.
    pub fn check(&self, headers: &mut HeaderMap) -> Result<Option<Arc<Consumer>>, Rejection> {
        let token = self.token(headers)?;
        let claims = self.verify(&token).ok_or_else(invalid)?;
        let consumer = claims
            .get("sub")
            .and_then(Value::as_str)
            .and_then(|sub| self.consumers.by_subject(sub));
        if let Some(allowed) = &self.allowed
            && !consumer.is_some_and(|c| allowed.contains(&*c.name))
        {
            return Err(Rejection::new(StatusCode::FORBIDDEN, "consumer_forbidden"));
        }
        for (claim, name) in &self.forward {
            headers.remove(name);
            let value = match claims.get(claim) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => HeaderValue::from_str(s),
                Some(other) => HeaderValue::from_str(&other.to_string()),
            };
            if let Ok(v) = value {
                headers.insert(name.clone(), v);
            }
        }
        Ok(consumer.cloned())
    }

    /// The token: "Bearer <token>" in the header, else the cookie's value.
    fn token(&self, headers: &HeaderMap) -> Result<String, Rejection> {
        if let Some(value) = headers.get(&self.header) {
            let text = value.to_str().map_err(|_| invalid())?;
            let (scheme, token) = text.trim().split_once(' ').ok_or_else(invalid)?;
            if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
                return Err(invalid());
            }
            return Ok(token.trim().to_string());
        }
        if let Some(name) = &self.cookie {
            let found = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(n, _)| n == name);
            if let Some((_, token)) = found {
                return Ok(token.to_string());
            }
        }
        Err(Rejection::new(StatusCode::UNAUTHORIZED, "auth_missing")
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")))
    }

    /// The token's claims, when a key of the set verifies it and its claims hold.
    fn verify(&self, token: &str) -> Option<serde_json::Map<String, Value>> {
        let head = jsonwebtoken::decode_header(token).ok()?;
        let validation = self.validations.get(algorithm_key(head.alg))?;
        self.keys
            .iter()
            .filter(|k| k.algorithms.contains(&head.alg))
            .filter(|k| match (&head.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .find_map(|k| {
                jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &k.key, validation)
                    .ok()
            })
            .map(|data| data.claims)
    }
}

fn invalid() -> Rejection {
    Rejection::new(StatusCode::UNAUTHORIZED, "auth_invalid").with_header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    )
}
