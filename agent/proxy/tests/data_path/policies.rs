//! Gateway policies on real traffic: every policy kind through a real proxy, with real clients
//! and upstreams, JWTs signed at test time with keys generated here.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portico_api::Resource;
use portico_api::pb::{self, policy, rate_limit_key};
use portico_proxy::metrics as m;
use sha2::{Digest, Sha256};

use crate::support::*;
use portico_test_support::http::Answer;

fn policy(name: &str, p: policy::Policy) -> Resource {
    resource(name, pb::Policy { policy: Some(p) })
}

fn consumer(name: &str, key: &str, subjects: &[&str], plan: &str) -> Resource {
    resource(
        name,
        pb::Consumer {
            api_keys: if key.is_empty() {
                vec![]
            } else {
                vec![pb::ApiKey {
                    id: "k1".into(),
                    sha256: hex::encode(Sha256::digest(key.as_bytes())),
                }]
            },
            jwt_subjects: subjects.iter().map(|s| s.to_string()).collect(),
            plan: plan.into(),
        },
    )
}

/// A route forwarding `/` to cluster "up" with `policies`.
fn guarded(policies: &[&str]) -> pb::Route {
    pb::Route {
        policies: policies.iter().map(|p| p.to_string()).collect(),
        ..route("api", prefix("/"), to("up"))
    }
}

fn request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> impl Future<Output = Answer> + use<> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{target}"))
        .header("host", "api.test");
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    async move { send(&client(), req).await }
}

/// The body without its request id, which differs per request.
fn without_id(body: &str) -> String {
    body.split(" (request id").next().unwrap_or("").to_string()
}

/// Validates the config as the control plane would, then serves it.
async fn serve(
    resources: Vec<Resource>,
    port: u16,
    routes: Vec<pb::Route>,
) -> portico_proxy::Proxy {
    let cfg = web(1, port, resources, routes);
    let errors = portico_api::validate::validate_set(&cfg.resources);
    assert!(errors.is_empty(), "{errors:?}");
    proxy_with(&cfg).await
}

#[tokio::test]
async fn ip_filter_denies_ranges_and_trusts_forwarded_for_only_from_trusted_proxies() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let mut resources = vec![
        cluster("up", &[up.addr]),
        policy(
            "loopback",
            policy::Policy::IpFilter(pb::IpFilter {
                deny: vec!["127.0.0.0/8".into(), "::1".into()],
                ..Default::default()
            }),
        ),
    ];
    let proxy = serve(resources.clone(), port, vec![guarded(&["loopback"])]).await;
    let denied = request(port, "GET", "/", &[], "").await;
    assert_eq!(denied.status, 403);
    assert_eq!(up.hits(), 0);

    // Behind a trusted proxy (the loopback peer), the client is the X-Forwarded-For hop.
    resources[1] = policy(
        "loopback",
        policy::Policy::IpFilter(pb::IpFilter {
            allow: vec!["10.0.0.0/8".into()],
            deny: vec!["10.6.0.0/16".into()],
            trusted_proxies: vec!["127.0.0.1".into()],
        }),
    );
    proxy
        .apply(&web(2, port, resources, vec![guarded(&["loopback"])]))
        .await
        .unwrap();
    let via = |xff: &'static str| request(port, "GET", "/", &[("x-forwarded-for", xff)], "");
    assert_eq!(via("10.1.2.3").await.status, 200);
    assert_eq!(via("10.6.0.1").await.status, 403, "deny wins");
    assert_eq!(via("192.0.2.1").await.status, 403);
    assert_eq!(
        via("10.1.2.3, 192.0.2.1").await.status,
        403,
        "the rightmost untrusted hop"
    );
    assert_eq!(
        request(port, "GET", "/", &[], "").await.status,
        403,
        "the peer itself"
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn api_keys_identify_consumers_and_never_go_upstream() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let resources = vec![
        cluster("up", &[up.addr]),
        consumer("alice", "alice-key", &[], "gold"),
        consumer("bob", "bob-key", &[], ""),
        policy(
            "keys",
            policy::Policy::ApiKeyAuth(pb::ApiKeyAuth {
                query_param: "key".into(),
                consumers: vec!["alice".into()],
                ..Default::default()
            }),
        ),
    ];
    let proxy = serve(resources, port, vec![guarded(&["keys"])]).await;

    let missing = request(port, "GET", "/", &[], "").await;
    let unknown = request(port, "GET", "/", &[("x-api-key", "guess")], "").await;
    assert_eq!(
        (missing.status.as_u16(), unknown.status.as_u16()),
        (401, 401)
    );
    assert_eq!(without_id(&missing.body), without_id(&unknown.body));
    assert_eq!(missing.headers.len(), unknown.headers.len());

    let ok = request(
        port,
        "GET",
        "/x?a=1",
        &[
            ("x-api-key", "alice-key"),
            ("x-portico-consumer", "mallory"),
        ],
        "",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.seen("x-portico-consumer"), Some("alice"));
    assert_eq!(ok.seen("x-api-key"), None);

    let by_query = request(port, "GET", "/q?a=1&key=alice-key&b=2", &[], "").await;
    assert_eq!(by_query.status, 200);
    assert!(
        by_query.body.contains("GET /q?a=1&b=2\n"),
        "{}",
        by_query.body
    );

    let forbidden = request(port, "GET", "/", &[("x-api-key", "bob-key")], "").await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(up.hits(), 2);
    proxy.shutdown(Duration::from_secs(1)).await;
}

