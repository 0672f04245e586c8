//! The store contract, checked against both implementations: every check below runs once
//! against a real etcd (`etcd::<check>`) and once against the embedded store in a temp dir
//! (`embedded::<check>`). Checks compare revisions relative to each other, never to absolute
//! numbers, and wait for asynchronous effects (lease expiry, watch events) with deadlines.
//! Checks only the embedded store can have (directory lock, reopen) are in `embedded_only`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use portico_control_plane::store::embedded::{EmbeddedOptions, EmbeddedStore};
use portico_control_plane::store::etcd::{EtcdConfig, EtcdStore};
use portico_control_plane::store::{
    Change, Compare, KeyRange, KeyValue, MAX_TXN_BYTES, MAX_TXN_OPS, Op, Revision, Store,
    StoreError, Txn, TxnOutcome, WatchEvent, WatchStream,
};
use portico_integration_tests::etcd::Etcd;
use portico_test_support::wait::eventually;

/// A store under test and what keeps it alive.
struct Subject {
    store: Arc<dyn Store>,
    _etcd: Option<Etcd>,
    _dir: Option<tempfile::TempDir>,
}

async fn etcd_subject() -> Subject {
    let etcd = tokio::task::spawn_blocking(Etcd::start)
        .await
        .expect("starting etcd");
    let store = EtcdStore::connect(&EtcdConfig::new([etcd.endpoint()]))
        .await
        .expect("connecting to etcd");
    Subject {
        store: Arc::new(store),
        _etcd: Some(etcd),
        _dir: None,
    }
}

fn embedded_subject() -> Subject {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("opening the embedded store");
    Subject {
        store: Arc::new(store),
        _etcd: None,
        _dir: Some(dir),
    }
}

/// Generates `etcd::<check>` and `embedded::<check>` for each check.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let subject = super::etcd_subject().await;
                    super::$check(subject.store.clone()).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let subject = super::embedded_subject();
                    super::$check(subject.store.clone()).await;
                }
            )*
        }
    };
}

conformance!(
    get_list_and_revisions,
    list_keys_leaves_values_out,
    deletes_and_empty_transactions_make_no_revision,
    compare_and_swap,
    transactions_are_atomic,
    malformed_transactions_are_invalid,
    watch_replays_then_follows,
    watch_resumes_after_a_dropped_stream,
    watch_range_sees_only_its_keys,
    compaction_is_signalled,
    lease_expiry_deletes_keys,
    lease_keep_alive_keeps_keys,
    lease_revoke_deletes_keys_now,
    unknown_leases_are_reported,
    concurrent_increments_never_lose_an_update,
);

const WAIT: Duration = Duration::from_secs(20);

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
        lease: None,
    }
}

fn delete(key: &str) -> Op {
    Op::Delete { key: key.into() }
}

fn ops(ops: Vec<Op>) -> Txn {
    Txn {
        compares: vec![],
        ops,
    }
}

async fn commit(store: &Arc<dyn Store>, txn: Txn) -> Revision {
    match store.txn(txn).await.expect("txn") {
        TxnOutcome::Committed(rev) => rev,
        TxnOutcome::Conflict(rev) => panic!("unexpected conflict at revision {rev}"),
    }
}

async fn revision(store: &Arc<dyn Store>) -> Revision {
    store.list("/none/").await.expect("list").1
}

async fn value(store: &Arc<dyn Store>, key: &str) -> Option<Vec<u8>> {
    store.get(key).await.expect("get").map(|kv| kv.value)
}

/// The next watch event, failing on an error, the end of the stream, or a timeout.
async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {WAIT:?}"),
    }
}

