//! The protocol, against scripted ADS clients (the tonic client of `envoy-types`) over a real
//! gRPC connection to the service, with snapshots published by the test and a real registry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster as EnvoyCluster;
use envoy_types::pb::envoy::config::core::v3::{Locality, Node as XdsNode};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener as EnvoyListener;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use portico_api::pb::{self, AgentRecord, Resource};
use portico_test_support::resources::{
    Edit, api_listener, cluster, kinds, listener, prefix, route, route_table, to, vhost,
};
use portico_test_support::wait::eventually;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

use super::*;
use crate::keys::Keys;
use crate::metered::MeteredStore;
use crate::snapshot::Stored;
use crate::store::embedded::EmbeddedStore;

const WAIT: Duration = Duration::from_secs(10);
const GREETER: &str = "greeter.example.internal";

/// A control plane's xDS service on a free port, fed snapshots by the test.
struct Harness {
    views: Arc<Views>,
    registry: Arc<Registry>,
    url: String,
    cancel: CancellationToken,
    /// Each resource and the store revision that last changed it.
    stored: BTreeMap<(i32, String), (Resource, Revision)>,
    version: Revision,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(resources: Vec<Resource>) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let store = MeteredStore::new(Arc::new(store));
        let (authority, _) = crate::auth::ca::Authority::generate().expect("ca");
        let (auth_state, _) = crate::auth::table::AuthState::load(&store, &Keys::default())
            .await
            .expect("auth state");
        // Authentication off, as on loopback by default; admission is tested end to end.
        let auth = Arc::new(crate::auth::Auth::new(
            false,
            Arc::new(authority),
            std::time::Duration::from_secs(3600),
            Arc::new(auth_state),
            store.clone(),
            Keys::default(),
        ));
        let registry = Arc::new(Registry::new(
            store,
            Keys::default(),
            "cp-test".into(),
            crate::config::DEFAULT_AGENT_EXPIRY,
        ));
        let views = Arc::new(Views::new(Arc::new(Snapshot::default())));
        let cancel = CancellationToken::new();
        let xds = Xds::new(
            views.clone(),
            registry.clone(),
            Arc::new(Services::default()),
            auth,
            Arc::new(crate::throttle::StreamThrottle::new(
                crate::config::DEFAULT_MAX_STREAM_ACCEPT_RATE,
            )),
            cancel.clone(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = cancel.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(xds.server())
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    stop.cancelled().await
                }),
        );
        let mut h = Harness {
            views,
            registry,
            url,
            cancel,
            stored: BTreeMap::new(),
            version: 0,
            _dir: dir,
        };
        h.publish(resources);
        h
    }

    /// Publishes the next version, holding exactly `resources`; unchanged ones keep their
    /// revision.
    fn publish(&mut self, resources: Vec<Resource>) {
        self.version += 1;
        let version = self.version;
        let mut next = BTreeMap::new();
        for r in resources {
            let key = (r.kind() as i32, r.name.clone());
            let revision = match self.stored.get(&key) {
                Some((old, at)) if *old == r => *at,
                _ => version,
            };
            next.insert(key, (r, revision));
        }
        self.stored = next;
        let stored = self
            .stored
            .values()
            .map(|(r, at)| Stored::new(r.clone(), *at, *at));
        self.views.publish(Arc::new(Snapshot::new(version, stored)));
    }

    async fn record(&self, id: &str) -> Option<AgentRecord> {
        let records = self.registry.list().await.expect("registry");
        records
            .into_iter()
            .find(|r| r.node.as_ref().is_some_and(|n| n.id == id))
    }

    /// Waits until the record of `id` satisfies `check`.
    async fn wait_record(
        &self,
        id: &str,
        what: &str,
        check: impl Fn(&AgentRecord) -> bool,
    ) -> AgentRecord {
        let what = format!("{id}: {what}");
        eventually(&what, WAIT, || async {
            self.record(id).await.filter(&check)
        })
        .await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn node(id: &str, agent: &str, region: &str) -> XdsNode {
    XdsNode {
        id: id.into(),
        locality: Some(Locality {
            region: region.into(),
            zone: format!("{region}-1"),
            sub_zone: String::new(),
        }),
        user_agent_name: agent.into(),
        ..Default::default()
    }
}

/// API listener GREETER → table "greeter" → cluster "greeter"; listener "web" for Envoy in
/// eu → "shop" → "shop"; "us-web" for Envoy in us; "agents-only" for Portico agents.
fn config() -> Vec<Resource> {
    let grpc_cluster = |name: &str, port: u16| {
        cluster(name, &[([10, 0, 0, 1], port).into()]).with(|c: &mut pb::Cluster| {
            c.protocol = pb::cluster::UpstreamProtocol::Http2.into();
        })
    };
    let envoy_listener = |name: &str, port, region: &str| {
        listener(name, port, "shop").with(|l: &mut pb::Listener| {
            let mut selector = kinds(&["envoy"]);
            selector.regions = vec![region.to_string()];
            l.selector = Some(selector);
        })
    };
    vec![
        api_listener(GREETER, "greeter"),
        route_table(
            "greeter",
            vec![vhost(
                "",
                &[GREETER],
                vec![route("all", prefix("/"), to("greeter"))],
            )],
        ),
        grpc_cluster("greeter", 50051),
        envoy_listener("web", 8080, "eu"),
        envoy_listener("us-web", 8081, "us"),
        listener("agents-only", 8082, "shop"),
        route_table(
            "shop",
            vec![vhost(
                "",
                &["*"],
                vec![route("all", prefix("/"), to("shop"))],
            )],
        ),
        cluster("shop", &[([10, 0, 0, 2], 80).into()]),
    ]
}

fn request(type_url: TypeUrl, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.as_str().into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

/// A state-of-the-world client: requests are queued, responses read in order.
struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Sotw {
    /// Opens a stream whose first request is `first` with `node`.
    async fn open(h: &Harness, node: XdsNode, mut first: DiscoveryRequest) -> Sotw {
        first.node = Some(node);
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.expect("queue");
        let mut client = AggregatedDiscoveryServiceClient::connect(h.url.clone())
            .await
            .expect("connect");
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("stream")
            .into_inner();
        Sotw { tx, rx }
    }

    async fn send(&self, request: DiscoveryRequest) {
        self.tx.send(request).await.expect("send");
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Ok(Some(response))) => response,
            other => panic!("no response: {other:?}"),
        }
    }

    /// Receives a response of `type_url` and ACKs it.
    async fn ack(&mut self, type_url: TypeUrl, names: &[&str]) -> DiscoveryResponse {
        let response = self.recv().await;
        assert_eq!(response.type_url, type_url.as_str(), "{response:?}");
        self.send(request(
            type_url,
            names,
            &response.version_info,
            &response.nonce,
        ))
        .await;
        response
    }
}

