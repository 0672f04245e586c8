//! Changes larger than one store transaction (etcd allows 128 ops and 1.5 MiB per request by
//! default): hundreds of resources and configs over 4 MB are applied, listed, diffed, pruned
//! and rolled back, on a real etcd, behind one config revision that agents and readers see
//! whole or not at all; and what the control plane bounds (label values, history messages,
//! one resource, one change) is refused with its field path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use portico_api::Resource;
use portico_api::pb::{
    ApplyRequest, HistoryPart, HistoryRecord, ListRequest, ResourceDelta, StagedChange,
};
use portico_control_plane::keys::{self, Keys};
use portico_control_plane::registry::timestamp;
use portico_control_plane::store::etcd::{EtcdConfig, EtcdStore};
use portico_control_plane::store::{Op, Store, Txn, TxnOutcome};
use portico_integration_tests::cli::Files;
use portico_integration_tests::cp::{ControlPlane, StoreSpec, list};
use portico_integration_tests::etcd::Etcd;
use portico_integration_tests::scripted_agent::{ScriptedAgent, node};
use portico_test_support::net::{free_port, localhost};
use portico_test_support::resources::{
    Edit, cluster, listener, prefix, route, route_table, to, vhost,
};
use tonic::Code;

const PREFIX: &str = "/large";

fn on(etcd: &Etcd) -> StoreSpec {
    StoreSpec::Etcd {
        endpoint: etcd.endpoint(),
        prefix: PREFIX.into(),
    }
}

/// `n` clusters `c0000`, `c0001`, …
fn clusters(n: usize) -> Vec<Resource> {
    (0..n)
        .map(|i| cluster(&format!("c{i:04}"), &[localhost(9000)]))
        .collect()
}

/// A listener on a free port and route table `main` with `routes` prefix routes of about 100
/// bytes each to cluster `app`, and that cluster: a config of about `routes` × 100 bytes.
fn big_config(tables: usize, routes: usize) -> Vec<Resource> {
    let mut config = vec![
        listener("web", free_port(), "t000"),
        cluster("app", &[localhost(9000)]),
    ];
    for t in 0..tables {
        let routes = (0..routes)
            .map(|i| {
                route(
                    &format!("r{i}"),
                    prefix(&format!("/t{t:03}/route-{i:05}/{}", "p".repeat(60))),
                    to("app"),
                )
            })
            .collect();
        config.push(route_table(
            &format!("t{t:03}"),
            vec![vhost("", &[&format!("t{t}.example.com")], routes)],
        ));
    }
    config
}

