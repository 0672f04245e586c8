//! The snapshot watcher over the embedded store: a watch whose history was compacted away
//! re-lists and publishes the whole config at once, at the config revision the store holds.

use std::sync::Arc;
use std::time::Duration;

use portico_api::Kind;
use portico_control_plane::keys::{self, Keys};
use portico_control_plane::metered::MeteredStore;
use portico_control_plane::snapshot::Snapshot;
use portico_control_plane::store::embedded::EmbeddedStore;
use portico_control_plane::store::{Op, Store, Txn, TxnOutcome};
use portico_control_plane::views::Views;
use portico_control_plane::watcher;
use portico_test_support::resources::cluster;
use tokio_util::sync::CancellationToken;

/// Writes cluster `name` as config change `version`, as the Admin API does (resource, history
/// record, config revision), without the compare.
async fn put_cluster(store: &dyn Store, keys: &Keys, name: &str, version: i64) {
    let put = |key: String, value: Vec<u8>| Op::Put {
        key,
        value,
        lease: None,
    };
    let txn = Txn {
        compares: Vec::new(),
        ops: vec![
            put(
                keys.config(Kind::Cluster, name),
                keys::encode(&cluster(name, &[])),
            ),
            put(keys.history(version), Vec::new()),
            put(keys.config_revision(), keys::encode_revision(version)),
        ],
    };
    match store.txn(txn).await.expect("txn") {
        TxnOutcome::Committed(_) => {}
        TxnOutcome::Conflict(_) => panic!("no compares, no conflict"),
    }
}

/// Writes an agent's registry record, which takes a store revision but is no config change;
/// returns that store revision.
async fn register_agent(store: &dyn Store, keys: &Keys, id: &str) -> i64 {
    let txn = Txn {
        compares: Vec::new(),
        ops: vec![Op::Put {
            key: keys.agent(id),
            value: Vec::new(),
            lease: None,
        }],
    };
    match store.txn(txn).await.expect("txn") {
        TxnOutcome::Committed(revision) => revision,
        TxnOutcome::Conflict(_) => panic!("no compares, no conflict"),
    }
}

#[tokio::test]
async fn live_changes_publish_config_revisions_whatever_else_the_store_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
    let keys = Keys::default();
    let (initial, listed_at) = watcher::load(store.as_ref(), &keys).await.expect("load");
    assert_eq!(initial.version, 0);
    let views = Arc::new(Views::new(Arc::new(initial)));
    let cancel = CancellationToken::new();
    let follower = tokio::spawn(watcher::follow(
        MeteredStore::new(store.clone()),
        keys.clone(),
        views.clone(),
        listed_at,
        cancel.clone(),
    ));
    let mut rx = views.subscribe();
    for version in 1..=3 {
        register_agent(store.as_ref(), &keys, &format!("edge-{version}")).await;
        put_cluster(store.as_ref(), &keys, &format!("c{version}"), version).await;
        let shown = tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|s| s.version >= version),
        )
        .await
        .expect("the change is published")
        .expect("views alive")
        .clone();
        assert_eq!(shown.version, version);
        let stored = shown
            .get(Kind::Cluster, &format!("c{version}"))
            .expect("the new cluster");
        assert_eq!(stored.version, version);
    }
    // A fresh load agrees with what the watch built.
    let (reloaded, _) = watcher::load(store.as_ref(), &keys).await.expect("load");
    let versions = |s: &Snapshot| -> Vec<(String, i64)> {
        s.iter()
            .map(|r| (r.resource.name.clone(), r.version))
            .collect()
    };
    assert_eq!(reloaded.version, 3);
    assert_eq!(versions(&reloaded), versions(&views.current()));
    cancel.cancel();
    follower.await.expect("follower stops");
}

#[tokio::test]
async fn a_compacted_watch_relists_and_publishes_the_whole_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let keys = Keys::default();
    put_cluster(&store, &keys, "a", 1).await;
    put_cluster(&store, &keys, "b", 2).await;
    // A registry write after the last change, so the compaction covers every config change.
    let latest = register_agent(&store, &keys, "edge-1").await;
    store.compact(latest).await.expect("compact");

    // A watcher that last saw revision 0 needs history that is gone.
    let views = Arc::new(Views::new(Arc::new(Snapshot::default())));
    let cancel = CancellationToken::new();
    let store: Arc<dyn Store> = Arc::new(store);
    let follower = tokio::spawn(watcher::follow(
        MeteredStore::new(store),
        keys,
        views.clone(),
        0,
        cancel.clone(),
    ));
    let mut rx = views.subscribe();
    let shown = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.version == 2))
        .await
        .expect("the re-listed config is published")
        .expect("views alive")
        .clone();
    let names: Vec<_> = shown
        .iter()
        .map(|s| (s.resource.name.as_str(), s.version))
        .collect();
    assert_eq!(
        names,
        [("a", 1), ("b", 2)],
        "each with the change that wrote it"
    );
    assert!(
        views.at(1).is_none(),
        "the config came as one list, not replayed revision by revision"
    );
    cancel.cancel();
    follower.await.expect("follower stops");
}
