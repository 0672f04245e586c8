//! What `portico` tells an operator when something goes wrong, through the real binary: a store
//! that is down is not an unreachable control plane; a change cut off on the way may or may
//! not have committed; YAML errors name their document; a conflict names the revision once; an
//! unknown revision is an error; unreadable files exit 1; text from the network reaches the
//! terminal escaped; and `rollback --expected-revision` is conditional like `apply`'s.

use std::time::Duration;

use portico_integration_tests::cli::{Files, portico};
use portico_integration_tests::cp::{ControlPlane, StoreSpec};
use portico_integration_tests::etcd::Etcd;
use portico_integration_tests::scripted_agent::{ScriptedAgent, node};
use portico_test_support::net::{localhost, refusing};
use portico_test_support::resources::cluster;
use tokio::io::AsyncReadExt;

/// A small config file in `files`: cluster `name`.
fn one_cluster(files: &Files, name: &str) -> String {
    files.write_yaml(
        &format!("{name}.yaml"),
        &[cluster(name, &[localhost(9000)])],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_is_not_an_unreachable_control_plane() {
    let mut etcd = Etcd::start();
    let store = StoreSpec::Etcd {
        endpoint: etcd.endpoint(),
        prefix: "/messages".into(),
    };
    let cp = ControlPlane::start(store, "cp-1");
    let files = Files::new();
    cp.portico(&["apply", "-f", &one_cluster(&files, "a")]).ok();
    etcd.kill();

    for args in [
        vec!["apply", "-f", &one_cluster(&files, "b")],
        vec!["history"],
    ] {
        let down = cp.portico(&args).expect(1);
        let line = down.stderr.trim_end();
        assert!(
            line.starts_with(&format!(
                "error: the control plane at {} answered: store unavailable",
                cp.endpoint()
            )),
            "{args:?}: {down:#?}"
        );
        assert!(!line.contains("--server"), "{down:#?}");
        // The store's own words follow, once.
        assert!(line.contains("store unavailable (etcd"), "{line}");
        assert_eq!(line.matches("unavailable").count(), 1, "{line}");
        assert_eq!(line.lines().count(), 1, "{line}");
    }
    // What the control plane holds in memory is still served.
    cp.portico(&["get", "clusters"]).ok();

    let gone = refusing();
    let unreachable = portico(&gone.url(), &["get", "all"]).expect(1);
    assert!(
        unreachable
            .stderr
            .contains(&format!("cannot reach the control plane at {}", gone.url()))
            && unreachable.stderr.contains("--server"),
        "{unreachable:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_cut_off_on_the_way_may_or_may_not_have_committed() {
    // A "control plane" that takes the connection and the whole apply request, then dies.
    let listener = tokio::net::TcpListener::bind(localhost(0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return false;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(14).any(|w| w == b"dies-mid-apply") {
                    return true;
                }
            }
        })
        .await;
        read == Ok(true)
    });
    let files = Files::new();
    let path = one_cluster(&files, "dies-mid-apply");
    let run = tokio::task::spawn_blocking(move || portico(&url, &["apply", "-f", &path]))
        .await
        .unwrap();
    assert!(server.await.unwrap(), "the request reached the server");
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.contains("failed during the apply")
            && run
                .stderr
                .contains("the change may or may not have been committed")
            && run.stderr.contains("portico history"),
        "{run:#?}"
    );
}

#[test]
fn yaml_errors_conflicts_unknown_revisions_and_files_say_what_happened() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    let two = files.write(
        "two.yaml",
        "kind: Cluster\nname: a\nspec: {}\n---\nkind: Cluster\nname: [b\n",
    );
    let bad = cp.portico(&["apply", "-f", &two]).expect(4);
    assert!(
        bad.stderr
            .contains("two.yaml: document 1 (line 5): invalid YAML"),
        "{bad:#?}"
    );

    let a = one_cluster(&files, "a");
    cp.portico(&["apply", "-f", &a]).ok();
    let stale = cp
        .portico(&[
            "apply",
            "--expected-revision",
            "0",
            "-f",
            &one_cluster(&files, "b"),
        ])
        .expect(3);
    assert_eq!(
        stale.stderr,
        "error: conflict: the config is at revision 1, not 0; re-run the command to apply on \
         top of the current config\n"
    );

    let unknown = cp.portico(&["rollout", "status", "999999"]).expect(1);
    assert_eq!(
        unknown.stderr,
        "error: revision 999999 does not exist: the config is at revision 1\n"
    );

    for command in ["apply", "diff"] {
        let missing = cp
            .portico(&[command, "-f", "/no/such/dir/config.yaml"])
            .expect(1);
        assert!(
            missing
                .stderr
                .starts_with("error: /no/such/dir/config.yaml: cannot read file"),
            "{command}: {missing:#?}"
        );
    }
}

#[test]
fn rollback_with_an_expected_revision_is_conditional() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    cp.portico(&["apply", "-f", &one_cluster(&files, "a")]).ok();
    cp.portico(&["apply", "-f", &one_cluster(&files, "b")]).ok();
    let stale = cp
        .portico(&["rollback", "1", "--expected-revision", "1"])
        .expect(3);
    assert!(
        stale
            .stderr
            .starts_with("error: conflict: the config is at revision 2, not 1"),
        "{stale:#?}"
    );
    let history = cp.portico(&["-o", "json", "history"]).ok().json();
    assert_eq!(history["entries"][0]["revision"], 2, "nothing written");
    let rolled = cp
        .portico(&["-o", "json", "rollback", "1", "--expected-revision", "2"])
        .ok()
        .json();
    assert_eq!(
        (rolled["revision"].as_i64(), rolled["rollback_of"].as_i64()),
        (Some(3), Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_from_the_network_reaches_the_terminal_escaped() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    cp.portico(&["apply", "-f", &one_cluster(&files, "a")]).ok();
    let mut agent = ScriptedAgent::synced(&cp.endpoint(), node("esc-1", "eu", "eu-1")).await;
    cp.portico(&["apply", "-f", &one_cluster(&files, "b")]).ok();
    let update = agent.expect_update().await;
    agent.nack(&update, "\x1b[2J\x1b[31mboom\rhidden\u{202e}txt");
    cp.wait_for_rollout(update.version, "the NACK", |s| s.nacked == 1)
        .await;

    let agents = cp.portico(&["agents"]).ok();
    let status = cp.portico(&["rollout", "status"]).expect(5);
    for (what, text) in [
        ("agents", &agents.stdout),
        ("rollout status", &status.stdout),
        ("rollout status error", &status.stderr),
    ] {
        assert!(
            text.contains(r"\u{1b}[2J\u{1b}[31mboom\rhidden\u{202e}txt"),
            "{what}: {text:?}"
        );
        assert!(
            !text.contains('\x1b') && !text.contains('\r') && !text.contains('\u{202e}'),
            "{what}: {text:?}"
        );
    }

    let named = files.write(
        "named.yaml",
        "kind: Cluster\nname: \"a\\e[2Jb\"\nspec: {endpoints: [{address: 127.0.0.1, port: 1}]}\n",
    );
    let refused = cp.portico(&["apply", "-f", &named]).expect(4);
    assert!(
        refused
            .stderr
            .contains(r"Cluster/a\u{1b}[2Jb: name: invalid name"),
        "{refused:#?}"
    );
    assert!(!refused.stderr.contains('\x1b'), "{refused:#?}");
}