fn names<M: Message + Default>(
    response: &DiscoveryResponse,
    name: impl Fn(M) -> String,
) -> Vec<String> {
    response
        .resources
        .iter()
        .map(|any| name(M::decode(any.value.as_slice()).expect("decodes")))
        .collect()
}

fn listeners(r: &DiscoveryResponse) -> Vec<String> {
    names(r, |l: EnvoyListener| l.name)
}

fn clusters(r: &DiscoveryResponse) -> Vec<String> {
    names(r, |c: EnvoyCluster| c.name)
}

/// A NACK of the response `nonce`, keeping the subscription to `names`.
fn nack(type_url: TypeUrl, names: &[&str], nonce: &str, message: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        error_detail: Some(RpcStatus {
            code: 3,
            message: message.into(),
            details: vec![],
        }),
        ..request(type_url, names, "1", nonce)
    }
}

/// A gRPC client's start: listener, route, cluster, endpoints, each ACKed in turn.
async fn grpc_client(h: &Harness, id: &str) -> Sotw {
    let mut c = Sotw::open(
        h,
        node(id, "gRPC Python", "eu"),
        request(TypeUrl::Listener, &[GREETER], "", ""),
    )
    .await;
    c.ack(TypeUrl::Listener, &[GREETER]).await;
    c.send(request(TypeUrl::Route, &["greeter"], "", "")).await;
    c.ack(TypeUrl::Route, &["greeter"]).await;
    c.send(request(TypeUrl::Cluster, &["greeter"], "", ""))
        .await;
    c.ack(TypeUrl::Cluster, &["greeter"]).await;
    c.send(request(TypeUrl::Endpoint, &["greeter"], "", ""))
        .await;
    c.ack(TypeUrl::Endpoint, &["greeter"]).await;
    c
}

