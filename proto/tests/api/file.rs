//! The file format: round trips, several documents, directories, and errors that name the
//! file, the document and the field.

use std::path::PathBuf;

use portico_api::file;
use portico_api::pb::{Listener, resource::Spec};
use portico_api::{Kind, Resource};

use crate::fixtures::{assert_errors, gateway_with, parse, valid};

/// Parses `text` as file `path` and checks its errors as [`assert_errors`] does.
fn check_errors(path: &str, text: &str, expected: &[&str]) {
    let errors = file::parse(path.as_ref(), text).err().unwrap_or_default();
    assert_errors(text, &errors, expected);
}

/// Every fixture resource, those validation refuses as not supported yet included: the file
/// format carries every kind and field.
fn every_fixture() -> Vec<Resource> {
    gateway_with("").iter().cloned().collect()
}

#[test]
fn yaml_round_trip_is_lossless() {
    assert_eq!(valid().len(), 10, "every valid fixture document is read");
    let resources = every_fixture();
    assert_eq!(
        resources.len(),
        24,
        "every gateway fixture document is read"
    );
    for kind in Kind::ALL {
        assert!(resources.iter().any(|r| r.kind() == kind), "{kind} fixture");
    }
    let yaml = file::to_yaml(&resources).expect("render YAML");
    assert_eq!(parse(&yaml), resources, "rendered:\n{yaml}");
}

#[test]
fn json_round_trip_is_lossless() {
    let resources = every_fixture();
    let json = file::to_json(&resources).expect("render JSON");
    let back = file::parse("out.json".as_ref(), &json).expect("parse rendered JSON");
    let back: Vec<Resource> = back.into_iter().map(|l| l.resource).collect();
    assert_eq!(back, resources, "rendered:\n{json}");
}

#[test]
fn output_uses_the_envelope_and_the_json_mapping() {
    let resources = valid();
    let web = resources.iter().find(|r| r.name == "web").expect("web");
    let value = file::to_value(web).expect("render");
    assert_eq!(value["kind"], "Listener");
    assert_eq!(value["name"], "web");
    assert_eq!(value["labels"]["tier"], "edge");
    assert_eq!(value["spec"]["routeTable"], "shop");
    assert_eq!(value["spec"]["protocol"], "HTTPS");
    assert_eq!(value["spec"]["limits"]["idleTimeout"], "60s");
    assert_eq!(value["spec"]["limits"]["maxRequestBodyBytes"], "10485760");
    let plain = resources.iter().find(|r| r.name == "plain").expect("plain");
    let value = file::to_value(plain).expect("render");
    assert!(value.get("labels").is_none(), "empty labels are left out");
    let yaml = file::to_yaml(std::slice::from_ref(web)).expect("render");
    assert!(
        yaml.starts_with("kind: Listener\nname: web\nlabels:"),
        "{yaml}"
    );
}

#[test]
fn unknown_enum_number_fails_to_render_with_the_resource_name() {
    let bad = Resource {
        name: "odd".into(),
        spec: Some(Spec::Listener(Listener {
            protocol: 99,
            ..Default::default()
        })),
        ..Default::default()
    };
    let err = file::to_value(&bad).expect_err("unknown enum value");
    assert!(err.to_string().contains("Listener/odd"), "{err}");
    assert!(file::to_yaml(&[bad]).is_err());
}

#[test]
fn json_accepts_an_object_or_an_array_and_both_field_spellings() {
    let one = r#"{"kind": "Cluster", "name": "a", "spec": {"connectTimeout": "1s"}}"#;
    let many = r#"[{"kind": "Cluster", "name": "a", "spec": {"connect_timeout": "1s"}},
                   {"kind": "consumers", "name": "b", "spec": {}}]"#;
    let one = file::parse("one.json".as_ref(), one).expect("object");
    let many = file::parse("many.json".as_ref(), many).expect("array");
    assert_eq!(one[0].resource, many[0].resource);
    assert_eq!(many[1].resource.kind(), Kind::Consumer);
    assert_eq!(many[1].document, 1);
    assert_eq!(many[1].line, 0, "JSON has no lines to tell");
}