/// Watch events up to and including revision `last`, flattened. Checks the ordering promise:
/// revisions only grow, and no revision is split across two events.
async fn changes_through(stream: &mut WatchStream, last: Revision) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    while out.last().is_none_or(|c| c.revision() < last) {
        let WatchEvent::Changes(changes) = next_event(stream).await else {
            panic!("unexpected compaction while following");
        };
        assert!(!changes.is_empty(), "a watch sent an empty event");
        let seen = out.last().map_or(0, Change::revision);
        assert!(
            changes[0].revision() > seen,
            "revision {} continues in a later event",
            changes[0].revision()
        );
        assert!(
            changes
                .windows(2)
                .all(|w| w[0].revision() <= w[1].revision()),
            "revisions out of order in {changes:?}"
        );
        out.extend(changes);
    }
    out
}

fn summary(changes: &[Change]) -> Vec<(String, Revision, Option<Vec<u8>>)> {
    changes
        .iter()
        .map(|c| match c {
            Change::Put(kv) => (kv.key.clone(), kv.mod_revision, Some(kv.value.clone())),
            Change::Delete { key, revision } => (key.clone(), *revision, None),
        })
        .collect()
}

fn put_seen(key: &str, rev: Revision, value: &str) -> (String, Revision, Option<Vec<u8>>) {
    (key.into(), rev, Some(value.into()))
}

fn delete_seen(key: &str, rev: Revision) -> (String, Revision, Option<Vec<u8>>) {
    (key.into(), rev, None)
}

async fn get_list_and_revisions(store: Arc<dyn Store>) {
    let (empty, r0) = store.list("/t/").await.expect("list");
    assert!(empty.is_empty());
    assert!(r0 >= 1);

    let r1 = commit(&store, ops(vec![put("/t/b", "1")])).await;
    assert_eq!(
        r1,
        r0 + 1,
        "each committed transaction takes the next revision"
    );
    let r2 = commit(&store, ops(vec![put("/t/a", "1")])).await;
    let r3 = commit(&store, ops(vec![put("/t/b", "2")])).await;
    let r4 = commit(&store, ops(vec![put("/t/a/deep", "x"), put("/u/x", "y")])).await;
    assert_eq!((r2, r3, r4), (r1 + 1, r1 + 2, r1 + 3));

    let b = store.get("/t/b").await.expect("get").expect("/t/b exists");
    assert_eq!(
        b,
        KeyValue {
            key: "/t/b".into(),
            value: b"2".to_vec(),
            create_revision: r1,
            mod_revision: r3,
            lease: None,
        }
    );
    assert_eq!(store.get("/t/missing").await.expect("get"), None);

    let (items, at) = store.list("/t/").await.expect("list");
    let keys: Vec<&str> = items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        ["/t/a", "/t/a/deep", "/t/b"],
        "in key order, prefix only"
    );
    assert_eq!(at, r4);
    let (all, _) = store.list("").await.expect("list everything");
    assert_eq!(all.len(), 4);
}

async fn deletes_and_empty_transactions_make_no_revision(store: Arc<dyn Store>) {
    let r1 = commit(&store, ops(vec![put("/d/k", "v")])).await;
    let r2 = commit(&store, ops(vec![delete("/d/k")])).await;
    assert_eq!(r2, r1 + 1);
    assert_eq!(value(&store, "/d/k").await, None);

    // etcd makes no revision for a transaction that changes nothing, and reports the current.
    let noop = commit(&store, ops(vec![delete("/d/k"), delete("/d/never")])).await;
    assert_eq!(noop, r2);
    assert_eq!(commit(&store, Txn::default()).await, r2);
    assert_eq!(revision(&store).await, r2);
    assert_eq!(commit(&store, ops(vec![put("/d/k", "v")])).await, r2 + 1);
}

