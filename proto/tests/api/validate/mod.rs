//! Validation rules, table-driven: each case replaces or adds resources in the valid fixture
//! configuration and lists the errors it must produce, in order, and no others.
//!
//! Fields agents do not enforce yet are refused (`unsupported`), and their own checks still
//! run; [`refused_cases`] tests those checks, setting the refusals aside after checking that
//! each was reported.

mod apply;
mod cluster;
mod credential;
mod listener;
mod policy;
mod route;
mod unsupported;
mod xds;

use portico_api::ResourceSet;
use portico_api::validate::{ValidationError, unsupported, validate_set};
use portico_test_support::fixtures::accepted;

use crate::fixtures::{assert_errors, gateway_with, valid, valid_with};

/// Validates the fixtures with `yaml`'s resources in, and checks that each expected substring
/// is in its own error, in order, and that there are no other errors.
fn check(yaml: &str, expected: &[&str]) {
    assert_errors(yaml, &validate_set(&valid_with(yaml)), expected);
}

/// Runs [`check`] on each (input, expected errors) row.
fn cases(table: &[(&str, &[&str])]) {
    for (yaml, expected) in table {
        check(yaml, expected);
    }
}

/// The errors of `set` other than its refusals, after checking that every refusal of its
/// resources is among the errors.
fn beyond_refusals(set: &ResourceSet) -> Vec<ValidationError> {
    let refusals: Vec<ValidationError> = set.iter().flat_map(unsupported).collect();
    let errors = validate_set(set);
    for refusal in &refusals {
        assert!(errors.contains(refusal), "{refusal} was not reported");
    }
    errors
        .into_iter()
        .filter(|e| !refusals.contains(e))
        .collect()
}

/// Like [`cases`], for what validation refuses as not supported yet: each row's resources go
/// on top of the valid and the gateway fixtures (policies, consumers, and what attaches
/// them), and the expected errors are those besides the refusals.
fn refused_cases(table: &[(&str, &[&str])]) {
    for (yaml, expected) in table {
        assert_errors(yaml, &beyond_refusals(&gateway_with(yaml)), expected);
    }
}

#[test]
fn valid_fixtures_have_no_errors() {
    check("", &[]);
    assert!(validate_set(&ResourceSet::new()).is_empty());
    for (what, yaml) in accepted() {
        assert_errors(what, &validate_set(&valid_with(&yaml)), &[]);
    }
}

#[test]
fn gateway_fixtures_have_no_errors() {
    let set = gateway_with("");
    assert!(set.iter().all(|r| unsupported(r).is_empty()));
    assert_errors("gateway fixtures", &validate_set(&set), &[]);
}

#[test]
fn names_and_specs() {
    let mut set: ResourceSet = valid().into_iter().collect();
    set.insert(portico_api::Resource {
        name: "empty".into(),
        ..Default::default()
    });
    assert_errors(
        "spec-less resource",
        &validate_set(&set),
        &["Unspecified/empty: spec is not set"],
    );
    cases(&[
        (
            "kind: Cluster\nname: Bad_Name\nspec: {}\n",
            &["Cluster/Bad_Name: name: invalid name \"Bad_Name\""],
        ),
        (
            "kind: Cluster\nname: -a\nspec: {}\n",
            &["Cluster/-a: name: invalid name"],
        ),
        (
            "kind: Cluster\nname: a-\nspec: {}\n",
            &["Cluster/a-: name: invalid name"],
        ),
        (
            &format!("kind: Cluster\nname: {}\nspec: {{}}\n", "a".repeat(64)),
            &["name: invalid name"],
        ),
        (
            &format!("kind: Cluster\nname: {}\nspec: {{}}\n", "a".repeat(63)),
            &[],
        ),
        ("kind: Cluster\nname: '0'\nspec: {}\n", &[]),
        // Dots join DNS labels: the names gRPC clients dial.
        (
            "kind: Cluster\nname: greeter.example.internal\nspec: {}\n",
            &[],
        ),
        (
            "kind: Cluster\nname: a..b\nspec: {}\n",
            &["Cluster/a..b: name: invalid name"],
        ),
        (
            "kind: Cluster\nname: .a\nspec: {}\n",
            &["Cluster/.a: name: invalid name"],
        ),
        (
            "kind: Cluster\nname: a.-b\nspec: {}\n",
            &["Cluster/a.-b: name: invalid name"],
        ),
        (
            &format!("kind: Cluster\nname: a.{}\nspec: {{}}\n", "b".repeat(64)),
            &["name: invalid name"],
        ),
        (
            &format!(
                "kind: Cluster\nname: {}\nspec: {{}}\n",
                vec!["a".repeat(63); 4].join(".")
            ),
            &["name: invalid name"],
        ),
    ]);
}

