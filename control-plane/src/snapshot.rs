//! The materialized config at one config revision: pure data, built by [`SnapshotBuilder`].
//!
//! A snapshot holds each resource once, as an `Arc<Stored>` shared with every later snapshot
//! and view until the resource changes, so building the next snapshot copies pointers, not
//! resources. It knows nothing of the store or of how it is kept current: the watcher
//! ([`crate::watcher`]) fills builders from the store's watch and publishes the snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use portico_api::pb::CanaryPin;
use portico_api::{Kind, Resource, ResourceKey, reference};

use crate::scope::{self, Selectors};
use crate::store::Revision;

/// One resource as stored, shared (by `Arc`) by every snapshot and view it is part of until it
/// changes.
#[derive(Debug)]
pub struct Stored {
    /// The resource.
    pub resource: Resource,
    /// The store revision that last changed it: two `Stored` of one key with the same revision
    /// hold the same resource, which is what diffs compare. Internal; never shown.
    pub revision: Revision,
    /// The config revision that last changed it: what users see (`portico get`).
    pub version: Revision,
    /// What it refers to, computed once here rather than on every scope walk.
    pub refs: Vec<ResourceKey>,
}

impl Stored {
    /// A resource last changed at store revision `revision`, by config revision `version`.
    pub fn new(resource: Resource, revision: Revision, version: Revision) -> Self {
        let refs = reference::references(&resource)
            .into_iter()
            .map(|r| r.target)
            .collect();
        Stored {
            resource,
            revision,
            version,
            refs,
        }
    }
}

type ByName = BTreeMap<Arc<str>, Arc<Stored>>;

/// The whole config at one config revision. Immutable once built.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The config revision: the number of config changes it includes (0: never changed).
    /// Agents call it their version.
    pub version: Revision,
    /// When this replica published it.
    pub published: Option<Instant>,
    resources: BTreeMap<Kind, ByName>,
    selectors: Arc<Selectors>,
    /// The active canary rollout: agents it does not select are served its previous revision.
    pub canary: Option<Arc<CanaryPin>>,
}

impl Snapshot {
    /// A snapshot at config revision `version` of `resources`.
    pub fn new(version: Revision, resources: impl IntoIterator<Item = Stored>) -> Self {
        let mut builder = SnapshotBuilder::default();
        for stored in resources {
            builder.insert(stored);
        }
        builder.build(version)
    }

    /// The resource of this kind and name.
    pub fn get(&self, kind: Kind, name: &str) -> Option<&Arc<Stored>> {
        self.resources.get(&kind)?.get(name)
    }

    /// Every resource, by kind then name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Stored>> {
        self.resources.values().flat_map(|by_name| by_name.values())
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.resources.values().map(BTreeMap::len).sum()
    }

    /// Whether there are no resources.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store revision that last changed one resource (0: absent).
    pub fn revision_of(&self, key: &ResourceKey) -> Revision {
        self.get(key.kind(), &key.name)
            .map(|s| s.revision)
            .unwrap_or_default()
    }

    /// The listeners' selectors, shared with the previous snapshot when no listener was added,
    /// removed or given another selector.
    pub fn selectors(&self) -> &Arc<Selectors> {
        &self.selectors
    }
}

/// The mutable state a snapshot is built from.
#[derive(Default)]
pub struct SnapshotBuilder {
    resources: BTreeMap<Kind, ByName>,
    /// The selectors to carry over; None once a change touched them.
    selectors: Option<Arc<Selectors>>,
    /// The active canary rollout's pin.
    pub canary: Option<Arc<CanaryPin>>,
}

impl SnapshotBuilder {
    /// Starts from `snapshot`: a copy of its maps (pointers, not resources).
    pub fn from_snapshot(snapshot: &Snapshot) -> Self {
        SnapshotBuilder {
            resources: snapshot.resources.clone(),
            selectors: Some(snapshot.selectors.clone()),
            canary: snapshot.canary.clone(),
        }
    }

    /// Adds or replaces one resource.
    pub fn insert(&mut self, stored: Stored) {
        let kind = stored.resource.kind();
        let by_name = self.resources.entry(kind).or_default();
        let name: Arc<str> = Arc::from(stored.resource.name.as_str());
        let stored = Arc::new(stored);
        let old = by_name.insert(name, stored.clone());
        if kind == Kind::Listener
            && old.is_none_or(|old| {
                scope::targeting(&old.resource) != scope::targeting(&stored.resource)
            })
        {
            self.selectors = None;
        }
    }

