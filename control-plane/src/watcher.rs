//! The store watcher: loads the config into a [`Snapshot`] and keeps it current.
//!
//! It lists the config, then follows a store watch over [`Keys::config_watch_range`]; each
//! watch event (one or more whole store revisions) becomes a new immutable snapshot handed to
//! [`Views::publish`]. Every config change writes its resources and the config-revision key in
//! one transaction, so one store revision carries both the resources and the config revision
//! they belong to. On `Compacted` the watcher re-lists and publishes the fresh list as one
//! snapshot, so nobody sees half a list (kube-rs style resync). While the store is away, the
//! last snapshot keeps being served.
//!
//! A change too large for one transaction is written in several behind one config revision
//! ([`crate::commit`]): its resources arrive before its config revision, while its marker
//! exists. They are carried in the next snapshot built but published only with the config
//! revision that ends the change, and relabelled with it then; a listing taken while a marker
//! exists has the change's partial writes undone from its history parts' `before` values.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use portico_api::Resource;
use portico_api::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use std::collections::{BTreeMap, BTreeSet};

use portico_api::pb::{CanaryPin, HistoryPart, HistoryRecord};

use crate::history;
use crate::keys::{self, Keys};
use crate::metered::MeteredStore;
use crate::metrics::SNAPSHOT_BUILD;
use crate::snapshot::{Snapshot, SnapshotBuilder, Stored};
use crate::store::{Change, KeyValue, Revision, Store, StoreError, WatchEvent};
use crate::views::Views;

/// Reads the config and the config revision consistently: the list is retried until no config
/// change committed between it and the read of the revision key. Returns the snapshot and the
/// store revision it was listed at (where a watch continues).
pub async fn load(store: &dyn Store, keys: &Keys) -> Result<(Snapshot, Revision), StoreError> {
    loop {
        let (mut kvs, list_revision) = store.list(&keys.config_prefix()).await?;
        // The pin changes only with the config revision, read after it.
        let canary = match store.get(&keys.canary_pin()).await? {
            Some(kv) => decode_pin(&kv),
            None => None,
        };
        let (version, changed_at) = match store.get(&keys.config_revision()).await? {
            Some(kv) => (keys::decode_revision(&kv.key, &kv.value)?, kv.mod_revision),
            None => (0, 0),
        };
        if changed_at > list_revision {
            continue;
        }
        if let Some(marker) = kvs.iter().find(|kv| keys.is_staged_change(&kv.key)) {
            undo_staged(store, keys, marker.clone(), &mut kvs).await?;
        }
        // Which config revision last changed each resource, from the history keys: a change
        // writes its record at the same store revision as its resources.
        let changes = history::change_revisions(store, keys).await?;
        let version_at = |revision: Revision| {
            let i = changes.partition_point(|(at, _)| *at <= revision);
            i.checked_sub(1).map_or(0, |i| changes[i].1)
        };
        let mut builder = SnapshotBuilder::default();
        builder.canary = canary;
        for kv in kvs.iter().filter(|kv| !keys.is_staged_change(&kv.key)) {
            let version = version_at(kv.mod_revision);
            put(&mut builder, keys, kv, version);
        }
        return Ok((builder.build(version), list_revision));
    }
}

