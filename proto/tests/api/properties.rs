//! Property tests of what reads untrusted input: the file parser and validation. Whatever the
//! input, no panic, and the same input gives the same answer. Inputs are arbitrary text and
//! the valid fixtures with random edits (see `portico_test_support::fuzz`), so that cases reach
//! past the first syntax error into decoding and every validation rule.

use std::path::Path;
use std::sync::OnceLock;

use portico_api::file;
use portico_api::validate::validate_apply;
use portico_api::{Resource, ResourceSet};
use portico_test_support::fixtures::valid;

use crate::fixtures::gateway_with;
use portico_test_support::fuzz::{
    CASES, ValueEdit, byte_edits, edit_value, edited_encoding, value_edits,
};
use proptest::prelude::*;
use prost::Message;

/// Every fixture resource, those refused as not supported yet included.
fn fixtures() -> &'static [Resource] {
    static ALL: OnceLock<Vec<Resource>> = OnceLock::new();
    ALL.get_or_init(|| gateway_with("").iter().cloned().collect())
}

/// The valid fixtures, as stored config an apply lands on.
fn stored() -> &'static ResourceSet {
    static STORED: OnceLock<ResourceSet> = OnceLock::new();
    STORED.get_or_init(|| valid().into_iter().collect())
}

/// Parses `text` twice and checks both answers are equal; returns the first.
fn parse_twice(path: &str, text: &str) -> Result<Vec<file::Loaded>, Vec<file::FileError>> {
    let first = file::parse(Path::new(path), text);
    assert_eq!(
        first,
        file::parse(Path::new(path), text),
        "{path}: {text:?}"
    );
    first
}

/// Validates `resource` applied on the stored fixtures, twice, and checks both answers agree.
fn validate_twice(resource: Resource) {
    let upserts = [resource];
    let first = validate_apply(stored(), &upserts, &[]);
    let again = validate_apply(stored(), &upserts, &[]);
    assert_eq!(first.is_ok(), again.is_ok());
    match (first, again) {
        (Ok(set), Ok(set_again)) => assert_eq!(set, set_again),
        (Err(errors), Err(errors_again)) => {
            assert_eq!(errors, errors_again);
            assert!(errors.iter().all(|e| !e.message.is_empty()));
        }
        _ => unreachable!(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn any_text_parses_or_fails_the_same_way_every_time(text in ".{0,200}", json in any::<bool>()) {
        let path = if json { "any.json" } else { "any.yaml" };
        let _ = parse_twice(path, &text);
    }

    #[test]
    fn edited_fixture_documents_parse_and_validate_without_panicking(
        index in any::<usize>(),
        edits in value_edits(4),
        yaml in any::<bool>(),
    ) {
        let resource = &fixtures()[index % fixtures().len()];
        let document = edit_value(file::to_value(resource).expect("fixtures render"), &edits);
        let text = if yaml {
            // YAML is a superset of JSON: the YAML reader takes the JSON text.
            serde_json::to_string_pretty(&document).expect("a JSON value renders")
        } else {
            serde_json::to_string(&document).expect("a JSON value renders")
        };
        let path = if yaml { "doc.yaml" } else { "doc.json" };
        if let Ok(loaded) = parse_twice(path, &text) {
            for l in loaded {
                // What parses renders back to the same resource.
                let again = file::to_yaml(std::slice::from_ref(&l.resource))
                    .map(|y| file::parse(Path::new("again.yaml"), &y));
                if let Ok(Ok(again)) = again {
                    prop_assert_eq!(&again[0].resource, &l.resource);
                }
                validate_twice(l.resource);
            }
        }
    }

    #[test]
    fn edited_fixture_encodings_validate_without_panicking(
        index in any::<usize>(),
        edits in byte_edits(6),
    ) {
        let resource = &fixtures()[index % fixtures().len()];
        let bytes = edited_encoding(resource, &edits);
        if let Ok(decoded) = Resource::decode(bytes.as_slice()) {
            validate_twice(decoded);
        }
    }
}

/// The generators reach validation: most edited documents still parse, and some of them fail
/// validation for what the edit did, not for syntax. A property test whose inputs all fail at
/// the first step would test nothing.
#[test]
fn edited_documents_reach_validation() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut parsed, mut invalid) = (0, 0);
    for i in 0..200 {
        let edits: Vec<ValueEdit> = value_edits(2)
            .new_tree(&mut runner)
            .expect("a tree")
            .current();
        let resource = &fixtures()[i % fixtures().len()];
        let document = edit_value(file::to_value(resource).expect("renders"), &edits);
        let text = serde_json::to_string(&document).expect("renders");
        if let Ok(loaded) = file::parse(Path::new("doc.json"), &text) {
            parsed += 1;
            let upserts: Vec<Resource> = loaded.into_iter().map(|l| l.resource).collect();
            invalid += usize::from(validate_apply(stored(), &upserts, &[]).is_err());
        }
    }
    assert!(parsed > 50, "{parsed} of 200 edited documents parsed");
    assert!(
        invalid > 10,
        "{invalid} of the parsed ones failed validation"
    );
}
