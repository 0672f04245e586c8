//! The agent's side of the discovery protocol against a scripted control plane: a test-side
//! `Discovery` server that hands each stream to the test, which then plays the control plane
//! message by message. It produces what a correct control plane never sends (an incremental
//! update on another base than the agent's config); end-to-end tests with the real `portico-cp` are in
//! `integration-tests/tests/e2e/agent_*.rs`.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use clap::Parser;
use portico_agent::settings::Settings;
use portico_api::Kind;
use portico_api::pb::discovery_server::{Discovery, DiscoveryServer};
use portico_api::pb::{
    AgentMessage, Cluster, ControlMessage, Endpoint, Hello, Report, Resource, ResourceKey,
    ServiceEndpoints, Update, agent_message, control_message, nack, resource::Spec,
};
use portico_test_support::http::fetch;
use portico_test_support::net::refusing;
use portico_test_support::resources::cluster;
use portico_test_support::wait::eventually;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(10);

/// One agent stream as the scripted control plane sees it.
struct Session {
    hello: Hello,
    from_agent: Streaming<AgentMessage>,
    to_agent: mpsc::Sender<Result<ControlMessage, Status>>,
}

impl Session {
    async fn send(&self, update: Update) {
        let message = ControlMessage {
            message: Some(control_message::Message::Update(update)),
        };
        self.to_agent.send(Ok(message)).await.unwrap();
    }

    async fn send_service(&self, service: &str, ports: &[u32]) {
        let endpoints = ports
            .iter()
            .map(|port| Endpoint {
                address: "10.0.0.1".into(),
                port: *port,
                zone: "eu-2".into(),
                ..Default::default()
            })
            .collect();
        let message = ControlMessage {
            message: Some(control_message::Message::ServiceEndpoints(
                ServiceEndpoints {
                    service: service.into(),
                    endpoints,
                },
            )),
        };
        self.to_agent.send(Ok(message)).await.unwrap();
    }

    /// The next report that satisfies `check`.
    async fn report(&mut self, check: impl Fn(&Report) -> bool) -> Report {
        loop {
            let next = tokio::time::timeout(WAIT, self.from_agent.message()).await;
            let message = next.expect("no report in time").unwrap().unwrap();
            if let Some(agent_message::Message::Report(r)) = message.message
                && check(&r)
            {
                return r;
            }
        }
    }

    /// The next Ack or Nack (reports are skipped).
    async fn answer(&mut self) -> agent_message::Message {
        loop {
            let next = tokio::time::timeout(WAIT, self.from_agent.message()).await;
            let message = next.expect("no answer in time").unwrap().unwrap();
            match message.message.unwrap() {
                agent_message::Message::Report(_) => continue,
                other => return other,
            }
        }
    }
}

struct ScriptedCp {
    sessions: mpsc::UnboundedSender<Session>,
}

#[tonic::async_trait]
impl Discovery for ScriptedCp {
    type StreamStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<ControlMessage, Status>> + Send>>;

