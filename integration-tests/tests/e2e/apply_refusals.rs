//! Changes the control plane refuses at apply (and at dry run), through `portico` against a
//! real control plane: each refusal names the resource and the field path, and nothing is
//! written.

use portico_api::pb;
use portico_integration_tests::cli::{Files, small_config};
use portico_integration_tests::cp::ControlPlane;
use portico_test_support::net::free_port;
use portico_test_support::net::localhost;
use portico_test_support::resources::{
    Edit, cluster, listener, prefix, regex, route, route_table, to, vhost,
};

/// A header rule setting `name`.
fn set(name: &str, value: &str) -> pb::HeaderTransform {
    pb::HeaderTransform {
        set: vec![pb::HeaderValue {
            name: name.into(),
            value: value.into(),
        }],
        ..Default::default()
    }
}

#[test]
fn route_header_rules_cannot_write_framing_or_hop_by_hop_headers() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    let mut rules = route("api", prefix("/"), to("app"));
    rules.request_headers = Some(set("Content-Length", "0"));
    rules.response_headers = Some(pb::HeaderTransform {
        remove: vec!["transfer-encoding".into()],
        add: vec![pb::HeaderValue {
            name: "connection".into(),
            value: "close".into(),
        }],
        ..Default::default()
    });
    let mut host = route("host", prefix("/h"), to("app"));
    host.request_headers = Some(set("host", "internal.example"));
    let config = vec![
        listener("web", free_port(), "main"),
        route_table("main", vec![vhost("", &["*"], vec![host, rules])]),
        cluster("app", &[localhost(free_port())]),
    ];
    let path = files.write_yaml("framing.yaml", &config);
    for dry_run in [true, false] {
        let mut args = vec!["apply", "-f", &path];
        if dry_run {
            args.push("--dry-run");
        }
        let refused = cp.portico(&args).expect(4);
        for line in [
            "RouteTable/main: virtual_hosts[0].routes[0].request_headers.set[0].name: \"host\" is a framing or hop-by-hop header",
            "RouteTable/main: virtual_hosts[0].routes[1].request_headers.set[0].name: \"Content-Length\" is a framing or hop-by-hop header",
            "virtual_hosts[0].routes[1].response_headers.add[0].name: \"connection\" is a framing",
            "virtual_hosts[0].routes[1].response_headers.remove[0]: \"transfer-encoding\" is a framing",
        ] {
            assert!(refused.stderr.contains(line), "{line}\n{refused:#?}");
        }
    }
    let history = cp.portico(&["-o", "json", "history"]).ok().json();
    assert_eq!(history["entries"], serde_json::json!([]), "nothing written");

    // Other headers are fine.
    let mut config = small_config(free_port(), "hi", free_port());
    config[1] = config[1].clone().with(|t: &mut pb::RouteTable| {
        t.virtual_hosts[0].routes[0].request_headers = Some(set("x-tenant", "blue"));
    });
    cp.portico(&["apply", "-f", &files.write_yaml("ok.yaml", &config)])
        .ok();
}

/// A YAML file of a policy `tokens` whose JSON Web Key names algorithm `alg`.
fn jwt_policy(files: &Files, alg: Option<&str>) -> String {
    let alg = alg
        .map(|a| format!(r#""alg": "{a}", "#))
        .unwrap_or_default();
    files.write(
        "tokens.yaml",
        &format!(
            "kind: Policy\nname: tokens\nspec:\n  jwt_auth:\n    issuer: https://login.example.com\n    jwks: '{{\"keys\": [{{\"kty\": \"OKP\", \"crv\": \"Ed25519\", {alg}\"x\": \"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}}]}}'\n"
        ),
    )
}

#[test]
fn config_every_agent_would_refuse_is_refused_at_apply_and_dry_run() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    // Validation checks a key's algorithm against the algorithms agents know; building the
    // policy as agents do finds that an Ed25519 key cannot verify ES256.
    let refused_key = jwt_policy(&files, Some("ES256"));
    for dry_run in [true, false] {
        let mut args = vec!["apply", "-f", &refused_key];
        if dry_run {
            args.push("--dry-run");
        }
        let refused = cp.portico(&args).expect(4);
        assert!(
            refused.stderr.contains(
                "Policy/tokens: jwt_auth.jwks.keys[0]: algorithm ES256 does not fit the key type"
            ),
            "{refused:#?}"
        );
    }
    let history = cp.portico(&["-o", "json", "history"]).ok().json();
    assert_eq!(history["entries"], serde_json::json!([]), "nothing written");
    cp.portico(&["apply", "-f", &jwt_policy(&files, Some("EdDSA"))])
        .ok();

    // Regex routes on one host, each within the limit of one regex: agents match them as one
    // set, which outgrows its limit (thousands of simple ones do too, but take a debug build
    // minutes to compile).
    let routes = (0..12)
        .map(|i| route("", regex(&format!(r"/{i}\w{{20}}")), to("app")))
        .collect();
    let config = vec![
        listener("regexes", free_port(), "regexes"),
        route_table("regexes", vec![vhost("", &["*"], routes)]),
        cluster("app", &[localhost(free_port())]),
    ];
    let path = files.write_yaml("regexes.yaml", &config);
    let refused = cp.portico(&["apply", "--dry-run", "-f", &path]).expect(4);
    assert!(
        refused.stderr.contains(
            "RouteTable/regexes: virtual_hosts[0].routes: the regex paths of this virtual host are too large together"
        ),
        "{}",
        refused.stderr
    );
}
