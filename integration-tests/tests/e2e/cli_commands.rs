//! The `portico` binary against a real control plane: apply, diff, get, delete, prune,
//! validation errors, conflicts, history and rollback, and the documented exit codes.

use portico_api::Resource;
use portico_integration_tests::cli::{Files, main_table, portico, small_config, web_listener};
use portico_integration_tests::cp::{ControlPlane, StoreSpec};
use portico_integration_tests::etcd::Etcd;
use portico_test_support::examples::example_files;
use portico_test_support::net::{free_port, localhost};
use portico_test_support::resources::{cluster, tls_secret, yaml};

/// Replica `replica` on the etcd at `endpoint`, under the key prefix `/cli-test`.
fn on_etcd(endpoint: &str, replica: &str) -> ControlPlane {
    let store = StoreSpec::Etcd {
        endpoint: endpoint.to_string(),
        prefix: "/cli-test".to_string(),
    };
    ControlPlane::start(store, replica)
}

/// A cluster nothing refers to.
fn spare() -> Resource {
    cluster("spare", &[localhost(9)])
}

#[test]
fn apply_then_get_yaml_reapplied_is_a_noop() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    let mut config = small_config(free_port(), "hi", free_port());
    config.push(tls_secret("token", "example.com"));
    let config = files.write_yaml("web.yaml", &config);

    let applied = cp.portico(&["apply", "-f", &config, "-m", "first"]).ok();
    for line in [
        "created     Listener/web",
        "created     RouteTable/main",
        "created     Cluster/app",
    ] {
        assert!(applied.stdout.contains(line), "{applied:#?}");
    }
    let json = cp
        .portico(&["-o", "json", "apply", "-f", &config])
        .ok()
        .json();
    assert_eq!(json["noop"], true, "{json}");
    let revision = json["revision"].as_i64().unwrap();
    assert!(revision > 0);

    let table = cp.portico(&["get", "listeners"]).ok();
    assert!(table.stdout.starts_with("NAME"), "{table:#?}");
    assert!(
        table.stdout.contains("web") && table.stdout.contains("main"),
        "{table:#?}"
    );

    let yaml = cp.portico(&["-o", "yaml", "get", "all"]).ok();
    assert!(!yaml.stdout.contains("kind: Secret"), "{yaml:#?}");
    assert!(yaml.stderr.contains("1 secret(s) left out"), "{yaml:#?}");
    let dumped = files.write("dump.yaml", &yaml.stdout);
    let again = cp
        .portico(&["-o", "json", "apply", "-f", &dumped])
        .ok()
        .json();
    assert_eq!(again["noop"], true, "{again}");
    assert_eq!(again["revision"], revision);
    let changes = again["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 3, "{again}");
    assert!(
        changes.iter().all(|c| c["change"] == "unchanged"),
        "{again}"
    );

    let one = cp
        .portico(&["-o", "json", "get", "cluster", "app"])
        .ok()
        .json();
    assert_eq!(one[0]["kind"], "Cluster");
    assert_eq!(one[0]["name"], "app");
}

#[test]
fn diff_shows_what_apply_would_change_and_nothing_after() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    let (port, upstream) = (free_port(), free_port());
    let config = files.write_yaml("web.yaml", &small_config(port, "old body", upstream));
    cp.portico(&["apply", "-f", &config]).ok();

    let changed = files.write_yaml("web.yaml", &small_config(port, "new body", upstream));
    let diff = cp.portico(&["diff", "-f", &changed]).ok();
    assert!(
        diff.stdout
            .contains("--- RouteTable/main (stored, revision"),
        "{diff:#?}"
    );
    assert!(
        diff.stdout.contains("-") && diff.stdout.contains("old body"),
        "{diff:#?}"
    );
    assert!(
        diff.stdout.contains("+") && diff.stdout.contains("new body"),
        "{diff:#?}"
    );
    assert!(
        !diff.stdout.contains("Listener/web"),
        "unchanged resources are not shown: {diff:#?}"
    );
    assert!(
        !diff.stdout.contains('\x1b'),
        "no colors when stdout is not a terminal: {diff:#?}"
    );

    cp.portico(&["apply", "-f", &changed]).ok();
    let none = cp.portico(&["diff", "-f", &changed]).ok();
    assert_eq!(none.stdout, "", "{none:#?}");
    assert!(none.stderr.contains("no changes"), "{none:#?}");
}