/// A signing key of one algorithm family and its public JWK.
struct Signer {
    alg: Algorithm,
    kid: &'static str,
    key: EncodingKey,
    jwk: serde_json::Value,
}

fn signers() -> Vec<Signer> {
    use ring::rand::SystemRandom;
    use ring::signature::{self as sig, KeyPair};
    let rng = SystemRandom::new();
    let mut out = Vec::new();

    let secret: [u8; 32] = rand::random();
    out.push(Signer {
        alg: Algorithm::HS256,
        kid: "hs",
        key: EncodingKey::from_secret(&secret),
        jwk: serde_json::json!({"kty": "oct", "kid": "hs", "k": B64.encode(secret)}),
    });

    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let public = private.to_public_key();
    out.push(Signer {
        alg: Algorithm::RS256,
        kid: "rs",
        key: EncodingKey::from_rsa_der(private.to_pkcs1_der().unwrap().as_bytes()),
        jwk: serde_json::json!({
            "kty": "RSA", "kid": "rs", "alg": "RS256",
            "n": B64.encode(public.n().to_bytes_be()), "e": B64.encode(public.e().to_bytes_be()),
        }),
    });

    for (alg, signing, crv, kid, len) in [
        (
            Algorithm::ES256,
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            "P-256",
            "es256",
            32,
        ),
        (
            Algorithm::ES384,
            &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            "P-384",
            "es384",
            48,
        ),
    ] {
        let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
        let pair = sig::EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        out.push(Signer {
            alg,
            kid,
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: serde_json::json!({
                "kty": "EC", "kid": kid, "crv": crv,
                "x": B64.encode(&point[1..1 + len]), "y": B64.encode(&point[1 + len..]),
            }),
        });
    }

    let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    out.push(Signer {
        alg: Algorithm::EdDSA,
        kid: "ed",
        key: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: serde_json::json!({
            "kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": B64.encode(pair.public_key().as_ref()),
        }),
    });
    out
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(s: &Signer, claims: serde_json::Value) -> String {
    let mut header = Header::new(s.alg);
    header.kid = Some(s.kid.into());
    jsonwebtoken::encode(&header, &claims, &s.key).unwrap()
}

#[tokio::test]
async fn jwts_of_every_algorithm_family_are_verified_and_mapped_to_consumers() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let keys = signers();
    let jwks = serde_json::json!({"keys": keys.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()});
    let jwt = |name: &str, inline: bool| {
        policy(
            name,
            policy::Policy::JwtAuth(pb::JwtAuth {
                issuer: "https://issuer.test".into(),
                audiences: vec!["shop".into()],
                jwks: if inline {
                    jwks.to_string()
                } else {
                    String::new()
                },
                jwks_secret: if inline { String::new() } else { "jwks".into() },
                cookie: "session".into(),
                consumers: if inline { vec![] } else { vec!["carol".into()] },
                forward_claims: [("email".to_string(), "x-email".to_string())].into(),
                ..Default::default()
            }),
        )
    };
    let resources = vec![
        cluster("up", &[up.addr]),
        consumer("carol", "", &["carol@test"], ""),
        consumer("dave", "", &["dave@test"], ""),
        resource(
            "jwks",
            pb::Secret {
                secret: Some(pb::secret::Secret::Opaque(jwks.to_string())),
            },
        ),
        jwt("inline", true),
        jwt("from-secret", false),
    ];
    let routes = vec![
        pb::Route {
            policies: vec!["from-secret".into()],
            ..route("secret", prefix("/secret"), to("up"))
        },
        guarded(&["inline"]),
    ];
    let proxy = serve(resources, port, routes).await;
    let claims = |sub: &str, iss: &str, exp: i64| serde_json::json!({"sub": sub, "iss": iss, "aud": "shop", "exp": exp, "email": "c@test"});
    let bearer = |t: &str| format!("Bearer {t}");
    let iss = "https://issuer.test";
    for s in &keys {
        let good = token(s, claims("carol@test", iss, now() + 300));
        let ok = request(port, "GET", "/", &[("authorization", &bearer(&good))], "").await;
        assert_eq!(ok.status, 200, "{:?}: {}", s.alg, ok.body);
        assert_eq!(ok.seen("x-portico-consumer"), Some("carol"), "{:?}", s.alg);
        assert_eq!(ok.seen("x-email"), Some("c@test"));
        let from_secret = request(
            port,
            "GET",
            "/secret",
            &[("authorization", &bearer(&good))],
            "",
        )
        .await;
        assert_eq!(from_secret.status, 200, "{:?}", s.alg);
    }
    let s = &keys[2];
    let send_token = |t: String| async move {
        request(
            port,
            "GET",
            "/",
            &[("authorization", &format!("Bearer {t}"))],
            "",
        )
        .await
        .status
    };
    assert_eq!(
        send_token(token(s, claims("carol@test", "https://other", now() + 300))).await,
        401
    );
    assert_eq!(
        send_token(token(s, claims("carol@test", iss, now() - 120))).await,
        401,
        "expired"
    );
    assert_eq!(
        send_token(token(s, claims("carol@test", iss, now() - 30))).await,
        200,
        "leeway"
    );
    let mut early = claims("carol@test", iss, now() + 300);
    early["nbf"] = (now() + 120).into();
    assert_eq!(send_token(token(s, early)).await, 401, "not yet valid");
    let mut other_aud = claims("carol@test", iss, now() + 300);
    other_aud["aud"] = "elsewhere".into();
    assert_eq!(send_token(token(s, other_aud)).await, 401);
    let mut tampered = token(s, claims("carol@test", iss, now() + 300));
    tampered.push('A');
    assert_eq!(send_token(tampered).await, 401);
    // A token signed with a key outside the set.
    let stranger = &signers()
        .into_iter()
        .find(|x| x.alg == Algorithm::HS256)
        .unwrap();
    assert_eq!(
        send_token(token(stranger, claims("carol@test", iss, now() + 300))).await,
        401
    );

    let missing = request(port, "GET", "/", &[], "").await;
    assert_eq!(missing.status, 401);
    let cookie = format!(
        "a=b; session={}",
        token(s, claims("dave@test", iss, now() + 300))
    );
    let by_cookie = request(port, "GET", "/", &[("cookie", &cookie)], "").await;
    assert_eq!(by_cookie.status, 200);
    assert_eq!(by_cookie.seen("x-portico-consumer"), Some("dave"));
    // Only carol may use the route whose policy names her.
    let dave = token(s, claims("dave@test", iss, now() + 300));
    let forbidden = request(
        port,
        "GET",
        "/secret",
        &[("authorization", &bearer(&dave))],
        "",
    )
    .await;
    assert_eq!(forbidden.status, 403);
    proxy.shutdown(Duration::from_secs(1)).await;
}