#[tokio::test]
async fn each_response_has_the_version_and_a_fresh_nonce_and_acks_reach_the_registry() {
    let h = Harness::start(config()).await;
    let mut c = Sotw::open(
        &h,
        node("client-1", "gRPC Python", "eu"),
        request(TypeUrl::Listener, &[GREETER], "", ""),
    )
    .await;
    let mut nonces = std::collections::HashSet::new();
    for (type_url, name) in [
        (TypeUrl::Listener, GREETER),
        (TypeUrl::Route, "greeter"),
        (TypeUrl::Cluster, "greeter"),
        (TypeUrl::Endpoint, "greeter"),
    ] {
        if type_url != TypeUrl::Listener {
            c.send(request(type_url, &[name], "", "")).await;
        }
        let response = c.ack(type_url, &[name]).await;
        assert_eq!(response.version_info, "1");
        if type_url == TypeUrl::Endpoint {
            let cla = ClusterLoadAssignment::decode(response.resources[0].value.as_slice())
                .expect("decodes");
            assert_eq!(cla.cluster_name, "greeter");
        }
        assert_eq!(response.resources.len(), 1, "{type_url:?}");
        assert!(
            nonces.insert(response.nonce.clone()),
            "nonce reused: {}",
            response.nonce
        );
    }
    let record = h
        .wait_record("client-1", "applied 1", |r| r.applied_version == 1)
        .await;
    assert_eq!(record.kind, "grpc");
    assert!(record.connected);
}

#[tokio::test]
async fn a_nack_is_told_by_its_error_detail_recorded_and_cleared_by_a_later_ack() {
    let mut h = Harness::start(config()).await;
    let mut c = grpc_client(&h, "client-2").await;
    h.wait_record("client-2", "applied 1", |r| r.applied_version == 1)
        .await;

    // Version 2 changes the cluster; the client rejects it.
    let mut changed = config();
    changed[2] = changed[2].clone().with(|c: &mut pb::Cluster| {
        c.lb_policy = pb::cluster::LbPolicy::RingHash.into();
    });
    h.publish(changed.clone());
    let response = c.recv().await;
    assert_eq!(
        (response.type_url.as_str(), response.version_info.as_str()),
        (TypeUrl::Cluster.as_str(), "2")
    );
    c.send(nack(
        TypeUrl::Cluster,
        &["greeter"],
        &response.nonce,
        "cluster greeter: ring hash refused",
    ))
    .await;
    let record = h
        .wait_record("client-2", "NACKed 2", |r| r.last_nack.is_some())
        .await;
    let nack = record.last_nack.expect("nack");
    assert_eq!(
        (nack.version, nack.error.as_str()),
        (2, "cluster greeter: ring hash refused")
    );
    assert_eq!(record.applied_version, 1);
    let status = crate::rollout::status(2, &h.registry.list().await.expect("list"));
    assert_eq!(
        (status.nacked, status.nacks[0].error.as_str()),
        (1, "cluster greeter: ring hash refused")
    );

    // A version that leaves the rejected cluster alone is still not applied: the NACK
    // stands for it. The rejected response is not sent again.
    let mut v3 = changed.clone();
    v3.push(cluster("unused", &[]));
    h.publish(v3);
    h.wait_record("client-2", "NACKed 3", |r| {
        r.last_nack.as_ref().is_some_and(|n| n.version == 3)
    })
    .await;

    // The fix: a new response, ACKed (the same request shape, no error_detail).
    h.publish(config());
    let response = c.ack(TypeUrl::Cluster, &["greeter"]).await;
    assert_eq!(response.version_info, "4");
    let record = h
        .wait_record("client-2", "applied 4", |r| r.applied_version == 4)
        .await;
    assert!(record.last_nack.is_none());
}