/// Replaces, in `kvs` (a config listing), what the staged change of `marker` wrote with what
/// its resources were before it, from its history parts: the listing then shows the config of
/// the last complete change. Resources it had not written yet get what they hold already.
async fn undo_staged(
    store: &dyn Store,
    keys: &Keys,
    marker: KeyValue,
    kvs: &mut Vec<KeyValue>,
) -> Result<(), StoreError> {
    let staged = match crate::commit::Marker::decode(&marker) {
        Ok(m) => m.staged,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable staged-change marker; listing as is");
            return Ok(());
        }
    };
    let (parts, _) = store
        .list(&keys.history_parts_prefix(staged.revision))
        .await?;
    let mut before: BTreeMap<String, Option<portico_api::Resource>> = BTreeMap::new();
    for kv in parts {
        match keys::decode::<HistoryPart>(&kv.key, &kv.value) {
            Ok(part) => {
                for delta in part.deltas {
                    if let Some(key) = &delta.key {
                        before.insert(keys.config(key.kind(), &key.name), delta.before);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "skipping an undecodable history part"),
        }
    }
    tracing::info!(
        revision = staged.revision,
        resources = before.len(),
        "a large change is being written; listing the config without it"
    );
    kvs.retain(|kv| !before.contains_key(&kv.key));
    for (key, resource) in before {
        if let Some(resource) = resource {
            kvs.push(KeyValue {
                key,
                value: keys::encode(&resource),
                create_revision: 0,
                mod_revision: 0,
                lease: None,
            });
        }
    }
    Ok(())
}

/// The pin in `kv`; an undecodable one is logged and taken as none.
fn decode_pin(kv: &KeyValue) -> Option<Arc<CanaryPin>> {
    match keys::decode::<CanaryPin>(&kv.key, &kv.value) {
        Ok(pin) => Some(Arc::new(pin)),
        Err(e) => {
            tracing::error!(error = %e, "undecodable canary pin; serving every agent the newest config");
            None
        }
    }
}

/// Publishes `snapshot`, first making sure that, while it carries a canary pin, `views` holds
/// the revision before the rollout for the agents the canary does not pick: the one this
/// replica published, or one rebuilt from the current config and the change's history record.
pub async fn publish(store: &dyn Store, keys: &Keys, views: &Views, snapshot: Arc<Snapshot>) {
    if let Some(pin) = &snapshot.canary
        && views.at(pin.previous).is_none()
    {
        match previous(store, keys, &snapshot, pin).await {
            Ok(previous) => views.keep(Arc::new(previous)),
            // The agents the canary does not pick keep what they run until it is at hand.
            Err(e) => tracing::error!(
                error = %e,
                revision = pin.previous,
                "rebuilding the revision before the canary rollout failed"
            ),
        }
    }
    views.publish(snapshot);
}

/// The config at `pin.previous`: `snapshot` with the canary change's resources set back from
/// its history record. They get a store revision of their own (minus the rollout's revision),
/// so diffs against them resend them whole.
async fn previous(
    store: &dyn Store,
    keys: &Keys,
    snapshot: &Snapshot,
    pin: &CanaryPin,
) -> Result<Snapshot, StoreError> {
    let key = keys.history(pin.revision);
    let kv = store.get(&key).await?.ok_or_else(|| {
        StoreError::Invalid(format!(
            "the history record of revision {} is missing",
            pin.revision
        ))
    })?;
    let record: HistoryRecord =
        keys::decode(&kv.key, &kv.value).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let mut builder = SnapshotBuilder::from_snapshot(snapshot);
    builder.canary = None;
    for delta in &record.deltas {
        let Some(key) = &delta.key else { continue };
        match &delta.before {
            Some(before) => {
                builder.insert(Stored::new(before.clone(), -pin.revision, pin.previous))
            }
            None => builder.remove(key.kind(), &key.name),
        }
    }
    tracing::info!(
        revision = pin.previous,
        "rebuilt the revision before the canary rollout"
    );
    Ok(builder.build(pin.previous))
}

/// Follows the store until `cancel`, publishing every config change to `views`. `from` is the
/// store revision the snapshot already published was listed at.
pub async fn follow(
    store: MeteredStore,
    keys: Keys,
    views: Arc<Views>,
    mut from: Revision,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
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
                        publish(&store, &keys, &views, Arc::new(snapshot)).await;
                        from = revision;
                        backoff.reset();
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
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
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
    let mut watch = store
        .watch_range(keys.config_watch_range(), *from + 1)
        .await?;
    // The newest snapshot built, published or not: config keys written without a config
    // revision are carried in it until the next change publishes them.
    let mut latest = views.current();
    let mut staging = Staging::default();
    while let Some(event) = watch.next().await {
        match event? {
            WatchEvent::Compacted { compact_revision } => {
                tracing::info!(compact_revision, "config watch compacted; re-listing");
                return Ok(Resync::Relist);
            }
            WatchEvent::Changes(changes) => {
                if let Some(last) = changes.last() {
                    *from = (*from).max(last.revision());
                }
                let start = Instant::now();
                let mut builder = SnapshotBuilder::from_snapshot(&latest);
                let Some(version) =
                    apply(&mut builder, keys, &changes, latest.version, &mut staging)
                else {
                    continue;
                };
                let snapshot = Arc::new(builder.build(version));
                metrics::histogram!(SNAPSHOT_BUILD).record(start.elapsed().as_secs_f64());
                if version > latest.version {
                    publish(store, keys, views, snapshot.clone()).await;
                }
                latest = snapshot;
            }
        }
    }
    Ok(Resync::Rewatch)
}

/// What the watch saw of a large change being written: whether its marker exists, and the
/// config keys it wrote so far, to relabel with its config revision when it completes.
#[derive(Default)]
struct Staging {
    marker: bool,
    written: BTreeSet<String>,
}

/// Applies one watch event on top of a snapshot at config revision `version`; returns the
/// config revision reached, or None when the event touched neither the config nor the config
/// revision (e.g. only history records).
fn apply(
    builder: &mut SnapshotBuilder,
    keys: &Keys,
    changes: &[Change],
    mut version: Revision,
    staging: &mut Staging,
) -> Option<Revision> {
    let config_prefix = keys.config_prefix();
    let revision_key = keys.config_revision();
    let pin_key = keys.canary_pin();
    let mut touched = false;
    for group in changes.chunk_by(|a, b| a.revision() == b.revision()) {
        let counter = group.iter().find_map(|change| match change {
            Change::Put(kv) if kv.key == revision_key => Some(kv),
            _ => None,
        });
        let marker = group
            .iter()
            .find(|c| keys.is_staged_change(c.key()))
            .map(|c| matches!(c, Change::Put(_)));
        let config = || {
            group
                .iter()
                .any(|c| c.key().starts_with(&config_prefix) && !keys.is_staged_change(c.key()))
        };
        if marker == Some(true) {
            staging.marker = true;
        }
        match counter.map(|kv| keys::decode_revision(&kv.key, &kv.value)) {
            Some(Ok(counted)) => {
                version = counted;
                touched = true;
            }
            Some(Err(e)) => tracing::warn!(error = %e, "ignoring an unreadable config revision"),
            None if config() && !staging.marker => tracing::warn!(
                store_revision = group[0].revision(),
                "config keys changed without a config revision (not through the Admin API); \
                 they are served with the next config change"
            ),
            None => {}
        }
        for change in group.iter().filter(|c| c.key().starts_with(&config_prefix)) {
            if keys.is_staged_change(change.key()) {
                continue;
            }
            touched = true;
            if staging.marker && counter.is_none() {
                staging.written.insert(change.key().to_string());
            }
            match change {
                Change::Put(kv) => put(builder, keys, kv, version),
                Change::Delete { key, .. } => {
                    if let Some((kind, name)) = keys.parse_config(key) {
                        builder.remove(kind, &name);
                    }
                }
            }
        }
        if let Some(change) = group.iter().find(|c| c.key() == pin_key) {
            touched = true;
            builder.canary = match change {
                Change::Put(kv) => decode_pin(kv),
                Change::Delete { .. } => None,
            };
        }
        if marker == Some(false) {
            // The change completed (with its config revision) or was undone (without): the
            // resources it wrote belong to that revision, or are back as they were.
            let written = std::mem::take(&mut staging.written);
            if counter.is_some() {
                for (kind, name) in written.iter().filter_map(|k| keys.parse_config(k)) {
                    builder.relabel(kind, &name, version);
                }
            }
            staging.marker = false;
        }
    }
    touched.then_some(version)
}

/// Stores one config key changed by config revision `version`; values that do not decode or do
/// not match their key are skipped with a warning rather than taking the control plane down.
fn put(builder: &mut SnapshotBuilder, keys: &Keys, kv: &KeyValue, version: Revision) {
    let Some((kind, name)) = keys.parse_config(&kv.key) else {
        tracing::warn!(key = %kv.key, "ignoring unknown key under the config prefix");
        return;
    };
    match keys::decode::<Resource>(&kv.key, &kv.value) {
        Ok(resource) if resource.kind() == kind && resource.name == name => {
            builder.insert(Stored::new(resource, kv.mod_revision, version));
        }
        Ok(_) => tracing::warn!(key = %kv.key, "ignoring resource that does not match its key"),
        Err(e) => tracing::warn!(key = %kv.key, error = %e, "ignoring undecodable resource"),
    }
}

#[cfg(test)]
mod tests {
    use portico_api::Kind;
    use portico_api::pb::{Cluster, resource::Spec};

    use super::*;

    fn cluster(name: &str, port: u32) -> Resource {
        Resource {
            name: name.into(),
            spec: Some(Spec::Cluster(Cluster {
                endpoints: vec![portico_api::pb::Endpoint {
                    address: "10.0.0.1".into(),
                    port,
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn put_kv(key: String, value: Vec<u8>, revision: Revision) -> Change {
        Change::Put(KeyValue {
            key,
            value,
            create_revision: revision,
            mod_revision: revision,
            lease: None,
        })
    }

    /// The changes of one config change through the Admin API: the resources, the history
    /// record and the config revision, all at store revision `at`.
    fn change(keys: &Keys, at: Revision, version: Revision, puts: &[Resource]) -> Vec<Change> {
        let mut out: Vec<Change> = puts
            .iter()
            .map(|r| put_kv(keys.config(r.kind(), &r.name), keys::encode(r), at))
            .collect();
        out.push(put_kv(keys.history(version), b"record".to_vec(), at));
        out.push(put_kv(
            keys.config_revision(),
            keys::encode_revision(version),
            at,
        ));
        out
    }

    #[test]
    fn an_event_reaches_the_config_revision_of_its_last_change() {
        let keys = Keys::default();
        let mut changes = change(&keys, 40, 3, &[cluster("a", 1)]);
        changes.extend(change(&keys, 43, 4, &[cluster("b", 1)]));
        changes.push(Change::Delete {
            key: keys.config(Kind::Cluster, "a"),
            revision: 43,
        });
        let mut builder = SnapshotBuilder::default();
        assert_eq!(
            apply(&mut builder, &keys, &changes, 2, &mut Staging::default()),
            Some(4)
        );
        let snapshot = builder.build(4);
        let b = snapshot.get(Kind::Cluster, "b").expect("b");
        assert_eq!((b.revision, b.version), (43, 4));
        assert!(snapshot.get(Kind::Cluster, "a").is_none());
    }

    #[test]
    fn each_resource_keeps_the_config_revision_that_changed_it() {
        let keys = Keys::default();
        let mut changes = change(&keys, 40, 3, &[cluster("a", 1)]);
        changes.extend(change(&keys, 41, 4, &[cluster("b", 1)]));
        let mut builder = SnapshotBuilder::default();
        apply(&mut builder, &keys, &changes, 2, &mut Staging::default());
        let snapshot = builder.build(4);
        let version = |name: &str| snapshot.get(Kind::Cluster, name).map(|s| s.version);
        assert_eq!((version("a"), version("b")), (Some(3), Some(4)));
    }

    #[test]
    fn config_keys_without_a_config_revision_do_not_advance_it() {
        let keys = Keys::default();
        let outside = [put_kv(
            keys.config(Kind::Cluster, "a"),
            keys::encode(&cluster("a", 2)),
            50,
        )];
        let mut builder = SnapshotBuilder::default();
        assert_eq!(
            apply(&mut builder, &keys, &outside, 7, &mut Staging::default()),
            Some(7)
        );

        // Only keys the watcher does not read: nothing to build.
        let history = [put_kv(keys.history(9), b"record".to_vec(), 51)];
        assert_eq!(
            apply(&mut builder, &keys, &history, 7, &mut Staging::default()),
            None
        );
    }

    #[test]
    fn a_large_change_is_published_whole_with_its_config_revision() {
        let keys = Keys::default();
        let marker = |at| put_kv(keys.staged_change(), b"marker".to_vec(), at);
        let resource = |name: &str, at| {
            put_kv(
                keys.config(Kind::Cluster, name),
                keys::encode(&cluster(name, 1)),
                at,
            )
        };
        let mut staging = Staging::default();
        let mut builder = SnapshotBuilder::default();
        // Begin, then resources in two transactions: the config revision stays.
        let written = [marker(10), resource("a", 11), resource("b", 12)];
        assert_eq!(
            apply(&mut builder, &keys, &written, 4, &mut staging),
            Some(4)
        );
        let snapshot = builder.build(4);
        assert_eq!(snapshot.get(Kind::Cluster, "a").map(|s| s.version), Some(4));
        // Finish: the record, the config revision and the marker's deletion, together.
        let mut builder = SnapshotBuilder::from_snapshot(&snapshot);
        let mut finish = change(&keys, 13, 5, &[]);
        finish.push(Change::Delete {
            key: keys.staged_change(),
            revision: 13,
        });
        assert_eq!(
            apply(&mut builder, &keys, &finish, 4, &mut staging),
            Some(5)
        );
        let snapshot = builder.build(5);
        for name in ["a", "b"] {
            let stored = snapshot.get(Kind::Cluster, name).expect(name);
            assert_eq!(stored.version, 5, "{name} belongs to the change's revision");
        }
        assert!(!staging.marker && staging.written.is_empty());
    }
}
