//! CLI authentication and roles through the real binaries: each role allowed what it may and
//! refused the rest (exit 6, naming the role needed), tokens created once, stored hashed,
//! listed, expired and revoked, the bootstrap token file, and the history author.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use portico_api::pb::{ApplyRequest, HistoryRequest};
use portico_integration_tests::cli::{Files, Run, small_config};
use portico_integration_tests::cp::{ControlPlane, CpOptions, base_config};
use portico_test_support::net::free_port;
use portico_test_support::resources::{cluster, tls_secret};
use portico_test_support::wait::eventually_blocking;

/// Exit code of a refused caller (cli/README.md).
const EXIT_AUTH: i32 = 6;

/// Asserts `run` was refused with exit 6 and a message containing `needle`.
fn refused(run: Run, needle: &str) {
    assert_eq!(run.code, EXIT_AUTH, "{run:#?}");
    assert!(run.stderr.contains(needle), "{run:#?}");
}

#[test]
fn each_role_is_allowed_its_commands_and_refused_the_others() {
    let cp = ControlPlane::secured();
    let viewer = cp.create_token("viewer", "ro");
    let operator = cp.create_token("operator", "deployer");
    let admin = cp.create_token("admin", "root");
    let files = Files::new();
    let config = files.write_yaml("web.yaml", &small_config(free_port(), "hi", free_port()));
    let secret = files.write_yaml("secret.yaml", &[tls_secret("site-cert", "example.com")]);

    // Nobody without a token, nor with an unknown one.
    refused(cp.portico_as(None, &["get", "all"]), "not authenticated");
    refused(
        cp.portico_as(Some("pt_bogus"), &["get", "all"]),
        "unknown or revoked token",
    );

    // viewer: reads only.
    for args in [
        &["get", "all"][..],
        &["history"],
        &["agents"],
        &["rollout", "status"],
        &["health"],
        &["usage"],
    ] {
        cp.portico_as(Some(&viewer), args).ok();
    }
    refused(
        cp.portico_as(Some(&viewer), &["apply", "-f", &config]),
        "needs role operator",
    );
    refused(
        cp.portico_as(Some(&viewer), &["token", "list"]),
        "needs role admin",
    );

    // operator: config changes, but not Secrets, tokens or the CA.
    cp.portico_as(Some(&operator), &["apply", "-f", &config])
        .ok();
    cp.portico_as(Some(&operator), &["consumer", "create", "shop"])
        .ok();
    cp.portico_as(Some(&operator), &["rollback", "1"]).ok();
    cp.portico_as(Some(&operator), &["delete", "listener", "web"])
        .ok();
    refused(
        cp.portico_as(Some(&operator), &["apply", "-f", &secret]),
        "changing Secret/site-cert needs role admin",
    );
    // A dry run writes nothing, so it is not refused.
    cp.portico_as(Some(&operator), &["apply", "--dry-run", "-f", &secret])
        .ok();
    refused(
        cp.portico_as(
            Some(&operator),
            &["token", "create", "--role", "viewer", "--name", "x"],
        ),
        "needs role admin",
    );
    refused(
        cp.portico_as(Some(&operator), &["ca", "show"]),
        "needs role admin",
    );
    refused(
        cp.portico_as(Some(&operator), &["agents", "revoke", "edge-1"]),
        "needs role admin",
    );

    // admin: everything.
    cp.portico_as(Some(&admin), &["apply", "-f", &secret]).ok();
    cp.portico_as(Some(&admin), &["token", "list"]).ok();
    cp.portico_as(Some(&admin), &["ca", "show"]).ok();
    cp.portico_as(Some(&admin), &["delete", "secret", "site-cert"])
        .ok();
}

