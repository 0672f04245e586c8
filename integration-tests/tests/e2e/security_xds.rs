//! xDS admission with authentication on, through the real control plane over TLS: an xDS
//! client with neither an agent certificate nor a join token gets nothing, one with a join
//! token gets what a node within the token's bounds is scoped to, and a token client can
//! neither claim a region outside them nor a joined agent's node id; a joined agent's
//! certificate admits an xDS client over mutual TLS; a stream ends when its credential is
//! revoked.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use futures::StreamExt;
use portico_api::Resource;
use portico_api::pb;
use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::cp::{Bearer, ControlPlane};
use portico_test_support::net::{free_port, localhost};
use portico_test_support::resources::{
    Edit, cluster, listener, prefix, route, route_table, to, vhost,
};
use tonic::Code;
use tonic::transport::Channel;

const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// How long a refused or answered stream may take to say so.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// An Envoy listener for region `region`, routing to its own cluster `{region}-web`.
fn regional(region: &str) -> Vec<Resource> {
    let web = format!("{region}-web");
    vec![
        listener(&format!("edge-{region}"), free_port(), &web).with(|l: &mut pb::Listener| {
            l.selector = Some(pb::AgentSelector {
                kinds: vec!["envoy".into()],
                regions: vec![region.into()],
                ..Default::default()
            });
        }),
        route_table(
            &web,
            vec![vhost("", &["*"], vec![route("all", prefix("/"), to(&web))])],
        ),
        cluster(&web, &[localhost(free_port())]),
    ]
}

/// `portico token create --join ARGS -o json` on `cp`; the token.
fn join_token(cp: &ControlPlane, args: &[&str]) -> String {
    let mut all = vec!["-o", "json", "token", "create", "--join"];
    all.extend_from_slice(args);
    let created = cp.portico(&all).ok().json();
    created["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {created}"))
        .to_string()
}

/// An open ADS stream.
type Inbound = tonic::Streaming<DiscoveryResponse>;

/// Opens a state-of-the-world ADS stream over `channel` as Envoy node `id` in `region`,
/// sending `token` (none: no credential), subscribed to every cluster; the first response and
/// the stream, or the status that refused the stream.
async fn open_clusters(
    channel: Channel,
    token: Option<&str>,
    id: &str,
    region: &str,
) -> Result<(DiscoveryResponse, Inbound), tonic::Status> {
    let mut client =
        AggregatedDiscoveryServiceClient::with_interceptor(channel, Bearer::new(token));
    let request = DiscoveryRequest {
        node: Some(Node {
            id: id.into(),
            locality: Some(Locality {
                region: region.into(),
                zone: format!("{region}-1"),
                ..Default::default()
            }),
            user_agent_name: "envoy".into(),
            ..Default::default()
        }),
        type_url: CLUSTER.into(),
        ..Default::default()
    };
    // The stream stays open after the request, as a real client's does.
    let outbound = futures::stream::iter([request]).chain(futures::stream::pending());
    let answered = tokio::time::timeout(ANSWER_TIMEOUT, async {
        let mut inbound = client
            .stream_aggregated_resources(outbound)
            .await?
            .into_inner();
        match inbound.message().await? {
            Some(response) => Ok((response, inbound)),
            None => Err(tonic::Status::unknown(
                "the stream ended without a response",
            )),
        }
    })
    .await;
    answered.unwrap_or_else(|_| panic!("no answer to the xDS stream of {id} in {ANSWER_TIMEOUT:?}"))
}

/// [`open_clusters`] over a channel without a client certificate; the first response.
async fn first_clusters(
    cp: &ControlPlane,
    token: Option<&str>,
    id: &str,
    region: &str,
) -> Result<DiscoveryResponse, tonic::Status> {
    let channel = cp.channel(None).await.unwrap_or_else(|e| panic!("{e}"));
    open_clusters(channel, token, id, region)
        .await
        .map(|(response, _)| response)
}

