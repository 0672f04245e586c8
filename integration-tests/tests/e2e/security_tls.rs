//! Control-plane TLS through the real binaries: plaintext refused beyond loopback, TLS with the
//! control plane's own CA (pinned by its fingerprint, the same on every replica and after a
//! restart) and with certificates given at start, for the CLI and for agents.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::cli::{Files, small_config};
use portico_integration_tests::cp::{ControlPlane, CpOptions, StoreSpec, command_with};
use portico_integration_tests::etcd::Etcd;
use portico_test_support::net::{free_addr, free_port};
use portico_test_support::process::Process;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// How long a refused start may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts `portico-cp` with `options` on `listen` and returns its exit code and stderr.
fn start_and_exit(options: &CpOptions, listen: SocketAddr, extra: &[&str]) -> (i32, String) {
    let mut cmd = command_with(options, listen, free_addr());
    cmd.args(extra);
    let mut process = Process::spawn("portico-cp", cmd);
    let status = process.wait_timeout(EXIT_TIMEOUT);
    (status.code().unwrap_or(-1), process.stderr())
}

fn store() -> (tempfile::TempDir, StoreSpec) {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreSpec::Embedded(dir.path().join("store"));
    (dir, store)
}

#[test]
fn plaintext_on_a_non_loopback_address_is_refused_at_start() {
    let (_dir, store) = store();
    let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let options = CpOptions {
        auth: Some("off".into()),
        ..CpOptions::new(store.clone(), "cp-1")
    };
    let (code, stderr) = start_and_exit(&options, any, &[]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("0.0.0.0"), "{stderr}");
    assert!(stderr.contains("--tls-cert"), "{stderr}");
    assert!(stderr.contains("--allow-insecure-remote"), "{stderr}");
}

#[test]
fn on_every_address_the_defaults_serve_tls_of_the_own_ca_with_authentication() {
    let cp = ControlPlane::embedded_with(|o| CpOptions {
        listen_any: true,
        ..o
    });
    assert!(cp.endpoint().starts_with("https://"), "{}", cp.endpoint());
    assert!(cp.admin_token.is_some(), "no bootstrap token");
    // Plaintext gets no answer from a TLS port.
    let plain =
        portico_integration_tests::cli::portico(&format!("http://{}", cp.grpc), &["get", "all"]);
    assert_ne!(plain.code, 0, "{plain:#?}");
    // Over TLS without a token: unauthenticated.
    let run = cp.portico_as(None, &["get", "all"]);
    assert_eq!(run.code, 6, "{run:#?}");
    cp.portico(&["get", "all"]).ok();
}

#[test]
fn plaintext_beyond_loopback_starts_with_consent_and_auth_off() {
    let (_dir, store) = store();
    let listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, free_port()));
    let metrics = free_addr();
    let mut cmd = command_with(&CpOptions::new(store, "cp-1"), listen, metrics);
    cmd.args(["--allow-insecure-remote", "--auth", "off"]);
    let mut process = Process::spawn("portico-cp", cmd);
    portico_test_support::wait::eventually_blocking(
        "the control plane to be ready",
        EXIT_TIMEOUT,
        || {
            assert!(process.try_wait().is_none(), "exited: {}", process.output());
            matches!(
                portico_test_support::http::fetch_blocking(metrics, "/readyz"),
                Some((200, _))
            )
            .then_some(())
        },
    );
    let server = format!("http://127.0.0.1:{}", listen.port());
    let run = portico_integration_tests::cli::portico(&server, &["get", "all"]);
    assert_eq!(run.code, 0, "{run:#?}");
}