#[tokio::test]
async fn the_history_author_is_the_token_name_never_a_header() {
    let cp = ControlPlane::secured();
    let operator = cp.create_token("operator", "deploy-bot");
    let files = Files::new();
    let config = files.write_yaml("web.yaml", &small_config(free_port(), "hi", free_port()));
    cp.portico_as(Some(&operator), &["apply", "-f", &config])
        .ok();

    // A client that claims another author in a header is recorded under its token's name.
    let mut admin = cp.admin_as(Some(&operator)).await;
    let mut request = tonic::Request::new(ApplyRequest {
        resources: vec![cluster("spare", &[portico_test_support::net::localhost(9)])],
        message: "forged".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-portico-author", "someone-else".parse().unwrap());
    admin.apply(request).await.unwrap();

    let history = cp.portico(&["-o", "json", "history"]).ok().json();
    let entries = history["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{history}");
    for entry in entries {
        assert_eq!(entry["author"], "deploy-bot", "{history}");
    }

    // With authentication off every author is anonymous.
    let open = ControlPlane::embedded();
    let mut admin = open.admin().await;
    let mut request = tonic::Request::new(ApplyRequest {
        resources: base_config(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-portico-author", "someone-else".parse().unwrap());
    admin.apply(request).await.unwrap();
    let history = admin
        .history(HistoryRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.entries[0].author, "anonymous");
}

#[test]
fn tokens_are_shown_once_stored_hashed_listed_revoked_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let cp = ControlPlane::start_with(
        CpOptions::new(
            portico_integration_tests::cp::StoreSpec::Embedded(store.clone()),
            "cp-1",
        )
        .auth_on(),
    );
    let ci = cp.create_token("viewer", "ci");
    let listed = cp.portico(&["-o", "json", "token", "list"]).ok();
    assert!(!listed.stdout.contains(&ci), "{listed:#?}");
    let names: Vec<String> = listed.json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["bootstrap", "ci"]);
    // Only the hash is in the store.
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(&store).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            stored.extend(std::fs::read(&path).unwrap());
        }
    }
    let find = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    assert!(!find(ci.as_bytes()), "the token itself is stored");
    let hash = portico_control_plane::auth::hash(&ci);
    assert!(find(hash.as_bytes()), "its hash is not stored");

    cp.portico_as(Some(&ci), &["get", "all"]).ok();
    cp.portico(&["token", "revoke", "ci"]).ok();
    refused(
        cp.portico_as(Some(&ci), &["get", "all"]),
        "unknown or revoked token",
    );
    cp.portico(&["token", "revoke", "ci"]).expect(1);
    // A name is unique.
    cp.create_token("viewer", "again");
    let dup = cp.portico(&["token", "create", "--role", "viewer", "--name", "again"]);
    assert_eq!(dup.code, 1, "{dup:#?}");
    assert!(dup.stderr.contains("exists"), "{dup:#?}");

    let brief = cp
        .portico(&[
            "-o", "json", "token", "create", "--role", "viewer", "--name", "brief", "--ttl", "1s",
        ])
        .ok()
        .json();
    assert_ne!(brief["expires"], "", "{brief}");
    let brief = brief["token"].as_str().unwrap().to_string();
    eventually_blocking("the token to expire", Duration::from_secs(10), || {
        let run = cp.portico_as(Some(&brief), &["get", "all"]);
        (run.code == EXIT_AUTH && run.stderr.contains("expired")).then_some(())
    });
}

#[test]
fn the_bootstrap_token_file_is_written_once_then_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets").join("admin-token");
    let mut cp = ControlPlane::embedded_with(|o| CpOptions {
        bootstrap_token_file: Some(file.clone()),
        ..o.auth_on()
    });
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let first = cp.admin_token.clone().unwrap();
    assert!(first.starts_with("pt_"), "{first}");
    cp.portico(&["token", "list"]).ok();

    // A restart reads the file: the same token.
    cp.restart();
    assert_eq!(cp.admin_token.as_deref(), Some(first.as_str()));
    cp.portico(&["get", "all"]).ok();

    // Once revoked, the bootstrap token stays revoked, even though the file is still there.
    let other = cp.create_token("admin", "ops");
    cp.portico_as(Some(&other), &["token", "revoke", "bootstrap"])
        .ok();
    cp.restart();
    refused(
        cp.portico_as(Some(&first), &["get", "all"]),
        "unknown or revoked token",
    );
    cp.portico_as(Some(&other), &["get", "all"]).ok();
}

#[test]
fn a_bootstrap_token_file_given_beforehand_is_the_first_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin-token");
    std::fs::write(&file, "pt_chosen-by-the-operator\n").unwrap();
    let cp = ControlPlane::embedded_with(|o| CpOptions {
        bootstrap_token_file: Some(file.clone()),
        ..o.auth_on()
    });
    assert_eq!(cp.admin_token.as_deref(), Some("pt_chosen-by-the-operator"));
    cp.portico(&["token", "list"]).ok();
    // Nothing was written over it.
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "pt_chosen-by-the-operator\n"
    );
}