#[tokio::test]
async fn stale_nonces_change_nothing() {
    let mut h = Harness::start(config()).await;
    let mut c = grpc_client(&h, "client-3").await;
    let mut changed = config();
    changed[2] = changed[2].clone().with(|c: &mut pb::Cluster| {
        c.endpoints[0].port = 50052;
    });
    h.publish(changed);
    let first = c.recv().await;
    assert_eq!(first.type_url, TypeUrl::Endpoint.as_str());
    // A NACK and a subscription change under a nonce that is not the latest: ignored.
    c.send(nack(
        TypeUrl::Endpoint,
        &["greeter"],
        "not-a-nonce",
        "stale",
    ))
    .await;
    c.send(request(TypeUrl::Endpoint, &[], "1", "not-a-nonce"))
        .await;
    // The ACK of the latest response still counts, and nothing was answered in between.
    c.send(request(TypeUrl::Endpoint, &["greeter"], "2", &first.nonce))
        .await;
    let record = h
        .wait_record("client-3", "applied 2", |r| r.applied_version == 2)
        .await;
    assert!(record.last_nack.is_none(), "{record:?}");
    h.publish(config());
    let next = c.recv().await;
    assert_eq!(
        (next.type_url.as_str(), next.version_info.as_str()),
        (TypeUrl::Endpoint.as_str(), "3")
    );
    assert_eq!(next.resources.len(), 1, "still subscribed to greeter");
}

#[tokio::test]
async fn wildcard_and_named_subscriptions_are_answered_with_the_new_set() {
    let mut extra = config();
    extra.push(
        listener("web-2", 8090, "shop").with(|l: &mut pb::Listener| {
            l.selector = Some(kinds(&["envoy", "portico"]));
        }),
    );
    let h = Harness::start(extra).await;
    // Envoy: the legacy wildcard (no names) gets every listener for Envoy in its region.
    let mut c = Sotw::open(
        &h,
        node("proxy-1", "envoy", "eu"),
        request(TypeUrl::Listener, &[], "", ""),
    )
    .await;
    let all = c.ack(TypeUrl::Listener, &[]).await;
    assert_eq!(listeners(&all), ["web", "web-2"]);
    // Naming one replaces the wildcard; "*" brings it back beside a name.
    c.send(request(TypeUrl::Listener, &["web-2"], "1", &all.nonce))
        .await;
    let named = c.recv().await;
    assert_eq!(listeners(&named), ["web-2"]);
    c.send(request(
        TypeUrl::Listener,
        &["*", "web-2"],
        "1",
        &named.nonce,
    ))
    .await;
    let again = c.recv().await;
    assert_eq!(listeners(&again), ["web", "web-2"]);
    // A name not in the scope is not sent: "us-web" selects another region, the API listener
    // is for gRPC clients and "agents-only" for Portico agents.
    c.send(request(
        TypeUrl::Listener,
        &["us-web", GREETER, "agents-only", "web"],
        "1",
        &again.nonce,
    ))
    .await;
    assert_eq!(listeners(&c.recv().await), ["web"]);
    // Clusters: wildcard by default too.
    c.send(request(TypeUrl::Cluster, &[], "", "")).await;
    assert_eq!(clusters(&c.recv().await), ["shop"]);
}

#[tokio::test]
async fn every_response_holds_every_subscribed_resource() {
    let mut h = Harness::start(config()).await;
    let mut c = Sotw::open(
        &h,
        node("proxy-2", "envoy", "eu"),
        request(TypeUrl::Cluster, &[], "", ""),
    )
    .await;
    c.ack(TypeUrl::Cluster, &[]).await;
    let mut two = config();
    two.push(cluster("shop-2", &[([10, 0, 0, 3], 80).into()]));
    two[6] = route_table(
        "shop",
        vec![vhost(
            "",
            &["*"],
            vec![
                route("a", prefix("/a"), to("shop-2")),
                route("all", prefix("/"), to("shop")),
            ],
        )],
    );
    h.publish(two.clone());
    assert_eq!(
        clusters(&c.ack(TypeUrl::Cluster, &[]).await),
        ["shop", "shop-2"]
    );
    // Only shop-2 changes; the response still holds shop, or the client would delete it.
    two[8] = two[8].clone().with(|c: &mut pb::Cluster| {
        c.lb_policy = pb::cluster::LbPolicy::LeastRequest.into();
    });
    h.publish(two);
    assert_eq!(
        clusters(&c.ack(TypeUrl::Cluster, &[]).await),
        ["shop", "shop-2"]
    );
    // Removed from the config: left out of the next response.
    h.publish(config());
    assert_eq!(clusters(&c.recv().await), ["shop"]);
}

