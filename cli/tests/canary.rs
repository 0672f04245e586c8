//! Canary rollouts through the real `portico` binary against a real control plane (embedded
//! store, in this process, no agents): `apply --canary`, `rollout status`, `rollout promote`,
//! `rollout abort`, `apply --force`, and what `history` shows of them.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use serde_json::Value;
use support::{ControlPlane, portico};

/// A cluster whose connect timeout is `seconds`, as a file in `dir`.
fn cluster_file(dir: &Path, seconds: u32) -> String {
    let path = dir.join(format!("cluster-{seconds}.yaml"));
    std::fs::write(
        &path,
        format!(
            "kind: Cluster\nname: web\nspec:\n  endpoints:\n    - {{address: 127.0.0.1, port: \
             9}}\n  connect_timeout: {seconds}s\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_rollouts_are_applied_followed_promoted_and_aborted() {
    let cp = ControlPlane::start().await;
    let dir = &cp.dir;
    let s = cp.server.as_str();
    let run = portico(s, &["apply", "-f", &cluster_file(dir.path(), 1)]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);

    // A canary apply says how to follow it; JSON names the selector.
    let two = cluster_file(dir.path(), 2);
    let args = [
        "-o",
        "json",
        "apply",
        "-f",
        &two,
        "--canary",
        "slot=1",
        "--ack-timeout",
        "60s",
    ];
    let run = portico(s, &args).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let applied = run.json();
    assert_eq!(applied["canary"], "slot=1");
    let canary_revision = applied["revision"].as_i64().unwrap();

    // Status shows the rollout: no agent applied it yet, the ACKs are awaited.
    let run = portico(s, &["-o", "json", "rollout", "status"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let status = run.json();
    assert_eq!(status["revision"], canary_revision);
    assert_eq!(status["rollout"]["revision"], canary_revision);
    assert_eq!(status["rollout"]["previous"], canary_revision - 1);
    assert_eq!(status["rollout"]["stage"], "canary");
    assert_eq!(status["rollout"]["selector"], "slot=1");
    assert_eq!(status["rollout"]["ack_timeout_seconds"], 60);
    assert_eq!(status["rollout"]["ended_revision"], Value::Null);
    let run = portico(s, &["rollout", "status"]).await;
    assert!(
        run.stdout.starts_with(&format!(
            "canary rollout of revision {canary_revision} (previous {}) to slot=1: canary",
            canary_revision - 1
        )),
        "{}",
        run.stdout
    );

    // One rollout at a time: another apply is refused, naming it.
    let three = cluster_file(dir.path(), 3);
    let run = portico(s, &["apply", "-f", &three]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr
            .contains(&format!("canary rollout of revision {canary_revision}")),
        "{}",
        run.stderr
    );

    // Promotion by hand.
    let run = portico(s, &["rollout", "promote", "-m", "looks good"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let promoted = canary_revision + 1;
    assert_eq!(
        run.stdout,
        format!("promoted revision {canary_revision} to every agent (revision {promoted})\n")
    );
    let run = portico(s, &["-o", "json", "rollout", "status"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["rollout"]["stage"], "done");
    assert_eq!(run.json()["rollout"]["ended_revision"], promoted);
    // Nothing to promote or abort now.
    assert_eq!(portico(s, &["rollout", "promote"]).await.code, 1);
    assert_eq!(portico(s, &["rollout", "abort"]).await.code, 1);

    // An abort by hand: the config before the change is back, and status says why (exit 5).
    let run = portico(
        s,
        &[
            "apply",
            "-f",
            &three,
            "--canary",
            "5%",
            "--ack-timeout",
            "60s",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("is rolling out to the canary agents (5%); follow it with: portico rollout status --wait"),
        "{}",
        run.stdout
    );
    let aborted = promoted + 1;
    let run = portico(
        s,
        &["-o", "json", "rollout", "abort", "-m", "wrong timeout"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let restored = run.json();
    assert_eq!(restored["revision"], aborted + 1);
    assert_eq!(restored["rollout_revision"], aborted);
    assert_eq!(restored["restored_revision"], promoted);
    let run = portico(s, &["rollout", "status"]).await;
    assert_eq!(run.code, 5, "{}", run.stdout);
    assert!(run.stderr.contains("wrong timeout"), "{}", run.stderr);
    // The revision restored is an ordinary one once named.
    let run = portico(s, &["rollout", "status", &promoted.to_string()]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with(&format!("revision {promoted}:")),
        "{}",
        run.stdout
    );

    // A rollout with no agent to take it fails its ACK gate; --wait exits 5 with the reason.
    let args = [
        "apply",
        "-f",
        &three,
        "--canary",
        "slot=1",
        "--ack-timeout",
        "1s",
    ];
    let run = portico(s, &args).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let failed = aborted + 2;
    let args = ["rollout", "status", "--wait", "--timeout", "60s"];
    let run = portico(s, &args).await;
    assert_eq!(run.code, 5, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "the canary rollout of revision {failed} was aborted: ack"
        )),
        "{}",
        run.stderr
    );

    // --force aborts the active rollout first.
    let args = [
        "apply",
        "-f",
        &three,
        "--canary",
        "slot=1",
        "--ack-timeout",
        "60s",
    ];
    assert_eq!(portico(s, &args).await.code, 0);
    let forced = failed + 2;
    let four = cluster_file(dir.path(), 4);
    let run = portico(s, &["-o", "json", "apply", "-f", &four, "--force"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["revision"], forced + 2);

    // History marks each of them.
    let run = portico(s, &["-o", "json", "history", "--limit", "20"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let history = run.json();
    let entry = |revision: i64| {
        history["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["revision"] == revision)
            .unwrap()
            .clone()
    };
    assert_eq!(entry(canary_revision)["canary"], "slot=1");
    assert_eq!(entry(canary_revision)["aborted"], false);
    assert_eq!(entry(promoted)["promotion_of"], canary_revision);
    assert_eq!(entry(aborted)["canary"], "5%");
    assert_eq!(entry(aborted)["aborted"], true);
    assert_eq!(entry(aborted + 1)["rollback_of"], promoted);
    assert_eq!(entry(failed)["aborted"], true);
    assert_eq!(entry(forced)["aborted"], true);
    assert_eq!(entry(forced + 2)["canary"], Value::Null);
    let run = portico(s, &["history"]).await;
    assert!(run.stdout.contains("canary 5%, aborted"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("promotes {canary_revision}")),
        "{}",
        run.stdout
    );

    cp.stop().await;
}