    async fn stream(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut from_agent = request.into_inner();
        let Some(AgentMessage {
            message: Some(agent_message::Message::Hello(hello)),
        }) = from_agent.message().await?
        else {
            return Err(Status::invalid_argument("first message must be Hello"));
        };
        let (to_agent, rx) = mpsc::channel(8);
        let _ = self.sessions.send(Session {
            hello,
            from_agent,
            to_agent,
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A scripted control plane on a free port.
struct Cp {
    url: String,
    sessions: mpsc::UnboundedReceiver<Session>,
    stop: CancellationToken,
}

impl Cp {
    async fn start() -> Cp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, sessions) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .add_service(DiscoveryServer::new(ScriptedCp { sessions: tx }))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            );
        tokio::spawn(server);
        Cp {
            url,
            sessions,
            stop,
        }
    }

    async fn session(&mut self) -> Session {
        tokio::time::timeout(WAIT, self.sessions.recv())
            .await
            .expect("the agent did not connect in time")
            .unwrap()
    }
}

impl Drop for Cp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An in-process agent with its admin endpoint on a free port.
struct Agent {
    admin: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Agent {
    async fn start(control_planes: &str, extra: &[&str]) -> Agent {
        let mut args = vec![
            "portico-agent",
            "--control-plane",
            control_planes,
            "--node-id",
            "edge-1",
            "--region",
            "eu",
            "--zone",
            "eu-1",
            "--label",
            "tier=edge",
            "--report-interval",
            "50ms",
        ];
        args.extend_from_slice(extra);
        let settings = Settings::try_parse_from(args).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(portico_agent::serve(
            settings,
            listener,
            stop.clone().cancelled_owned(),
        ));
        Agent { admin, stop, task }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        fetch(format!("http://{}{path}", self.admin))
            .await
            .unwrap_or_else(|| panic!("the admin endpoint does not answer GET {path}"))
    }

    async fn config(&self) -> serde_json::Value {
        let (status, body) = self.get("/config").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls `/config` until its service endpoints are `expected` (service, ports); returns
    /// the config.
    async fn wait_for_services(&self, expected: &[(&str, &[u64])]) -> serde_json::Value {
        let want: Vec<(String, Vec<u64>)> = expected
            .iter()
            .map(|(n, p)| (n.to_string(), p.to_vec()))
            .collect();
        eventually(&format!("service endpoints {want:?}"), WAIT, || async {
            let config = self.config().await;
            let services: Vec<(String, Vec<u64>)> = config["services"]
                .as_object()?
                .iter()
                .map(|(name, endpoints)| {
                    let ports = endpoints.as_array().into_iter().flatten();
                    (
                        name.clone(),
                        ports.filter_map(|e| e["port"].as_u64()).collect(),
                    )
                })
                .collect();
            (services == want).then_some(config)
        })
        .await
    }

    /// Polls `/config` until it is at `version`; returns the resource names.
    async fn wait_for_version(&self, version: i64) -> Vec<String> {
        let what = format!("/config at version {version}");
        let config = eventually(&what, WAIT, || async {
            let config = self.config().await;
            (config["version"] == version).then_some(config)
        })
        .await;
        let resources = config["resources"].as_array().unwrap();
        resources
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the agent did not stop in time")
            .unwrap()
            .unwrap();
    }
}

/// A full update to `version` of clusters `names`.
fn full(version: i64, names: &[&str]) -> Update {
    Update {
        full: true,
        ..diff(version, 0, names, &[])
    }
}

/// An incremental update from `base` to `version`.
fn diff(version: i64, base: i64, upserts: &[&str], removals: &[&str]) -> Update {
    Update {
        version,
        nonce: format!("n{version}"),
        full: false,
        base_version: base,
        upserts: upserts.iter().map(|n| cluster(n, &[])).collect(),
        removals: removals
            .iter()
            .map(|n| ResourceKey::new(Kind::Cluster, *n))
            .collect(),
    }
}

/// A control plane, an agent connected to it, and their stream after a full update of
/// clusters `names` at `version` was ACKed.
async fn synced(version: i64, names: &[&str]) -> (Cp, Agent, Session) {
    let mut cp = Cp::start().await;
    let agent = Agent::start(&cp.url, &[]).await;
    let mut session = cp.session().await;
    session.send(full(version, names)).await;
    assert_ack(session.answer().await, version);
    (cp, agent, session)
}

fn assert_ack(answer: agent_message::Message, version: i64) {
    match answer {
        agent_message::Message::Ack(ack) => {
            assert_eq!((ack.nonce, ack.version), (format!("n{version}"), version));
        }
        other => panic!("expected Ack of {version}, got {other:?}"),
    }
}

#[tokio::test]
async fn hello_then_updates_are_acked_and_served() {
    let mut cp = Cp::start().await;
    let agent = Agent::start(&cp.url, &[]).await;
    assert_eq!(agent.get("/readyz").await.0, 503);

    let mut session = cp.session().await;
    let node = session.hello.node.clone().unwrap();
    assert_eq!(
        (node.id.as_str(), node.region.as_str(), node.zone.as_str()),
        ("edge-1", "eu", "eu-1")
    );
    assert_eq!(node.labels.get("tier").map(String::as_str), Some("edge"));
    assert!(!node.agent_version.is_empty());
    assert_eq!(session.hello.applied_version, 0);

    session.send(full(5, &["a", "b"])).await;
    assert_ack(session.answer().await, 5);
    assert_eq!(agent.wait_for_version(5).await, ["a", "b"]);
    assert_eq!(agent.get("/readyz").await.0, 200);

    session.send(diff(7, 5, &["c"], &["a"])).await;
    assert_ack(session.answer().await, 7);
    assert_eq!(agent.wait_for_version(7).await, ["b", "c"]);

    let (status, metrics) = agent.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("portico_agent_config_version 7"),
        "{metrics}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn reports_carry_the_agents_health() {
    let (_cp, agent, mut session) = synced(3, &["a"]).await;
    let report = loop {
        let message = tokio::time::timeout(WAIT, session.from_agent.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(agent_message::Message::Report(r)) = message.message
            && r.applied_version == 3
        {
            break r;
        }
    };
    assert!(report.ready);
    assert!(report.rss_bytes > 0);
    agent.stop().await;
}

#[tokio::test]
async fn reconnect_resumes_from_the_applied_version() {
    let (mut cp, agent, session) = synced(4, &["a"]).await;

    // The control plane ends the stream; the agent comes back claiming version 4 and takes a
    // diff against it.
    drop(session);
    let mut session = cp.session().await;
    assert_eq!(session.hello.applied_version, 4);
    session.send(diff(6, 4, &["b"], &[])).await;
    assert_ack(session.answer().await, 6);
    assert_eq!(agent.wait_for_version(6).await, ["a", "b"]);
    agent.stop().await;
}

#[tokio::test]
async fn a_diff_on_another_base_makes_the_agent_ask_for_a_full_one() {
    let (mut cp, agent, session) = synced(9, &["a", "b"]).await;

    session.send(diff(10, 8, &["x"], &[])).await;
    let mut resync = cp.session().await;
    assert_eq!(resync.hello.applied_version, 0, "a resync claims no config");
    // Meanwhile the old config keeps serving.
    assert_eq!(agent.wait_for_version(9).await, ["a", "b"]);

    // What comes next is relative to nothing, so "a" and "b" are gone after it.
    resync.send(diff(10, 0, &["c"], &[])).await;
    assert_ack(resync.answer().await, 10);
    assert_eq!(agent.wait_for_version(10).await, ["c"]);

    // Once ACKed, reconnects claim the version again.
    drop(resync);
    assert_eq!(cp.session().await.hello.applied_version, 10);
    drop(session);
    agent.stop().await;
}

#[tokio::test]
async fn only_a_diff_on_exactly_the_served_version_applies() {
    // The agent serves 9. Each diff names another base: older, newer, or none (0), whether the
    // version it brings is older or newer than 9.
    for (version, base) in [(8, 7), (10, 8), (11, 10), (10, 0)] {
        let (mut cp, agent, session) = synced(9, &["a"]).await;
        session.send(diff(version, base, &["x"], &[])).await;
        let mut resync = cp.session().await;
        assert_eq!(
            resync.hello.applied_version, 0,
            "diff {base} -> {version} makes the agent resync"
        );
        assert_eq!(agent.wait_for_version(9).await, ["a"]);
        resync.send(full(12, &["b"])).await;
        assert_ack(resync.answer().await, 12);
        assert_eq!(agent.wait_for_version(12).await, ["b"]);
        drop(session);
        agent.stop().await;
    }
    // The same diff on the served version is applied.
    let (_cp, agent, mut session) = synced(9, &["a"]).await;
    session.send(diff(10, 9, &["x"], &[])).await;
    assert_ack(session.answer().await, 10);
    assert_eq!(agent.wait_for_version(10).await, ["a", "x"]);
    agent.stop().await;
}

#[tokio::test]
async fn agent_fails_over_to_the_next_control_plane() {
    let down = refusing();
    let mut cp = Cp::start().await;
    let agent = Agent::start(&format!("{},{}", down.url(), cp.url), &[]).await;
    let mut session = cp.session().await;
    session.send(full(2, &["a"])).await;
    assert_ack(session.answer().await, 2);
    agent.stop().await;
}

#[tokio::test]
async fn cached_config_serves_before_any_control_plane_answers() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let mut cp = Cp::start().await;
    let agent = Agent::start(&cp.url, &["--cache-dir", cache_dir]).await;
    let mut session = cp.session().await;
    session.send(full(12, &["a", "b"])).await;
    assert_ack(session.answer().await, 12);
    agent.wait_for_version(12).await;
    drop(session);
    agent.stop().await;

    // No control plane at all: the cache alone makes the agent ready.
    let down = refusing();
    let agent = Agent::start(&down.url(), &["--cache-dir", cache_dir]).await;
    assert_eq!(agent.wait_for_version(12).await, ["a", "b"]);
    assert_eq!(agent.get("/readyz").await.0, 200);
    agent.stop().await;

    // With a control plane, Hello carries the cached version.
    let agent = Agent::start(&cp.url, &["--cache-dir", cache_dir]).await;
    assert_eq!(cp.session().await.hello.applied_version, 12);
    agent.stop().await;
}

#[tokio::test]
async fn corrupt_cache_is_ignored() {
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(cache.path().join("config.pb"), b"PORTICO\x01 truncated").unwrap();
    let mut cp = Cp::start().await;
    let cache_dir = cache.path().to_str().unwrap();
    let agent = Agent::start(&cp.url, &["--cache-dir", cache_dir]).await;
    let mut session = cp.session().await;
    assert_eq!(session.hello.applied_version, 0);
    assert_eq!(agent.get("/readyz").await.0, 503);
    session.send(full(1, &["a"])).await;
    assert_ack(session.answer().await, 1);
    agent.wait_for_version(1).await;
    agent.stop().await;
    // The good config replaced the corrupt file.
    let agent = Agent::start(&cp.url, &["--cache-dir", cache_dir]).await;
    assert_eq!(cp.session().await.hello.applied_version, 1);
    agent.stop().await;
}

#[tokio::test]
async fn hello_announces_the_services_and_the_advertised_address() {
    let mut cp = Cp::start().await;
    let args = [
        "--service",
        "api=8080",
        "--service",
        "db=5432",
        "--advertise-address",
        "10.1.2.3",
    ];
    let agent = Agent::start(&cp.url, &args).await;
    let node = cp.session().await.hello.node.unwrap();
    let services: Vec<_> = node
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.port))
        .collect();
    assert_eq!(services, [("api", 8080), ("db", 5432)]);
    assert_eq!(node.address, "10.1.2.3");
    agent.stop().await;

