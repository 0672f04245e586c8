//! What a control plane refuses to start on: an embedded store whose data is gone (a 0-byte
//! database file, or none in a directory that is not new) would otherwise start with an empty
//! config. `--init` starts fresh on purpose.

use std::path::Path;
use std::time::Duration;

use portico_integration_tests::cp::{ControlPlane, CpOptions, StoreSpec, base_config, command};
use portico_test_support::net::free_addr;
use portico_test_support::process::Process;

/// Starts `portico-cp` on the embedded store in `dir` with `args`; returns its exit code and
/// standard error once it exits (it must, within a minute).
fn refused(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let store = StoreSpec::Embedded(dir.to_path_buf());
    let mut cmd = command(&store, "cp-1", free_addr(), free_addr());
    cmd.args(args).env("RUST_LOG", "off");
    let mut cp = Process::spawn("portico-cp", cmd);
    let status = cp.wait_timeout(Duration::from_secs(60));
    (status.code(), cp.stderr())
}

/// A store directory holding one applied change, its control plane stopped.
async fn applied_store(dir: &Path) {
    let mut cp = ControlPlane::start(StoreSpec::Embedded(dir.to_path_buf()), "cp-1");
    assert_eq!(cp.apply(base_config()).await.revision, 1);
    cp.kill();
}

#[tokio::test]
async fn an_empty_or_vanished_store_file_is_refused_until_init() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    applied_store(&dir).await;
    let db = dir.join("portico.redb");

    std::fs::File::create(&db).unwrap().set_len(0).unwrap();
    let (code, stderr) = refused(&dir, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("portico.redb is empty (0 bytes)"),
        "{stderr}"
    );
    assert!(stderr.contains("--init"), "{stderr}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "left as found");

    std::fs::remove_file(&db).unwrap();
    let (code, stderr) = refused(&dir, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("portico.redb is missing, but its directory is not new (it holds LOCK)"),
        "{stderr}"
    );
    assert!(stderr.contains("--init"), "{stderr}");
    assert!(!db.exists(), "nothing created");

    // On purpose: a new, empty store.
    let cp = ControlPlane::start_with(CpOptions {
        args: vec!["--init".into()],
        ..CpOptions::new(StoreSpec::Embedded(dir.clone()), "cp-1")
    });
    let history = cp.portico(&["-o", "json", "history"]).ok().json();
    assert_eq!(history["entries"], serde_json::json!([]));
}

#[tokio::test]
async fn init_never_empties_a_store_with_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    applied_store(&dir).await;
    let cp = ControlPlane::start_with(CpOptions {
        args: vec!["--init".into()],
        ..CpOptions::new(StoreSpec::Embedded(dir), "cp-1")
    });
    let history = cp.portico(&["-o", "json", "history"]).ok().json();
    assert_eq!(history["entries"][0]["revision"], 1, "{history}");
}

#[test]
fn a_new_or_empty_directory_starts_without_init() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for dir in [tmp.path().join("new"), empty] {
        let cp = ControlPlane::start(StoreSpec::Embedded(dir), "cp-1");
        cp.portico(&["history"]).ok();
    }
}
