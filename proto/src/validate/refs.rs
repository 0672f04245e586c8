//! References between resources: each resolves to a resource of the right kind, secrets fit
//! their use, and a resource deleted by an apply is not still referred to.

use std::collections::HashSet;

use super::{ValidationError, error};
use crate::ResourceSet;
use crate::pb::{Kind, Resource, ResourceKey, resource::Spec, secret};
use crate::reference::{Need, references_with_needs};

pub(crate) fn check(
    set: &ResourceSet,
    resource: &Resource,
    deleted: &HashSet<ResourceKey>,
    out: &mut Vec<ValidationError>,
) {
    let key = resource.key();
    for (reference, need) in references_with_needs(resource) {
        let target = &reference.target;
        let Some(found) = set.get(target.kind(), &target.name) else {
            if deleted.contains(target) {
                out.push(error(
                    target,
                    "",
                    format!("cannot delete: referenced by {key} at {}", reference.field),
                ));
            } else {
                let what = noun(target.kind());
                out.push(error(
                    &key,
                    &reference.field,
                    format!("{what} {:?} does not exist", target.name),
                ));
            }
            continue;
        };
        if let Err(message) = fits(found, need) {
            out.push(error(&key, &reference.field, message));
        }
    }
}

/// Whether a found secret is what the referring field needs.
fn fits(found: &Resource, need: Need) -> Result<(), String> {
    let (tls, opaque) = match &found.spec {
        Some(Spec::Secret(s)) => match &s.secret {
            Some(secret::Secret::Tls(tls)) => (Some(tls), None),
            Some(secret::Secret::Opaque(value)) => (None, Some(value)),
            None => (None, None),
        },
        _ => return Ok(()),
    };
    let name = &found.name;
    if need == Need::Jwks {
        let Some(value) = opaque else {
            return Err(format!("secret {name:?} is not an opaque secret"));
        };
        return match super::policy::jwks(value).into_iter().next() {
            None => Ok(()),
            Some((field, message)) if field.is_empty() => {
                Err(format!("secret {name:?}: {message}"))
            }
            Some((field, message)) => Err(format!("secret {name:?}: {field}: {message}")),
        };
    }
    match (need, tls) {
        (Need::Exists | Need::Jwks, _) => Ok(()),
        (Need::Chain | Need::KeyPair, None) => Err(format!("secret {name:?} is not a tls secret")),
        (Need::KeyPair, Some(tls)) if tls.private_key.is_empty() => {
            Err(format!("secret {name:?} has no private key"))
        }
        (Need::Chain | Need::KeyPair, Some(_)) => Ok(()),
    }
}

/// The kind as a word in a sentence.
fn noun(kind: Kind) -> &'static str {
    match kind {
        Kind::Listener => "listener",
        Kind::RouteTable => "route table",
        Kind::Cluster => "cluster",
        Kind::Policy => "policy",
        Kind::Consumer => "consumer",
        Kind::Secret => "secret",
        Kind::Unspecified => "resource",
    }
}
