//! Least privilege on the wire, through the real control plane: an agent receives only the
//! Secrets its own listeners and clusters reference and Consumer key hashes only when a policy
//! it runs needs them, and what an agent says back (NACK reasons) is bounded before the control
//! plane keeps it.

use portico_api::pb::{self, Update};
use portico_api::{Kind, Resource};
use portico_integration_tests::cp::{ControlPlane, apply, catch_all};
use portico_integration_tests::scripted_agent::{ScriptedAgent, node};
use portico_test_support::net::{free_port, localhost};
use portico_test_support::resources::{
    Edit, cluster, https_listener, regions, resource, sni, tls_secret,
};
use prost::Message;

/// An HTTPS listener `name` for the agents of `region`, presenting the Secret `secret`.
fn regional_https(name: &str, region: &str, secret: &str) -> Resource {
    https_listener(name, free_port(), "main", vec![sni(secret, &[])])
        .with(|l: &mut pb::Listener| l.selector = Some(regions(&[region])))
}

/// The private key PEM of a tls Secret.
fn private_key(secret: &Resource) -> String {
    match &secret.spec {
        Some(pb::resource::Spec::Secret(pb::Secret {
            secret: Some(pb::secret::Secret::Tls(tls)),
        })) => tls.private_key.clone(),
        other => panic!("not a tls secret: {other:?}"),
    }
}

/// The keys of an update's resources, and its encoding (what went over the wire).
fn received(update: &Update) -> (Vec<String>, Vec<u8>) {
    let keys = update.upserts.iter().map(|r| r.key().to_string()).collect();
    (keys, update.encode_to_vec())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_scoped_agent_gets_only_the_secrets_and_key_hashes_it_needs() {
    let cp = ControlPlane::embedded();
    let mut admin = cp.admin().await;
    let eu_cert = tls_secret("eu-cert", "eu.example.com");
    let us_cert = tls_secret("us-cert", "us.example.com");
    let marker = "MARKER-opaque-7f3a9c";
    let unused = resource(
        "unused-marker",
        pb::Secret {
            secret: Some(pb::secret::Secret::Opaque(marker.into())),
        },
    );
    let key_hash = "5e".repeat(32);
    let shop = resource(
        "shop",
        pb::Consumer {
            api_keys: vec![pb::ApiKey {
                id: "key-1".into(),
                sha256: key_hash.clone(),
            }],
            ..Default::default()
        },
    );
    apply(
        &mut admin,
        vec![
            regional_https("eu-web", "eu", "eu-cert"),
            regional_https("us-web", "us", "us-cert"),
            catch_all("main", "backend"),
            cluster("backend", &[localhost(9)]),
            eu_cert.clone(),
            us_cert.clone(),
            unused,
            shop,
        ],
    )
    .await;

    let mut agent = ScriptedAgent::connect(&cp.endpoint(), node("edge-eu", "eu", "eu-1"), 0)
        .await
        .unwrap();
    let first = agent.expect_update().await;
    agent.ack(&first);
    let (keys, bytes) = received(&first);
    assert!(keys.contains(&"Secret/eu-cert".to_string()), "{keys:?}");
    for absent in ["Secret/us-cert", "Secret/unused-marker", "Consumer/shop"] {
        assert!(!keys.contains(&absent.to_string()), "{absent} in {keys:?}");
    }
    assert!(contains(&bytes, &private_key(&eu_cert)));
    assert!(!contains(&bytes, &private_key(&us_cert)));
    assert!(!contains(&bytes, marker));
    assert!(!contains(&bytes, &key_hash));

    // An API-key policy allowing every consumer: now the agent needs the hashes.
    let keys_policy = resource(
        "keys",
        pb::Policy {
            policy: Some(pb::policy::Policy::ApiKeyAuth(pb::ApiKeyAuth::default())),
        },
    );
    let eu_web = regional_https("eu-web", "eu", "eu-cert")
        .with(|l: &mut pb::Listener| l.policies = vec!["keys".into()]);
    apply(&mut admin, vec![keys_policy, eu_web]).await;
    let second = agent.expect_update().await;
    let (keys, bytes) = received(&second);
    assert!(keys.contains(&"Consumer/shop".to_string()), "{keys:?}");
    assert!(contains(&bytes, &key_hash));
    assert!(!contains(&bytes, marker));
    assert!(
        second
            .upserts
            .iter()
            .all(|r| r.kind() != Kind::Secret || r.name == "eu-cert")
    );
}

#[tokio::test]
async fn nack_reasons_are_bounded_before_they_are_kept() {
    let cp = ControlPlane::embedded();
    let mut admin = cp.admin().await;
    apply(
        &mut admin,
        vec![
            catch_all("main", "backend"),
            cluster("backend", &[localhost(9)]),
        ],
    )
    .await;
    let mut agent = ScriptedAgent::connect(&cp.endpoint(), node("noisy", "eu", "eu-1"), 0)
        .await
        .unwrap();
    let update = agent.expect_update().await;
    let reason = format!("\u{1b}[31m{}", "x".repeat(100_000));
    agent.nack(&update, &reason);
    let record = cp
        .wait_for_record("noisy", "the NACK recorded", |r| r.last_nack.is_some())
        .await;
    let kept = record.last_nack.unwrap().error;
    assert!(kept.len() <= 4096, "{} bytes kept", kept.len());
    // The escape character arrives as text, not as a terminal command.
    assert!(kept.starts_with("\\u{1b}[31mxxx"), "{kept:.20}");
    assert!(!kept.contains('\u{1b}'));
    let agents = cp.portico(&["agents"]).ok().stdout;
    assert!(agents.contains("\\u{1b}[31m"), "{agents}");
    assert!(!agents.contains('\u{1b}'), "{agents}");
}