#[test]
fn prune_deletes_stored_resources_missing_from_the_files() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    let (port, upstream) = (free_port(), free_port());
    let base = small_config(port, "hi", upstream);
    let mut all = base.clone();
    all.push(spare());
    cp.portico(&["apply", "-f", &files.write_yaml("all.yaml", &all)])
        .ok();
    let without = files.write_yaml("all.yaml", &base);

    let diff = cp.portico(&["diff", "--prune", "-f", &without]).ok();
    assert!(
        diff.stdout.contains("--- Cluster/spare (stored"),
        "{diff:#?}"
    );
    assert!(diff.stdout.contains("+++ /dev/null"), "{diff:#?}");

    let dry = cp
        .portico(&["apply", "--prune", "--dry-run", "-f", &without])
        .ok();
    assert!(dry.stdout.contains("deleted     Cluster/spare"), "{dry:#?}");
    assert!(dry.stdout.contains("dry run"), "{dry:#?}");
    cp.portico(&["get", "cluster", "spare"]).ok();

    let pruned = cp.portico(&["apply", "--prune", "-f", &without]).ok();
    assert!(
        pruned.stdout.contains("deleted     Cluster/spare"),
        "{pruned:#?}"
    );
    let gone = cp.portico(&["get", "cluster", "spare"]).expect(1);
    assert!(gone.stderr.contains("spare"), "{gone:#?}");
    let clusters = cp.portico(&["-o", "json", "get", "clusters"]).ok().json();
    assert_eq!(clusters.as_array().unwrap().len(), 1, "{clusters}");
}

#[test]
fn file_errors_name_file_document_and_field_and_exit_4() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    let bad = files.write(
        "bad.yaml",
        "kind: Cluster\nname: ok\nspec: {}\n---\nkind: Listener\nname: web\nspec: {port: 80, prot: HTTP}\n",
    );
    let run = cp.portico(&["apply", "-f", &bad]).expect(4);
    assert!(
        run.stderr.contains(&format!(
            "{bad}: document 1 (line 5): spec.prot: unknown field"
        )),
        "{run:#?}"
    );
    assert!(run.stderr.contains("nothing was applied"), "{run:#?}");
    let history = cp.portico(&["-o", "json", "history"]).ok().json();
    assert_eq!(history["entries"].as_array().unwrap().len(), 0, "{history}");
}

#[test]
fn server_validation_errors_are_traced_to_file_and_document_and_exit_4() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    // The route table's first route goes to a cluster that does not exist.
    let config = yaml(&[
        web_listener("web", free_port(), None),
        main_table("nope", "hi"),
    ]);
    let path = files.write("dangling.yaml", &config);
    // The route table is the second document; its line, counted here independently of the
    // CLI: where its `kind` line is.
    let line = 1 + config
        .lines()
        .position(|l| l == "kind: RouteTable")
        .unwrap();
    assert!(line > 1, "{config}");

    let run = cp.portico(&["apply", "-f", &path]).expect(4);
    assert!(
        run.stderr.contains(&format!(
            "{path}: document 1 (line {line}): RouteTable/main: virtual_hosts[0].routes[0].action.cluster:"
        )),
        "{run:#?}"
    );
    assert!(run.stderr.contains("nope"), "{run:#?}");

    let json = cp
        .portico(&["-o", "json", "apply", "-f", &path])
        .expect(4)
        .json();
    let error = &json["errors"][0];
    assert_eq!(error["path"], path.as_str());
    assert_eq!(error["document"], 1);
    assert_eq!(error["line"], line);
    assert_eq!(error["kind"], "RouteTable");
    assert_eq!(error["field"], "virtual_hosts[0].routes[0].action.cluster");

    let nothing = cp.portico(&["-o", "json", "get", "all"]).ok().json();
    assert_eq!(nothing, serde_json::json!([]), "nothing was applied");
}