#[test]
fn labels_and_sizes_are_bounded() {
    let many: String = (0..65).map(|i| format!("k{i}: v\n  ")).collect();
    cases(&[
        (
            "kind: Cluster\nname: a\nlabels: {app.example.com/tier: edge, team_x-1: '2'}\nspec: {}\n",
            &[],
        ),
        (
            &format!("kind: Cluster\nname: a\nlabels:\n  {many}\nspec: {{}}\n"),
            &["Cluster/a: labels: 65 labels; the limit is 64"],
        ),
        (
            "kind: Cluster\nname: a\nlabels: {'bad key': x, '': y}\nspec: {}\n",
            &[
                "labels[\"\"]: label keys are 1-128 characters",
                "labels[\"bad key\"]: label keys are 1-128 characters",
            ],
        ),
        (
            &format!(
                "kind: Cluster\nname: a\nlabels: {{{}: x, big: {}}}\nspec: {{}}\n",
                "k".repeat(200),
                "v".repeat(257)
            ),
            &[
                "labels[\"big\"]: the value is 257 bytes long; the limit is 256",
                &format!(
                    "labels[\"{}…\"]: label keys are 1-128 characters",
                    "k".repeat(40)
                ),
            ],
        ),
        (
            "kind: Cluster\nname: a\nlabels: {k: \"a\\u001bb\"}\nspec: {}\n",
            &["labels[\"k\"]: the value contains a control character"],
        ),
        (
            // 600 KiB of routes in one table.
            &format!(
                "kind: RouteTable\nname: big\nspec:\n  virtual_hosts:\n    - domains: [big.example.com]\n      routes:\n{}",
                (0..6000)
                    .map(|i| format!(
                        "        - {{match: {{prefix: /p{i:05}/{}}}, action: {{cluster: cart}}}}\n",
                        "x".repeat(80)
                    ))
                    .collect::<String>()
            ),
            &["RouteTable/big: the resource is 597.7 KiB encoded; the limit is 512 KiB"],
        ),
    ]);
}

#[test]
fn every_error_is_reported_in_resource_order() {
    let yaml = "kind: Secret\nname: token\nspec: {}\n---\nkind: Listener\nname: plain\nspec: {port: 0, protocol: HTTP, route_table: x}\n";
    check(
        yaml,
        &[
            "Listener/plain: port: port 0",
            "Listener/plain: route_table: route table \"x\" does not exist",
            "Secret/token: a secret value",
        ],
    );
}

#[test]
fn errors_cross_the_admin_api_unchanged() {
    let errors = validate_set(&valid_with(
        "kind: Listener\nname: plain\nspec: {port: 0, protocol: HTTP, route_table: shop}\n",
    ));
    assert_eq!(errors.len(), 1);
    let wire = portico_api::pb::ValidationError::from(errors[0].clone());
    let back = ValidationError::from(wire);
    assert_eq!(back, errors[0]);
    assert_eq!(
        back.to_string(),
        "Listener/plain: port: port 0 is not in 1-65535"
    );
}
