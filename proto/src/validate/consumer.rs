//! Consumer rules: API key hashes are well-formed, and no credential identifies two consumers.

use std::collections::{HashMap, HashSet};

use super::{Errors, ValidationError, error};
use crate::ResourceSet;
use crate::pb::{Consumer, Kind, resource::Spec};

pub(crate) fn check(c: &Consumer, e: &mut Errors) {
    let mut ids = HashSet::new();
    for (i, key) in c.api_keys.iter().enumerate() {
        let valid = key.sha256.len() == 64
            && key
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            e.add(
                format!("api_keys[{i}].sha256"),
                "must be the SHA-256 of the key as 64 lowercase hex digits",
            );
        }
        if !key.id.is_empty() && !ids.insert(&key.id) {
            e.add(
                format!("api_keys[{i}].id"),
                format!("key id {:?} is used twice", key.id),
            );
        }
    }
    for (i, s) in c.jwt_subjects.iter().enumerate() {
        if s.is_empty() {
            e.add(format!("jwt_subjects[{i}]"), "subject must not be empty");
        }
    }
}

/// Reports an API key hash or JWT subject that a consumer earlier by name already claims:
/// the gateway could not tell the two consumers apart.
pub(crate) fn check_credentials(set: &ResourceSet, out: &mut Vec<ValidationError>) {
    let mut keys: HashMap<&str, &str> = HashMap::new();
    let mut subjects: HashMap<&str, &str> = HashMap::new();
    for r in set.of_kind(Kind::Consumer) {
        let Some(Spec::Consumer(c)) = &r.spec else {
            continue;
        };
        for (i, k) in c.api_keys.iter().enumerate() {
            let owner = *keys.entry(&k.sha256).or_insert(&r.name);
            if owner != r.name {
                out.push(error(
                    &r.key(),
                    &format!("api_keys[{i}].sha256"),
                    format!("the same key belongs to Consumer/{owner}"),
                ));
            }
        }
        for (i, s) in c.jwt_subjects.iter().enumerate() {
            let owner = *subjects.entry(s).or_insert(&r.name);
            if owner != r.name {
                out.push(error(
                    &r.key(),
                    &format!("jwt_subjects[{i}]"),
                    format!("subject {s:?} also belongs to Consumer/{owner}"),
                ));
            }
        }
    }
}
