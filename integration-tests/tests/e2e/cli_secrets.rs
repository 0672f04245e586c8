//! Secrets shown redacted and applied back: `portico get secret NAME -o yaml` shows the
//! placeholder `<redacted>` in place of the material; applying that keeps the stored value
//! (and `diff` says it is unchanged, and why), and a placeholder with nothing stored to keep
//! is refused.

use portico_api::pb::{resource::Spec, secret};
use portico_integration_tests::cli::Files;
use portico_integration_tests::cp::ControlPlane;
use portico_integration_tests::scripted_agent::{ScriptedAgent, node};
use portico_test_support::net::{free_port, localhost};
use portico_test_support::resources::{
    cluster, https_listener, prefix, resource, route, route_table, sni, tls_secret, to, vhost,
};

/// The private key of Secret `name` in the scripted agent's config.
fn private_key(agent: &ScriptedAgent, name: &str) -> String {
    let secret = agent
        .config
        .resources
        .get(portico_api::Kind::Secret, name)
        .unwrap_or_else(|| panic!("the agent has no secret {name}"));
    match &secret.spec {
        Some(Spec::Secret(s)) => match &s.secret {
            Some(secret::Secret::Tls(tls)) => tls.private_key.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redacted_secret_applied_back_keeps_its_material() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    let cert = tls_secret("cert", "shop.example.com");
    let jwks = resource(
        "jwks",
        portico_api::pb::Secret {
            secret: Some(secret::Secret::Opaque(r#"{"keys": []}"#.into())),
        },
    );
    let config = vec![
        https_listener("web", free_port(), "main", vec![sni("cert", &[])]),
        route_table(
            "main",
            vec![vhost("", &["*"], vec![route("", prefix("/"), to("app"))])],
        ),
        cluster("app", &[localhost(9000)]),
        cert.clone(),
        jwks,
    ];
    let path = files.write_yaml("config.yaml", &config);
    cp.portico(&["apply", "-f", &path]).ok();
    let mut agent = ScriptedAgent::synced(&cp.endpoint(), node("s-1", "eu", "eu-1")).await;
    let Some(Spec::Secret(portico_api::pb::Secret {
        secret: Some(secret::Secret::Tls(stored)),
    })) = &cert.spec
    else {
        unreachable!()
    };
    assert_eq!(private_key(&agent, "cert"), stored.private_key);

    for name in ["cert", "jwks"] {
        let shown = cp.portico(&["-o", "yaml", "get", "secret", name]).ok();
        assert!(shown.stdout.contains("<redacted>"), "{shown:#?}");
        let back = files.write(&format!("{name}.yaml"), &shown.stdout);
        let diff = cp.portico(&["diff", "-f", &back]).ok();
        assert_eq!(diff.stdout, "", "{diff:#?}");
        assert!(
            diff.stderr.contains(&format!(
                "Secret/{name}: unchanged: its {} is the <redacted> placeholder, which keeps the stored value",
                if name == "cert" { "private key" } else { "opaque value" }
            )),
            "{diff:#?}"
        );
        let applied = cp
            .portico(&["-o", "json", "apply", "-f", &back])
            .ok()
            .json();
        assert_eq!(applied["noop"], true, "{applied}");
        assert_eq!(applied["changes"][0]["change"], "unchanged", "{applied}");
    }

    // Edited around the placeholder: the edit applies, the material stays.
    let shown = cp.portico(&["-o", "yaml", "get", "secret", "cert"]).ok();
    let edited = shown
        .stdout
        .replacen("name: cert", "name: cert\nlabels:\n  owner: web", 1);
    let back = files.write("edited.yaml", &edited);
    let applied = cp
        .portico(&["-o", "json", "apply", "-f", &back])
        .ok()
        .json();
    assert_eq!(applied["changes"][0]["change"], "updated", "{applied}");
    let update = agent.expect_update().await;
    agent.ack(&update);
    assert_eq!(private_key(&agent, "cert"), stored.private_key);
    assert_ne!(private_key(&agent, "cert"), "<redacted>");

    // With nothing stored to keep, the placeholder is refused, by diff and apply alike.
    let copied = shown.stdout.replacen("name: cert", "name: copy", 1);
    let back = files.write("copy.yaml", &copied);
    for command in ["diff", "apply"] {
        let refused = cp.portico(&[command, "-f", &back]).expect(4);
        assert!(
            refused.stderr.contains(
                "Secret/copy: tls.private_key: is the placeholder \"<redacted>\" that `get` shows"
            ),
            "{command}: {refused:#?}"
        );
    }
}
