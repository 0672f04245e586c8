//! xDS v3 for Envoy proxies and proxyless gRPC clients: the control plane also serves
//! `envoy.service.discovery.v3.AggregatedDiscoveryService`, state of the world
//! (`StreamAggregatedResources`, [`sotw`]) and incremental (`DeltaAggregatedResources`,
//! [`delta`]), from the same snapshots, scopes and registry as Portico's own Discovery stream.
//!
//! A client registers from the `node` of its stream's first request ([`client`]): Envoy
//! proxies as kind `envoy`, gRPC clients as kind `grpc`, with the node's locality as region
//! and zone and its metadata as labels, so listener selectors scope what it gets as they do
//! for Portico agents (gRPC clients get API listeners, Envoy the listeners whose selector names
//! "envoy"). What a client can be sent is its scope's view translated ([`catalog`],
//! [`translate`]); what it is sent is the part it subscribes to.
//!
//! Both variants follow the same rules: every response carries the config version
//! (`version_info`, `system_version_info`) and a nonce unique on the stream; a request
//! answering the latest nonce of its type is an ACK, or a NACK when it has `error_detail`; a
//! request with any other nonce is stale and changes nothing (its subscription changes
//! excepted in delta, where they are not sent again); at most one response per type is
//! unacknowledged; clusters, endpoints and secrets go before the listeners and routes that
//! need them, which wait until the former are acknowledged and the client subscribed to the
//! endpoints of every cluster it was sent (make-before-break). A client is at version V in the
//! registry when it acknowledged everything it subscribes to at V; a NACK is recorded with the
//! client's `error_detail` message, as a Portico agent's, and stands for every later version
//! until the client accepts one.
//!
//! # Layout
//! - here: the service, resource types, and what both variants share per stream.
//! - [`client`]: who a client is, from its node.
//! - [`translate`]: Portico resources as xDS resources.
//! - [`catalog`]: what one client can be sent at one snapshot.
//! - `session`: what both streams do alike: take requests, follow snapshots, send.
//! - [`sotw`]: the state-of-the-world stream.
//! - [`delta`]: the incremental stream.

pub mod catalog;
pub mod client;
pub mod delta;
mod session;
pub mod sotw;
pub mod translate;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use portico_api::node::DataPlane;
use portico_api::pb::Node;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Auth;
use crate::auth::xds::XdsPeer;
use crate::metrics::NACKS;
use crate::registry::{Registry, StreamId};
use crate::scope::{Identity, ScopeMemo};
use crate::services::{ServiceTable, Services};
use crate::snapshot::Snapshot;
use crate::store::Revision;
use crate::throttle::StreamThrottle;
use crate::views::Views;
use catalog::{Catalog, Translator};
use session::Flavour;

/// How long a new stream may take to send its first request.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an authenticated stream's credential is checked for expiry (revocations end
/// streams as soon as this replica learns of them).
const CREDENTIAL_CHECK: Duration = Duration::from_secs(10);

/// The resource types served, in the order a change is sent: what listeners and routes need
/// (clusters, their endpoints, certificates) before them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TypeUrl {
    /// `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoint,
    /// `envoy.extensions.transport_sockets.tls.v3.Secret`.
    Secret,
    /// `envoy.config.listener.v3.Listener`.
    Listener,
    /// `envoy.config.route.v3.RouteConfiguration`.
    Route,
}

impl TypeUrl {
    /// Every type, in sending order.
    pub const ALL: [TypeUrl; 5] = [
        TypeUrl::Cluster,
        TypeUrl::Endpoint,
        TypeUrl::Secret,
        TypeUrl::Listener,
        TypeUrl::Route,
    ];

    /// The type URL.
    pub fn as_str(self) -> &'static str {
        match self {
            TypeUrl::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            TypeUrl::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            TypeUrl::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
            TypeUrl::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            TypeUrl::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    /// The type of `url`, if served.
    pub fn parse(url: &str) -> Option<TypeUrl> {
        TypeUrl::ALL.into_iter().find(|t| t.as_str() == url)
    }

    /// The message name, for logs and metrics.
    pub fn name(self) -> &'static str {
        let url = self.as_str();
        url.rsplit('.').next().unwrap_or(url)
    }

    /// Whether listeners and routes wait for this type (make-before-break).
    fn needed_first(self) -> bool {
        matches!(self, TypeUrl::Cluster | TypeUrl::Endpoint | TypeUrl::Secret)
    }

    /// Whether a first request naming nothing subscribes to everything (the legacy wildcard
    /// of listeners and clusters).
    fn wildcard_when_unnamed(self) -> bool {
        matches!(self, TypeUrl::Listener | TypeUrl::Cluster)
    }
}