#[tokio::test]
async fn clusters_and_endpoints_go_before_the_routes_that_need_them() {
    let mut h = Harness::start(config()).await;
    let mut c = Sotw::open(
        &h,
        node("proxy-3", "envoy", "eu"),
        request(TypeUrl::Cluster, &[], "", ""),
    )
    .await;
    c.ack(TypeUrl::Cluster, &[]).await;
    c.send(request(TypeUrl::Endpoint, &["shop"], "", "")).await;
    c.ack(TypeUrl::Endpoint, &["shop"]).await;
    c.send(request(TypeUrl::Listener, &[], "", "")).await;
    c.ack(TypeUrl::Listener, &[]).await;
    c.send(request(TypeUrl::Route, &["shop"], "", "")).await;
    c.ack(TypeUrl::Route, &["shop"]).await;
    h.wait_record("proxy-3", "applied 1", |r| r.applied_version == 1)
        .await;

    // Version 2: a new cluster and a route to it.
    let mut v2 = config();
    v2.push(cluster("shop-2", &[([10, 0, 0, 3], 80).into()]));
    v2[6] = route_table(
        "shop",
        vec![vhost(
            "",
            &["*"],
            vec![
                route("a", prefix("/a"), to("shop-2")),
                route("all", prefix("/"), to("shop")),
            ],
        )],
    );
    h.publish(v2);
    // The cluster first; the route waits for its ACK...
    let cds = c.recv().await;
    assert_eq!(clusters(&cds), ["shop", "shop-2"]);
    c.send(request(TypeUrl::Cluster, &[], "2", &cds.nonce))
        .await;
    // ...and for the client to ask for the new cluster's endpoints, which come next.
    c.send(request(TypeUrl::Endpoint, &["shop", "shop-2"], "1", ""))
        .await;
    let eds = c.recv().await;
    assert_eq!(
        eds.type_url,
        TypeUrl::Endpoint.as_str(),
        "endpoints before routes"
    );
    assert_eq!(eds.resources.len(), 2);
    c.send(request(
        TypeUrl::Endpoint,
        &["shop", "shop-2"],
        "2",
        &eds.nonce,
    ))
    .await;
    let rds = c.ack(TypeUrl::Route, &["shop"]).await;
    assert_eq!(rds.version_info, "2");
    h.wait_record("proxy-3", "applied 2", |r| r.applied_version == 2)
        .await;
}

#[tokio::test]
async fn each_kind_of_client_gets_its_listeners() {
    let h = Harness::start(config()).await;
    let mut grpc = Sotw::open(
        &h,
        node("client-4", "gRPC Go", "eu"),
        request(TypeUrl::Listener, &["*"], "", ""),
    )
    .await;
    assert_eq!(listeners(&grpc.recv().await), [GREETER]);
    let mut us = Sotw::open(
        &h,
        node("proxy-us", "envoy", "us"),
        request(TypeUrl::Listener, &[], "", ""),
    )
    .await;
    assert_eq!(listeners(&us.recv().await), ["us-web"]);
    let record = h.wait_record("proxy-us", "registered", |_| true).await;
    assert_eq!(record.kind, "envoy");
}

/// An incremental client.
struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    async fn open(h: &Harness, node: XdsNode, mut first: DeltaDiscoveryRequest) -> Delta {
        first.node = Some(node);
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.expect("queue");
        let mut client = AggregatedDiscoveryServiceClient::connect(h.url.clone())
            .await
            .expect("connect");
        let rx = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("stream")
            .into_inner();
        Delta { tx, rx }
    }

    async fn send(&self, request: DeltaDiscoveryRequest) {
        self.tx.send(request).await.expect("send");
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Ok(Some(response))) => response,
            other => panic!("no response: {other:?}"),
        }
    }

    async fn ack(&mut self, type_url: TypeUrl) -> DeltaDiscoveryResponse {
        let response = self.recv().await;
        assert_eq!(response.type_url, type_url.as_str(), "{response:?}");
        self.send(delta(type_url, &[], &[], &response.nonce)).await;
        response
    }
}

