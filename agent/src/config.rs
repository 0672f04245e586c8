//! The agent's whole config at one version, and how an update changes it.

use portico_api::ResourceSet;
use portico_api::pb::Update;

/// Every resource the agent serves, at one config version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigSet {
    /// The control plane's config revision (0: nothing applied yet).
    pub version: i64,
    /// The resources.
    pub resources: ResourceSet,
}

impl ConfigSet {
    /// The config after `update`: its upserts and removals on top of this one, or only its
    /// upserts when it is a full update.
    pub fn with_update(&self, update: &Update) -> ConfigSet {
        let mut resources = if update.full {
            ResourceSet::new()
        } else {
            self.resources.clone()
        };
        for key in &update.removals {
            resources.remove(key.kind(), &key.name);
        }
        for r in &update.upserts {
            resources.insert(r.clone());
        }
        ConfigSet {
            version: update.version,
            resources,
        }
    }
}
