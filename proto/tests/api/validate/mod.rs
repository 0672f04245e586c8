//! Validation rules, table-driven: each case replaces or adds resources in the valid fixture
//! configuration and lists the errors it must produce, in order, and no others.

mod apply;
mod cluster;
mod credential;
mod listener;
mod policy;
mod route;

use portico_api::ResourceSet;
use portico_api::validate::{ValidationError, validate_set};

use crate::fixtures::{assert_errors, valid, valid_with};

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

#[test]
fn valid_fixtures_have_no_errors() {
    check("", &[]);
    assert!(validate_set(&ResourceSet::new()).is_empty());
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
            "kind: Consumer\nname: Bad_Name\nspec: {}\n",
            &["Consumer/Bad_Name: name: invalid name \"Bad_Name\""],
        ),
        (
            "kind: Consumer\nname: -a\nspec: {}\n",
            &["Consumer/-a: name: invalid name"],
        ),
        (
            "kind: Consumer\nname: a-\nspec: {}\n",
            &["Consumer/a-: name: invalid name"],
        ),
        (
            &format!("kind: Consumer\nname: {}\nspec: {{}}\n", "a".repeat(64)),
            &["name: invalid name"],
        ),
        (
            &format!("kind: Consumer\nname: {}\nspec: {{}}\n", "a".repeat(63)),
            &[],
        ),
        ("kind: Consumer\nname: '0'\nspec: {}\n", &[]),
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
