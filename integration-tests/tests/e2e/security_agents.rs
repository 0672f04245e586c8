//! Agent identity through the real binaries: join-token bootstrap, mutual TLS, renewal with a
//! short certificate lifetime, refusals (no certificate, another agent's node id, outside the
//! token's bounds, revoked or used-up tokens), and revocation closing an agent's stream.

use std::path::Path;
use std::time::Duration;

use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::cli::{Files, small_config};
use portico_integration_tests::cp::{ControlPlane, CpOptions};
use portico_integration_tests::scripted_agent::{ScriptedAgent, node};
use portico_test_support::net::free_port;
use portico_test_support::wait::eventually;
use tonic::Code;

/// How long an agent may take to show a refusal in its log.
const LOG_TIMEOUT: Duration = Duration::from_secs(20);

/// `portico token create --join ARGS -o json` on `cp`; the token.
fn join_token(cp: &ControlPlane, args: &[&str]) -> String {
    let mut all = vec!["-o", "json", "token", "create", "--join"];
    all.extend_from_slice(args);
    let created = cp.portico(&all).ok().json();
    assert_eq!(created["role"], "join", "{created}");
    created["token"].as_str().unwrap().to_string()
}

/// Applies a small config (a listener on a free port) to `cp`.
fn apply_config(cp: &ControlPlane) {
    let files = Files::new();
    let config = files.write_yaml("web.yaml", &small_config(free_port(), "hi", free_port()));
    cp.portico(&["apply", "-f", &config]).ok();
}

/// An agent `id` in region `eu` joining `cp` with `token`, keeping its certificate in `cache`.
fn joining(cp: &ControlPlane, id: &str, token: &str, cache: &Path) -> AgentOptions {
    AgentOptions::new(id, &[cp.endpoint()])
        .join(token, &cp.fingerprint)
        .cache_dir(cache)
}

/// The certificate and key an agent keeps in `cache`.
fn kept_identity(cache: &Path) -> (String, String) {
    let text = std::fs::read_to_string(cache.join("identity.pem")).unwrap();
    let at = text.find("-----BEGIN PRIVATE KEY-----").unwrap();
    (text[..at].to_string(), text[at..].to_string())
}