    /// Gives the resource of this kind and name, if present, config revision `version`: a
    /// large change's resources arrive before the config revision that ends it.
    pub fn relabel(&mut self, kind: Kind, name: &str, version: Revision) {
        let Some(stored) = self
            .resources
            .get_mut(&kind)
            .and_then(|by_name| by_name.get_mut(name))
        else {
            return;
        };
        if stored.version != version {
            *stored = Arc::new(Stored {
                resource: stored.resource.clone(),
                revision: stored.revision,
                version,
                refs: stored.refs.clone(),
            });
        }
    }

    /// Removes one resource, if present.
    pub fn remove(&mut self, kind: Kind, name: &str) {
        let removed = self
            .resources
            .get_mut(&kind)
            .and_then(|by_name| by_name.remove(name));
        if removed.is_some() && kind == Kind::Listener {
            self.selectors = None;
        }
    }

    /// The snapshot at config revision `version`.
    pub fn build(self, version: Revision) -> Snapshot {
        let selectors = match self.selectors {
            Some(selectors) => selectors,
            None => Arc::new(Selectors::new(
                self.resources
                    .get(&Kind::Listener)
                    .into_iter()
                    .flatten()
                    .map(|(name, stored)| (name, &stored.resource)),
            )),
        };
        Snapshot {
            version,
            published: Some(Instant::now()),
            resources: self.resources,
            selectors,
            canary: self.canary,
        }
    }
}

#[cfg(test)]
mod tests {
    use portico_api::pb::{AgentSelector, Cluster, Listener, resource::Spec};

    use super::*;

    fn listener(name: &str, route_table: &str, regions: &[&str]) -> Resource {
        Resource {
            name: name.into(),
            spec: Some(Spec::Listener(Listener {
                route_table: route_table.into(),
                selector: Some(AgentSelector {
                    regions: regions.iter().map(|r| r.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn api(mut listener: Resource) -> Resource {
        if let Some(Spec::Listener(l)) = &mut listener.spec {
            l.protocol = portico_api::pb::listener::Protocol::Api.into();
        }
        listener
    }

    fn cluster(name: &str) -> Resource {
        Resource {
            name: name.into(),
            spec: Some(Spec::Cluster(Cluster::default())),
            ..Default::default()
        }
    }

    fn at(resource: Resource, version: Revision) -> Stored {
        Stored::new(resource, version, version)
    }

    /// The snapshot after `change` (a put, or a removal of that resource) on top of `before`.
    fn next(before: &Snapshot, change: Resource, delete: bool) -> Snapshot {
        let mut builder = SnapshotBuilder::from_snapshot(before);
        if delete {
            builder.remove(change.kind(), &change.name);
        } else {
            builder.insert(at(change, before.version + 1));
        }
        builder.build(before.version + 1)
    }

    #[test]
    fn selectors_are_shared_until_a_listener_is_added_removed_or_retargeted() {
        let first = Snapshot::new(1, [at(listener("a", "t", &["eu"]), 1), at(cluster("c"), 1)]);
        let cases = [
            ("another cluster", cluster("d"), false, true),
            ("a cluster deleted", cluster("c"), true, true),
            (
                "same selector, other route table",
                listener("a", "u", &["eu"]),
                false,
                true,
            ),
            ("other selector", listener("a", "t", &["us"]), false, false),
            (
                "now an API listener",
                api(listener("a", "t", &["eu"])),
                false,
                false,
            ),
            ("a listener added", listener("b", "t", &[]), false, false),
            (
                "a listener deleted",
                listener("a", "t", &["eu"]),
                true,
                false,
            ),
        ];
        for (what, change, delete, shared) in cases {
            let second = next(&first, change, delete);
            assert_eq!(
                Arc::ptr_eq(first.selectors(), second.selectors()),
                shared,
                "{what}"
            );
        }
    }

    #[test]
    fn unchanged_resources_are_shared_and_keep_their_revision() {
        let first = Snapshot::new(1, [at(cluster("c"), 1), at(cluster("d"), 1)]);
        let second = next(&first, cluster("d"), false);
        let get = |s: &Snapshot, name: &str| s.get(Kind::Cluster, name).cloned().expect(name);
        assert!(Arc::ptr_eq(&get(&first, "c"), &get(&second, "c")));
        assert_eq!(get(&second, "c").revision, 1);
        assert_eq!(get(&second, "d").revision, 2);
        assert_eq!(second.revision_of(&ResourceKey::new(Kind::Cluster, "d")), 2);
    }
}
