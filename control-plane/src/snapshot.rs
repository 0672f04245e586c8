//! The materialized config at one revision, and the watcher that keeps it current.
//!
//! The watcher lists the config prefix, then follows a store watch; each watch event (one or
//! more whole revisions) becomes a new immutable [`Snapshot`] handed to [`Views::publish`].
//! On `Compacted` it re-lists and publishes the fresh list as one snapshot, so nobody sees half
//! a list (kube-rs style resync). While the store is away, the last snapshot keeps being served.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use portico_api::{Kind, Resource, ResourceKey, reference};
use tokio_util::sync::CancellationToken;

use crate::keys::{self, Keys};
use crate::metered::MeteredStore;
use crate::metrics::SNAPSHOT_BUILD;
use crate::scope::{self, Selectors};
use crate::store::{Change, KeyValue, Revision, Store, StoreError, WatchEvent};
use crate::views::Views;

/// One resource as stored, shared (by `Arc`) by every snapshot and view it is part of until it
/// changes.
#[derive(Debug)]
pub struct Stored {
    /// The resource.
    pub resource: Resource,
    /// The store revision that last changed it: two `Stored` of one key with the same revision
    /// hold the same resource, which is what diffs compare.
    pub revision: Revision,
    /// What it refers to, computed once here rather than on every scope walk.
    pub refs: Vec<ResourceKey>,
}

impl Stored {
    /// A stored resource at `revision`.
    pub fn new(resource: Resource, revision: Revision) -> Self {
        let refs = reference::references(&resource)
            .into_iter()
            .map(|r| r.target)
            .collect();
        Stored {
            resource,
            revision,
            refs,
        }
    }
}

type ByName = BTreeMap<Arc<str>, Arc<Stored>>;

/// The whole config at one config revision. Immutable once built.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The config revision: the store revision of the last config change (0: never changed).
    pub version: Revision,
    /// When this replica published it.
    pub published: Option<Instant>,
    resources: BTreeMap<Kind, ByName>,
    selectors: Arc<Selectors>,
}