/// Waits until the control plane ends `inbound`; panics when it does not within the deadline.
async fn ends(mut inbound: Inbound, what: &str) {
    let ended = tokio::time::timeout(ANSWER_TIMEOUT, async {
        while let Ok(Some(_)) = inbound.message().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "{what}: the stream still open after {ANSWER_TIMEOUT:?}"
    );
}

/// Whether `inbound` is still open: no end and no error within a short look.
async fn open(inbound: &mut Inbound) -> bool {
    tokio::time::timeout(Duration::from_millis(500), inbound.message())
        .await
        .is_err()
}

/// The names of the clusters in `response`.
fn cluster_names(response: &DiscoveryResponse) -> Vec<String> {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use prost::Message;
    response
        .resources
        .iter()
        .map(|any| {
            Cluster::decode(any.value.as_slice())
                .unwrap_or_else(|e| panic!("an undecodable cluster: {e}"))
                .name
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_clients_are_admitted_by_join_token_and_scoped_by_it() {
    let cp = ControlPlane::secured();
    let mut config = regional("eu");
    config.extend(regional("us"));
    cp.apply(config).await;

    // No credential: refused before anything is sent, and never registered.
    let refused = first_clusters(&cp, None, "envoy-anon", "eu").await;
    let status = refused.expect_err("an unauthenticated xDS stream is refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("join token"), "{status:?}");
    assert!(cp.agent_record("envoy-anon").await.is_none());

    // An Admin token is not an xDS credential.
    let admin = cp.admin_token.clone().expect("an admin token");
    let status = first_clusters(&cp, Some(&admin), "envoy-admin", "eu")
        .await
        .expect_err("an Admin token does not admit an xDS client");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // A join token bound to region eu: the eu listener's cluster, not the us one.
    let eu = join_token(&cp, &["--region", "eu"]);
    let response = first_clusters(&cp, Some(&eu), "envoy-eu", "eu")
        .await
        .unwrap_or_else(|s| panic!("a join token admits an xDS client: {s:?}"));
    assert_eq!(cluster_names(&response), ["eu-web"], "{response:?}");
    let record = cp.agent_record("envoy-eu").await.expect("registered");
    assert_eq!(record.kind, "envoy");

    // Claiming a region outside the token's bounds is refused.
    let status = first_clusters(&cp, Some(&eu), "envoy-us", "us")
        .await
        .expect_err("a region outside the token's bounds is refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // A joined agent's node id cannot be claimed with a token.
    let any = join_token(&cp, &[]);
    let cache = tempfile::tempdir().expect("temp dir");
    let agent = Agent::start_ready(
        &AgentOptions::new("edge-1", &[cp.endpoint()])
            .join(&any, &cp.fingerprint)
            .cache_dir(cache.path()),
    )
    .await;
    let status = first_clusters(&cp, Some(&any), "edge-1", "eu")
        .await
        .expect_err("a token client cannot pose as a joined agent");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("edge-1"), "{status:?}");
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_certificates_admit_xds_clients_and_revocation_ends_their_streams() {
    let cp = ControlPlane::secured();
    cp.apply(regional("eu")).await;

    // A joined agent's certificate, over mutual TLS, admits an xDS client as that agent.
    let any = join_token(&cp, &["--region", "eu"]);
    let cache = tempfile::tempdir().expect("temp dir");
    let agent = Agent::start_ready(
        &AgentOptions::new("edge-1", &[cp.endpoint()])
            .join(&any, &cp.fingerprint)
            .cache_dir(cache.path()),
    )
    .await;
    // One stream per node: the agent leaves before its certificate is used elsewhere.
    drop(agent);
    let text = std::fs::read_to_string(cache.path().join("identity.pem")).expect("identity.pem");
    let key_start = text
        .find("-----BEGIN PRIVATE KEY-----")
        .expect("a key in identity.pem");
    let identity = (text[..key_start].to_string(), text[key_start..].to_string());
    let channel = cp
        .channel(Some(identity.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (response, mut by_cert) = open_clusters(channel, None, "edge-1", "eu")
        .await
        .unwrap_or_else(|s| panic!("an agent certificate admits an xDS client: {s:?}"));
    assert_eq!(cluster_names(&response), ["eu-web"], "{response:?}");
    // The certificate is edge-1's: it admits no other node id.
    let channel = cp
        .channel(Some(identity))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = open_clusters(channel, None, "edge-2", "eu")
        .await
        .map(|_| ())
        .expect_err("a certificate admits only its own node id");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // A join token's stream, alongside.
    let created = cp
        .portico(&[
            "-o", "json", "token", "create", "--join", "--name", "xds-eu-2", "--region", "eu",
        ])
        .ok()
        .json();
    let token = created["token"].as_str().expect("a token").to_string();
    let (_, mut by_token) = open_clusters(
        cp.channel(None).await.unwrap_or_else(|e| panic!("{e}")),
        Some(&token),
        "envoy-eu",
        "eu",
    )
    .await
    .unwrap_or_else(|s| panic!("a join token admits an xDS client: {s:?}"));
    assert!(open(&mut by_cert).await && open(&mut by_token).await);

    // Revoking the agent ends the certificate's stream, not the token's.
    cp.portico(&["agents", "revoke", "edge-1"]).ok();
    ends(by_cert, "edge-1 revoked").await;
    assert!(
        open(&mut by_token).await,
        "the token's stream ended with the agent's revocation"
    );

    // Revoking the token ends its stream; the token admits no new one.
    cp.portico(&["token", "revoke", "xds-eu-2"]).ok();
    ends(by_token, "token xds-eu-2 revoked").await;
    let status = first_clusters(&cp, Some(&token), "envoy-eu", "eu")
        .await
        .expect_err("a revoked token admits nothing");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}
