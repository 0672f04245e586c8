//! The agent's whole config at one version, and how an update changes it.

use std::collections::BTreeMap;
use std::sync::Arc;

use portico_api::ResourceSet;
use portico_api::pb::{Endpoint, Update};

/// The endpoints of each service that nodes announce, by service name, as the control plane
/// last sent them. Not part of a config version: they follow nodes joining and leaving.
pub type Services = BTreeMap<String, Arc<Vec<Endpoint>>>;

/// Every resource the agent serves, at one config version.
///
/// Cloning is cheap: the resources are shared (see [`ResourceSet`]), so a config derived from
/// another by [`ConfigSet::with_update`] holds the very same resources wherever the update did
/// not touch them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigSet {
    /// The control plane's config revision (0: nothing applied yet).
    pub version: i64,
    /// The resources.
    pub resources: ResourceSet,
    /// The endpoints of announced services, which clusters naming a service add to theirs.
    pub services: Services,
}

impl ConfigSet {
    /// The config after `update`: its upserts and removals on top of this one, or only its
    /// upserts when it is a full update. The upserts move into the new config.
    pub fn with_update(&self, update: Update) -> ConfigSet {
        let mut resources = if update.full {
            ResourceSet::new()
        } else {
            self.resources.clone()
        };
        for key in &update.removals {
            resources.remove(key.kind(), &key.name);
        }
        for r in update.upserts {
            resources.insert(r);
        }
        ConfigSet {
            version: update.version,
            resources,
            services: self.services.clone(),
        }
    }

    /// The config with `service`'s endpoints replaced by `endpoints` (none: forgotten).
    pub fn with_service(&self, service: &str, endpoints: Vec<Endpoint>) -> ConfigSet {
        let mut services = self.services.clone();
        if endpoints.is_empty() {
            services.remove(service);
        } else {
            services.insert(service.to_string(), Arc::new(endpoints));
        }
        ConfigSet {
            version: self.version,
            resources: self.resources.clone(),
            services,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use portico_api::Kind;
    use portico_api::pb::{Resource, ResourceKey, resource::Spec};

    use super::*;
    use crate::runtime::tests::cluster;

    fn update(version: i64, full: bool, upserts: Vec<Resource>, removals: &[&str]) -> Update {
        Update {
            version,
            full,
            upserts,
            removals: removals
                .iter()
                .map(|n| ResourceKey::new(Kind::Cluster, *n))
                .collect(),
            ..Default::default()
        }
    }

    fn base() -> ConfigSet {
        ConfigSet::default().with_update(update(
            1,
            true,
            vec![cluster("a", 1), cluster("b", 1), cluster("c", 1)],
            &[],
        ))
    }

    fn ports(config: &ConfigSet) -> Vec<(String, u32)> {
        config
            .resources
            .iter()
            .map(|r| match &r.spec {
                Some(Spec::Cluster(c)) => (r.name.clone(), c.endpoints[0].port),
                _ => unreachable!("only clusters here"),
            })
            .collect()
    }

    #[test]
    fn incremental_update_upserts_and_removes_on_top() {
        let base = base();
        let next = base.with_update(update(
            2,
            false,
            vec![cluster("b", 2), cluster("d", 2)],
            &["c", "absent"],
        ));
        assert_eq!(next.version, 2);
        assert_eq!(
            ports(&next),
            [("a".into(), 1), ("b".into(), 2), ("d".into(), 2)]
        );
        // The base is unchanged, and what the update did not touch is shared with it.
        assert_eq!(ports(&base).len(), 3);
        let shared = |c: &ConfigSet, n| c.resources.get_shared(Kind::Cluster, n).unwrap().clone();
        assert!(Arc::ptr_eq(&shared(&base, "a"), &shared(&next, "a")));
        assert!(!Arc::ptr_eq(&shared(&base, "b"), &shared(&next, "b")));
    }

    #[test]
    fn an_upsert_wins_over_a_removal_of_the_same_key() {
        let next = base().with_update(update(2, false, vec![cluster("a", 3)], &["a"]));
        assert_eq!(ports(&next)[0], ("a".into(), 3));
    }

    #[test]
    fn full_update_replaces_everything() {
        let next = base().with_update(update(5, true, vec![cluster("z", 9)], &[]));
        assert_eq!(next.version, 5);
        assert_eq!(ports(&next), [("z".into(), 9)]);
    }

    #[test]
    fn empty_update_keeps_the_resources_and_moves_the_version() {
        let base = base();
        let next = base.with_update(update(7, false, vec![], &[]));
        assert_eq!(next.version, 7);
        assert_eq!(next.resources, base.resources);
    }
}