async fn compare_and_swap(store: Arc<dyn Store>) {
    let absent = Compare::ModRevision {
        key: "/c/k".into(),
        revision: 0,
    };
    let create = Txn {
        compares: vec![absent.clone()],
        ops: vec![put("/c/k", "first")],
    };
    let r1 = commit(&store, create).await;
    let again = Txn {
        compares: vec![absent],
        ops: vec![put("/c/k", "second")],
    };
    assert_eq!(
        store.txn(again).await.expect("txn"),
        TxnOutcome::Conflict(r1),
        "revision 0 means absent; a conflict reports the current revision"
    );
    assert_eq!(value(&store, "/c/k").await, Some(b"first".to_vec()));

    let cas = |expected: Revision, v: &str| Txn {
        compares: vec![Compare::ModRevision {
            key: "/c/k".into(),
            revision: expected,
        }],
        ops: vec![put("/c/k", v)],
    };
    let r2 = commit(&store, cas(r1, "second")).await;
    assert_eq!(
        store.txn(cas(r1, "stale")).await.expect("txn"),
        TxnOutcome::Conflict(r2)
    );
    assert_eq!(value(&store, "/c/k").await, Some(b"second".to_vec()));

    let exists = |key: &str| Txn {
        compares: vec![Compare::Exists { key: key.into() }],
        ops: vec![put("/c/flag", key)],
    };
    assert_eq!(
        store.txn(exists("/c/none")).await.expect("txn"),
        TxnOutcome::Conflict(r2)
    );
    assert_eq!(commit(&store, exists("/c/k")).await, r2 + 1);
}

async fn transactions_are_atomic(store: Arc<dyn Store>) {
    let r0 = commit(&store, ops(vec![put("/m/c", "old")])).await;
    let mut watch = store.watch("/m/", r0 + 1).await.expect("watch");
    let writes = vec![put("/m/a", "1"), put("/m/b", "1"), delete("/m/c")];

    // One failing compare among holding ones: nothing is written.
    let failing = Txn {
        compares: vec![
            Compare::ModRevision {
                key: "/m/a".into(),
                revision: 0,
            },
            Compare::Exists {
                key: "/m/absent".into(),
            },
        ],
        ops: writes.clone(),
    };
    assert_eq!(
        store.txn(failing).await.expect("txn"),
        TxnOutcome::Conflict(r0)
    );
    assert_eq!(value(&store, "/m/a").await, None);
    assert_eq!(value(&store, "/m/c").await, Some(b"old".to_vec()));

    let holding = Txn {
        compares: vec![Compare::ModRevision {
            key: "/m/c".into(),
            revision: r0,
        }],
        ops: writes,
    };
    let rev = commit(&store, holding).await;
    assert_eq!(rev, r0 + 1);
    let (items, _) = store.list("/m/").await.expect("list");
    assert!(items.iter().all(|kv| kv.mod_revision == rev), "{items:?}");

    // The whole transaction arrives in one event.
    let WatchEvent::Changes(changes) = next_event(&mut watch).await else {
        panic!("unexpected compaction");
    };
    assert_eq!(
        summary(&changes),
        [
            put_seen("/m/a", rev, "1"),
            put_seen("/m/b", rev, "1"),
            delete_seen("/m/c", rev)
        ]
    );
}

