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
use portico_api::{Kind, Resource, ResourceKey, ResourceSet};
use tokio_util::sync::CancellationToken;

use crate::keys::{self, Keys};
use crate::metered::MeteredStore;
use crate::metrics::SNAPSHOT_BUILD;
use crate::store::{Change, KeyValue, Revision, Store, StoreError, WatchEvent};
use crate::views::Views;

/// The whole config at one config revision. Immutable once built.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The config revision: the store revision of the last config change (0: never changed).
    pub version: Revision,
    /// Every resource.
    pub resources: ResourceSet,
    /// The store revision that last changed each resource.
    pub revisions: BTreeMap<(Kind, String), Revision>,
    /// When this replica published it.
    pub published: Option<Instant>,
}

impl Snapshot {
    /// The revision that last changed one resource.
    pub fn revision_of(&self, key: &ResourceKey) -> Revision {
        self.revisions
            .get(&(key.kind(), key.name.clone()))
            .copied()
            .unwrap_or_default()
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
    resources: ResourceSet,
    revisions: BTreeMap<(Kind, String), Revision>,
}

impl Builder {
    fn from_snapshot(snapshot: &Snapshot) -> Self {
        Builder {
            resources: snapshot.resources.clone(),
            revisions: snapshot.revisions.clone(),
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
                self.resources.insert(resource);
                self.revisions.insert((kind, name), kv.mod_revision);
            }
            Ok(_) => tracing::warn!(key = %kv.key, "ignoring resource that does not match its key"),
            Err(e) => tracing::warn!(key = %kv.key, error = %e, "ignoring undecodable resource"),
        }
    }

    fn delete(&mut self, keys: &Keys, key: &str) {
        if let Some((kind, name)) = keys.parse_config(key) {
            self.resources.remove(kind, &name);
            self.revisions.remove(&(kind, name));
        }
    }

    fn build(&self, version: Revision) -> Snapshot {
        Snapshot {
            version,
            resources: self.resources.clone(),
            revisions: self.revisions.clone(),
            published: Some(Instant::now()),
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