#[test]
fn a_stale_expected_revision_is_a_conflict_with_exit_3() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    let (port, upstream) = (free_port(), free_port());
    let first = cp
        .portico(&[
            "-o",
            "json",
            "apply",
            "-f",
            &files.write_yaml("a.yaml", &small_config(port, "1", upstream)),
        ])
        .ok()
        .json();
    let stale = first["revision"].as_i64().unwrap();
    let second = cp
        .portico(&[
            "-o",
            "json",
            "apply",
            "-f",
            &files.write_yaml("a.yaml", &small_config(port, "2", upstream)),
        ])
        .ok()
        .json();
    let current = second["revision"].as_i64().unwrap();

    let changed = files.write_yaml("a.yaml", &small_config(port, "3", upstream));
    let run = cp
        .portico(&[
            "apply",
            "--expected-revision",
            &stale.to_string(),
            "-f",
            &changed,
        ])
        .expect(3);
    assert!(run.stderr.contains("conflict"), "{run:#?}");
    assert!(
        run.stderr
            .contains(&format!("the config is at revision {current}")),
        "{run:#?}"
    );
    assert!(run.stderr.contains("re-run"), "{run:#?}");

    cp.portico(&[
        "apply",
        "--expected-revision",
        &current.to_string(),
        "-f",
        &changed,
    ])
    .ok();
}

#[test]
fn rollback_restores_an_earlier_revision_and_history_records_it() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    let (port, upstream) = (free_port(), free_port());
    let v1 = cp
        .portico(&[
            "-o",
            "json",
            "apply",
            "-m",
            "v1",
            "-f",
            &files.write_yaml("a.yaml", &small_config(port, "one", upstream)),
        ])
        .ok()
        .json()["revision"]
        .as_i64()
        .unwrap();
    cp.portico(&[
        "apply",
        "-m",
        "v2",
        "-f",
        &files.write_yaml("a.yaml", &small_config(port, "two", upstream)),
    ])
    .ok();

    let back = cp
        .portico(&["-o", "json", "rollback", &v1.to_string(), "-m", "undo v2"])
        .ok()
        .json();
    assert_eq!(back["rollback_of"], v1);
    assert!(
        back["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "main" && c["change"] == "updated"),
        "{back}"
    );
    let table = cp
        .portico(&["-o", "yaml", "get", "routetable", "main"])
        .ok();
    assert!(
        table.stdout.contains("one") && !table.stdout.contains("two"),
        "{table:#?}"
    );

    let history = cp
        .portico(&["-o", "json", "history", "--limit", "10"])
        .ok()
        .json();
    let entries = history["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{history}");
    assert_eq!(entries[0]["rollback_of"], v1);
    assert_eq!(entries[0]["message"], "undo v2");
    assert_eq!(entries[1]["message"], "v2");
    assert_eq!(entries[2]["message"], "v1");
    assert_eq!(entries[2]["created"], 3);

    let limited = cp
        .portico(&["-o", "json", "history", "--limit", "1"])
        .ok()
        .json();
    assert_eq!(limited["entries"].as_array().unwrap().len(), 1);
    let text = cp.portico(&["history"]).ok();
    assert!(
        text.stdout.contains(&format!("rollback to {v1}: undo v2")),
        "{text:#?}"
    );
}