async fn malformed_transactions_are_invalid(store: Arc<dyn Store>) {
    let too_many = (0..=MAX_TXN_OPS)
        .map(|i| put(&format!("/x/{i}"), "v"))
        .collect();
    // Two values of 700 KiB: below etcd's own request limit but above the contract's, which
    // both stores enforce alike.
    let large = "v".repeat(700 * 1024);
    let too_large = ops(vec![put("/x/a", &large), put("/x/b", &large)]);
    for txn in [
        ops(vec![put("/x/k", "1"), put("/x/k", "2")]),
        ops(vec![put("/x/k", "1"), delete("/x/k")]),
        ops(too_many),
        too_large,
    ] {
        match store.txn(txn).await {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
    let (written, _) = store.list("/x/").await.expect("list");
    assert!(written.is_empty(), "{written:?}");
    let at_limit = (0..MAX_TXN_OPS)
        .map(|i| put(&format!("/x/{i}"), "v"))
        .collect();
    commit(&store, ops(at_limit)).await;
    let large_at_limit = "v".repeat(MAX_TXN_BYTES - 10);
    commit(&store, ops(vec![put("/x/big", &large_at_limit)])).await;
}

async fn list_keys_leaves_values_out(store: Arc<dyn Store>) {
    commit(&store, ops(vec![put("/k/a", "1"), put("/k/b", "2")])).await;
    commit(&store, ops(vec![put("/k/b", "3"), put("/kx", "4")])).await;
    let (full, _) = store.list("/k/").await.expect("list");
    let (keys, at) = store.list_keys("/k/").await.expect("list keys");
    assert_eq!(at, revision(&store).await);
    let without_values: Vec<KeyValue> = full
        .into_iter()
        .map(|kv| KeyValue {
            value: Vec::new(),
            ..kv
        })
        .collect();
    assert_eq!(keys, without_values);
    assert_eq!(keys.len(), 2);
}

async fn watch_range_sees_only_its_keys(store: Arc<dyn Store>) {
    let r0 = revision(&store).await;
    let range = KeyRange::Span {
        start: "/g/b".into(),
        end: "/g/d".into(),
    };
    let mut watch = store.watch_range(range, r0 + 1).await.expect("watch");
    let r1 = commit(
        &store,
        ops(vec![
            put("/g/a", "1"),
            put("/g/b", "1"),
            put("/g/c/x", "1"),
            put("/g/d", "1"),
        ]),
    )
    .await;
    // Only keys outside the range: the watch sees nothing of this revision.
    commit(&store, ops(vec![put("/g/e", "2")])).await;
    let r3 = commit(&store, ops(vec![put("/g/d", "3"), delete("/g/b")])).await;
    let seen = changes_through(&mut watch, r3).await;
    assert_eq!(
        summary(&seen),
        [
            put_seen("/g/b", r1, "1"),
            put_seen("/g/c/x", r1, "1"),
            delete_seen("/g/b", r3)
        ]
    );
}

async fn watch_replays_then_follows(store: Arc<dyn Store>) {
    let r1 = commit(&store, ops(vec![put("/w/a", "1")])).await;
    commit(&store, ops(vec![put("/other", "x")])).await;
    let r3 = commit(&store, ops(vec![put("/w/b", "1"), delete("/w/a")])).await;

    match store.watch("/w/", 0).await {
        Err(StoreError::Invalid(_)) => {}
        Err(e) => panic!("watch from revision 0: expected Invalid, got {e}"),
        Ok(_) => panic!("watch from revision 0 was accepted"),
    }
    let mut watch = store.watch("/w/", r1).await.expect("watch");
    let replayed = changes_through(&mut watch, r3).await;
    assert_eq!(
        summary(&replayed),
        [
            put_seen("/w/a", r1, "1"),
            put_seen("/w/b", r3, "1"),
            delete_seen("/w/a", r3)
        ]
    );

    let r4 = commit(&store, ops(vec![put("/w/c", "1")])).await;
    commit(&store, ops(vec![put("/other", "y")])).await;
    let r6 = commit(&store, ops(vec![put("/w/c", "2")])).await;
    let live = changes_through(&mut watch, r6).await;
    assert_eq!(
        summary(&live),
        [put_seen("/w/c", r4, "1"), put_seen("/w/c", r6, "2")]
    );
    let Change::Put(kv) = &live[1] else {
        panic!("expected a put");
    };
    assert_eq!(kv.create_revision, r4);
}

async fn watch_resumes_after_a_dropped_stream(store: Arc<dyn Store>) {
    let first = revision(&store).await + 1;
    let mut watch = store.watch("/r/", first).await.expect("watch");
    let mut seen = Vec::new();
    for i in 0..3 {
        let rev = commit(&store, ops(vec![put(&format!("/r/{i}"), "v")])).await;
        seen.extend(changes_through(&mut watch, rev).await);
    }
    drop(watch);

    let mut expected_new = Vec::new();
    for i in 3..6 {
        let rev = commit(&store, ops(vec![put(&format!("/r/{i}"), "v")])).await;
        expected_new.push(put_seen(&format!("/r/{i}"), rev, "v"));
    }
    let last_seen = seen.last().map_or(0, Change::revision);
    let mut resumed = store.watch("/r/", last_seen + 1).await.expect("watch");
    let last = expected_new.last().map_or(0, |e| e.1);
    let new = changes_through(&mut resumed, last).await;
    assert_eq!(summary(&new), expected_new, "no gap and no duplicate");
}

async fn compaction_is_signalled(store: Arc<dyn Store>) {
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(commit(&store, ops(vec![put(&format!("/h/{i}"), "v")])).await);
    }
    store.compact(revs[3]).await.expect("compact");
    store
        .compact(revs[3])
        .await
        .expect("compacting twice is a no-op");
    match store.compact(revs[4] + 100).await {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("compacting a future revision: expected Invalid, got {other:?}"),
    }

    let mut old = store.watch("/h/", revs[1]).await.expect("watch");
    assert_eq!(
        next_event(&mut old).await,
        WatchEvent::Compacted {
            compact_revision: revs[3]
        }
    );
    let end = tokio::time::timeout(WAIT, old.next()).await;
    assert!(
        matches!(end, Ok(None)),
        "nothing follows Compacted: {end:?}"
    );

    // History from the compaction revision on is still there.
    let mut kept = store.watch("/h/", revs[3]).await.expect("watch");
    let changes = changes_through(&mut kept, revs[4]).await;
    assert_eq!(
        summary(&changes),
        [
            put_seen("/h/3", revs[3], "v"),
            put_seen("/h/4", revs[4], "v")
        ]
    );
}

fn leased(key: &str, lease: i64) -> Op {
    Op::Put {
        key: key.into(),
        value: b"v".to_vec(),
        lease: Some(lease),
    }
}

async fn grant(store: &Arc<dyn Store>, ttl: Duration) -> i64 {
    store.lease_grant(ttl).await.expect("lease grant")
}

async fn lease_expiry_deletes_keys(store: Arc<dyn Store>) {
    let lease = grant(&store, Duration::from_secs(1)).await;
    let rev = commit(
        &store,
        ops(vec![
            leased("/l/a", lease),
            leased("/l/b", lease),
            put("/l/plain", "v"),
        ]),
    )
    .await;
    let a = store.get("/l/a").await.expect("get").expect("/l/a exists");
    assert_eq!(a.lease, Some(lease));
    let mut watch = store.watch("/l/", rev + 1).await.expect("watch");

    eventually("leased keys to expire", WAIT, || {
        let store = store.clone();
        async move { value(&store, "/l/a").await.is_none().then_some(()) }
    })
    .await;
    assert_eq!(value(&store, "/l/b").await, None);
    assert_eq!(value(&store, "/l/plain").await, Some(b"v".to_vec()));

    let WatchEvent::Changes(changes) = next_event(&mut watch).await else {
        panic!("unexpected compaction");
    };
    let deleted: BTreeSet<&str> = changes
        .iter()
        .map(|c| match c {
            Change::Delete { key, .. } => key.as_str(),
            Change::Put(kv) => panic!("unexpected put of {}", kv.key),
        })
        .collect();
    assert_eq!(deleted, BTreeSet::from(["/l/a", "/l/b"]));
    assert!(
        changes
            .iter()
            .all(|c| c.revision() == changes[0].revision()),
        "one expiry is one revision: {changes:?}"
    );

    match store.lease_keep_alive(lease).await {
        Err(StoreError::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("keep-alive of an expired lease: {other:?}"),
    }
}

async fn lease_keep_alive_keeps_keys(store: Arc<dyn Store>) {
    let ttl = Duration::from_secs(2);
    let lease = grant(&store, ttl).await;
    commit(&store, ops(vec![leased("/k/a", lease)])).await;
    // Refresh for well over the TTL (etcd may round the TTL up), checking the key each time.
    let until = Instant::now() + ttl * 3;
    while Instant::now() < until {
        store.lease_keep_alive(lease).await.expect("keep-alive");
        assert!(
            value(&store, "/k/a").await.is_some(),
            "a kept lease expired"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    store.lease_revoke(lease).await.expect("revoke");
    assert_eq!(value(&store, "/k/a").await, None);
}

async fn lease_revoke_deletes_keys_now(store: Arc<dyn Store>) {
    let lease = grant(&store, Duration::from_secs(60)).await;
    let rev = commit(
        &store,
        ops(vec![leased("/v/a", lease), leased("/v/b", lease)]),
    )
    .await;
    // Re-putting a key without the lease detaches it.
    commit(&store, ops(vec![put("/v/b", "mine")])).await;
    let mut watch = store.watch("/v/", rev + 2).await.expect("watch");

    store.lease_revoke(lease).await.expect("revoke");
    assert_eq!(
        value(&store, "/v/a").await,
        None,
        "gone when revoke returns"
    );
    assert_eq!(value(&store, "/v/b").await, Some(b"mine".to_vec()));
    let changes = changes_through(&mut watch, rev + 2).await;
    assert_eq!(summary(&changes), [delete_seen("/v/a", rev + 2)]);
    match store.lease_revoke(lease).await {
        Err(StoreError::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("revoking twice: {other:?}"),
    }
}

async fn unknown_leases_are_reported(store: Arc<dyn Store>) {
    let unknown = 424_242;
    let results = [
        store.txn(ops(vec![leased("/n/a", unknown)])).await.err(),
        store.lease_keep_alive(unknown).await.err(),
        store.lease_revoke(unknown).await.err(),
    ];
    for result in results {
        match result {
            Some(StoreError::LeaseNotFound(id)) => assert_eq!(id, unknown),
            other => panic!("expected LeaseNotFound, got {other:?}"),
        }
    }
    assert_eq!(value(&store, "/n/a").await, None);
}

async fn concurrent_increments_never_lose_an_update(store: Arc<dyn Store>) {
    const TASKS: usize = 10;
    const EACH: usize = 100;
    let key = "/counter";
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut revisions = Vec::with_capacity(EACH);
                for _ in 0..EACH {
                    revisions.push(increment(&store, key).await);
                }
                revisions
            })
        })
        .collect();
    let mut revisions = BTreeSet::new();
    for task in tasks {
        revisions.extend(task.await.expect("increment task"));
    }
    assert_eq!(
        revisions.len(),
        TASKS * EACH,
        "every increment its own revision"
    );
    let final_value = value(&store, key).await.expect("counter exists");
    assert_eq!(
        String::from_utf8_lossy(&final_value),
        (TASKS * EACH).to_string()
    );
}

/// Read, add one, compare-and-swap; retried on conflict. Returns the committed revision.
async fn increment(store: &Arc<dyn Store>, key: &str) -> Revision {
    for _ in 0..100_000 {
        let current = store.get(key).await.expect("get");
        let (n, rev) = current.map_or((0, 0), |kv| {
            let n: u64 = String::from_utf8_lossy(&kv.value)
                .parse()
                .expect("counter is a number");
            (n, kv.mod_revision)
        });
        let txn = Txn {
            compares: vec![Compare::ModRevision {
                key: key.into(),
                revision: rev,
            }],
            ops: vec![put(key, &(n + 1).to_string())],
        };
        if let TxnOutcome::Committed(rev) = store.txn(txn).await.expect("txn") {
            return rev;
        }
    }
    panic!("an increment never won its compare");
}

/// Checks only the embedded store can have.
mod embedded_only {
    use super::*;

    #[tokio::test]
    async fn a_second_opener_gets_locked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = EmbeddedStore::open(dir.path()).expect("open");
        match EmbeddedStore::open(dir.path()) {
            Err(StoreError::Locked { path }) => {
                assert!(path.contains(&*dir.path().to_string_lossy()), "{path}")
            }
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("a second open of a held directory succeeded"),
        }
        let first: Arc<dyn Store> = Arc::new(first);
        let rev = commit(&first, ops(vec![put("/k", "v")])).await;
        drop(first);

        let reopened: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path()).expect("reopen after close"));
        assert_eq!(value(&reopened, "/k").await, Some(b"v".to_vec()));
        assert_eq!(revision(&reopened).await, rev);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_the_store_ends_watches_and_frees_the_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
        let rev = commit(&store, ops(vec![put("/e/a", "1")])).await;
        let mut watch = store.watch("/e/", rev).await.expect("watch");
        changes_through(&mut watch, rev).await;
        drop(store);

        let end = tokio::time::timeout(WAIT, watch.next()).await;
        match end {
            Ok(Some(Err(e))) => assert!(e.is_retryable(), "{e:?}"),
            other => panic!("expected the watch to fail, got {other:?}"),
        }
        // The open watch did not keep the directory locked.
        EmbeddedStore::open(dir.path()).expect("reopen");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopening_keeps_history_and_leases() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
        let lease = grant(&store, Duration::from_secs(60)).await;
        let r1 = commit(&store, ops(vec![put("/p/a", "1")])).await;
        let r2 = commit(&store, ops(vec![leased("/p/b", lease)])).await;
        drop(store);

        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("reopen"));
        assert_eq!(revision(&store).await, r2);
        let mut watch = store.watch("/p/", r1).await.expect("watch");
        let replayed = changes_through(&mut watch, r2).await;
        assert_eq!(
            summary(&replayed),
            [put_seen("/p/a", r1, "1"), put_seen("/p/b", r2, "v")]
        );
        store.lease_keep_alive(lease).await.expect("lease survives");
        let next = grant(&store, Duration::from_secs(60)).await;
        assert_ne!(next, lease, "lease ids are not reused");
        store.lease_revoke(lease).await.expect("revoke");
        assert_eq!(
            summary(&changes_through(&mut watch, r2 + 1).await),
            [delete_seen("/p/b", r2 + 1)]
        );
    }

    /// A store keeping only `history` revisions, with a tiny live-event buffer.
    fn short_history_store(dir: &tempfile::TempDir, history: i64) -> Arc<dyn Store> {
        let options = EmbeddedOptions {
            history,
            watch_buffer: 4,
            ..EmbeddedOptions::default()
        };
        Arc::new(EmbeddedStore::open_with(dir.path(), options).expect("open"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_beyond_retention_is_compacted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = short_history_store(&dir, 5);
        let first = revision(&store).await + 1;
        let mut revs = Vec::new();
        for i in 0..10 {
            revs.push(commit(&store, ops(vec![put(&format!("/q/{i}"), "v")])).await);
        }
        let mut old = store.watch("/q/", first).await.expect("watch");
        assert_eq!(
            next_event(&mut old).await,
            WatchEvent::Compacted {
                compact_revision: revs[9] - 4
            }
        );
        let mut recent = store.watch("/q/", revs[9] - 4).await.expect("watch");
        assert_eq!(changes_through(&mut recent, revs[9]).await.len(), 5);
    }

    /// A watcher that stops reading while many revisions commit gets `Compacted` once its
    /// next revision has left the log, instead of buffering without bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_watcher_is_compacted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = short_history_store(&dir, 20);
        let first = revision(&store).await + 1;
        let mut watch = store.watch("/s/", first).await.expect("watch");
        for i in 0..200 {
            commit(&store, ops(vec![put(&format!("/s/{i}"), "v")])).await;
        }
        // What the watch queued before it fell behind arrives first, in order; then Compacted.
        let mut next = first;
        loop {
            match next_event(&mut watch).await {
                WatchEvent::Changes(changes) => {
                    for c in changes {
                        assert_eq!(c.revision(), next, "no gaps before the compaction");
                        next += 1;
                    }
                }
                WatchEvent::Compacted { compact_revision } => {
                    assert!(compact_revision > next, "compacted only when behind");
                    break;
                }
            }
        }
        assert!(next < first + 200, "the slow watcher was not cut off");
    }
}