/// The ids in `portico agents -o json`.
fn listed(cp: &ControlPlane) -> Vec<String> {
    let agents = cp.portico(&["-o", "json", "agents"]).ok().json();
    agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the agent's log contains `needle`.
async fn logged(agent: &Agent, needle: &str) {
    eventually(
        &format!("the agent to log {needle:?}"),
        LOG_TIMEOUT,
        || async { agent.log().contains(needle).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn an_agent_joins_with_a_token_and_syncs_over_mutual_tls() {
    use std::os::unix::fs::PermissionsExt;
    let cp = ControlPlane::secured();
    apply_config(&cp);
    let token = join_token(
        &cp,
        &["--region", "eu", "--label", "tier=edge", "--uses", "5"],
    );
    let cache = tempfile::tempdir().unwrap();
    let options = joining(&cp, "edge-1", &token, cache.path()).label("tier", "edge");
    let agent = Agent::start_ready(&options).await;
    agent.wait_for_version(1).await;
    let record = cp
        .wait_for_record("edge-1", "edge-1 in sync", |r| {
            r.connected && r.applied_version >= 1
        })
        .await;
    assert_eq!(record.node.unwrap().region, "eu");
    let file = cache.path().join("identity.pem");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let tokens = cp.portico(&["-o", "json", "token", "list"]).ok().json();
    let used = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "join")
        .cloned()
        .unwrap();
    assert_eq!(used["uses"], 1, "{tokens}");
    assert_eq!(used["max_uses"], 5, "{tokens}");
    assert_eq!(used["region"], "eu", "{tokens}");

    // A restarted agent keeps its certificate: it does not join again.
    drop(agent);
    let agent = Agent::start_ready(&options).await;
    agent.wait_for_version(1).await;
    logged(&agent, "using the cached agent certificate").await;
    let tokens = cp.portico(&["-o", "json", "token", "list"]).ok().json();
    assert!(
        tokens["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["role"] == "join" && t["uses"] == 1),
        "{tokens}"
    );
}

#[tokio::test]
async fn certificates_are_renewed_before_they_expire_and_the_agent_stays_in_sync() {
    let cp = ControlPlane::embedded_with(|o| CpOptions {
        agent_cert_ttl: Some(Duration::from_secs(3)),
        ..o.auth_on()
    });
    apply_config(&cp);
    let token = join_token(&cp, &[]);
    let cache = tempfile::tempdir().unwrap();
    let agent = Agent::start_ready(&joining(&cp, "edge-1", &token, cache.path())).await;
    agent.wait_for_version(1).await;
    // Three certificates, one after the other, each from a renewal.
    let mut seen = vec![kept_identity(cache.path()).0];
    while seen.len() < 3 {
        let next = eventually("a renewed certificate", Duration::from_secs(20), || async {
            let (cert, _) = kept_identity(cache.path());
            (!seen.contains(&cert)).then_some(cert)
        })
        .await;
        seen.push(next);
    }
    logged(&agent, "renewed the agent certificate").await;
    // Still connected and applying changes after its first certificates expired.
    apply_config(&cp);
    agent.wait_for_version(2).await;
    cp.wait_for_record("edge-1", "edge-1 at revision 2", |r| {
        r.connected && r.applied_version >= 2
    })
    .await;
}

#[tokio::test]
async fn an_agent_without_a_valid_certificate_gets_nothing_and_is_never_listed() {
    let cp = ControlPlane::secured();
    apply_config(&cp);
    // A raw stream without a client certificate is refused before it gets anything.
    let channel = cp.channel(None).await.unwrap();
    let refused = ScriptedAgent::connect_on(channel, node("intruder", "eu", "eu-1"), 0).await;
    let status = refused.err().expect("an unauthenticated stream is refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("no client certificate"),
        "{status:?}"
    );

    // The agent binary without a join token: refused, with what to do.
    let agent = Agent::start(&AgentOptions {
        ca_fingerprint: Some(cp.fingerprint.clone()),
        ..AgentOptions::new("no-token", &[cp.endpoint()])
    });
    logged(&agent, "--join-token").await;
    // Outside the token's region: the join is refused.
    let token = join_token(&cp, &["--region", "us"]);
    let cache = tempfile::tempdir().unwrap();
    let outside = Agent::start(&joining(&cp, "wrong-region", &token, cache.path()));
    logged(&outside, "may claim region").await;

    assert!(!agent.is_ready().await);
    assert!(!outside.is_ready().await);
    assert_eq!(listed(&cp), Vec::<String>::new());
}

#[tokio::test]
async fn an_agent_cannot_pose_as_another() {
    let cp = ControlPlane::secured();
    apply_config(&cp);
    let token = join_token(&cp, &[]);
    let (cache_1, cache_2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let _edge_1 = Agent::start_ready(&joining(&cp, "edge-1", &token, cache_1.path())).await;
    // Not waited for as ready: it runs on this host too and cannot bind the listener edge-1
    // holds, so it never applies the config (it NACKs it); connected is what matters here.
    let _edge_2 = Agent::start(&joining(&cp, "edge-2", &token, cache_2.path()));
    cp.wait_for_record("edge-1", "edge-1 in sync", |r| {
        r.connected && r.applied_version >= 1
    })
    .await;
    cp.wait_for_record("edge-2", "edge-2 connected", |r| r.connected)
        .await;

    // edge-2's own certificate, claiming to be edge-1, in another region.
    let channel = cp
        .channel(Some(kept_identity(cache_2.path())))
        .await
        .unwrap();
    let forged = ScriptedAgent::connect_on(channel, node("edge-1", "us", "us-1"), 0).await;
    let status = forged.err().expect("a Hello for another node is refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("the certificate is node \"edge-2\"'s, but Hello says node \"edge-1\""),
        "{status:?}"
    );
    // edge-1 is untouched: same region, still connected.
    let record = cp.agent_record("edge-1").await.unwrap();
    assert!(record.connected);
    assert_eq!(record.node.unwrap().region, "eu");

    // A join token does not let anyone join as a running agent either.
    let cache_3 = tempfile::tempdir().unwrap();
    let twin = Agent::start(&joining(&cp, "edge-1", &token, cache_3.path()));
    logged(&twin, "holds a valid certificate already").await;
}

#[tokio::test]
async fn a_revoked_agent_is_disconnected_and_only_a_newer_token_admits_it() {
    let cp = ControlPlane::secured();
    apply_config(&cp);
    let token = join_token(&cp, &[]);
    let cache = tempfile::tempdir().unwrap();
    let agent = Agent::start_ready(&joining(&cp, "edge-1", &token, cache.path())).await;
    cp.wait_for_record("edge-1", "edge-1 in sync", |r| r.connected)
        .await;

    let revoked = cp.portico(&["agents", "revoke", "edge-1"]).ok();
    assert!(revoked.stdout.contains("edge-1 revoked"), "{revoked:#?}");
    cp.wait_for_record("edge-1", "edge-1 disconnected", |r| !r.connected)
        .await;
    logged(&agent, "revoked").await;
    drop(agent);

    // A fresh start with the old token: refused.
    let fresh = tempfile::tempdir().unwrap();
    let again = Agent::start(&joining(&cp, "edge-1", &token, fresh.path()));
    logged(&again, "was revoked after join token").await;
    drop(again);
    // A token made after the revocation admits it again.
    let newer = join_token(&cp, &[]);
    let fresh = tempfile::tempdir().unwrap();
    let agent = Agent::start_ready(&joining(&cp, "edge-1", &newer, fresh.path())).await;
    agent.wait_for_version(1).await;
    cp.wait_for_record("edge-1", "edge-1 back", |r| r.connected)
        .await;

    let unknown = cp.portico(&["agents", "revoke", "nobody"]);
    assert_eq!(unknown.code, 1, "{unknown:#?}");
}

#[tokio::test]
async fn a_revoked_or_used_up_join_token_stops_bootstraps() {
    let cp = ControlPlane::secured();
    apply_config(&cp);
    let revoked = cp
        .portico(&[
            "-o",
            "json",
            "token",
            "create",
            "--join",
            "--name",
            "old-fleet",
        ])
        .ok()
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    cp.portico(&["token", "revoke", "old-fleet"]).ok();
    let cache = tempfile::tempdir().unwrap();
    let agent = Agent::start(&joining(&cp, "edge-1", &revoked, cache.path()));
    logged(&agent, "unknown or revoked token").await;

    let once = join_token(&cp, &["--uses", "1"]);
    let (cache_a, cache_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let _first = Agent::start_ready(&joining(&cp, "edge-2", &once, cache_a.path())).await;
    let second = Agent::start(&joining(&cp, "edge-3", &once, cache_b.path()));
    logged(&second, "has been used as often as it allows").await;

    cp.wait_for_record("edge-2", "edge-2 connected", |r| r.connected)
        .await;
    assert_eq!(listed(&cp), ["edge-2"]);
}
