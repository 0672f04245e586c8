//! `portico consumer create` and `add-key` against a real control plane (embedded store, in
//! this process), through the real `portico` binary: the key is printed once, and the stored
//! Consumer holds only its SHA-256.
#![allow(clippy::unwrap_used)]

mod support;

use portico_api::pb::{GetRequest, Kind, ResourceKey, resource::Spec};
use sha2::{Digest, Sha256};
use support::{ControlPlane, portico};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_printed_once_and_stored_as_hashes() {
    let mut cp = ControlPlane::start().await;
    let server = cp.server.clone();
    let run = async |args: &[&str]| {
        let run = portico(&server, args).await;
        (run.code, run.stdout)
    };

    let create = [
        "-o", "json", "consumer", "create", "alice", "--plan", "gold",
    ];
    let (code, out) = run(&create).await;
    assert_eq!(code, 0, "{out}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("pk_"), "{key}");

    let add = ["-o", "json", "consumer", "add-key", "alice", "--id", "ci"];
    let (code, out) = run(&add).await;
    assert_eq!(code, 0, "{out}");
    let added: serde_json::Value = serde_json::from_str(&out).unwrap();
    let second = added["key"].as_str().unwrap().to_string();
    assert_ne!(key, second);

    let stored = cp
        .admin
        .get(GetRequest {
            key: Some(ResourceKey::new(Kind::Consumer, "alice")),
        })
        .await
        .unwrap()
        .into_inner()
        .resource
        .and_then(|s| s.resource)
        .unwrap();
    let Some(Spec::Consumer(c)) = stored.spec else {
        panic!("not a consumer")
    };
    assert_eq!(c.plan, "gold");
    let hashes: Vec<(&str, &str)> = c
        .api_keys
        .iter()
        .map(|k| (k.id.as_str(), k.sha256.as_str()))
        .collect();
    let first_hash = hex::encode(Sha256::digest(key.as_bytes()));
    let second_hash = hex::encode(Sha256::digest(second.as_bytes()));
    assert_eq!(
        hashes,
        [("key-1", first_hash.as_str()), ("ci", second_hash.as_str())]
    );

    // What `get` prints holds the hashes and never a key.
    let (code, yaml) = run(&["-o", "yaml", "get", "consumer", "alice"]).await;
    assert_eq!(code, 0);
    assert!(yaml.contains(&first_hash), "{yaml}");
    assert!(!yaml.contains(&key) && !yaml.contains(&second), "{yaml}");

    // Creating it again fails, and so does adding a key to a consumer that does not exist.
    assert_eq!(run(&["consumer", "create", "alice"]).await.0, 1);
    assert_eq!(run(&["consumer", "add-key", "nobody"]).await.0, 1);
    cp.stop().await;
}