/// Every resource the Admin API lists, a page at a time; the pages' revisions.
async fn list_pages(cp: &ControlPlane) -> (usize, Vec<i64>) {
    let mut admin = cp.admin().await;
    let (mut count, mut revisions, mut token) = (0, Vec::new(), String::new());
    loop {
        let page = admin
            .list(ListRequest {
                page_size: 100,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        count += page.resources.len();
        revisions.push(page.revision);
        if page.next_page_token.is_empty() {
            return (count, revisions);
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_resources_apply_and_roll_back_on_etcd_in_one_revision() {
    let etcd = Etcd::start();
    let cp = ControlPlane::start(on(&etcd), "cp-1");
    let files = Files::new();
    let mut agent = ScriptedAgent::connect(&cp.endpoint(), node("big-1", "eu", "eu-1"), 0)
        .await
        .unwrap();
    let small = files.write_yaml("small.yaml", &clusters(3));
    let v1 = cp
        .portico(&["-o", "json", "apply", "-f", &small])
        .ok()
        .json()["revision"]
        .as_i64()
        .unwrap();

    // Readers never see part of the large change.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let mut admin = cp.admin().await;
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let listed = list(&mut admin).await;
                seen.insert((listed.revision, listed.resources.len()));
            }
            seen
        })
    };
    let large = files.write_yaml("large.yaml", &clusters(300));
    let dry = cp
        .portico(&["-o", "json", "apply", "--dry-run", "-f", &large])
        .ok()
        .json();
    assert_eq!(dry["revision"], v1, "a dry run writes nothing: {dry}");
    let applied = cp
        .portico(&["-o", "json", "apply", "-f", &large])
        .ok()
        .json();
    let v2 = applied["revision"].as_i64().unwrap();
    assert_eq!(v2, v1 + 1, "one revision for the whole change: {applied}");
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.await.unwrap();
    for (revision, count) in &seen {
        assert!(
            (*revision == v1 && *count == 3) || (*revision == v2 && *count == 300),
            "a reader saw part of the change: {seen:?}"
        );
    }

    // Agents get it as one update.
    let mut update = agent.expect_update().await;
    while update.version < v2 {
        agent.ack(&update);
        update = agent.expect_update().await;
    }
    assert_eq!(update.version, v2);
    agent.ack(&update);
    assert_eq!(list(&mut cp.admin().await).await.resources.len(), 300);
    let history = cp.portico(&["-o", "json", "history"]).ok().json();
    assert_eq!(history["entries"][0]["created"], 297, "{history}");

    // Its rollback, and the rollback of that: both as large.
    let back = cp
        .portico(&["-o", "json", "rollback", &v1.to_string()])
        .ok()
        .json();
    assert_eq!(back["revision"], v2 + 1, "{back}");
    assert_eq!(list(&mut cp.admin().await).await.resources.len(), 3);
    let again = cp
        .portico(&["-o", "json", "rollback", &v2.to_string()])
        .ok()
        .json();
    assert_eq!(again["revision"], v2 + 2, "{again}");
    assert_eq!(list(&mut cp.admin().await).await.resources.len(), 300);

    // A restarted control plane reads the large change back with its revision.
    let mut cp = cp;
    cp.restart();
    let stored = list(&mut cp.admin().await).await;
    assert_eq!(stored.resources.len(), 300);
    let c0 = stored
        .resources
        .iter()
        .find(|s| s.resource.as_ref().is_some_and(|r| r.name == "c0000"))
        .unwrap();
    assert_eq!(c0.revision, v1, "c0000 was last changed by revision {v1}");
    let c9 = stored
        .resources
        .iter()
        .find(|s| s.resource.as_ref().is_some_and(|r| r.name == "c0299"))
        .unwrap();
    assert_eq!(c9.revision, v2 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_over_4_mb_applies_lists_diffs_prunes_and_shows_history() {
    let etcd = Etcd::start();
    let cp = ControlPlane::start(on(&etcd), "cp-1");
    let files = Files::new();
    // 45 route tables of 1,000 routes of about 100 bytes: over 4 MiB. JSON, which a debug
    // build reads several times faster than YAML.
    let config = big_config(45, 1000);
    let bytes: usize = config.iter().map(prost::Message::encoded_len).sum();
    assert!(bytes > 4 * 1024 * 1024, "{bytes} bytes");
    let path = files.write("big.json", &portico_api::file::to_json(&config).unwrap());
    let started = std::time::Instant::now();
    cp.portico(&["apply", "-f", &path, "-m", "five megabytes"])
        .ok();
    eprintln!("applying {bytes} bytes took {:?}", started.elapsed());

    let all = cp.portico(&["-o", "json", "get", "all"]).ok().json();
    assert_eq!(all.as_array().unwrap().len(), 47);
    let tables = cp.portico(&["get", "routetables"]).ok();
    assert_eq!(
        tables
            .stdout
            .lines()
            .filter(|l| l.starts_with("t0"))
            .count(),
        45,
        "{tables:#?}"
    );
    let diff = cp.portico(&["diff", "-f", &path]).ok();
    assert!(diff.stderr.contains("no changes"), "{diff:#?}");
    let pruned = cp
        .portico(&["-o", "json", "apply", "--prune", "-f", &path])
        .ok()
        .json();
    assert_eq!(pruned["noop"], true, "{pruned}");
    let history = cp.portico(&["-o", "json", "history"]).ok().json();
    assert_eq!(history["entries"][0]["message"], "five megabytes");
    assert_eq!(history["entries"][0]["created"], 47);

    // The Admin API answers a listing this large only a page at a time.
    let unpaged = cp
        .admin()
        .await
        .list(ListRequest::default())
        .await
        .expect_err("too large for one answer");
    assert_eq!(unpaged.code(), Code::FailedPrecondition, "{unpaged}");
    let (count, revisions) = list_pages(&cp).await;
    assert_eq!(count, 47);
    assert!(revisions.windows(2).all(|w| w[0] == w[1]), "{revisions:?}");
}

#[tokio::test]
async fn sizes_are_bounded_at_validation_with_their_field_path() {
    let cp = ControlPlane::embedded();
    let files = Files::new();
    let labelled = cluster("app", &[localhost(9000)]).with(|_: &mut portico_api::pb::Cluster| {});
    let mut labelled = labelled;
    labelled
        .labels
        .insert("notes".into(), "x".repeat(3 * 1024 * 1024));
    let path = files.write_yaml("labels.yaml", &[labelled]);
    let refused = cp.portico(&["apply", "-f", &path]).expect(4);
    assert!(
        refused.stderr.contains(
            "Cluster/app: labels[\"notes\"]: the value is 3145728 bytes long; the limit is 256"
        ),
        "{refused:#?}"
    );

    let one = big_config(1, 6000);
    let path = files.write_yaml("one.yaml", &one);
    let refused = cp.portico(&["apply", "--dry-run", "-f", &path]).expect(4);
    assert!(
        refused.stderr.contains("RouteTable/t000: the resource is")
            && refused.stderr.contains("the limit is 512 KiB"),
        "{refused:#?}"
    );

    let small = files.write_yaml("small.yaml", &clusters(1));
    // As long as a command-line argument may be.
    let long = "m".repeat(100_000);
    let refused = cp.portico(&["apply", "-f", &small, "-m", &long]).expect(4);
    assert!(
        refused
            .stderr
            .contains("the message is 100000 bytes long; the limit is 1024"),
        "{}",
        refused.stderr
    );
    // The control plane bounds it too, whoever calls.
    let message = "m".repeat(2_500_000);
    let status = cp
        .admin()
        .await
        .apply(ApplyRequest {
            resources: clusters(1),
            message,
            ..Default::default()
        })
        .await
        .expect_err("too long a message");
    assert_eq!(status.code(), Code::InvalidArgument);
    let history = cp.portico(&["-o", "json", "history"]).ok().json();
    assert_eq!(history["entries"], serde_json::json!([]), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_change_left_half_written_is_never_served_and_is_undone() {
    let etcd = Etcd::start();
    let mut cp = ControlPlane::start(on(&etcd), "cp-1");
    cp.apply(clusters(2)).await;
    cp.kill();

    // What a control plane that died while writing a large change leaves: the marker, the
    // history parts, and some of the resources, without the config revision.
    let store = EtcdStore::connect(&EtcdConfig::new(vec![etcd.endpoint()]))
        .await
        .unwrap();
    let keys = Keys::new(PREFIX);
    let deltas: Vec<ResourceDelta> = clusters(200)
        .into_iter()
        .skip(2)
        .map(|r| ResourceDelta {
            key: Some(r.key()),
            before: None,
            after: Some(r),
            ..Default::default()
        })
        .collect();
    let marker = StagedChange {
        revision: 2,
        parts: 1,
        replica: "dead".into(),
        heartbeat: Some(timestamp(SystemTime::now() - Duration::from_secs(3600))),
    };
    let mut ops = vec![
        put(keys.staged_change(), keys::encode(&marker)),
        put(
            keys.history_part(2, 0),
            keys::encode(&HistoryPart {
                deltas: deltas.clone(),
            }),
        ),
    ];
    let written = &deltas[..100];
    ops.extend(written.iter().map(|d| {
        let key = d.key.as_ref().unwrap();
        put(
            keys.config(key.kind(), &key.name),
            keys::encode(d.after.as_ref().unwrap()),
        )
    }));
    for chunk in ops.chunks(100) {
        let txn = Txn {
            compares: Vec::new(),
            ops: chunk.to_vec(),
        };
        assert!(matches!(
            store.txn(txn).await.unwrap(),
            TxnOutcome::Committed(_)
        ));
    }

    // A control plane starting now serves the config without the partial writes.
    cp.restart();
    assert_eq!(list(&mut cp.admin().await).await.resources.len(), 2);
    // The next change undoes what was left, then commits as revision 2.
    let next = cp.apply(vec![cluster("next", &[localhost(9000)])]).await;
    assert_eq!(next.revision, 2);
    let listed = list(&mut cp.admin().await).await;
    let names: Vec<_> = listed
        .resources
        .iter()
        .filter_map(|s| s.resource.as_ref().map(|r| r.name.clone()))
        .collect();
    assert_eq!(names, ["c0000", "c0001", "next"]);
    assert!(store.get(&keys.staged_change()).await.unwrap().is_none());
    let (parts, _) = store.list(&keys.history_parts_prefix(2)).await.unwrap();
    assert!(parts.is_empty(), "the parts are gone with it");
    let record = store.get(&keys.history(2)).await.unwrap().unwrap();
    let record: HistoryRecord = keys::decode(&record.key, &record.value).unwrap();
    assert_eq!(record.entry.unwrap().created, 1);
}

fn put(key: String, value: Vec<u8>) -> Op {
    Op::Put {
        key,
        value,
        lease: None,
    }
}
