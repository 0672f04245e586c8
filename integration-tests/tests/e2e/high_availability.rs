//! High availability: one leader among the replicas, moved within a lease when it dies or is
//! partitioned; reconnect storms spread by the accept rate; versions that never go backwards;
//! and network faults made with Linux network namespaces (`portico_integration_tests::netns`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portico_api::pb::{self, AgentsRequest};
use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::bins;
use portico_integration_tests::cp::{ControlPlane, CpOptions, StoreSpec, base_config};
use portico_integration_tests::etcd::Etcd;
use portico_integration_tests::fleet::{Event, Fleet, Placement};
use portico_integration_tests::footprint;
use portico_integration_tests::netns::{Link, Netns};
use portico_test_support::http::fetch;
use portico_test_support::net::{free_port, localhost};
use portico_test_support::resources::{Edit, cluster, regions, routed};
use portico_test_support::upstream::Upstream;
use portico_test_support::wait::eventually;

/// The bound the election promises: leadership moves within one lease TTL.
const LEADER_MOVES_WITHIN: Duration = Duration::from_secs(15);

fn on(endpoint: String) -> StoreSpec {
    StoreSpec::Etcd {
        endpoint,
        prefix: "/portico-ha".into(),
    }
}

/// `portico_cp_leader` of `cp`; `None` when it does not answer.
fn leader_gauge(cp: &ControlPlane) -> Option<u8> {
    let (status, text) = cp.http_get("/metrics")?;
    if status != 200 {
        return None;
    }
    text.lines()
        .find_map(|l| l.strip_prefix("portico_cp_leader "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u8)
}

/// Waits until exactly one of `one` and `two` leads; whether it is `one`.
async fn one_leader(one: &ControlPlane, two: &ControlPlane) -> bool {
    eventually("exactly one leader", LEADER_MOVES_WITHIN, || async {
        let g = (leader_gauge(one)?, leader_gauge(two)?);
        (g.0 + g.1 == 1).then_some(g.0 == 1)
    })
    .await
}

/// `resources` (a listener first) with the listener selecting agents of `region` only.
fn for_region(
    mut resources: Vec<portico_api::Resource>,
    region: &str,
) -> Vec<portico_api::Resource> {
    resources[0] = resources[0]
        .clone()
        .with(|l: &mut pb::Listener| l.selector = Some(regions(&[region])));
    resources
}

/// `portico status -o json` against `cp`.
fn status(cp: &ControlPlane) -> serde_json::Value {
    cp.portico(&["-o", "json", "status"]).ok().json()
}

/// Replicas of one etcd, one of which can be cut off from it: etcd in a network namespace of
/// its own, the replica in another with a link to etcd (cut it to partition the replica) and
/// one to the test; the test's own replicas reach etcd over a third link.
struct Split {
    /// The replica in a namespace of its own.
    replica: ControlPlane,
    etcd: Etcd,
    /// The replica's link to etcd.
    replica_to_etcd: Link,
    // Dropped after the processes: links, then namespaces.
    _links: [Link; 2],
    _namespaces: [Netns; 2],
}

impl Split {
    fn start(replica: &str) -> Split {
        let (etcd_ns, replica_ns) = (Netns::new(), Netns::new());
        let to_etcd = Link::new(None, Some(&etcd_ns));
        let replica_to_etcd = Link::new(Some(&replica_ns), Some(&etcd_ns));
        let to_replica = Link::new(None, Some(&replica_ns));
        let etcd = Etcd::start_in(&etcd_ns, to_etcd.b);
        let store = on(format!("http://{}:2379", replica_to_etcd.b));
        let replica = ControlPlane::start_with(
            CpOptions::new(store, replica).inside(&replica_ns, to_replica.b),
        );
        Split {
            replica,
            etcd,
            replica_to_etcd,
            _links: [to_etcd, to_replica],
            _namespaces: [etcd_ns, replica_ns],
        }
    }
}

/// Sends a request to `port` every 10 ms until stopped; counts answers other than 200 and
/// failed requests.
struct Traffic {
    stop: Arc<AtomicBool>,
    /// Requests sent, and the failures.
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl Traffic {
    fn start(port: u16) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let (mut sent, mut failures) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let answer = fetch(format!("http://127.0.0.1:{port}/")).await;
                    sent += 1;
                    if !matches!(answer, Some((200, _))) {
                        failures.push(format!("{answer:?}"));
                    }
                    // The pace of the traffic.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (sent, failures)
            }
        });
        Traffic { stop, task }
    }

    /// Stops; panics unless every request was answered 200. Returns how many were sent.
    async fn stop_without_failures(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let (sent, failures) = self.task.await.unwrap();
        assert!(
            failures.is_empty(),
            "{} of {sent} requests failed: {failures:?}",
            failures.len()
        );
        sent
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_the_leadership_moves_within_a_lease_when_it_dies() {
    let etcd = Etcd::start();
    let one = ControlPlane::start(on(etcd.endpoint()), "cp-1");
    let two = ControlPlane::start(on(etcd.endpoint()), "cp-2");
    let one_leads = one_leader(&one, &two).await;
    let (mut leader, follower) = if one_leads { (one, two) } else { (two, one) };
    let (leader_id, follower_id) = if one_leads {
        ("cp-1", "cp-2")
    } else {
        ("cp-2", "cp-1")
    };

    // Either replica shows both, the leader, and each one's agents.
    // Connected, with no config to serve yet.
    let _agent = Agent::start(&AgentOptions::new("ha-1", &[follower.endpoint()]));
    let shown = eventually(
        "status to list both replicas",
        Duration::from_secs(20),
        || async {
            let s = status(&leader);
            let replicas = s["replicas"].as_array()?;
            let agents_on = |id: &str| {
                replicas
                    .iter()
                    .find(|r| r["id"] == id)
                    .and_then(|r| r["agents"].as_u64())
            };
            (replicas.len() == 2
                && agents_on(follower_id) == Some(1)
                && agents_on(leader_id) == Some(0))
            .then_some(s)
        },
    )
    .await;
    assert_eq!(shown["leader"], leader_id, "{shown}");
    assert_eq!(shown["store_reachable"], true, "{shown}");
    for r in shown["replicas"].as_array().unwrap() {
        assert_eq!(r["leader"], r["id"] == leader_id, "{shown}");
        assert_eq!(r["store"], "ok", "{shown}");
    }
    assert_eq!(status(&follower)["leader"], leader_id);
    let table = follower.portico(&["status"]).ok().stdout;
    assert!(table.contains(&format!("leader: {leader_id}")), "{table}");

    // SIGKILL: no resignation, the lease must expire.
    let killed = Instant::now();
    leader.kill();
    eventually(
        "the survivor to lead",
        LEADER_MOVES_WITHIN + Duration::from_secs(5),
        || async { (leader_gauge(&follower)? == 1).then_some(()) },
    )
    .await;
    let moved = killed.elapsed();
    assert!(
        moved <= LEADER_MOVES_WITHIN,
        "leadership moved after {moved:?}"
    );
    let after = status(&follower);
    assert_eq!(after["leader"], follower_id, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_steps_down_before_another_is_elected() {
    // Replica P can be cut off from etcd; replica Q is beside the test.
    let split = Split::start("cp-p");
    let (p, p_to_etcd) = (&split.replica, &split.replica_to_etcd);
    eventually("P to lead", LEADER_MOVES_WITHIN, || async {
        (leader_gauge(p)? == 1).then_some(())
    })
    .await;
    let q = ControlPlane::start(on(split.etcd.endpoint()), "cp-q");
    assert_eq!(leader_gauge(&q), Some(0));

    let cut = Instant::now();
    p_to_etcd.cut();
    let (mut stepped_down, mut elected) = (None, None);
    while (stepped_down.is_none() || elected.is_none()) && cut.elapsed() < Duration::from_secs(30) {
        // Q's gauge first: a step-down seen in the same round then counts as earlier.
        if elected.is_none() && leader_gauge(&q) == Some(1) {
            elected = Some(cut.elapsed());
        }
        if stepped_down.is_none() && leader_gauge(p) == Some(0) {
            stepped_down = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (Some(stepped_down), Some(elected)) = (stepped_down, elected) else {
        panic!(
            "after 30 s: P stepped down {stepped_down:?}, Q elected {elected:?}\nP:\n{}",
            p.log()
        );
    };
    assert!(
        stepped_down < elected,
        "P stepped down {stepped_down:?} after the cut, Q was elected {elected:?}"
    );
    assert!(
        elected <= LEADER_MOVES_WITHIN,
        "Q was elected {elected:?} after the cut"
    );
    let (code, body) = p.http_get("/readyz").unwrap();
    assert_eq!(
        (code, body.as_str()),
        (503, "not ready: store unavailable\n")
    );
    let alone = status(p);
    assert_eq!(alone["store_reachable"], false, "{alone}");

    // Back on the network, P follows.
    p_to_etcd.restore();
    eventually("P ready again", Duration::from_secs(30), || async {
        matches!(p.http_get("/readyz"), Some((200, _))).then_some(())
    })
    .await;
    let both = eventually(
        "status from P to list both",
        Duration::from_secs(20),
        || async {
            let s = status(p);
            (s["replicas"].as_array()?.len() == 2).then_some(s)
        },
    )
    .await;
    assert_eq!(both["leader"], "cp-q", "{both}");
    assert_eq!((leader_gauge(p), leader_gauge(&q)), (Some(0), Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_off_from_every_control_plane_keeps_serving_and_resumes_with_a_diff() {
    let cp_ns = Netns::new();
    let link = Link::new(None, Some(&cp_ns));
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_with(
        CpOptions::new(StoreSpec::Embedded(dir.path().to_path_buf()), "cp-1")
            .inside(&cp_ns, link.b),
    );
    let upstream = Upstream::start_name_only("blue").await;
    let port = free_port();
    let v1 = cp
        .apply(routed("shop", port, &[upstream.addr]))
        .await
        .revision;
    let agent = Agent::start(&AgentOptions::new("cut-off", &[cp.endpoint()]));
    agent.wait_for_version(v1).await;
    let traffic = Traffic::start(port);

    link.cut();
    let cut = Instant::now();
    // A change while the agent cannot hear of it, made from inside the namespace.
    let file = dir.path().join("spare.yaml");
    std::fs::write(
        &file,
        portico_test_support::resources::yaml(&[cluster("spare", &[localhost(9)])]),
    )
    .unwrap();
    let mut apply = std::process::Command::new(bins::path("portico"));
    apply
        .args(["--server", "http://127.0.0.1:7000", "apply", "-f"])
        .arg(&file);
    let applied = cp_ns.command(&apply).output().unwrap();
    assert!(applied.status.success(), "{applied:?}");
    let v2 = v1 + 1;
    // Past the agent's keepalive (20 s) and several reconnect attempts.
    while cut.elapsed() < Duration::from_secs(60) {
        assert_eq!(
            agent.version().await,
            v1,
            "nothing reaches the agent while cut off"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    link.restore();
    agent.wait_for_version(v2).await;
    let sent = traffic.stop_without_failures().await;
    assert!(sent > 1000, "only {sent} requests in over 60 s");
    let log = agent.log();
    assert!(
        log.lines().any(|l| l.contains("acked update")
            && l.contains(&format!("version={v2}"))
            && l.contains("full=false")),
        "the agent resumed with a diff from its version:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_etcd_is_not_ready_refuses_writes_and_recovers() {
    let etcd_ns = Netns::new();
    let link = Link::new(None, Some(&etcd_ns));
    let _etcd = Etcd::start_in(&etcd_ns, link.b);
    let cp = ControlPlane::start(on(format!("http://{}:2379", link.b)), "cp-1");
    let upstream = Upstream::start_name_only("blue").await;
    let port = free_port();
    // The listener for agents of region eu; the one started later is elsewhere.
    let config = for_region(routed("shop", port, &[upstream.addr]), "eu");
    let v1 = cp.apply(config).await.revision;
    let first = Agent::start(&AgentOptions::new("before", &[cp.endpoint()]));
    first.wait_for_version(v1).await;
    let traffic = Traffic::start(port);

    link.cut();
    eventually("the replica to report not ready", Duration::from_secs(30), || async {
        matches!(cp.http_get("/readyz"), Some((503, body)) if body.contains("store unavailable"))
            .then_some(())
    })
    .await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        portico_test_support::resources::yaml(&[cluster("spare", &[localhost(9)])]),
    )
    .unwrap();
    let refused = cp.portico(&["apply", "-f", file.path().to_str().unwrap()]);
    assert_ne!(refused.code, 0, "{refused:#?}");
    assert!(refused.stderr.contains("store unavailable"), "{refused:#?}");
    // Agents are served from memory: the connected one keeps its stream, a new one gets the
    // config.
    let mut elsewhere = AgentOptions::new("during", &[cp.endpoint()]);
    elsewhere.region = "us".into();
    let second = Agent::start(&elsewhere);
    second.wait_for_version(v1).await;

    link.restore();
    eventually(
        "the replica ready again by itself",
        Duration::from_secs(60),
        || async { matches!(cp.http_get("/readyz"), Some((200, _))).then_some(()) },
    )
    .await;
    let v2 = cp
        .apply(vec![cluster("spare", &[localhost(9)])])
        .await
        .revision;
    assert_eq!(v2, v1 + 1, "the refused apply wrote nothing");
    first.wait_for_version(v2).await;
    second.wait_for_version(v2).await;
    traffic.stop_without_failures().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_never_goes_back_to_a_lagging_replicas_version() {
    // Replica B can be cut off from etcd (its watch stops); replica A is beside the test.
    let split = Split::start("cp-b");
    let (b, b_to_etcd) = (&split.replica, &split.replica_to_etcd);
    let mut a = ControlPlane::start(on(split.etcd.endpoint()), "cp-a");
    let upstream = Upstream::start_name_only("blue").await;
    let port = free_port();
    let v1 = a
        .apply(routed("shop", port, &[upstream.addr]))
        .await
        .revision;
    let agent = Agent::start(&AgentOptions::new("steady", &[a.endpoint(), b.endpoint()]));
    agent.wait_for_version(v1).await;
    eventually("B to serve v1", Duration::from_secs(20), || async {
        (status(b)["config_revision"] == v1).then_some(())
    })
    .await;

    // B stops hearing of changes; A takes one, and the agent with it.
    b_to_etcd.cut();
    let v2 = a
        .apply(vec![cluster("spare", &[localhost(9)])])
        .await
        .revision;
    agent.wait_for_version(v2).await;
    assert_eq!(status(b)["config_revision"], v1, "B is behind");

    // The agent moves to B, which is behind it.
    a.kill();
    let (_, metrics) = eventually(
        "the agent to find B behind it",
        Duration::from_secs(60),
        || async {
            let (code, metrics) = agent.get("/metrics").await?;
            (code == 200 && metrics.contains("portico_agent_ahead_of_control_plane 1"))
                .then_some((code, metrics))
        },
    )
    .await;
    assert!(
        metrics.contains("portico_agent_control_plane_connected 1"),
        "{metrics}"
    );
    for _ in 0..20 {
        assert_eq!(agent.version().await, v2, "the agent never goes back");
        assert_eq!(
            fetch(format!("http://127.0.0.1:{port}/"))
                .await
                .map(|a| a.0),
            Some(200)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // B catches up by itself and moves the agent on.
    b_to_etcd.restore();
    eventually("B to catch up", Duration::from_secs(60), || async {
        (status(b)["config_revision"] == v2).then_some(())
    })
    .await;
    let v3 = b
        .apply(vec![cluster("more", &[localhost(10)])])
        .await
        .revision;
    agent.wait_for_version(v3).await;
    let (_, metrics) = agent.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("portico_agent_ahead_of_control_plane 0"),
        "{metrics}"
    );
}

/// Simulated agents moving from a killed replica to the survivor.
const STORM_AGENTS: usize = 5000;
/// How fast the survivor admits them: below what a debug build on 2 shared cores accepts, so
/// the rate, not the CPU, spreads them (the default, 2,000, is sized for release builds).
const ACCEPT_RATE: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_streams_move_from_a_killed_replica_spread_by_the_accept_rate() {
    let etcd = Etcd::start();
    let throttled = |replica| CpOptions {
        args: vec!["--max-stream-accept-rate".into(), ACCEPT_RATE.to_string()],
        ..CpOptions::new(on(etcd.endpoint()), replica)
    };
    let mut a = ControlPlane::start_with(throttled("cp-a"));
    let b = ControlPlane::start_with(throttled("cp-b"));
    let version = a.apply(base_config()).await.revision;
    let placement = Placement {
        homes: vec![a.endpoint()],
        fallbacks: vec![b.endpoint()],
        ..Placement::on(&a.endpoint())
    };
    let mut fleet = Fleet::start(&placement, STORM_AGENTS);
    fleet
        .wait_for(
            version,
            tokio::time::Instant::now(),
            Duration::from_secs(120),
        )
        .await
        .unwrap();

    let b_pid = b.pid();
    let killed = tokio::time::Instant::now();
    a.kill();
    let b_url: Arc<str> = Arc::from(b.endpoint().as_str());
    let times = fleet
        .wait_until("reconnected to B with their version", killed, Duration::from_secs(120), |e| {
            matches!(e, Event::Connected { url, version: v, .. } if *url == b_url && *v == version)
        })
        .await
        .unwrap();
    let all_back = *times.last().unwrap();
    let pushed_back = fleet.counters.pushed_back.load(Ordering::Relaxed);
    // No more than the accept rate allows: 5,000 at 1,000/s (with a second's burst) take at
    // least 4 s once they arrive.
    let spread = all_back - times[0];
    let least = (STORM_AGENTS - ACCEPT_RATE) as f64 / ACCEPT_RATE as f64;
    assert!(
        spread >= Duration::from_secs_f64(least) - Duration::from_millis(500),
        "{STORM_AGENTS} streams admitted within {spread:?}"
    );
    assert!(pushed_back > 0, "no stream was told to come back later");
    eventually(
        "B's registry to hold every agent",
        Duration::from_secs(60),
        || async {
            let agents = b
                .admin()
                .await
                .agents(AgentsRequest::default())
                .await
                .ok()?
                .into_inner();
            let on_b = agents
                .agents
                .iter()
                .filter(|r| r.connected && r.replica == "cp-b" && r.applied_version == version)
                .count();
            (on_b == STORM_AGENTS).then_some(())
        },
    )
    .await;

    // Nothing runs away once they are in: B idles with 5,000 streams.
    let rss = footprint::rss_bytes(b_pid).unwrap() as f64 / (1024.0 * 1024.0);
    let cpu_before = footprint::cpu_seconds(b_pid).unwrap();
    // A measurement window, not a wait for anything.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let busy = (footprint::cpu_seconds(b_pid).unwrap() - cpu_before) / 5.0;
    eprintln!(
        "storm: {STORM_AGENTS} agents back on B {all_back:?} after the kill (first {:?}), {pushed_back} refusals with a retry-after hint; B: {rss:.0} MiB RSS, {:.0} % CPU idle",
        times[0],
        busy * 100.0
    );
    assert!(rss < 1024.0, "B holds {rss:.0} MiB");
    assert!(busy < 0.5, "B idles at {:.0} % CPU", busy * 100.0);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_prunes_history_beyond_the_retention_and_rollback_says_so() {
    let mut cp = ControlPlane::embedded_with(|mut o| {
        o.args = vec!["--history-retention".into(), "2".into()];
        o
    });
    cp.apply(base_config()).await;
    for i in 0..4 {
        cp.apply(vec![cluster("spare", &[localhost(9000 + i)])])
            .await;
    }
    // The leader prunes when its term begins, then every minute.
    cp.restart();
    let history = eventually(
        "revisions 1 to 3 pruned",
        Duration::from_secs(20),
        || async {
            let h = cp.portico(&["-o", "json", "history"]).ok().json();
            let pruned: Vec<i64> = h["entries"]
                .as_array()?
                .iter()
                .filter(|e| e["pruned"] == true)
                .filter_map(|e| e["revision"].as_i64())
                .collect();
            (pruned == [3, 2, 1]).then_some(h)
        },
    )
    .await;
    assert_eq!(history["entries"].as_array().unwrap().len(), 5, "{history}");
    let refused = cp.portico(&["rollback", "2"]);
    assert_ne!(refused.code, 0, "{refused:#?}");
    assert!(
        refused
            .stderr
            .contains("the history of revision 3 was pruned"),
        "{refused:#?}"
    );
    cp.portico(&["rollback", "4"]).ok();
    let (_, metrics) = cp.http_get("/metrics").unwrap();
    assert!(
        metrics.contains("portico_cp_history_pruned_total 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_etcd_leader_of_three_members_keeps_changes_and_traffic_flowing() {
    let mut members = Etcd::start_cluster(3);
    let endpoints = members
        .iter()
        .map(Etcd::endpoint)
        .collect::<Vec<_>>()
        .join(",");
    let one = ControlPlane::start(on(endpoints.clone()), "cp-1");
    let two = ControlPlane::start(on(endpoints), "cp-2");
    let upstream = Upstream::start_name_only("blue").await;
    let port = free_port();
    let v1 = one
        .apply(routed("shop", port, &[upstream.addr]))
        .await
        .revision;
    let agent = Agent::start(&AgentOptions::new(
        "edge",
        &[two.endpoint(), one.endpoint()],
    ));
    agent.wait_for_version(v1).await;
    let traffic = Traffic::start(port);

    let leader = eventually("an etcd leader", Duration::from_secs(20), || async {
        for (i, m) in members.iter().enumerate() {
            if m.is_leader().await == Some(true) {
                return Some(i);
            }
        }
        None
    })
    .await;
    members[leader].kill();
    // The other two elect a leader; both replicas keep taking changes through them.
    let v2 = eventually(
        "a change through replica one",
        Duration::from_secs(30),
        || async {
            let mut admin = one.admin().await;
            let req = portico_api::pb::ApplyRequest {
                resources: vec![cluster("spare", &[localhost(9)])],
                ..Default::default()
            };
            admin.apply(req).await.ok().map(|r| r.into_inner().revision)
        },
    )
    .await;
    agent.wait_for_version(v2).await;
    let v3 = two
        .apply(vec![cluster("more", &[localhost(10)])])
        .await
        .revision;
    agent.wait_for_version(v3).await;
    for cp in [&one, &two] {
        assert!(matches!(cp.http_get("/readyz"), Some((200, _))));
    }
    one_leader(&one, &two).await;
    traffic.stop_without_failures().await;
}

/// A tmpfs of `size` mounted on a temp dir (root only), unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running mount: {e}"));
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    /// Fills what is left with a file; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_embedded_store_refuses_changes_and_loses_nothing() {
    let disk = SmallDisk::mount("16m");
    let data = disk.dir.path().join("data");
    let cp = ControlPlane::start_with(CpOptions::new(StoreSpec::Embedded(data), "cp-1"));
    let upstream = Upstream::start_name_only("blue").await;
    let port = free_port();
    let v1 = cp
        .apply(routed("shop", port, &[upstream.addr]))
        .await
        .revision;
    let agent = Agent::start(&AgentOptions::new("edge", &[cp.endpoint()]));
    agent.wait_for_version(v1).await;
    let traffic = Traffic::start(port);

    let filler = disk.fill();
    let file = tempfile::NamedTempFile::new().unwrap();
    let big: Vec<_> = (0..100)
        .map(|i| cluster(&format!("c{i}"), &[localhost(9000 + i)]))
        .collect();
    std::fs::write(file.path(), portico_test_support::resources::yaml(&big)).unwrap();
    let refused = cp.portico(&["apply", "-f", file.path().to_str().unwrap()]);
    assert_ne!(refused.code, 0, "{refused:#?}");
    assert!(
        refused.stderr.contains("No space left on device"),
        "{refused:#?}"
    );
    assert_eq!(agent.version().await, v1);

    std::fs::remove_file(filler).unwrap();
    let v2 = eventually(
        "a change once there is room",
        Duration::from_secs(30),
        || async {
            let r = cp.portico(&["apply", "-f", file.path().to_str().unwrap()]);
            (r.code == 0).then(|| {
                cp.portico(&["-o", "json", "history", "--limit", "1"])
                    .ok()
                    .json()
            })
        },
    )
    .await["entries"][0]["revision"]
        .as_i64()
        .unwrap();
    assert_eq!(v2, v1 + 1, "the refused change wrote nothing");
    agent.wait_for_version(v2).await;
    traffic.stop_without_failures().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_skewed_clocks_elect_one_leader_and_serve_alike() {
    let etcd = Etcd::start();
    let one = ControlPlane::start(on(etcd.endpoint()), "cp-1");
    let mut ahead = CpOptions::new(on(etcd.endpoint()), "cp-2");
    ahead.clock_offset = Some("+4m".into());
    let two = ControlPlane::start_with(ahead);
    let one_leads = one_leader(&one, &two).await;

    // Changes through either reach the agents of both.
    let upstream = Upstream::start_name_only("blue").await;
    let (port_one, port_two) = (free_port(), free_port());
    let config = for_region(routed("shop", port_one, &[upstream.addr]), "eu");
    let other = for_region(routed("other", port_two, &[upstream.addr]), "us");
    one.apply(config).await;
    let v = two.apply(other).await.revision;
    let on_one = Agent::start(&AgentOptions::new("eu-1", &[one.endpoint()]));
    let mut us = AgentOptions::new("us-1", &[two.endpoint()]);
    us.region = "us".into();
    let on_two = Agent::start(&us);
    on_one.wait_for_version(v).await;
    on_two.wait_for_version(v).await;
    for port in [port_one, port_two] {
        assert_eq!(
            fetch(format!("http://127.0.0.1:{port}/"))
                .await
                .map(|a| a.0),
            Some(200)
        );
    }
    let shown = eventually("status to list both", Duration::from_secs(20), || async {
        let s = status(&one);
        (s["replicas"].as_array()?.len() == 2).then_some(s)
    })
    .await;
    for r in shown["replicas"].as_array().unwrap() {
        assert_eq!(r["store"], "ok", "{shown}");
    }

    // The leadership still moves within a lease, whichever clock the leader had.
    let (mut leader, follower) = if one_leads { (one, two) } else { (two, one) };
    let killed = Instant::now();
    leader.kill();
    eventually(
        "the other to lead",
        LEADER_MOVES_WITHIN + Duration::from_secs(5),
        || async { (leader_gauge(&follower)? == 1).then_some(()) },
    )
    .await;
    assert!(
        killed.elapsed() <= LEADER_MOVES_WITHIN,
        "{:?}",
        killed.elapsed()
    );
}
