//! Secret hygiene end to end: marker secrets (a TLS private key and an opaque value) go in
//! through the CLI, are rotated and deleted, and their material shows on no surface: CLI output
//! of every format, control-plane and agent logs at trace level, errors, the agents' `/config`,
//! metrics, history records, and what an agent whose listeners do not reference them receives.
//! The store and the agent caches are readable by their owner alone.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use portico_api::Resource;
use portico_api::pb::{self, secret};
use portico_control_plane::store::Store;
use portico_control_plane::store::embedded::EmbeddedStore;
use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::cli::{Files, Run};
use portico_integration_tests::cp::{ControlPlane, StoreSpec};
use portico_test_support::net::free_port;
use portico_test_support::resources::{
    Edit, cluster, https_listener, listener, prefix, regions, resource, route, route_table,
    secret as tls_secret, sni, to, vhost,
};
use portico_test_support::tls::self_signed;
use portico_test_support::upstream::Upstream;

/// Pieces of a PEM private key that only the key holds: its base64 lines, less any that the
/// certificate (public) happens to share.
fn key_markers(tls: &pb::TlsSecret) -> Vec<String> {
    let markers: Vec<String> = tls
        .private_key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .filter(|l| !tls.certificate_chain.contains(*l))
        .map(str::to_string)
        .collect();
    assert!(!markers.is_empty(), "no marker in {:?}", tls.private_key);
    markers
}

fn opaque(name: &str, value: &str) -> Resource {
    resource(
        name,
        pb::Secret {
            secret: Some(secret::Secret::Opaque(value.to_string())),
        },
    )
}

/// Fails naming the surface and the marker when `text` shows any of `markers`.
fn assert_hidden(surface: &str, text: &str, markers: &[String]) {
    for m in markers {
        assert!(
            !text.contains(m.as_str()),
            "{surface} shows secret material {m:?}:\n{text}"
        );
    }
}

