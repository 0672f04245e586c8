//! `portico consumer create` and `add-key` against a real control plane (embedded store, in
//! this process), through the real `portico` binary: the key is printed once, and the stored
//! Consumer holds only its SHA-256.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use portico_api::pb::admin_client::AdminClient;
use portico_api::pb::{GetRequest, Kind, ResourceKey, resource::Spec};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// Runs `portico --server URL ARGS…`; returns the exit code and stdout.
fn portico(server: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("--server")
        .arg(server)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

/// [`portico`] off the async runtime.
async fn run(server: &str, args: &[&str]) -> (i32, String) {
    let server = server.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        portico(&server, &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_printed_once_and_stored_as_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let config = portico_control_plane::config::Config::embedded(dir.path().join("store"));
    let cp = tokio::spawn(portico_control_plane::server::run(
        listener,
        metrics,
        config,
        stop.clone().cancelled_owned(),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut admin = loop {
        match AdminClient::connect(server.clone()).await {
            Ok(c) => break c,
            Err(e) => assert!(Instant::now() < deadline, "control plane not up: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let create = [
        "-o", "json", "consumer", "create", "alice", "--plan", "gold",
    ];
    let (code, out) = run(&server, &create).await;
    assert_eq!(code, 0, "{out}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("pk_"), "{key}");

    let add = ["-o", "json", "consumer", "add-key", "alice", "--id", "ci"];
    let (code, out) = run(&server, &add).await;
    assert_eq!(code, 0, "{out}");
    let added: serde_json::Value = serde_json::from_str(&out).unwrap();
    let second = added["key"].as_str().unwrap().to_string();
    assert_ne!(key, second);

    let stored = admin
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
    let (code, yaml) = run(&server, &["-o", "yaml", "get", "consumer", "alice"]).await;
    assert_eq!(code, 0);
    assert!(yaml.contains(&first_hash), "{yaml}");
    assert!(!yaml.contains(&key) && !yaml.contains(&second), "{yaml}");

    // Creating it again fails, and so does adding a key to a consumer that does not exist.
    assert_eq!(run(&server, &["consumer", "create", "alice"]).await.0, 1);
    assert_eq!(run(&server, &["consumer", "add-key", "nobody"]).await.0, 1);
    stop.cancel();
    cp.await.unwrap().unwrap();
}