impl Snapshot {
    /// A snapshot of `resources`, each with the store revision that last changed it.
    pub fn new(
        version: Revision,
        resources: impl IntoIterator<Item = (Resource, Revision)>,
    ) -> Self {
        let mut builder = Builder::default();
        for (resource, revision) in resources {
            builder.insert(Stored::new(resource, revision));
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

    /// The revision that last changed one resource (0: absent).
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

/// Reads the config and the config revision consistently: the list is retried until no config
/// change committed between it and the read of the revision key.
pub async fn load(store: &dyn Store, keys: &Keys) -> Result<(Snapshot, Revision), StoreError> {
    loop {
        let (kvs, list_revision) = store.list(&keys.config_prefix()).await?;
        let version = store
            .get(&keys.config_revision())
            .await?
            .map(|kv| kv.mod_revision)
            .unwrap_or_default();
        if version > list_revision {
            continue;
        }
        let mut builder = Builder::default();
        for kv in kvs {
            builder.put(keys, kv);
        }
        return Ok((builder.build(version), list_revision));
    }
}

/// The mutable state a snapshot is built from.
#[derive(Default)]
struct Builder {
    resources: BTreeMap<Kind, ByName>,
    /// The selectors to carry over; None once a change touched them.
    selectors: Option<Arc<Selectors>>,
}

impl Builder {
    /// Starts from `snapshot`: a copy of its maps (pointers, not resources).
    fn from_snapshot(snapshot: &Snapshot) -> Self {
        Builder {
            resources: snapshot.resources.clone(),
            selectors: Some(snapshot.selectors.clone()),
        }
    }

    /// Stores one key; values that do not decode or do not match their key are skipped with a
    /// warning rather than taking the control plane down.
    fn put(&mut self, keys: &Keys, kv: KeyValue) {
        let Some((kind, name)) = keys.parse_config(&kv.key) else {
            tracing::warn!(key = %kv.key, "ignoring unknown key under the config prefix");
            return;
        };
        match keys::decode::<Resource>(&kv.key, &kv.value) {
            Ok(resource) if resource.kind() == kind && resource.name == name => {
                self.insert(Stored::new(resource, kv.mod_revision));
            }
            Ok(_) => tracing::warn!(key = %kv.key, "ignoring resource that does not match its key"),
            Err(e) => tracing::warn!(key = %kv.key, error = %e, "ignoring undecodable resource"),
        }
    }

    fn insert(&mut self, stored: Stored) {
        let kind = stored.resource.kind();
        let by_name = self.resources.entry(kind).or_default();
        let name: Arc<str> = Arc::from(stored.resource.name.as_str());
        let selector = scope::selector(&stored.resource).cloned();
        let old = by_name.insert(name, Arc::new(stored));
        if kind == Kind::Listener
            && old.is_none_or(|old| scope::selector(&old.resource) != selector.as_ref())
        {
            self.selectors = None;
        }
    }

    fn delete(&mut self, keys: &Keys, key: &str) {
        let Some((kind, name)) = keys.parse_config(key) else {
            return;
        };
        let removed = self
            .resources
            .get_mut(&kind)
            .and_then(|by_name| by_name.remove(name.as_str()));
        if removed.is_some() && kind == Kind::Listener {
            self.selectors = None;
        }
    }

    fn build(self, version: Revision) -> Snapshot {
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
        }
    }
}

/// Follows the store until `cancel`, publishing every config change to `views`. `initial` is
/// the snapshot already published and `from` the store revision it was listed at.
pub async fn follow(
    store: MeteredStore,
    keys: Keys,
    views: Arc<Views>,
    mut from: Revision,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = follow_once(&store, &keys, &views, &mut from) => r,
        };
        match result {
            Ok(Resync::Relist) => {
                let loaded = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = load(&store, &keys) => r,
                };
                match loaded {
                    Ok((snapshot, revision)) => {
                        views.publish(Arc::new(snapshot));
                        from = revision;
                        backoff = Duration::from_millis(100);
                        continue;
                    }
                    Err(e) => tracing::warn!(error = %e, "re-listing the config failed"),
                }
            }
            Ok(Resync::Rewatch) => tracing::warn!("config watch ended; watching again"),
            Err(e) => tracing::warn!(error = %e, "config watch failed; serving the last config"),
        }
        store.mark_unreachable();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

enum Resync {
    Relist,
    Rewatch,
}

async fn follow_once(
    store: &MeteredStore,
    keys: &Keys,
    views: &Views,
    from: &mut Revision,
) -> Result<Resync, StoreError> {
    let mut watch = store.watch(&keys.config_prefix(), *from + 1).await?;
    while let Some(event) = watch.next().await {
        match event? {
            WatchEvent::Compacted { compact_revision } => {
                tracing::info!(compact_revision, "config watch compacted; re-listing");
                return Ok(Resync::Relist);
            }
            WatchEvent::Changes(changes) => {
                let start = Instant::now();
                let current = views.current();
                let mut builder = Builder::from_snapshot(&current);
                let mut version = current.version;
                for change in changes {
                    version = version.max(change.revision());
                    match change {
                        Change::Put(kv) => builder.put(keys, kv),
                        Change::Delete { key, .. } => builder.delete(keys, &key),
                    }
                }
                *from = (*from).max(version);
                let snapshot = builder.build(version);
                metrics::histogram!(SNAPSHOT_BUILD).record(start.elapsed().as_secs_f64());
                views.publish(Arc::new(snapshot));
            }
        }
    }
    Ok(Resync::Rewatch)
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

    fn cluster(name: &str) -> Resource {
        Resource {
            name: name.into(),
            spec: Some(Spec::Cluster(Cluster::default())),
            ..Default::default()
        }
    }

    /// The snapshot after applying `change` (a put, or a delete of that resource's key) to
    /// `before`, as the watcher does.
    fn next(before: &Snapshot, change: Resource, delete: bool) -> Snapshot {
        let keys = Keys::default();
        let key = keys.config(change.kind(), &change.name);
        let mut builder = Builder::from_snapshot(before);
        if delete {
            builder.delete(&keys, &key);
        } else {
            let kv = KeyValue {
                key,
                value: keys::encode(&change),
                create_revision: before.version + 1,
                mod_revision: before.version + 1,
                lease: None,
            };
            builder.put(&keys, kv);
        }
        builder.build(before.version + 1)
    }

    #[test]
    fn selectors_are_shared_until_a_listener_is_added_removed_or_retargeted() {
        let first = Snapshot::new(1, [(listener("a", "t", &["eu"]), 1), (cluster("c"), 1)]);
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
        let first = Snapshot::new(1, [(cluster("c"), 1), (cluster("d"), 1)]);
        let second = next(&first, cluster("d"), false);
        let get = |s: &Snapshot, name: &str| s.get(Kind::Cluster, name).cloned().expect(name);
        assert!(Arc::ptr_eq(&get(&first, "c"), &get(&second, "c")));
        assert_eq!(get(&second, "c").revision, 1);
        assert_eq!(get(&second, "d").revision, 2);
        assert_eq!(second.revision_of(&ResourceKey::new(Kind::Cluster, "d")), 2);
    }
}