fn limit(
    requests: u32,
    period_secs: i64,
    burst: u32,
    key: Option<rate_limit_key::Key>,
) -> pb::RateLimit {
    pb::RateLimit {
        requests,
        period: Some(pbjson_types::Duration {
            seconds: period_secs,
            nanos: 0,
        }),
        burst,
        key: key.map(|k| pb::RateLimitKey { key: Some(k) }),
        scope: pb::rate_limit::Scope::Local as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_per_key_and_per_plan() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let mut by_consumer = limit(2, 60, 0, Some(rate_limit_key::Key::Consumer(true)));
    by_consumer.plans.insert(
        "gold".into(),
        pb::RateLimitPlan {
            requests: 4,
            period: None,
            burst: 0,
        },
    );
    let resources = vec![
        cluster("up", &[up.addr]),
        consumer("alice", "alice-key", &[], "gold"),
        consumer("bob", "bob-key", &[], ""),
        policy(
            "keys",
            policy::Policy::ApiKeyAuth(pb::ApiKeyAuth::default()),
        ),
        policy("per-consumer", policy::Policy::RateLimit(by_consumer)),
        policy(
            "per-header",
            policy::Policy::RateLimit(limit(
                2,
                60,
                0,
                Some(rate_limit_key::Key::Header("x-user".into())),
            )),
        ),
    ];
    let routes = vec![
        pb::Route {
            policies: vec!["per-header".into()],
            ..route("header", prefix("/h"), to("up"))
        },
        guarded(&["per-consumer", "keys"]),
    ];
    let proxy = serve(resources, port, routes).await;
    let as_user = |u: &'static str| request(port, "GET", "/h", &[("x-user", u)], "");
    let first = as_user("u1").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["ratelimit-limit"], "2");
    assert_eq!(first.headers["ratelimit-remaining"], "1");
    assert_eq!(first.headers["ratelimit-reset"], "30");
    assert_eq!(as_user("u1").await.headers["ratelimit-remaining"], "0");
    let refused = as_user("u1").await;
    assert_eq!(refused.status, 429);
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(refused.headers["ratelimit-remaining"], "0");
    assert_eq!(
        as_user("u2").await.status,
        200,
        "another key, another bucket"
    );

    // Authentication runs before the limit whatever the order of attachment; a plan
    // replaces the limit.
    let count_ok = |key: &'static str| async move {
        let mut ok = 0;
        for _ in 0..6 {
            if request(port, "GET", "/", &[("x-api-key", key)], "")
                .await
                .status
                == 200
            {
                ok += 1;
            }
        }
        ok
    };
    assert_eq!(count_ok("bob-key").await, 2);
    assert_eq!(count_ok("alice-key").await, 4);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn ten_thousand_requests_against_100_per_second_stay_within_ten_percent() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let resources = vec![
        cluster("up", &[up.addr]),
        policy(
            "hundred",
            policy::Policy::RateLimit(limit(100, 1, 10, None)),
        ),
    ];
    let proxy = serve(resources, port, vec![guarded(&["hundred"])]).await;
    let admitted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (admitted, refused) = (admitted.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let client = client();
            for _ in 0..625 {
                let req = Request::get(format!("http://127.0.0.1:{port}/"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                match send(&client, req).await.status.as_u16() {
                    200 => admitted.fetch_add(1, Ordering::Relaxed),
                    429 => refused.fetch_add(1, Ordering::Relaxed),
                    other => panic!("status {other}"),
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let window = started.elapsed().as_secs_f64();
    let admitted = admitted.load(Ordering::Relaxed) as f64;
    assert_eq!(admitted as usize + refused.load(Ordering::Relaxed), 10_000);
    // The burst, then 100 per second over the window from the first request to the last answer.
    let expected = 10.0 + 100.0 * window;
    assert!(
        (admitted - expected).abs() <= 0.1 * expected,
        "{admitted} admitted in {window:.2}s; expected {expected:.0} ± 10%"
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn request_validation_checks_methods_headers_types_sizes_and_json_schemas() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let resources = vec![
        cluster("up", &[up.addr]),
        policy(
            "checks",
            policy::Policy::RequestValidation(pb::RequestValidation {
                max_body_bytes: 64,
                required_headers: vec!["x-tenant".into()],
                allowed_content_types: vec!["application/json".into()],
                allowed_methods: vec!["GET".into(), "POST".into()],
                json_schema: r#"{"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": {"type": "integer"}}}}"#.into(),
                max_json_bytes: 0,
            }),
        ),
    ];
    let proxy = serve(resources, port, vec![guarded(&["checks"])]).await;
    let t = ("x-tenant", "a");
    let json = ("content-type", "application/json");
    let put = request(port, "PUT", "/", &[t], "").await;
    assert_eq!(put.status, 405);
    assert_eq!(put.headers["allow"], "GET, POST");
    assert_eq!(request(port, "GET", "/", &[], "").await.status, 400);
    assert_eq!(
        request(port, "POST", "/", &[t, ("content-type", "text/plain")], "x")
            .await
            .status,
        415
    );
    assert_eq!(
        request(port, "POST", "/", &[t, json], &"1".repeat(65))
            .await
            .status,
        413
    );
    let bad = request(
        port,
        "POST",
        "/echo",
        &[t, json],
        r#"{"items": [1, "two"]}"#,
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("/items/1"), "{}", bad.body);
    let good = request(port, "POST", "/echo", &[t, json], r#"{"items": [1, 2]}"#).await;
    assert_eq!(good.status, 200);
    assert_eq!(good.body, r#"{"items": [1, 2]}"#);
    assert_eq!(request(port, "GET", "/", &[t], "").await.status, 200);

    // A body without Content-Length is cut off at the limit while it streams.
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..4)
        .map(|_| Ok(Frame::data(Bytes::from_static(&[b'a'; 32]))))
        .collect();
    let req = Request::post(format!("http://127.0.0.1:{port}/echo"))
        .header("x-tenant", "a")
        .header("content-type", "application/octet-stream")
        .body(StreamBody::new(futures::stream::iter(chunks)))
        .unwrap();
    let streamed =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http()
            .request(req)
            .await
            .unwrap();
    // The content type is checked before the body is read.
    assert_eq!(streamed.status(), 415);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn chunked_bodies_past_the_policy_limit_get_413_while_streaming() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let resources = vec![
        cluster("up", &[up.addr]),
        policy(
            "small",
            policy::Policy::RequestValidation(pb::RequestValidation {
                max_body_bytes: 64,
                ..Default::default()
            }),
        ),
    ];
    let proxy = serve(resources, port, vec![guarded(&["small"])]).await;
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..4)
        .map(|_| Ok(Frame::data(Bytes::from_static(&[b'a'; 32]))))
        .collect();
    let req = Request::post(format!("http://127.0.0.1:{port}/echo"))
        .body(StreamBody::new(futures::stream::iter(chunks)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), 413);
    let small: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..2)
        .map(|_| Ok(Frame::data(Bytes::from_static(&[b'a'; 32]))))
        .collect();
    let req = Request::post(format!("http://127.0.0.1:{port}/echo"))
        .body(StreamBody::new(futures::stream::iter(small)))
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(text(response).await.len(), 64);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn cors_preflights_are_answered_and_responses_decorated() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let resources = vec![
        cluster("up", &[up.addr]),
        policy(
            "cors",
            policy::Policy::Cors(pb::Cors {
                allow_origins: vec!["https://shop.test".into(), "https://*.example.com".into()],
                allow_methods: vec!["GET".into(), "PUT".into()],
                allow_headers: vec!["content-type".into(), "x-tenant".into()],
                expose_headers: vec!["x-request-id".into()],
                max_age: Some(pbjson_types::Duration {
                    seconds: 600,
                    nanos: 0,
                }),
                allow_credentials: true,
            }),
        ),
    ];
    let proxy = serve(resources, port, vec![guarded(&["cors"])]).await;
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        request(
            port,
            "OPTIONS",
            "/items",
            &[
                ("origin", origin),
                ("access-control-request-method", method),
                ("access-control-request-headers", headers),
            ],
            "",
        )
    };
    let ok = preflight("https://app.example.com", "PUT", "content-type").await;
    assert_eq!(ok.status, 204);
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(ok.headers["access-control-allow-methods"], "GET, PUT");
    assert_eq!(
        ok.headers["access-control-allow-headers"],
        "content-type, x-tenant"
    );
    assert_eq!(ok.headers["access-control-max-age"], "600");
    assert_eq!(ok.headers["access-control-allow-credentials"], "true");
    assert_eq!(preflight("https://evil.test", "GET", "").await.status, 403);
    assert_eq!(
        preflight("https://shop.test", "DELETE", "").await.status,
        403
    );
    assert_eq!(
        preflight("https://shop.test", "GET", "x-other")
            .await
            .status,
        403
    );
    assert_eq!(up.hits(), 0, "preflights never reach the upstream");

    let simple = request(port, "GET", "/", &[("origin", "https://shop.test")], "").await;
    assert_eq!(simple.status, 200);
    assert_eq!(
        simple.headers["access-control-allow-origin"],
        "https://shop.test"
    );
    assert_eq!(
        simple.headers["access-control-expose-headers"],
        "x-request-id"
    );
    assert_eq!(simple.headers["vary"], "origin");
    let other = request(port, "GET", "/", &[("origin", "https://evil.test")], "").await;
    assert!(!other.headers.contains_key("access-control-allow-origin"));
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn header_policies_change_requests_and_responses_and_add_security_headers() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let hv = |n: &str, v: &str| pb::HeaderValue {
        name: n.into(),
        value: v.into(),
    };
    let resources = vec![
        cluster("up", &[up.addr]),
        policy(
            "headers",
            policy::Policy::Headers(pb::HeaderPolicy {
                request: Some(pb::HeaderTransform {
                    add: vec![hv("x-added", "1")],
                    set: vec![hv("x-env", "prod")],
                    remove: vec!["x-secret".into()],
                }),
                response: Some(pb::HeaderTransform {
                    set: vec![hv("x-served-by", "portico")],
                    remove: vec!["x-upstream".into()],
                    ..Default::default()
                }),
                security_headers: true,
                content_security_policy: "default-src 'self'".into(),
            }),
        ),
    ];
    let proxy = serve(resources, port, vec![guarded(&["headers"])]).await;
    let a = request(port, "GET", "/", &[("x-secret", "s"), ("x-env", "dev")], "").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.seen("x-added"), Some("1"));
    assert_eq!(a.seen("x-env"), Some("prod"));
    assert_eq!(a.seen("x-secret"), None);
    assert_eq!(a.headers["x-served-by"], "portico");
    assert!(!a.headers.contains_key("x-upstream"));
    assert_eq!(
        a.headers["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(a.headers["x-content-type-options"], "nosniff");
    assert_eq!(a.headers["x-frame-options"], "DENY");
    assert!(a.headers.contains_key("referrer-policy"));
    assert_eq!(a.headers["content-security-policy"], "default-src 'self'");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn responses_are_compressed_by_accept_encoding() {
    let port = free_port();
    let big = format!("{{\"items\": [{}]}}", vec!["\"portico\""; 800].join(", "));
    let json_route = |name: &str, path: &str, body: &str| pb::Route {
        policies: vec!["squeeze".into()],
        ..route(
            name,
            exact(path),
            pb::route_action::Action::DirectResponse(pb::DirectResponse {
                status: 200,
                body: body.into(),
                content_type: "application/json".into(),
            }),
        )
    };
    let resources = vec![policy(
        "squeeze",
        policy::Policy::Compression(pb::Compression {
            algorithms: vec!["br".into(), "gzip".into()],
            min_bytes: 1024,
            content_types: vec!["application/json".into()],
        }),
    )];
    let proxy = serve(
        resources,
        port,
        vec![
            json_route("big", "/big", &big),
            json_route("small", "/small", "{}"),
        ],
    )
    .await;
    let fetch = |target: &'static str, accept: &'static str| async move {
        let req = Request::get(format!("http://127.0.0.1:{port}{target}"))
            .header("accept-encoding", accept)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client().request(req).await.unwrap();
        let (parts, body) = response.into_parts();
        (parts.headers, body.collect().await.unwrap().to_bytes())
    };
    use std::io::Read;
    let (h, gz) = fetch("/big", "gzip").await;
    assert_eq!(h["content-encoding"], "gzip");
    assert_eq!(h["vary"], "accept-encoding");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, big);
    assert!(gz.len() < big.len() / 5);
    let (h, br) = fetch("/big", "gzip;q=0.5, br").await;
    assert_eq!(h["content-encoding"], "br");
    let mut text = String::new();
    brotli::Decompressor::new(&br[..], 4096)
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, big);
    let (h, plain) = fetch("/big", "identity").await;
    assert!(!h.contains_key("content-encoding"));
    assert_eq!(plain.len(), big.len());
    let (h, _) = fetch("/small", "gzip").await;
    assert!(!h.contains_key("content-encoding"), "below min_bytes");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn rejections_are_counted_by_reason_and_usage_by_consumer() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let up = Upstream::start("up").await;
    let port = free_port();
    let resources = vec![
        cluster("up", &[up.addr]),
        consumer("alice", "alice-key", &[], ""),
        policy(
            "keys",
            policy::Policy::ApiKeyAuth(pb::ApiKeyAuth::default()),
        ),
        policy("two", policy::Policy::RateLimit(limit(2, 60, 0, None))),
    ];
    // The listener's policies run before the route's.
    let web =
        listener("web", port, "rt").with(|l: &mut pb::Listener| l.policies = vec!["keys".into()]);
    let mut all = vec![
        web,
        route_table("rt", vec![vhost("all", &["*"], vec![guarded(&["two"])])]),
    ];
    all.extend(resources);
    let cfg = config(1, all);
    assert!(portico_api::validate::validate_set(&cfg.resources).is_empty());
    let proxy = proxy_with(&cfg).await;
    let key = [("x-api-key", "alice-key")];
    assert_eq!(request(port, "GET", "/", &[], "").await.status, 401);
    assert_eq!(
        request(port, "GET", "/", &[("x-api-key", "nope")], "")
            .await
            .status,
        401
    );
    for _ in 0..2 {
        assert_eq!(request(port, "GET", "/", &key, "").await.status, 200);
    }
    assert_eq!(request(port, "GET", "/", &key, "").await.status, 429);

    let line = |reason: &str| {
        format!(
            "{}{{listener=\"web\",route=\"api\",reason=\"{reason}\"}} 1",
            m::REJECTIONS_TOTAL
        )
    };
    let expected = [
        line("auth_missing"),
        line("auth_invalid"),
        line("rate_limited"),
    ];
    eventually("rejections counted", Duration::from_secs(5), || async {
        let text = handle.render();
        expected
            .iter()
            .all(|l| text.contains(l.as_str()))
            .then_some(())
    })
    .await;
    let usage = eventually("usage of all five requests", Duration::from_secs(5), || {
        let summary = proxy.take_usage(10);
        let total: u64 = summary.rows.iter().map(|r| r.stats.requests).sum();
        async move { (total == 5).then_some(summary) }
    })
    .await;
    let alice_ok = usage
        .rows
        .iter()
        .find(|r| r.consumer == "alice" && r.status_class == "2xx")
        .unwrap();
    assert_eq!(
        (alice_ok.route.as_str(), alice_ok.cluster.as_str()),
        ("api", "up")
    );
    assert_eq!(alice_ok.stats.requests, 2);
    let limited = usage
        .rows
        .iter()
        .find(|r| r.consumer == "alice" && r.status_class == "4xx")
        .unwrap();
    assert_eq!(limited.stats.rejections, vec![("rate_limited", 1)]);
    // Refused before any cluster, still on their route.
    let anonymous = usage.rows.iter().find(|r| r.consumer.is_empty()).unwrap();
    assert_eq!(anonymous.stats.requests, 2);
    assert_eq!(
        (anonymous.route.as_str(), anonymous.cluster.as_str()),
        ("api", "")
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

/// What the agent asks the control plane for, polled from the proxy until it asks.
async fn asked(proxy: &portico_proxy::Proxy) -> Vec<pb::BudgetUse> {
    eventually("a budget request", Duration::from_secs(5), || {
        let asked = proxy.take_budget_requests();
        async move { (!asked.is_empty()).then_some(asked) }
    })
    .await
}

/// The grant of `granted` requests for what `asked` names.
fn grant(asked: &pb::BudgetUse, granted: u64, exhausted: bool, window_ms: i64) -> pb::BudgetGrant {
    pb::BudgetGrant {
        policy: asked.policy.clone(),
        key: asked.key.clone(),
        window_start_ms: asked.window_start_ms,
        window_end_ms: asked.window_start_ms + window_ms,
        granted,
        exhausted,
        limit: 10,
        remaining: 10 - granted,
    }
}

#[tokio::test]
async fn fleet_budgets_admit_what_was_granted_and_refuse_once_exhausted() {
    let up = Upstream::start("up").await;
    let port = free_port();
    let fleet = pb::RateLimit {
        requests: 10,
        period: Some(pbjson_types::Duration {
            seconds: 3600,
            nanos: 0,
        }),
        scope: pb::rate_limit::Scope::Fleet as i32,
        ..Default::default()
    };
    let resources = vec![
        cluster("up", &[up.addr]),
        consumer("alice", "alice-key", &[], "gold"),
        policy(
            "keys",
            policy::Policy::ApiKeyAuth(pb::ApiKeyAuth::default()),
        ),
        policy(
            "daily",
            policy::Policy::Quota(pb::Quota {
                limit: 100,
                period: pb::quota::Period::Day as i32,
                plans: [("gold".to_string(), 10)].into(),
            }),
        ),
        policy("shared", policy::Policy::RateLimit(fleet)),
    ];
    let routes = vec![
        pb::Route {
            policies: vec!["shared".into()],
            ..route("fleet", prefix("/fleet"), to("up"))
        },
        pb::Route {
            policies: vec!["shared".into()],
            ..route("other", prefix("/other"), to("up"))
        },
        guarded(&["daily", "keys"]),
    ];
    let proxy = serve(resources, port, routes).await;
    proxy.set_control_plane_connected(true);
    let key = [("x-api-key", "alice-key")];

    // A quota: the first request waits while the agent asks for the budget of alice's key in
    // this calendar day; it goes on with the grant.
    let waiting = tokio::spawn(request(port, "GET", "/", &key, ""));
    let ask = asked(&proxy).await.remove(0);
    assert_eq!(
        (ask.policy.as_str(), ask.key.as_str()),
        ("daily", "consumer:alice")
    );
    assert!(ask.wanted >= 1);
    let day = 86_400_000;
    assert_eq!(ask.window_start_ms % day, 0, "a calendar day");
    proxy.grant_budgets(vec![grant(&ask, 2, false, day)]);
    assert_eq!(waiting.await.unwrap().status, 200);
    assert_eq!(request(port, "GET", "/", &key, "").await.status, 200);
    // The fleet's budget is spent: refused at once, until the day ends.
    proxy.grant_budgets(vec![grant(&ask, 0, true, day)]);
    let refused = request(port, "GET", "/", &key, "").await;
    assert_eq!(refused.status, 429);
    let retry: i64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let left = (ask.window_start_ms + day
        - SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64)
        / 1000;
    assert!(
        (left - 2..=left + 2).contains(&retry),
        "Retry-After {retry}, {left} s left"
    );
    // Authentication ran first: no key is 401, not a quota refusal.
    assert_eq!(request(port, "GET", "/", &[], "").await.status, 401);
    let counts = proxy.take_budget_use();
    let daily = counts.iter().find(|u| u.policy == "daily").unwrap();
    assert_eq!((daily.admitted, daily.refused), (2, 1));

    // A FLEET rate limit without a key: one budget per route, with the RateLimit-* headers.
    let waiting = tokio::spawn(request(port, "GET", "/fleet", &[], ""));
    let ask = asked(&proxy).await.remove(0);
    assert_eq!(
        (ask.policy.as_str(), ask.key.as_str()),
        ("shared", "route:web/fleet")
    );
    proxy.grant_budgets(vec![grant(&ask, 1, true, 3_600_000)]);
    let admitted = waiting.await.unwrap();
    assert_eq!(admitted.status, 200);
    assert_eq!(admitted.headers["ratelimit-limit"], "10");
    let refused = request(port, "GET", "/fleet", &[], "").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.headers["ratelimit-remaining"], "0");

    // Without a control plane, a key never granted anything is refused at once, to be tried
    // again in a second.
    proxy.set_control_plane_connected(false);
    let started = Instant::now();
    let other = request(port, "GET", "/other", &[], "").await;
    assert_eq!(other.status, 429);
    assert_eq!(other.headers["retry-after"], "1");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(proxy.take_budget_requests().is_empty());
    proxy.shutdown(Duration::from_secs(1)).await;
}
