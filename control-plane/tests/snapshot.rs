//! The snapshot watcher over the embedded store: a watch whose history was compacted away
//! re-lists and publishes the whole config at once.

use std::sync::Arc;
use std::time::Duration;

use portico_api::{Kind, Resource, pb::resource::Spec};
use portico_control_plane::keys::{self, Keys};
use portico_control_plane::metered::MeteredStore;
use portico_control_plane::snapshot::{self, Snapshot};
use portico_control_plane::store::embedded::EmbeddedStore;
use portico_control_plane::store::{Op, Store, Txn, TxnOutcome};
use portico_control_plane::views::Views;
use tokio_util::sync::CancellationToken;

async fn put_cluster(store: &dyn Store, keys: &Keys, name: &str) -> i64 {
    let cluster = Resource {
        name: name.into(),
        spec: Some(Spec::Cluster(Default::default())),
        ..Default::default()
    };
    let put = |key: String, value: Vec<u8>| Op::Put {
        key,
        value,
        lease: None,
    };
    let txn = Txn {
        compares: Vec::new(),
        ops: vec![
            put(keys.config(Kind::Cluster, name), keys::encode(&cluster)),
            put(keys.config_revision(), b"1".to_vec()),
        ],
    };
    match store.txn(txn).await.expect("txn") {
        TxnOutcome::Committed(revision) => revision,
        TxnOutcome::Conflict(_) => panic!("no compares, no conflict"),
    }
}

#[tokio::test]
async fn a_compacted_watch_relists_and_publishes_the_whole_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let keys = Keys::default();
    let first = put_cluster(&store, &keys, "a").await;
    let last = put_cluster(&store, &keys, "b").await;
    store.compact(last).await.expect("compact");

    // A watcher that last saw revision 0 needs history that is gone.
    let views = Arc::new(Views::new(Arc::new(Snapshot::default())));
    let cancel = CancellationToken::new();
    let store: Arc<dyn Store> = Arc::new(store);
    let follower = tokio::spawn(snapshot::follow(
        MeteredStore::new(store),
        keys,
        views.clone(),
        0,
        cancel.clone(),
    ));
    let mut rx = views.subscribe();
    let shown = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.version == last))
        .await
        .expect("the re-listed config is published")
        .expect("views alive")
        .clone();
    let names: Vec<_> = shown.iter().map(|s| s.resource.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(
        views.at(first).is_none(),
        "the config came as one list, not replayed revision by revision"
    );
    cancel.cancel();
    follower.await.expect("follower stops");
}
