//! xDS admission with authentication on, through the real control plane over TLS: an xDS
//! client with neither an agent certificate nor a join token gets nothing, one with a join
//! token gets what a node within the token's bounds is scoped to, and a token client can
//! neither claim a region outside them nor a joined agent's node id.

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

/// Opens a state-of-the-world ADS stream to `cp` as Envoy node `id` in `region`, sending
/// `token` (none: no credential), subscribed to every cluster; the first response, or the
/// status that refused the stream.
async fn first_clusters(
    cp: &ControlPlane,
    token: Option<&str>,
    id: &str,
    region: &str,
) -> Result<DiscoveryResponse, tonic::Status> {
    let channel = cp.channel(None).await.unwrap_or_else(|e| panic!("{e}"));
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
            Some(response) => Ok(response),
            None => Err(tonic::Status::unknown(
                "the stream ended without a response",
            )),
        }
    })
    .await;
    answered.unwrap_or_else(|_| panic!("no answer to the xDS stream of {id} in {ANSWER_TIMEOUT:?}"))
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