#[test]
fn delete_refuses_a_referenced_resource_and_removes_an_unreferenced_one() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    let mut config = small_config(free_port(), "hi", free_port());
    config.push(spare());
    cp.portico(&["apply", "-f", &files.write_yaml("a.yaml", &config)])
        .ok();

    let refused = cp.portico(&["delete", "cluster", "app"]).expect(1);
    assert!(refused.stderr.contains("app"), "{refused:#?}");
    cp.portico(&["get", "cluster", "app"]).ok();

    let deleted = cp
        .portico(&["delete", "cluster", "spare", "-m", "unused"])
        .ok();
    assert!(
        deleted.stdout.contains("deleted     Cluster/spare"),
        "{deleted:#?}"
    );
    cp.portico(&["get", "cluster", "spare"]).expect(1);
}

#[test]
fn two_control_planes_on_one_etcd_agree_and_refuse_a_stale_write() {
    let etcd = Etcd::start();
    let cp1 = on_etcd(&etcd.endpoint(), "cp-1");
    let cp2 = on_etcd(&etcd.endpoint(), "cp-2");
    let files = Files::new();
    let (port, upstream) = (free_port(), free_port());
    let first = files.write_yaml("a.yaml", &small_config(port, "one", upstream));
    let applied = cp1
        .portico(&["-o", "json", "apply", "-m", "via cp-1", "-f", &first])
        .ok()
        .json();
    let revision = applied["revision"].as_i64().unwrap();

    let from_cp1 = cp1.portico(&["-o", "yaml", "get", "all"]).ok().stdout;
    let from_cp2 = cp2.portico(&["-o", "yaml", "get", "all"]).ok().stdout;
    assert_eq!(from_cp1, from_cp2);
    let history = cp2.portico(&["-o", "json", "history"]).ok().json();
    assert_eq!(history["entries"][0]["revision"], revision);
    assert_eq!(history["entries"][0]["message"], "via cp-1");

    let second = files.write_yaml("a.yaml", &small_config(port, "two", upstream));
    let newer = cp2
        .portico(&["-o", "json", "apply", "-f", &second])
        .ok()
        .json();
    let current = newer["revision"].as_i64().unwrap();
    let third = files.write_yaml("a.yaml", &small_config(port, "three", upstream));
    let run = cp1
        .portico(&[
            "apply",
            "--expected-revision",
            &revision.to_string(),
            "-f",
            &third,
        ])
        .expect(3);
    assert!(
        run.stderr
            .contains(&format!("the config is at revision {current}")),
        "{run:#?}"
    );
}

#[test]
fn every_example_config_applies_to_a_real_control_plane() {
    for file in example_files() {
        let cp = ControlPlane::embedded();
        let path = file.display().to_string();
        let run = cp.portico(&["-o", "json", "apply", "-f", &path]).ok();
        let json = run.json();
        assert_eq!(json["noop"], false, "{path}: {json}");
        assert!(
            json["changes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["change"] == "created"),
            "{path}: {json}"
        );
    }
}

#[test]
fn an_unreachable_server_is_one_line_naming_the_url_and_how_to_set_it() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let run = portico(&url, &["get", "all"]).expect(1);
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(run.stderr.contains(&url), "{run:#?}");
    assert!(
        run.stderr.contains("--server") && run.stderr.contains("PORTICO_SERVER"),
        "{run:#?}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let unknown_kind = portico(&url, &["get", "gateways"]).expect(2);
    assert!(
        unknown_kind.stderr.contains("unknown kind"),
        "{unknown_kind:#?}"
    );
    portico(&url, &["apply"]).expect(2);
    portico(&url, &["-o", "xml", "history"]).expect(2);
}

#[test]
fn completion_scripts_are_printed_for_each_shell() {
    let url = "http://127.0.0.1:1";
    for shell in ["bash", "zsh", "fish"] {
        let run = portico(url, &["completion", shell]).ok();
        assert!(run.stdout.contains("rollout"), "{shell}: {run:#?}");
    }
}