#[test]
fn yaml_scalars_stay_strings_where_strings_are_meant() {
    let loaded = parse("kind: Consumer\nname: y\nlabels: {version: 2, beta: no}\nspec: {}\n");
    assert_eq!(loaded[0].name, "y");
    assert_eq!(loaded[0].labels["version"], "2");
    assert_eq!(loaded[0].labels["beta"], "no");
}

#[test]
fn secret_material_never_appears_in_a_file_error() {
    const MARKER: &str = "MARKER-e41c";
    let cases = [
        // An unknown field holding the key, a key of the wrong type, a misspelt kind of secret.
        format!("kind: Secret\nname: s\nspec: {{tls: {{private_key_pem: \"{MARKER}\"}}}}\n"),
        format!("kind: Secret\nname: s\nspec: {{tls: {{certificate_chain: [\"{MARKER}\"]}}}}\n"),
        format!("kind: Secret\nname: s\nspec: {{tls: \"{MARKER}\"}}\n"),
        format!("kind: Secret\nname: s\nspec: {{opaque: {{v: \"{MARKER}\"}}}}\n"),
        format!("kind: Secret\nname: s\nspec: {{opaqe: \"{MARKER}\\nline two\"}}\n"),
    ];
    for yaml in &cases {
        let errors = file::parse(std::path::Path::new("s.yaml"), yaml).expect_err(yaml);
        for e in &errors {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(MARKER), "{yaml}: {shown}");
            assert!(
                shown.contains("s.yaml: document 0 (line 1): spec"),
                "{shown}"
            );
        }
    }
}

#[test]
fn document_errors_name_the_document_and_the_field() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "a.yaml",
            "kind: Cluster\nname: a\nspec: {}\n---\nkind: Gateway\nname: b\nspec: {}\n",
            &[
                "a.yaml: document 1 (line 5): kind: unknown kind \"Gateway\" (valid kinds: Listener, RouteTable, Cluster, Policy, Consumer, Secret)",
            ],
        ),
        (
            "a.yaml",
            "kind: Listener\nname: a\nspec: {port: 80, prot: HTTP}\n",
            &["a.yaml: document 0 (line 1): spec.prot: unknown field `prot`"],
        ),
        (
            "a.yaml",
            "kind: Listener\nname: a\nspec:\n  tls:\n    certificates: [{secret: s, sni: [a]}]\n",
            &["document 0 (line 1): spec.tls.certificates[0].sni: unknown field `sni`"],
        ),
        (
            "a.yaml",
            "kind: Listener\nname: a\nspec: {port: eighty}\n",
            &["document 0 (line 1): spec.port: invalid digit found in string (found \"eighty\")"],
        ),
        (
            "a.yaml",
            "kind: Listener\nname: a\nspec: {protocol: HTTP3}\n",
            &["document 0 (line 1): spec.protocol: unknown variant `HTTP3`"],
        ),
        (
            "a.yaml",
            "kind: RouteTable\nname: a\nspec: {virtual_hosts: [{routes: [{timeout: soon}]}]}\n",
            &["spec.virtual_hosts[0].routes[0].timeout: "],
        ),
        (
            "a.yaml",
            "name: a\nspec: {}\n",
            &["document 0 (line 1): kind: missing kind"],
        ),
        (
            "a.yaml",
            "kind: Cluster\nspec: {}\n",
            &["document 0 (line 1): name: missing name"],
        ),
        (
            "a.yaml",
            "kind: Cluster\nname: a\n",
            &["document 0 (line 1): spec: missing spec"],
        ),
        (
            "a.yaml",
            "kind: Cluster\nname: a\nspec: {}\nstatus: {}\n",
            &["document 0 (line 1): status: unknown field `status`"],
        ),
        (
            "a.yaml",
            "- just\n- a list\n",
            &[
                "document 0: expected a mapping",
                "document 1: expected a mapping",
            ],
        ),
        (
            "a.yaml",
            "kind: [\n",
            &["a.yaml: document 0 (line 1): invalid YAML"],
        ),
        (
            // A syntax error names the document it is in, and where that starts.
            "a.yaml",
            "kind: Cluster\nname: a\nspec: {}\n---\nkind: Cluster\nname: [b\n",
            &["a.yaml: document 1 (line 5): invalid YAML"],
        ),
        (
            "a.yaml",
            "# leading comment\n---\nkind: Cluster\nname: a\nspec: {}\n---\n---\nkind: {\n",
            &["a.yaml: document 2 (line 8): invalid YAML"],
        ),
        (
            "a.json",
            "{\"kind\": ",
            &["a.json: document 0: invalid JSON"],
        ),
        (
            "a.json",
            r#"[{"kind": "Cluster", "name": "a", "spec": {"endpoints": [{"port": -1}]}}]"#,
            &["a.json: document 0: spec.endpoints[0].port: "],
        ),
        (
            "a.yaml",
            "kind: Cluster\nname: a\nspec: {}\n---\nkind: clusters\nname: a\nspec: {}\n",
            &[
                "a.yaml: document 1 (line 5): name: Cluster/a is defined twice: also in a.yaml document 0",
            ],
        ),
    ];
    for (path, text, expected) in cases {
        check_errors(path, text, expected);
    }
}