    // Without them, the Hello has none and the control plane uses the stream's address.
    let agent = Agent::start(&cp.url, &[]).await;
    let node = cp.session().await.hello.node.unwrap();
    assert!(node.services.is_empty() && node.address.is_empty());
    agent.stop().await;
}

#[tokio::test]
async fn service_endpoints_apply_without_an_ack_and_outlive_updates_and_resyncs() {
    let (mut cp, agent, mut session) = synced(3, &["a"]).await;
    session.send_service("api", &[80, 81]).await;
    let config = agent.wait_for_services(&[("api", &[80, 81])]).await;
    // The endpoint keeps the region and zone the control plane gave it.
    assert_eq!(config["services"]["api"][0]["zone"], "eu-2");
    assert_eq!(config["version"], 3, "not a config version");

    // No ACK for it: the next answer is the update's.
    session.send(diff(4, 3, &["b"], &[])).await;
    assert_ack(session.answer().await, 4);
    assert_eq!(agent.wait_for_version(4).await, ["a", "b"]);
    agent.wait_for_services(&[("api", &[80, 81])]).await;

    // A resync: endpoints sent while the agent waits for its full update apply at once and
    // stay with the full update.
    session.send(diff(6, 5, &["x"], &[])).await;
    let mut resync = cp.session().await;
    assert_eq!(resync.hello.applied_version, 0);
    resync.send_service("db", &[5432]).await;
    agent
        .wait_for_services(&[("api", &[80, 81]), ("db", &[5432])])
        .await;
    resync.send(full(7, &["c"])).await;
    assert_ack(resync.answer().await, 7);
    assert_eq!(agent.wait_for_version(7).await, ["c"]);
    agent
        .wait_for_services(&[("api", &[80, 81]), ("db", &[5432])])
        .await;

    // An empty set: the service is forgotten.
    resync.send_service("api", &[]).await;
    agent.wait_for_services(&[("db", &[5432])]).await;
    drop(session);
    agent.stop().await;
}

#[tokio::test]
async fn reports_carry_each_clusters_endpoints_bounded() {
    let (_cp, agent, mut session) = synced(1, &["a"]).await;
    let big = Resource {
        name: "big".into(),
        spec: Some(Spec::Cluster(Cluster {
            endpoints: (1..=600)
                .map(|port| Endpoint {
                    address: "127.0.0.1".into(),
                    port,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })),
        ..Default::default()
    };
    session
        .send(Update {
            upserts: vec![big],
            ..diff(2, 1, &[], &[])
        })
        .await;
    assert_ack(session.answer().await, 2);
    let report = session.report(|r| r.applied_version == 2).await;
    let endpoints: usize = report.clusters.iter().map(|c| c.endpoints.len()).sum();
    assert_eq!(endpoints, portico_api::health::MAX_REPORTED_ENDPOINTS);
    assert_eq!(
        report.endpoints_omitted as usize,
        600 - portico_api::health::MAX_REPORTED_ENDPOINTS
    );
    let big = report.clusters.iter().find(|c| c.cluster == "big").unwrap();
    assert_eq!(big.endpoints[0].address, "127.0.0.1:1");
    agent.stop().await;
}

/// The NACK of a refused older update, or a panic.
fn assert_refused_as_older(answer: agent_message::Message, version: i64, served: i64) {
    match answer {
        agent_message::Message::Nack(nack) => {
            assert_eq!(nack.reason(), nack::Reason::OlderThanServed, "{nack:?}");
            assert_eq!((nack.version, nack.served_version), (version, served));
            assert!(
                nack.error.contains("--accept-lower-version"),
                "{}",
                nack.error
            );
        }
        other => panic!("expected a NACK of {version} as older, got {other:?}"),
    }
}

#[tokio::test]
async fn an_older_or_emptied_config_is_refused_and_the_served_one_kept() {
    let (_cp, agent, mut session) = synced(9, &["a", "b"]).await;
    session.send(full(4, &["x"])).await;
    assert_refused_as_older(session.answer().await, 4, 9);
    assert_eq!(agent.wait_for_version(9).await, ["a", "b"]);
    let (status, body) = agent.get("/readyz").await;
    assert_eq!(status, 200, "it still serves");
    assert!(
        body.contains(
            "ahead of the control plane: serving version 9, the control plane offers version 4"
        ),
        "{body}"
    );
    let (_, metrics) = agent.get("/metrics").await;
    assert!(
        metrics.contains("portico_agent_ahead_of_control_plane 1"),
        "{metrics}"
    );

    // The same version, emptied: refused too. A diff that empties it as well.
    session.send(full(9, &[])).await;
    assert_refused_as_older(session.answer().await, 9, 9);
    session.send(diff(9, 9, &[], &["a", "b"])).await;
    assert_refused_as_older(session.answer().await, 9, 9);
    assert_eq!(agent.wait_for_version(9).await, ["a", "b"]);

    // A higher version is taken, even an empty one (deleting everything is a change too).
    session.send(full(10, &[])).await;
    assert_ack(session.answer().await, 10);
    assert!(agent.wait_for_version(10).await.is_empty());
    assert_eq!(agent.get("/readyz").await, (200, "ready\n".to_string()));
    let (_, metrics) = agent.get("/metrics").await;
    assert!(
        metrics.contains("portico_agent_ahead_of_control_plane 0"),
        "{metrics}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn accept_lower_version_takes_the_older_config() {
    let mut cp = Cp::start().await;
    let agent = Agent::start(&cp.url, &["--accept-lower-version"]).await;
    let mut session = cp.session().await;
    session.send(full(9, &["a"])).await;
    assert_ack(session.answer().await, 9);
    session.send(full(2, &["b"])).await;
    assert_ack(session.answer().await, 2);
    assert_eq!(agent.wait_for_version(2).await, ["b"]);
    agent.stop().await;
}
