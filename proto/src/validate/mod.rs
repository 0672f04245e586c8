//! Validation of a whole resource set: every error, each with the resource and a field path.
//!
//! Each kind has its own module checking one resource alone; `refs` checks what resources
//! say about each other (references resolve, secrets fit their use), and the kind modules add
//! the few set-wide rules of their kind (listeners sharing a socket, consumers sharing a key).
//! Whatever agents do not enforce yet is refused by `unsupported`, in one table, on top of the
//! kinds' own checks, which keep running so that they are in place when a refusal is lifted.
//!
//! # Layout
//! - `field`: checks shared by every kind (names, durations, regexes, headers, hosts).
//! - `listener`, `route`, `cluster`, `policy`, `consumer`, `secret`: one kind each.
//! - `refs`: references between resources, and deletions they forbid.
//! - `unsupported`: the fields and kinds agents do not enforce yet ([`unsupported()`]).
//! - `xds`: what Envoy and gRPC clients cannot be sent, on the listeners they run and what
//!   those reach.

mod cluster;
mod consumer;
pub(crate) mod field;
mod listener;
mod policy;
mod refs;
mod route;
mod secret;
mod unsupported;
mod xds;

use std::collections::HashSet;

use prost::Message;

use crate::ResourceSet;
use crate::limits;
use crate::pb::{Resource, ResourceKey, resource::Spec};
pub use policy::json_schema;
pub use unsupported::unsupported;

/// One validation error: the resource, the field path, and what is wrong. Displays as
/// `RouteTable/shop: virtual_hosts[0].routes[2].action.cluster: cluster "cart" does not exist`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// The resource at fault.
    pub key: ResourceKey,
    /// Path of the field at fault (empty for the resource as a whole).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.key, self.message)
        } else {
            write!(f, "{}: {}: {}", self.key, self.field, self.message)
        }
    }
}

impl std::error::Error for ValidationError {}

/// For the Admin API's apply response.
impl From<ValidationError> for crate::pb::ValidationError {
    fn from(e: ValidationError) -> Self {
        crate::pb::ValidationError {
            key: Some(e.key),
            field: e.field,
            message: e.message,
        }
    }
}

/// For showing an apply response's errors as [`validate_set`] shows them.
impl From<crate::pb::ValidationError> for ValidationError {
    fn from(e: crate::pb::ValidationError) -> Self {
        ValidationError {
            key: e.key.unwrap_or_default(),
            field: e.field,
            message: e.message,
        }
    }
}

/// Every error in `set`, in resource order. Empty when the set is valid.
pub fn validate_set(set: &ResourceSet) -> Vec<ValidationError> {
    validate_with(set, None, &HashSet::new())
}

/// Validates the config that results from applying `upserts` and `deletions` to `stored`, and
/// returns it. The result is checked as [`validate_set`] does, except that the rules about one
/// resource alone run only on `upserts`: stored resources passed them when they were applied,
/// and a rule made stricter later must not block unrelated changes. Rules between resources
/// (references, shared sockets and credentials, what xDS clients are sent) run on the whole
/// result. Besides, this rejects duplicate names within `upserts`, a resource both upserted and
/// deleted, and deletions of resources the result still references (reported on the deleted
/// resource, naming who refers to it and from where).
pub fn validate_apply(
    stored: &ResourceSet,
    upserts: &[Resource],
    deletions: &[ResourceKey],
) -> Result<ResourceSet, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for r in upserts {
        let key = r.key();
        if !seen.insert(key.clone()) {
            errors.push(error(&key, "", "defined more than once in this apply"));
        }
    }
    let deleted: HashSet<ResourceKey> = deletions.iter().cloned().collect();
    for key in deleted.intersection(&seen) {
        errors.push(error(key, "", "both applied and deleted in this apply"));
    }
    let mut set = stored.clone();
    for key in deletions {
        set.remove(key.kind(), &key.name);
    }
    for r in upserts {
        set.insert(r.clone());
    }
    errors.extend(validate_with(&set, Some(&seen), &deleted));
    sort(&mut errors);
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

/// Validates `set`, checking resources one by one only when in `changed` (all when `None`);
/// a reference to a resource in `deleted` is reported on that resource.
fn validate_with(
    set: &ResourceSet,
    changed: Option<&HashSet<ResourceKey>>,
    deleted: &HashSet<ResourceKey>,
) -> Vec<ValidationError> {
    let mut out = Vec::new();
    for resource in set.iter() {
        let key = resource.key();
        if changed.is_none_or(|changed| changed.contains(&key)) {
            check_one(resource, &mut Errors::new(&key, &mut out));
        }
        refs::check(set, resource, deleted, &mut out);
    }
    listener::check_sockets(set, &mut out);
    consumer::check_credentials(set, &mut out);
    xds::check(set, &mut out);
    sort(&mut out);
    out
}

/// The rules about one resource alone.
fn check_one(resource: &Resource, e: &mut Errors) {
    if let Err(message) = field::resource_name(&resource.name) {
        e.add("name", message);
    }
    field::labels(&resource.labels, e);
    let size = resource.encoded_len();
    if size > limits::MAX_RESOURCE_BYTES {
        e.add(
            "",
            format!(
                "the resource is {} encoded; the limit is {}: split it (a route table into \
                 several, say one per listener or group of hosts)",
                limits::bytes(size),
                limits::bytes(limits::MAX_RESOURCE_BYTES)
            ),
        );
    }
    unsupported::check(resource, e);
    match &resource.spec {
        None => e.add("", "spec is not set"),
        Some(Spec::Listener(l)) => listener::check(l, e),
        Some(Spec::RouteTable(t)) => route::check(t, e),
        Some(Spec::Cluster(c)) => cluster::check(c, e),
        Some(Spec::Policy(p)) => policy::check(p, e),
        Some(Spec::Consumer(c)) => consumer::check(c, e),
        Some(Spec::Secret(s)) => secret::check(s, e),
    }
}

/// Orders errors by resource, keeping each resource's errors in field order.
fn sort(errors: &mut [ValidationError]) {
    errors.sort_by(|a, b| (a.key.kind, &a.key.name).cmp(&(b.key.kind, &b.key.name)));
}

fn error(key: &ResourceKey, field: &str, message: impl Into<String>) -> ValidationError {
    ValidationError {
        key: key.clone(),
        field: field.to_string(),
        message: message.into(),
    }
}

/// Where one resource's errors go.
pub(crate) struct Errors<'a> {
    key: &'a ResourceKey,
    out: &'a mut Vec<ValidationError>,
}

impl<'a> Errors<'a> {
    fn new(key: &'a ResourceKey, out: &'a mut Vec<ValidationError>) -> Self {
        Errors { key, out }
    }

    /// Records that `field` is wrong.
    pub(crate) fn add(&mut self, field: impl AsRef<str>, message: impl Into<String>) {
        self.out.push(error(self.key, field.as_ref(), message));
    }

    /// Records `field`'s error, if any.
    pub(crate) fn check(&mut self, field: impl AsRef<str>, result: Result<(), String>) {
        if let Err(message) = result {
            self.add(field, message);
        }
    }
}