#[test]
fn error_lists_every_bad_document() {
    check_errors(
        "a.yaml",
        "kind: Cluster\nname: a\nspec: {x: 1}\n---\nkind: Cluster\nname: b\nspec: {}\n---\nkind: Policy\nname: c\nspec: {y: 1}\n",
        &["document 0 (line 1): spec.x", "document 2 (line 9): spec.y"],
    );
}

#[test]
fn directories_load_resource_files_in_name_order_and_report_cross_file_duplicates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).expect("write fixture");
    };
    write("b.yml", "kind: Cluster\nname: b\nspec: {}\n");
    write("a.yaml", "kind: Cluster\nname: a\nspec: {}\n");
    write("c.json", r#"{"kind": "Policy", "name": "c", "spec": {}}"#);
    write("notes.txt", "not a resource");
    let loaded = file::load_paths(&[dir.path().to_path_buf()]).expect("load directory");
    let names: Vec<_> = loaded.iter().map(|l| l.resource.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(loaded[1].path.ends_with("b.yml"));

    let extra = dir.path().join("extra").join("again.yaml");
    std::fs::create_dir(extra.parent().expect("parent")).expect("mkdir");
    std::fs::write(&extra, "kind: Cluster\nname: b\nspec: {}\n").expect("write");
    let missing = PathBuf::from("/nonexistent/portico.yaml");
    let errors = file::load_paths(&[dir.path().to_path_buf(), extra.clone(), missing])
        .expect_err("duplicate and missing file");
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("/nonexistent/portico.yaml: document 0: cannot read file"));
    assert!(
        errors[1]
            .contains("again.yaml: document 0 (line 1): name: Cluster/b is defined twice: also in")
            && errors[1].contains("b.yml document 0"),
        "{errors:?}"
    );
}

#[test]
fn large_files_load_and_deep_nesting_is_an_error_not_a_crash() {
    let many: String = (0..3000)
        .map(|i| format!("kind: Consumer\nname: c{i}\nspec: {{plan: p}}\n---\n"))
        .collect();
    let loaded = file::parse("many.yaml".as_ref(), &many).expect("3000 documents");
    assert_eq!(loaded.len(), 3000);
    assert_eq!(loaded[2999].document, 2999);
    assert_eq!(
        loaded[2999].line,
        4 * 2999 + 1,
        "each document is 3 lines and a ---"
    );

    let deep = format!(
        "kind: Consumer\nname: a\nspec: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    check_errors("deep.yaml", &deep, &["invalid YAML"]);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    check_errors("deep.json", &deep, &["deep.json: document 0: invalid JSON"]);
}

#[test]
fn files_past_a_limit_are_refused_with_the_limit_named() {
    use portico_api::file::{MAX_DEPTH, MAX_DOCUMENTS, MAX_FILE_BYTES};
    // Size: refused before it is read whole.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(MAX_FILE_BYTES as u64 + 1).unwrap();
    let errors = file::load_paths(&[big]).expect_err("too large");
    assert_errors(
        "big.yaml",
        &errors,
        &["big.yaml: document 0: the file is 67108865 bytes; the limit is 67108864 (64 MiB)"],
    );
    let text = " ".repeat(MAX_FILE_BYTES + 1);
    check_errors("big.yaml", &text, &["the limit is 67108864 (64 MiB)"]);

    // Documents, as YAML documents or as the items of a list.
    let docs = "--- {}\n".repeat(MAX_DOCUMENTS + 1);
    let errors = file::parse("docs.yaml".as_ref(), &docs).expect_err("too many");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].to_string().contains("documents"), "{}", errors[0]);
    let list = format!("[{}{{}}]", "{},".repeat(MAX_DOCUMENTS));
    check_errors(
        "list.json",
        &list,
        &["list.json: document 0: 100001 documents; the limit is 100000 per file"],
    );

    // Nesting, in both formats.
    let nested = |depth: usize| {
        format!(
            "{{\"kind\": \"Consumer\", \"name\": \"a\", \"labels\": {}{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    check_errors(
        "deep.json",
        &nested(MAX_DEPTH),
        &["deep.json: document 0: invalid JSON: nested deeper than 64 levels"],
    );
    check_errors(
        "deep.yaml",
        &nested(MAX_DEPTH),
        &["deep.yaml: document 0 (line 1): invalid YAML"],
    );
    // Just within the limit, the structure parses (and fails on what labels must be).
    check_errors("ok.json", &nested(MAX_DEPTH - 2), &["labels"]);
}