/// What a client subscribes to in one type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Everything of the type (in scope).
    pub wildcard: bool,
    /// These names (besides everything, with `wildcard`).
    pub names: BTreeSet<String>,
}

impl Subscription {
    /// Whether `name` is subscribed to.
    pub fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// The ADS service.
#[derive(Clone)]
pub struct Xds {
    views: Arc<Views>,
    registry: Arc<Registry>,
    services: Arc<Services>,
    auth: Arc<Auth>,
    throttle: Arc<StreamThrottle>,
    cancel: CancellationToken,
}

impl Xds {
    /// Streams end when `cancel` fires. With authentication on, a stream is admitted by
    /// [`crate::auth::xds`] before its first request is read.
    pub fn new(
        views: Arc<Views>,
        registry: Arc<Registry>,
        services: Arc<Services>,
        auth: Arc<Auth>,
        throttle: Arc<StreamThrottle>,
        cancel: CancellationToken,
    ) -> Self {
        Xds {
            views,
            registry,
            services,
            auth,
            throttle,
            cancel,
        }
    }

    /// With authentication on, the credential of the stream `request` opens: refused before
    /// anything is read or sent.
    fn authenticate<T>(&self, request: &Request<T>) -> Result<Option<XdsPeer>, Status> {
        self.auth.xds_peer(request).map_err(|e| {
            tracing::info!(peer = ?request.remote_addr(), error = %e, "refused an xDS stream");
            Status::from(e)
        })
    }

    /// Refuses a node its credential does not allow to claim.
    fn admit(
        &self,
        peer: &Option<XdsPeer>,
        node: &envoy_types::pb::envoy::config::core::v3::Node,
    ) -> Result<(), Status> {
        let Some(peer) = peer else { return Ok(()) };
        let (claimed, _) = client::identify(node)?;
        peer.check_node(&self.auth.table(), &claimed).map_err(|e| {
            tracing::warn!(node = %claimed.id, error = %e, "refused an xDS client's node");
            Status::from(e)
        })
    }

    /// The token a session runs under: cancelled with the service, or when the stream's
    /// credential is revoked or expires.
    fn session_cancel(&self, peer: Option<XdsPeer>) -> CancellationToken {
        let cancel = self.cancel.child_token();
        let Some(peer) = peer else { return cancel };
        let mut tables = self.auth.state.subscribe();
        let ended = cancel.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CREDENTIAL_CHECK);
            loop {
                tokio::select! {
                    _ = ended.cancelled() => return,
                    changed = tables.changed() => if changed.is_err() { return },
                    _ = tick.tick() => {}
                }
                let table = tables.borrow_and_update().clone();
                if !peer.still_valid(&table, std::time::SystemTime::now()) {
                    tracing::info!(
                        ?peer,
                        "ending an xDS stream: its credential was revoked or expired"
                    );
                    ended.cancel();
                    return;
                }
            }
        });
        cancel
    }

    /// The tonic service.
    pub fn server(self) -> AggregatedDiscoveryServiceServer<Xds> {
        AggregatedDiscoveryServiceServer::new(self)
    }

    /// The shared state of a stream whose first request carried `node`.
    fn stream(
        &self,
        node: &envoy_types::pb::envoy::config::core::v3::Node,
    ) -> Result<Stream, Status> {
        let (node, kind) = client::identify(node)?;
        let stream_id = self.registry.connect_as(&node, 0, kind);
        tracing::info!(node = %node.id, %kind, region = %node.region, "xDS client connected");
        metrics::gauge!(crate::metrics::XDS_STREAMS, "kind" => kind.as_str()).increment(1.0);
        Ok(Stream {
            views: self.views.clone(),
            services: self.services.clone(),
            registry: self.registry.clone(),
            scope: ScopeMemo::of(Identity::of_kind(&node, kind)),
            translator: Translator::new(kind),
            catalog: None,
            node,
            kind,
            stream_id,
            nonces: 0,
            acked: 0,
            nacked: 0,
        })
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Xds {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.open::<sotw::Session>(request).await
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.open::<delta::Session>(request).await
    }
}

