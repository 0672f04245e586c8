//! The embedded store under SIGKILL: a child process commits transactions in a loop and prints
//! each committed write; the test kills it at a random moment, reopens the store, and checks
//! that every printed write is there. Twenty crashes in a row on the same directory, so
//! recovery from a recovered store is exercised too.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use portico_control_plane::store::embedded::EmbeddedStore;
use portico_control_plane::store::{Revision, Store, StoreError};
use portico_test_support::process::Process;
use portico_test_support::wait::eventually_blocking;
use rand::Rng;

const WRITER: &str = env!("CARGO_BIN_EXE_store-crash-writer");

/// Starts the writer on `dir` and waits until it has committed something.
fn start_writer(dir: &Path, prefix: &str) -> Process {
    let mut cmd = Command::new(WRITER);
    cmd.arg(dir).arg(prefix);
    let mut writer = Process::spawn("store-crash-writer", cmd);
    eventually_blocking("the writer to commit", Duration::from_secs(20), || {
        if let Some(status) = writer.try_wait() {
            panic!("the writer exited before writing: {status}");
        }
        (!writer.stdout().is_empty()).then_some(())
    });
    writer
}

/// The `(key, revision)` lines the writer printed.
fn printed(writer: &Process) -> Vec<(String, Revision)> {
    let text = writer.stdout();
    text.lines()
        .map(|line| {
            let (key, rev) = line.rsplit_once(' ').expect("a `key revision` line");
            (key.to_string(), rev.parse().expect("a revision"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store_dir = dir.path().join("store");
    let mut committed: BTreeMap<String, Revision> = BTreeMap::new();
    let mut rng = rand::rng();
    for crash in 0..20 {
        let mut writer = start_writer(&store_dir, &format!("/crash/{crash}"));
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
        writer.kill();
        let lines = printed(&writer);
        assert!(!lines.is_empty());
        let newest = lines.iter().map(|(_, rev)| *rev).max().unwrap_or(0);
        committed.extend(lines);

        let store = EmbeddedStore::open(&store_dir).expect("the store reopens after SIGKILL");
        let (items, revision) = store.list("/crash/").await.expect("list");
        assert!(revision >= newest, "revision went back to {revision}");
        let stored: BTreeMap<&str, _> = items.iter().map(|kv| (kv.key.as_str(), kv)).collect();
        for (key, rev) in &committed {
            let kv = stored
                .get(key.as_str())
                .unwrap_or_else(|| panic!("crash {crash}: committed {key} at {rev} is lost"));
            assert_eq!(kv.mod_revision, *rev, "{key}");
            assert_eq!(kv.value, key.as_bytes().repeat(32), "{key}");
        }
        let last = stored.get("/crash/last").expect("/crash/last exists");
        assert!(last.mod_revision >= newest);
    }
}

#[tokio::test]
async fn another_process_cannot_open_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store_dir = dir.path().join("store");
    let mut writer = start_writer(&store_dir, "/held");
    match EmbeddedStore::open(&store_dir) {
        Err(StoreError::Locked { path }) => assert_eq!(path, store_dir.display().to_string()),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("opened a store another process holds"),
    }
    writer.kill();
    EmbeddedStore::open(&store_dir).expect("open once the owner is gone");
}