fn shown(run: &Run) -> String {
    format!("{}\n{}", run.stdout, run.stderr)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_material_shows_on_no_surface_and_leaves_history_when_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cp = ControlPlane::start_logging(StoreSpec::Embedded(data.clone()), "cp-1", "trace");
    let up = Upstream::start_name_only("up").await;
    let (first, second) = (self_signed("shop.test"), self_signed("shop.test"));
    let opaque_marker = format!("OPAQUE-MARKER-{:016x}", rand::random::<u64>());
    let first_markers = key_markers(&first.secret);
    let second_markers = key_markers(&second.secret);
    // Material that must be gone from everywhere by the end, and all of it.
    let gone: Vec<String> = first_markers
        .iter()
        .cloned()
        .chain([opaque_marker.clone()])
        .collect();
    let all: Vec<String> = gone.iter().chain(&second_markers).cloned().collect();

    // Agent eu serves the HTTPS listener (and so holds the key); agent us serves only a plain
    // listener, which references no Secret.
    let agent = |id: &str, region: &str| {
        let mut options = AgentOptions::new(id, &[cp.endpoint()]).cache_dir(&dir.path().join(id));
        options.region = region.into();
        options.env.push(("RUST_LOG".into(), "trace".into()));
        Agent::start(&options)
    };
    let (eu, us) = (agent("edge-eu", "eu"), agent("edge-us", "us"));
    let (https_port, http_port) = (free_port(), free_port());
    let config = |key: &pb::TlsSecret, with_opaque: bool| {
        let mut resources = vec![
            https_listener("web", https_port, "rt", vec![sni("web-cert", &[])])
                .with(|l: &mut pb::Listener| l.selector = Some(regions(&["eu"]))),
            listener("plain", http_port, "rt")
                .with(|l: &mut pb::Listener| l.selector = Some(regions(&["us"]))),
            route_table(
                "rt",
                vec![vhost(
                    "all",
                    &["*"],
                    vec![route("all", prefix("/"), to("up"))],
                )],
            ),
            cluster("up", &[up.addr]),
            tls_secret("web-cert", key.clone()),
        ];
        if with_opaque {
            resources.push(opaque("api-token", &opaque_marker));
        }
        resources
    };
    let files = Files::new();
    let v1_file = files.write_yaml("v1.yaml", &config(&first.secret, true));
    let applied = cp.portico(&["apply", "-f", &v1_file]).ok();
    assert_hidden("apply", &shown(&applied), &all);
    let v1 = cp.portico(&["history", "-o", "json"]).ok().json()["entries"][0]["revision"]
        .as_i64()
        .unwrap();
    eu.wait_for_version(v1).await;
    us.wait_for_version(v1).await;

    // The CLI, in every format, and a diff against a file holding other material.
    let v2_file = files.write_yaml("v2.yaml", &config(&second.secret, false));
    let mut cli_runs = vec![
        cp.portico(&["get", "secret", "web-cert", "-o", "yaml"])
            .ok(),
        cp.portico(&["get", "secret", "web-cert", "-o", "json"])
            .ok(),
        cp.portico(&["get", "secret", "api-token", "-o", "json"])
            .ok(),
        cp.portico(&["get", "secret"]).ok(),
        cp.portico(&["get", "all", "-o", "yaml"]).ok(),
        cp.portico(&["get", "all", "-o", "json"]).ok(),
        cp.portico(&["get", "all"]).ok(),
        cp.portico(&["diff", "-f", &v2_file]),
        cp.portico(&["apply", "-f", &v2_file, "--dry-run"]),
    ];
    assert!(
        cli_runs[0].stdout.contains("<redacted>"),
        "{:#?}",
        cli_runs[0]
    );
    // A Secret written wrong, its material in a field that does not exist: the error names the
    // field and shows no material.
    let bad = files.write(
        "bad.yaml",
        &format!("kind: Secret\nname: leaky\nspec: {{opaque_value: \"{opaque_marker}\"}}\n"),
    );
    let refused = cp.portico(&["apply", "-f", &bad]).expect(4);
    assert!(refused.stderr.contains("spec.opaque_value"), "{refused:#?}");
    cli_runs.push(refused);

    // Rotate the key and delete the opaque Secret: their old material leaves the store.
    cli_runs.push(cp.portico(&["apply", "-f", &v2_file]).ok());
    cli_runs.push(cp.portico(&["delete", "secret", "api-token"]).ok());
    let latest = cp.portico(&["history", "-o", "json"]).ok();
    let v3 = latest.json()["entries"][0]["revision"].as_i64().unwrap();
    cli_runs.push(latest);
    cli_runs.push(cp.portico(&["history"]).ok());
    // The diffs of the changes that made and rotated them, as the dashboard shows them too.
    let rotation = (v3 - 1).to_string();
    let rotated = cp.portico(&["history", "--diff", &rotation]).ok();
    assert!(
        rotated.stdout.contains("Secret/web-cert (revision"),
        "{rotated:#?}"
    );
    cli_runs.push(rotated);
    cli_runs.push(
        cp.portico(&["history", "--diff", &v1.to_string(), "-o", "json"])
            .ok(),
    );
    eu.wait_for_version(v3).await;
    us.wait_for_version(v3).await;

    // Rolling back to material that is gone is refused, naming the Secret and what to do.
    let rollback = cp.portico(&["rollback", &v1.to_string()]).expect(1);
    assert!(
        rollback.stderr.contains("cannot roll back to revision")
            && rollback.stderr.contains("Secret/api-token")
            && rollback.stderr.contains("apply Secret/api-token"),
        "{rollback:#?}"
    );
    cli_runs.push(rollback);
    // A change of the Secret's labels alone, rolled back: the record before it kept only the
    // fingerprint, and the rollback finds the material in the Secret stored now.
    let mut labelled = config(&second.secret, false);
    labelled[4].labels.insert("rotated".into(), "yes".into());
    let labelled_file = files.write_yaml("v4.yaml", &labelled);
    cli_runs.push(cp.portico(&["apply", "-f", &labelled_file]).ok());
    cli_runs.push(cp.portico(&["rollback", &v3.to_string()]).ok());
    let v5 = v3 + 2;
    eu.wait_for_version(v5).await;
    cp.wait_for_rollout(v5, "both agents to apply the rollback", |s| s.applied == 2)
        .await;
    let restored = cp
        .portico(&["get", "secret", "web-cert", "-o", "json"])
        .ok();
    assert!(!restored.stdout.contains("rotated"), "{restored:#?}");
    cli_runs.push(restored);
    for run in &cli_runs {
        assert_hidden(&format!("the CLI ({run:?})"), &shown(run), &all);
    }

    // The agents' admin endpoints, and the control plane's metrics.
    for (name, agent) in [("edge-eu", &eu), ("edge-us", &us)] {
        for path in ["/config", "/metrics"] {
            let (status, body) = agent.get(path).await.unwrap();
            assert_eq!(status, 200, "{name} {path}");
            assert_hidden(&format!("{name} {path}"), &body, &all);
        }
    }
    assert!(eu.config().await.to_string().contains("web-cert"));
    assert!(!us.config().await.to_string().contains("web-cert"));
    assert_hidden("the control plane's /metrics", &cp.metrics_text(), &all);

    // The caches: the agent that serves the key holds it, readable by itself alone; the other
    // never received it.
    for id in ["edge-eu", "edge-us"] {
        let cache = dir.path().join(id);
        assert_eq!(mode(&cache), 0o700, "{id}'s cache directory");
        assert_eq!(mode(&cache.join("config.pb")), 0o600, "{id}'s cache");
    }
    let eu_cache =
        String::from_utf8_lossy(&std::fs::read(dir.path().join("edge-eu/config.pb")).unwrap())
            .into_owned();
    assert!(second_markers.iter().all(|m| eu_cache.contains(m.as_str())));
    assert_hidden("the eu agent's cache", &eu_cache, &gone);
    let us_cache =
        String::from_utf8_lossy(&std::fs::read(dir.path().join("edge-us/config.pb")).unwrap())
            .into_owned();
    assert_hidden(
        "the us agent's cache (no listener of it references a Secret)",
        &us_cache,
        &all,
    );

    // Logs at trace level: lots of them, none with material.
    for (name, log) in [
        ("edge-eu", eu.log()),
        ("edge-us", us.log()),
        ("portico-cp", cp.log()),
    ] {
        assert!(
            log.contains("TRACE"),
            "{name} did not log at trace level:\n{log}"
        );
        assert_hidden(&format!("{name}'s log"), &log, &all);
    }

    // The store: private to its owner, and after the rotation and the deletion the old
    // material is in no record; the current key only in its Secret.
    assert_eq!(mode(&data), 0o700);
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    cp.kill();
    drop((eu, us));
    let store = EmbeddedStore::open(&data).unwrap();
    let (kvs, _) = store.list("").await.unwrap();
    let mut records = 0;
    for kv in &kvs {
        let value = String::from_utf8_lossy(&kv.value);
        if kv.key.contains("/history/") {
            records += 1;
            assert_hidden(&format!("history record {}", kv.key), &value, &all);
        } else if kv.key.ends_with("/secret/web-cert") {
            assert_hidden(&kv.key, &value, &gone);
        } else {
            assert_hidden(&kv.key, &value, &all);
        }
    }
    assert_eq!(records, 5, "history records");
    // The material is what the records say it was.
    let record: Vec<&portico_control_plane::store::KeyValue> = kvs
        .iter()
        .filter(|kv| kv.key.contains("/history/"))
        .collect();
    let fingerprinted = record.iter().any(|kv| {
        let text = String::from_utf8_lossy(&kv.value);
        text.contains("<redacted>") && text.contains("sha256:")
    });
    assert!(fingerprinted, "no record keeps a fingerprint");
}