#[test]
fn the_generated_ca_serves_tls_and_its_fingerprint_is_shown_again_and_kept() {
    let mut cp = ControlPlane::secured();
    assert!(cp.endpoint().starts_with("https://"), "{}", cp.endpoint());
    assert_eq!(cp.fingerprint.len(), 64, "{}", cp.fingerprint);

    let shown = cp.portico(&["-o", "json", "ca", "show"]).ok().json();
    assert_eq!(shown["fingerprint"], cp.fingerprint.as_str());
    let pem = shown["certificate"].as_str().unwrap().to_string();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let table = cp.portico(&["ca", "show"]).ok();
    assert!(table.stdout.contains(&cp.fingerprint), "{table:#?}");

    // The CA file works as well as the fingerprint.
    let files = Files::new();
    let ca_file = files.write("ca.pem", &pem);
    let token = cp.admin_token.clone().unwrap();
    let run = portico_integration_tests::cli::portico(
        &cp.endpoint(),
        &["--ca-file", &ca_file, "--token", &token, "get", "all"],
    );
    assert_eq!(run.code, 0, "{run:#?}");

    // Without saying what to trust: a usage error naming both options.
    let run =
        portico_integration_tests::cli::portico(&cp.endpoint(), &["--token", &token, "get", "all"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("--ca-fingerprint") && run.stderr.contains("--ca-file"),
        "{run:#?}"
    );
    // Another fingerprint: the handshake fails, nothing is sent.
    let wrong = "00".repeat(32);
    let run = portico_integration_tests::cli::portico(
        &cp.endpoint(),
        &["--ca-fingerprint", &wrong, "--token", &token, "get", "all"],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("fingerprint"), "{run:#?}");
    // Plaintext to the TLS port gets nowhere.
    let plain = format!("http://{}", cp.grpc);
    let run = portico_integration_tests::cli::portico(&plain, &["--token", &token, "get", "all"]);
    assert_eq!(run.code, 1, "{run:#?}");

    // The CA lives in the store: a restart serves the same one.
    let before = cp.fingerprint.clone();
    cp.restart();
    assert_eq!(cp.fingerprint, before);
    cp.portico(&["get", "all"]).ok();
}

#[test]
fn every_replica_serves_the_same_ca() {
    let etcd = Etcd::start();
    let store = StoreSpec::Etcd {
        endpoint: etcd.endpoint(),
        prefix: "/tls-test".into(),
    };
    let a = ControlPlane::start_with(CpOptions::new(store.clone(), "cp-a").auth_on());
    let b = ControlPlane::start_with(CpOptions::new(store, "cp-b").auth_on());
    assert_eq!(a.fingerprint, b.fingerprint);
    // b trusts a's fingerprint and takes a's bootstrap token (one installation).
    let token = a.admin_token.clone().unwrap();
    b.portico_as(Some(&token), &["get", "all"]).ok();
}

/// A CA and a serving certificate for 127.0.0.1 and localhost, generated now, written to
/// `files`: (CA file, certificate chain file, key file).
fn given_certificates(files: &Files) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let ca_file = files.write("given-ca.pem", &ca.pem());
    let cert_file = files.write("cp.pem", &format!("{}{}", cert.pem(), ca.pem()));
    let key_file = files.write("cp.key", &key.serialize_pem());
    (ca_file.into(), cert_file.into(), key_file.into())
}

#[tokio::test]
async fn given_certificates_serve_the_cli_and_agents() {
    let files = Files::new();
    let (ca_file, cert, key) = given_certificates(&files);
    let cp = ControlPlane::embedded_with(|o| CpOptions {
        tls: Some((cert, key)),
        ca_file: Some(ca_file.clone()),
        ..o
    });
    assert!(cp.endpoint().starts_with("https://"));
    // Loopback: authentication stays off (auto), and the CLI verifies with the given CA.
    let port = free_port();
    let config = files.write_yaml("web.yaml", &small_config(port, "over tls", free_port()));
    cp.portico(&["apply", "-f", &config]).ok();
    // The generated CA is not what is served: pinning it fails.
    let run = portico_integration_tests::cli::portico(
        &cp.endpoint(),
        &["--ca-fingerprint", &cp.fingerprint, "get", "all"],
    );
    assert_eq!(run.code, 1, "{run:#?}");

    let mut options = AgentOptions::new("tls-agent", &[cp.endpoint()]);
    options.ca_file = Some(ca_file);
    let agent = Agent::start_ready(&options).await;
    agent.wait_for_version(1).await;
    assert_eq!(agent.resource_names("listener").await, ["web"]);
}

#[test]
fn unusable_certificate_files_are_named_at_start() {
    let (_dir, store) = store();
    let files = Files::new();
    let missing = files.path().join("missing.pem");
    let junk = files.write("junk.pem", "not a certificate");
    let options = CpOptions {
        tls: Some((missing.clone(), junk.clone().into())),
        ..CpOptions::new(store.clone(), "cp-1")
    };
    let (code, stderr) = start_and_exit(&options, free_addr(), &[]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("--tls-cert") && stderr.contains("missing.pem"),
        "{stderr}"
    );
    let options = CpOptions {
        tls: Some((junk.clone().into(), junk.into())),
        ..CpOptions::new(store, "cp-1")
    };
    let (code, stderr) = start_and_exit(&options, free_addr(), &[]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("no PEM certificate"), "{stderr}");
}

#[test]
fn authentication_is_on_by_default_beyond_loopback_and_off_on_it() {
    // Loopback, defaults: plaintext, no token needed (the quick start is unchanged).
    let open = ControlPlane::embedded();
    open.portico_as(None, &["get", "all"]).ok();
    // Every address, with certificates: authentication is on without being asked for.
    let files = Files::new();
    let (ca_file, cert, key) = given_certificates(&files);
    let cp = ControlPlane::embedded_with(|o| CpOptions {
        tls: Some((cert, key)),
        ca_file: Some(ca_file),
        bootstrap_token_file: Some(files.path().join("admin-token")),
        listen_any: true,
        ..o
    });
    let run = cp.portico_as(None, &["get", "all"]);
    assert_eq!(run.code, 6, "{run:#?}");
    assert!(cp.admin_token.is_some());
    cp.portico(&["get", "all"]).ok();
}