impl Xds {
    /// Admits a stream of flavour `F` and serves it in a task of its own.
    async fn open<F: Flavour>(
        &self,
        request: Request<Streaming<F::Request>>,
    ) -> Result<Response<ReceiverStream<Result<F::Response, Status>>>, Status> {
        self.throttle.admit()?;
        let peer = self.authenticate(&request)?;
        let mut inbound = request.into_inner();
        let first = first(inbound.message()).await?;
        let node = F::node(&first).ok_or_else(no_node)?;
        self.admit(&peer, node)?;
        let stream = self.stream(node)?;
        let (tx, rx) = mpsc::channel(8);
        let cancel = self.session_cancel(peer);
        tokio::spawn(async move {
            session::run(F::new(stream), first, inbound, tx, cancel.clone()).await;
            cancel.cancel();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The first request of a stream, within [`FIRST_REQUEST_TIMEOUT`].
async fn first<T>(
    message: impl std::future::Future<Output = Result<Option<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(FIRST_REQUEST_TIMEOUT, message).await {
        Ok(Ok(Some(request))) => Ok(request),
        Ok(Err(status)) => Err(status),
        Ok(Ok(None)) | Err(_) => Err(Status::invalid_argument(
            "an xDS stream must start with a request carrying the node",
        )),
    }
}

fn no_node() -> Status {
    Status::invalid_argument("the first request of an xDS stream must carry the node")
}

/// Whether a client is at the current version, on its way, or rejecting it.
#[derive(Debug, PartialEq)]
enum Sync {
    /// Nothing unacknowledged, nothing to send, nothing rejected.
    Current,
    /// Something is unacknowledged or waits to be sent.
    Pending,
    /// Nothing unacknowledged, but a type's resources were rejected with this message.
    Rejected(String),
}

/// What both variants keep per stream: the client, its scope, its translations, and what the
/// registry was last told.
struct Stream {
    views: Arc<Views>,
    services: Arc<Services>,
    registry: Arc<Registry>,
    node: Node,
    kind: DataPlane,
    stream_id: StreamId,
    scope: ScopeMemo,
    translator: Translator,
    /// The catalog and the snapshot and service table it was made from.
    catalog: Option<(Arc<Snapshot>, Arc<ServiceTable>, Arc<Catalog>)>,
    nonces: u64,
    /// The newest version recorded as applied.
    acked: Revision,
    /// The newest version recorded as rejected.
    nacked: Revision,
}

impl Stream {
    /// What the client can be sent at `snapshot` with the service endpoints of `table`.
    fn catalog(&mut self, snapshot: &Arc<Snapshot>, table: &Arc<ServiceTable>) -> Arc<Catalog> {
        if let Some((s, t, c)) = &self.catalog
            && Arc::ptr_eq(s, snapshot)
            && Arc::ptr_eq(t, table)
        {
            return c.clone();
        }
        let scope = self.scope.scope(snapshot.selectors());
        let view = self.views.view(&scope, snapshot);
        let catalog = Arc::new(self.translator.catalog(&view, table));
        self.catalog = Some((snapshot.clone(), table.clone(), catalog.clone()));
        catalog
    }

    /// A nonce not used before on this stream.
    fn nonce(&mut self) -> String {
        self.nonces += 1;
        self.nonces.to_string()
    }

    /// The client rejected the `type_url` response of `version`.
    fn rejected(&mut self, type_url: TypeUrl, version: Revision, message: &str) {
        metrics::counter!(NACKS).increment(1);
        tracing::warn!(node = %self.node.id, kind = %self.kind, r#type = type_url.name(), version, error = message, "xDS client rejected a response");
        self.registry
            .nacked(&self.node.id, self.stream_id, version, message);
        self.nacked = self.nacked.max(version);
    }

    /// Tells the registry where the client stands at `version`.
    fn account(&mut self, version: Revision, sync: Sync) {
        match sync {
            Sync::Current if version > self.acked => {
                self.registry.acked(&self.node.id, self.stream_id, version);
                self.acked = version;
            }
            Sync::Rejected(message) if version > self.nacked && version > self.acked => {
                self.registry
                    .nacked(&self.node.id, self.stream_id, version, &message);
                self.nacked = version;
            }
            _ => {}
        }
    }

    fn sent(&self, type_url: TypeUrl) {
        metrics::counter!(crate::metrics::XDS_RESPONSES, "type" => type_url.name()).increment(1);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.registry.disconnect(&self.node.id, self.stream_id);
        metrics::gauge!(crate::metrics::XDS_STREAMS, "kind" => self.kind.as_str()).decrement(1.0);
        tracing::info!(node = %self.node.id, kind = %self.kind, "xDS client disconnected");
    }
}

/// Whether listeners and routes must wait: a type they need has a response unacknowledged,
/// or the client has not yet subscribed to the endpoints of every cluster it was last sent.
fn must_wait(
    needed_pending: bool,
    clusters_sent: Option<&BTreeSet<String>>,
    endpoints: Option<&Subscription>,
) -> bool {
    needed_pending
        || match (clusters_sent, endpoints) {
            (Some(sent), Some(sub)) => !sent.iter().all(|c| sub.covers(c)),
            _ => false,
        }
}

#[cfg(test)]
mod tests;