#[test]
fn alias_bombs_stop_at_the_node_limit_at_once() {
    // Nine levels of ten aliases each: a billion values from a file of a few hundred bytes.
    let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        yaml.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    yaml.push_str("kind: Consumer\nname: bomb\nspec: {}\n");
    let errors = file::parse("bomb.yaml".as_ref(), &yaml).expect_err("a bomb");
    assert!(errors[0].message.contains("invalid YAML"), "{}", errors[0]);
    assert!(errors[0].message.contains("nodes"), "{}", errors[0]);
    // Aliases used with measure still work.
    let anchors = "- {kind: Consumer, name: a, labels: &l {team: edge}, spec: {}}\n- {kind: Consumer, name: b, labels: *l, spec: {}}\n";
    let loaded = file::parse("anchors.yaml".as_ref(), anchors).expect("anchors");
    assert_eq!(loaded[1].resource.labels["team"], "edge");
}

#[test]
fn strings_that_look_like_other_yaml_round_trip() {
    let tricky = [
        "", "yes", "no", "on", "null", "~", "true", "0x10", "1e3", "007", "12", "-1", ".inf",
        " lead", "trail ", "a: b", "#c", "- x", "@x", "`x", "*star", "&amp", "!tag", "%p", "{a}",
        "[a]", "'q'", "\"dq\"", "a\nb", "a\n", "tab\tin", "ünï", "---", "...",
    ];
    let body = tricky.join("|");
    let yaml = "kind: RouteTable\nname: t\nspec: {}\n";
    let mut table = parse(yaml).remove(0);
    for (i, s) in tricky.iter().enumerate() {
        table.labels.insert(format!("k{i}"), s.to_string());
    }
    let Some(portico_api::pb::resource::Spec::RouteTable(t)) = &mut table.spec else {
        panic!("route table")
    };
    t.virtual_hosts.push(portico_api::pb::VirtualHost {
        name: body.clone(),
        domains: tricky.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    });
    let resources = vec![table];
    let yaml = file::to_yaml(&resources).expect("render YAML");
    assert_eq!(parse(&yaml), resources, "rendered:\n{yaml}");
    let json = file::to_json(&resources).expect("render JSON");
    let back = file::parse("t.json".as_ref(), &json).expect("parse JSON");
    assert_eq!(back[0].resource, resources[0]);
}
#[test]
fn output_does_not_depend_on_map_order() {
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let listener = |keys: &mut dyn Iterator<Item = &String>| {
        let labels: String = keys.map(|k| format!("{k}: v, ")).collect();
        let yaml = format!(
            "kind: Listener\nname: a\nlabels: {{{labels}}}\nspec: {{selector: {{labels: {{{labels}}}}}}}\n"
        );
        parse(&yaml)
    };
    let forward = listener(&mut keys.iter());
    let backward = listener(&mut keys.iter().rev());
    assert_eq!(forward, backward);
    let render = |r: &[Resource]| {
        (
            file::to_yaml(r).expect("yaml"),
            file::to_json(r).expect("json"),
        )
    };
    assert_eq!(render(&forward), render(&backward));
}