fn delta(
    type_url: TypeUrl,
    subscribe: &[&str],
    unsubscribe: &[&str],
    nonce: &str,
) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.as_str().into(),
        resource_names_subscribe: subscribe.iter().map(|n| n.to_string()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|n| n.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn delta_names(r: &DeltaDiscoveryResponse) -> (Vec<String>, Vec<String>) {
    (
        r.resources.iter().map(|r| r.name.clone()).collect(),
        r.removed_resources.clone(),
    )
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[tokio::test]
async fn delta_sends_what_changed_and_removes_what_went() {
    let mut with_two = config();
    with_two.push(cluster("shop-2", &[([10, 0, 0, 3], 80).into()]));
    with_two[6] = route_table(
        "shop",
        vec![vhost(
            "",
            &["*"],
            vec![
                route("a", prefix("/a"), to("shop-2")),
                route("all", prefix("/"), to("shop")),
            ],
        )],
    );
    let mut h = Harness::start(with_two.clone()).await;
    let mut c = Delta::open(
        &h,
        node("proxy-d", "envoy", "eu"),
        delta(TypeUrl::Cluster, &[], &[], ""),
    )
    .await;
    let first = c.ack(TypeUrl::Cluster).await;
    assert_eq!(delta_names(&first), (s(&["shop", "shop-2"]), s(&[])));
    assert_eq!(first.system_version_info, "1");
    let versions: BTreeMap<String, String> = first
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    assert!(versions.values().all(|v| !v.is_empty()));
    h.wait_record("proxy-d", "applied 1", |r| r.applied_version == 1)
        .await;

    // One cluster changes: only it is sent.
    with_two[8] = with_two[8].clone().with(|c: &mut pb::Cluster| {
        c.lb_policy = pb::cluster::LbPolicy::LeastRequest.into();
    });
    h.publish(with_two);
    let changed = c.ack(TypeUrl::Cluster).await;
    assert_eq!(delta_names(&changed), (s(&["shop-2"]), s(&[])));
    // It leaves the config: removed.
    h.publish(config());
    let removed = c.ack(TypeUrl::Cluster).await;
    assert_eq!(delta_names(&removed), (s(&[]), s(&["shop-2"])));
    h.wait_record("proxy-d", "applied 3", |r| r.applied_version == 3)
        .await;

    // Endpoints by name: one that exists is sent, one that does not is removed once.
    c.send(delta(TypeUrl::Endpoint, &["shop", "nope"], &[], ""))
        .await;
    let eds = c.ack(TypeUrl::Endpoint).await;
    assert_eq!(delta_names(&eds), (s(&["shop"]), s(&["nope"])));
    // Unsubscribing sends nothing; subscribing again sends it again.
    c.send(delta(TypeUrl::Endpoint, &[], &["shop"], "")).await;
    c.send(delta(TypeUrl::Endpoint, &["shop"], &[], "")).await;
    let again = c.ack(TypeUrl::Endpoint).await;
    assert_eq!(delta_names(&again), (s(&["shop"]), s(&[])));

    // A NACK keeps the client where it was, and is recorded.
    h.publish(
        config()
            .into_iter()
            .map(|r| {
                if r.name == "shop" && r.kind() == portico_api::Kind::Cluster {
                    r.with(|c: &mut pb::Cluster| c.endpoints[0].port = 82)
                } else {
                    r
                }
            })
            .collect(),
    );
    // Only the endpoints changed.
    let eds = c.recv().await;
    assert_eq!(eds.type_url, TypeUrl::Endpoint.as_str());
    c.send(DeltaDiscoveryRequest {
        error_detail: Some(RpcStatus {
            code: 3,
            message: "bad endpoint".into(),
            details: vec![],
        }),
        ..delta(TypeUrl::Endpoint, &[], &[], &eds.nonce)
    })
    .await;
    let record = h
        .wait_record("proxy-d", "NACKed 4", |r| {
            r.last_nack.as_ref().is_some_and(|n| n.version == 4)
        })
        .await;
    assert_eq!(record.last_nack.expect("nack").error, "bad endpoint");
}

#[tokio::test]
async fn a_delta_client_that_resumes_gets_only_what_it_lacks() {
    let h = Harness::start(config()).await;
    let mut c = Delta::open(
        &h,
        node("proxy-r", "envoy", "eu"),
        delta(TypeUrl::Listener, &[], &[], ""),
    )
    .await;
    let first = c.recv().await;
    let (name, version) = (
        first.resources[0].name.clone(),
        first.resources[0].version.clone(),
    );
    drop(c);
    let mut resumed = delta(TypeUrl::Listener, &[], &[], "");
    resumed.initial_resource_versions = [(name, version)].into();
    let mut c = Delta::open(&h, node("proxy-r", "envoy", "eu"), resumed).await;
    let answer = c.recv().await;
    assert_eq!(
        delta_names(&answer),
        (s(&[]), s(&[])),
        "answered, with nothing new"
    );
}
