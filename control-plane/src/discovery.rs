//! Discovery streams (DESIGN.md §5): one task per agent stream.
//!
//! After a valid Hello the stream sends the update that brings the agent from its applied
//! version to the newest one: a diff when that version is still retained, else a full update.
//! At most one update is unacknowledged; versions published meanwhile are coalesced, so the next
//! update goes straight to the newest. Every version reaches every agent (with an empty diff
//! when its scope did not change), which is what rollout status relies on; while a canary
//! rollout is active, an agent it does not pick gets the revision before it instead
//! ([`crate::canary::served`]).
//!
//! The stream also carries the endpoints of the services the agent's clusters name
//! ([`crate::services`]): each named service's current set when the stream starts, when the
//! config comes to name another service, and whenever a set changes. These are not config
//! versions and need no ACK. They are sent before the update that brings the clusters naming
//! them, so a new cluster has its endpoints from its first request.
//!
//! Reports and budget requests also carry what agents spent of their fleet budgets and the
//! traffic they served: the first go to [`crate::budgets`], which answers on the stream with
//! `BudgetGrants` (no ACK either), the second to [`crate::usage`].
//! An agent may serve a newer config than this replica has: it comes from a replica further
//! along (which this one catches up with within `AHEAD_GRACE`), or this replica's store is
//! behind it (restored from an older backup, new, another key prefix). After the grace period
//! the agent gets a full update of what this replica has, which it refuses (a NACK with reason
//! `OLDER_THAN_SERVED`, see the agent's `sync`) unless an operator told it otherwise. That
//! refusal is logged as an error naming the node and both versions, and the registry shows
//! the agent `ahead-of-control-plane`. From then on the agent's config is not one of this
//! store's versions, so every later update it gets is a full one.
//!
//! Updates are sent as pre-encoded bytes shared by all agents of a scope ([`crate::views`]),
//! through a hand-written service whose response type is [`Encoded`] instead of the generated
//! `ControlMessage`: the generated server would decode nothing but re-encode every message for
//! every agent, i.e. 10,000 encodings of the same update.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use futures::{Stream, StreamExt};
use portico_api::codec::SmallBuffers;
use portico_api::node::{check_address, check_id, check_labels, check_services};
use portico_api::pb::{AgentMessage, Hello, Node, agent_message, nack};
use tokio::sync::mpsc;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Auth;
use crate::auth::identity::{AgentPeer, IdentityError, valid};
use crate::budgets::Budgets;
use crate::canary::{self, Rollouts};
use crate::metrics::{
    AHEAD_REFUSALS, APPLY_TO_ACK, CONNECTED_AGENTS, NACKS, SERVICE_UPDATES_SENT, UPDATES_COALESCED,
    UPDATES_SENT,
};
use crate::registry::{Registry, StreamId};
use crate::scope::ScopeMemo;
use crate::services::{self, ServiceSet, ServiceTable, Services};
use crate::snapshot::Snapshot;
use crate::store::Revision;
use crate::throttle::StreamThrottle;
use crate::usage::{UsageRollups, error_rate, requests_per_second};
use crate::views::{EncodedUpdate, Views};

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an agent that claims a version newer than this replica's is given for this replica
/// to catch up, before it gets a full update of what this replica has.
const AHEAD_GRACE: Duration = Duration::from_secs(5);
/// Limits on a Hello (ids, regions and zones follow [`portico_api::node::check_id`]).
const MAX_ID_LEN: usize = portico_api::node::MAX_ID_LEN;
/// The longest NACK reason kept (registry, logs, `portico agents`), in bytes.
pub const MAX_NACK_LEN: usize = 4096;

/// Why a stream was refused or ended by the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The stream did not start with a Hello.
    #[error("the first message of a discovery stream must be Hello")]
    Missing,
    /// The Hello has no node.
    #[error("hello: node is required")]
    NoNode,
    /// A field breaks its rule.
    #[error("hello: node.{field}: {rule}")]
    Field { field: String, rule: String },
    /// A second Hello on one stream.
    #[error("hello sent twice on one stream")]
    RepeatedHello,
    /// A message with nothing in it.
    #[error("empty agent message")]
    EmptyMessage,
    /// A call to a method the Discovery service does not have.
    #[error("no such method: {path}")]
    UnknownMethod { path: String },
}

/// Checks a Hello against the limits of the protocol.
pub fn check_hello(hello: &Hello) -> Result<&Node, ProtocolError> {
    let node = hello.node.as_ref().ok_or(ProtocolError::NoNode)?;
    let bad = |field: &str, rule: String| ProtocolError::Field {
        field: field.to_string(),
        rule,
    };
    for (field, value) in [
        ("id", &node.id),
        ("region", &node.region),
        ("zone", &node.zone),
    ] {
        check_id(value).map_err(|rule| bad(field, rule))?;
    }
    if node.agent_version.len() > MAX_ID_LEN {
        return Err(bad("agent_version", format!("longer than {MAX_ID_LEN}")));
    }
    if portico_api::text::has_control(&node.agent_version) {
        return Err(bad(
            "agent_version",
            "holds a control character".to_string(),
        ));
    }
    check_labels(&node.labels).map_err(|rule| bad("labels", rule))?;
    check_services(&node.services).map_err(|rule| bad("services", rule))?;
    if !node.address.is_empty() {
        check_address(&node.address).map_err(|rule| bad("address", rule))?;
    }
    if hello.applied_version < 0 {
        return Err(ProtocolError::Field {
            field: "applied_version".into(),
            rule: "must not be negative".into(),
        });
    }
    Ok(node)
}

/// A pre-encoded message: encoding it copies its bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Encoded(pub Bytes);

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// The address an agent's services are reached at: the one it advertised, else the address
/// its stream comes from (IPv4 shown as IPv4 even when it arrived on an IPv6 socket).
pub fn service_address(node: &Node, peer: Option<SocketAddr>) -> Option<String> {
    if !node.address.is_empty() {
        return Some(node.address.clone());
    }
    let ip = peer?.ip();
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    Some(ip.to_string())
}

/// The Discovery service's shared state.
#[derive(Clone)]
pub struct Discovery {
    views: Arc<Views>,
    registry: Arc<Registry>,
    services: Arc<Services>,
    auth: Arc<Auth>,
    budgets: Arc<Budgets>,
    usage: Arc<UsageRollups>,
    throttle: Arc<StreamThrottle>,
    rollouts: Arc<Rollouts>,
    cancel: CancellationToken,
}

/// What a replica's discovery streams share besides the views.
pub struct Fleet {
    /// The agent registry.
    pub registry: Arc<Registry>,
    /// The service endpoints.
    pub services: Arc<Services>,
    /// The fleet budgets.
    pub budgets: Arc<Budgets>,
    /// The usage rollups.
    pub usage: Arc<UsageRollups>,
    /// How fast new streams are admitted (shared with xDS).
    pub throttle: Arc<StreamThrottle>,
    /// Canary rollouts: which revision each agent gets, and its traffic by cohort.
    pub rollouts: Arc<Rollouts>,
}

impl Discovery {
    /// Streams end when `cancel` fires.
    pub fn new(
        views: Arc<Views>,
        fleet: Fleet,
        auth: Arc<Auth>,
        cancel: CancellationToken,
    ) -> Self {
        Discovery {
            views,
            registry: fleet.registry,
            services: fleet.services,
            budgets: fleet.budgets,
            usage: fleet.usage,
            throttle: fleet.throttle,
            rollouts: fleet.rollouts,
            auth,
            cancel,
        }
    }

    /// With authentication on, the agent the stream's client certificate authenticates:
    /// refused before anything is read or sent.
    fn authenticate(
        &self,
        request: &Request<Streaming<AgentMessage>>,
    ) -> Result<Option<AgentPeer>, Status> {
        if !self.auth.on {
            return Ok(None);
        }
        let certs = request.peer_certs();
        match self.auth.agent(certs.as_deref().map(Vec::as_slice)) {
            Ok(peer) => Ok(Some(peer)),
            Err(e) => {
                tracing::info!(peer = ?request.remote_addr(), error = %e, "refused an agent stream");
                Err(e.into())
            }
        }
    }

    async fn open(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<UpdateStream>, Status> {
        self.throttle.admit()?;
        let authenticated = self.authenticate(&request)?;
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await;
        let hello = match first {
            Ok(Ok(Some(AgentMessage {
                message: Some(agent_message::Message::Hello(hello)),
            }))) => hello,
            Ok(Err(status)) => return Err(status),
            _ => return Err(ProtocolError::Missing.into()),
        };
        let mut node = check_hello(&hello)?.clone();
        if let Some(agent) = &authenticated
            && let Err(e) = agent.check_hello(&node)
        {
            tracing::warn!(node = %node.id, error = %e, "refused a Hello");
            return Err(e.into());
        }
        match service_address(&node, peer) {
            Some(address) => node.address = address,
            None if !node.services.is_empty() => tracing::warn!(
                node = %node.id,
                "the stream's peer address is unknown and the agent advertises none: \
                 its services are not announced"
            ),
            None => {}
        }
        let (tx, rx) = mpsc::channel(2);
        let stream_id = self.registry.connect(&node, hello.applied_version);
        tracing::info!(node = %node.id, region = %node.region, applied_version = hello.applied_version, "agent connected");
        let grants = self.budgets.register(stream_id);
        let session = Session {
            views: self.views.clone(),
            registry: self.registry.clone(),
            services: self.services.clone(),
            auth: self.auth.clone(),
            authenticated,
            budgets: self.budgets.clone(),
            usage: self.usage.clone(),
            rollouts: self.rollouts.clone(),
            scope: ScopeMemo::new(&node),
            node,
            stream_id,
            applied: hello.applied_version,
            base_known: true,
            sent: hello.applied_version,
            in_flight: None,
            announced: BTreeMap::new(),
            services_synced: None,
            served: None,
        };
        tokio::spawn(session.run(inbound, tx, grants, self.cancel.clone()));
        Ok(Response::new(UpdateStream(rx)))
    }
}

/// The outgoing half of a stream.
pub struct UpdateStream(mpsc::Receiver<Result<Encoded, Status>>);

impl Stream for UpdateStream {
    type Item = Result<Encoded, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// One agent stream's state.
struct Session {
    views: Arc<Views>,
    registry: Arc<Registry>,
    services: Arc<Services>,
    auth: Arc<Auth>,
    /// The agent its certificate authenticated (authentication on), checked again whenever
    /// the identities change, and until its certificate expires.
    authenticated: Option<AgentPeer>,
    budgets: Arc<Budgets>,
    usage: Arc<UsageRollups>,
    rollouts: Arc<Rollouts>,
    node: Node,
    /// The node's scope, looked up again only when the listeners' selectors change.
    scope: ScopeMemo,
    stream_id: StreamId,
    /// The version the agent runs (its last ACK, or its Hello).
    applied: Revision,
    /// Whether the agent's config is this store's version `applied`, so a diff from it
    /// applies; false once the agent refused an update as older than its config.
    base_known: bool,
    /// The newest version the agent was sent (or had at Hello).
    sent: Revision,
    /// The unacknowledged update and when its version was published.
    in_flight: Option<(EncodedUpdate, Option<Instant>)>,
    /// Each service the agent's clusters name, and the set it was last sent (`None`: none).
    announced: BTreeMap<String, Option<Arc<ServiceSet>>>,
    /// The snapshot and service table the announced sets were last brought up to date with.
    services_synced: Option<(Arc<Snapshot>, Arc<ServiceTable>)>,
    /// The newest snapshot and the one the agent is due then (see [`Session::served`]).
    served: Option<(Arc<Snapshot>, Option<Arc<Snapshot>>)>,
}

impl Session {
    async fn run(
        mut self,
        mut inbound: Streaming<AgentMessage>,
        tx: mpsc::Sender<Result<Encoded, Status>>,
        mut grants: mpsc::Receiver<Bytes>,
        cancel: CancellationToken,
    ) {
        metrics::gauge!(CONNECTED_AGENTS).increment(1.0);
        let snapshots = self.views.subscribe();
        let mut current = snapshots.borrow().clone();
        let tables = self.services.subscribe();
        let mut table = tables.borrow().clone();
        // The waits that outlive one turn of the loop are made once: each one registers with a
        // notifier shared by every stream (the shutdown token, the snapshot channel), and
        // making them anew on every message would cost each stream a lock on those shared
        // lists per message.
        let mut changes = WatchStream::from_changes(snapshots);
        let mut table_changes = WatchStream::from_changes(tables);
        let cancelled = cancel.cancelled();
        let closed = tx.closed();
        let ahead_deadline = tokio::time::Instant::now() + AHEAD_GRACE;
        let ahead = tokio::time::sleep_until(ahead_deadline);
        let mut identities = WatchStream::from_changes(self.auth.state.subscribe());
        let expiry = tokio::time::sleep_until(self.expiry());
        tokio::pin!(cancelled, closed, ahead, expiry);
        loop {
            // While a canary rollout does not pick the agent, the revision before it; `None`
            // (that revision not at hand) holds the agent where it is.
            let target = self.served(&current);
            let target_version = target.as_ref().map_or(self.sent, |t| t.version);
            if let Some(target) = &target {
                if !self.sync_services(target, &table, &tx).await {
                    break;
                }
                if self.in_flight.is_none() {
                    let behind = target.version < self.sent;
                    let give_up = behind && tokio::time::Instant::now() >= ahead_deadline;
                    if (target.version > self.sent || give_up) && !self.send(target, &tx).await {
                        break;
                    }
                }
            }
            tokio::select! {
                _ = &mut cancelled => break,
                _ = &mut closed => break,
                next = changes.next() => match next {
                    Some(snapshot) => current = snapshot,
                    None => break,
                },
                next = table_changes.next() => match next {
                    Some(t) => table = t,
                    None => break,
                },
                _ = &mut ahead, if self.in_flight.is_none() && target_version < self.sent => {}
                next = identities.next(), if self.authenticated.is_some() => {
                    if let (Some(table), Some(agent)) = (next, &self.authenticated)
                        && let Err(e) = valid(&agent.cert, &table, std::time::SystemTime::now())
                    {
                        tracing::info!(node = %self.node.id, error = %e, "closing the stream");
                        let _ = tx.send(Err(e.into())).await;
                        break;
                    }
                }
                _ = &mut expiry, if self.authenticated.is_some() => {
                    tracing::info!(node = %self.node.id, "the agent's certificate expired; closing the stream");
                    let _ = tx.send(Err(IdentityError::Expired(self.node.id.clone()).into())).await;
                    break;
                }
                Some(message) = grants.recv() => {
                    if tx.send(Ok(Encoded(message))).await.is_err() {
                        break;
                    }
                }
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        if let Err(status) = self.receive(message) {
                            let _ = tx.send(Err(status)).await;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(node = %self.node.id, %status, "agent stream failed");
                        break;
                    }
                },
            }
        }
        self.registry.disconnect(&self.node.id, self.stream_id);
        self.budgets.unregister(self.stream_id);
        metrics::gauge!(CONNECTED_AGENTS).decrement(1.0);
        tracing::info!(node = %self.node.id, "agent disconnected");
    }

    /// The snapshot the agent is due while `current` is the newest ([`canary::served`]),
    /// looked up once per published snapshot.
    fn served(&mut self, current: &Arc<Snapshot>) -> Option<Arc<Snapshot>> {
        match &self.served {
            Some((newest, target)) if Arc::ptr_eq(newest, current) => target.clone(),
            _ => {
                let target = canary::served(&self.views, current, &self.node);
                self.served = Some((current.clone(), target.clone()));
                target
            }
        }
    }

    /// When the stream's certificate expires (far away without one).
    fn expiry(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        match &self.authenticated {
            Some(agent) => {
                now + agent
                    .cert
                    .not_after
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
            }
            None => now + Duration::from_secs(100 * 365 * 24 * 3600),
        }
    }

    /// Sends the endpoints of every service the clusters of `current` name whose set in
    /// `table` differs from the one the agent has, and an empty set for each service no
    /// cluster names any more (so the agent forgets it); false when the stream is gone.
    async fn sync_services(
        &mut self,
        current: &Arc<Snapshot>,
        table: &Arc<ServiceTable>,
        tx: &mpsc::Sender<Result<Encoded, Status>>,
    ) -> bool {
        if let Some((s, t)) = &self.services_synced
            && Arc::ptr_eq(s, current)
            && Arc::ptr_eq(t, table)
        {
            return true;
        }
        let named = self.views.named_services(&mut self.scope, current);
        let mut messages = Vec::new();
        for service in named.iter() {
            let set = table.get(service);
            let known = self.announced.get(service);
            let same = match (known, set) {
                (Some(Some(a)), Some(b)) => Arc::ptr_eq(a, b),
                (Some(None), None) => true,
                _ => false,
            };
            if !same {
                messages.push(match set {
                    Some(set) => set.message.clone(),
                    None => services::message(service, &[]),
                });
                self.announced.insert(service.clone(), set.cloned());
            }
        }
        let dropped: Vec<String> = self
            .announced
            .keys()
            .filter(|s| named.binary_search(s).is_err())
            .cloned()
            .collect();
        for service in dropped {
            self.announced.remove(&service);
            messages.push(services::message(&service, &[]));
        }
        for message in messages {
            if tx.send(Ok(Encoded(message))).await.is_err() {
                return false;
            }
            metrics::counter!(SERVICE_UPDATES_SENT).increment(1);
        }
        self.services_synced = Some((current.clone(), table.clone()));
        true
    }

    /// Sends the update to `current`; false when the stream is gone.
    async fn send(
        &mut self,
        current: &Arc<Snapshot>,
        tx: &mpsc::Sender<Result<Encoded, Status>>,
    ) -> bool {
        // An agent ahead of this replica (it came from a replica further along, or this
        // replica's store is behind it) gets a full update once the grace period is over.
        let from = if !self.base_known || current.version < self.applied {
            0
        } else {
            self.applied
        };
        if current.version < self.applied && self.base_known {
            tracing::warn!(
                node = %self.node.id,
                agent_version = self.applied,
                config_revision = current.version,
                "the agent serves a newer config than this control plane has; offering it this \
                 one, which it refuses unless told otherwise"
            );
        }
        let update = self.views.update(&mut self.scope, from, current);
        let skipped = self.views.versions_between(self.sent, current.version);
        if skipped > 0 {
            metrics::counter!(UPDATES_COALESCED).increment(skipped as u64);
        }
        self.sent = current.version;
        if tx.send(Ok(Encoded(update.bytes.clone()))).await.is_err() {
            return false;
        }
        metrics::counter!(UPDATES_SENT).increment(1);
        self.in_flight = Some((update, current.published));
        true
    }

    fn receive(&mut self, message: AgentMessage) -> Result<(), Status> {
        match message.message {
            Some(agent_message::Message::Ack(ack)) => {
                if let Some((update, published)) = self.take_in_flight(&ack.nonce) {
                    self.applied = update.version;
                    self.base_known = true;
                    self.registry
                        .acked(&self.node.id, self.stream_id, update.version);
                    if let Some(published) = published {
                        metrics::histogram!(APPLY_TO_ACK).record(published.elapsed().as_secs_f64());
                    }
                }
            }
            Some(agent_message::Message::Nack(nack))
                if nack.reason() == nack::Reason::OlderThanServed =>
            {
                if let Some((update, _)) = self.take_in_flight(&nack.nonce) {
                    tracing::error!(
                        node = %self.node.id,
                        agent_version = nack.served_version,
                        config_revision = update.version,
                        "agent refused this control plane's config as older than the one it \
                         serves, and keeps serving its own: is this control plane's store \
                         restored from an older backup, new, or on another key prefix? Apply \
                         changes here until the config revision passes the agent's, or start \
                         the agent with --accept-lower-version"
                    );
                    metrics::counter!(AHEAD_REFUSALS).increment(1);
                    self.applied = nack.served_version;
                    self.base_known = false;
                    self.registry
                        .ahead(&self.node.id, self.stream_id, nack.served_version);
                }
            }
            Some(agent_message::Message::Nack(mut nack)) => {
                if let Some((update, _)) = self.take_in_flight(&nack.nonce) {
                    metrics::counter!(NACKS).increment(1);
                    // Agent-supplied text: bounded and with its control characters escaped
                    // before the registry keeps it, the log writes it or the CLI shows it.
                    portico_api::health::shorten(&mut nack.error, MAX_NACK_LEN);
                    tracing::warn!(node = %self.node.id, version = update.version, error = ?nack.error, "agent rejected an update");
                    self.registry.nacked(
                        &self.node.id,
                        self.stream_id,
                        update.version,
                        &nack.error,
                    );
                }
            }
            Some(agent_message::Message::Report(mut report)) => {
                let rows = std::mem::take(&mut report.usage);
                let other = report.usage_other.take();
                let traffic = (
                    requests_per_second(&rows, other.as_ref(), report.usage_millis),
                    error_rate(&rows, other.as_ref()),
                );
                self.budgets
                    .demand(self.stream_id, std::mem::take(&mut report.budgets));
                self.rollouts
                    .report(&self.node, report.applied_version, &rows);
                self.usage
                    .report(&self.node.region, rows, other, std::time::SystemTime::now());
                self.registry
                    .report(&self.node.id, self.stream_id, report, traffic);
            }
            Some(agent_message::Message::BudgetRequest(request)) => {
                self.budgets.demand(self.stream_id, request.budgets);
            }
            Some(agent_message::Message::Hello(_)) => {
                return Err(ProtocolError::RepeatedHello.into());
            }
            None => return Err(ProtocolError::EmptyMessage.into()),
        }
        Ok(())
    }

    /// The in-flight update if `nonce` is its nonce; stale nonces are ignored.
    fn take_in_flight(&mut self, nonce: &str) -> Option<(EncodedUpdate, Option<Instant>)> {
        match &self.in_flight {
            Some((update, _)) if &*update.nonce == nonce => self.in_flight.take(),
            _ => {
                tracing::debug!(node = %self.node.id, nonce, "ignoring a reply to no pending update");
                None
            }
        }
    }
}

/// The tonic service for `portico.v1.Discovery`, sending [`Encoded`] updates.
#[derive(Clone)]
pub struct DiscoveryServer(pub Discovery);

impl NamedService for DiscoveryServer {
    const NAME: &'static str = "portico.v1.Discovery";
}

impl StreamingService<AgentMessage> for Discovery {
    type Response = Encoded;
    type ResponseStream = UpdateStream;
    type Future = BoxFuture<Response<UpdateStream>, Status>;

    fn call(&mut self, request: Request<Streaming<AgentMessage>>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.open(request).await })
    }
}

impl<B> Service<http::Request<B>> for DiscoveryServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let discovery = self.0.clone();
        if req.uri().path() != "/portico.v1.Discovery/Stream" {
            let unknown = ProtocolError::UnknownMethod {
                path: req.uri().path().to_string(),
            };
            return Box::pin(async { Ok(Status::from(unknown).into_http()) });
        }
        Box::pin(async move {
            // Small buffers: 100,000 streams with tonic's 8 KiB each way held 1.5 GiB
            // that every push touched.
            let codec = SmallBuffers::<Encoded, AgentMessage>::default();
            Ok(Grpc::new(codec).streaming(discovery, req).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_test_support::fuzz::CASES;
    use proptest::prelude::*;
    use prost::Message;

    /// What the control plane makes of the first message of a stream: the Hello's verdict.
    fn verdict(bytes: &[u8]) -> String {
        match AgentMessage::decode(bytes) {
            Err(e) => format!("undecodable: {e}"),
            Ok(AgentMessage {
                message: Some(agent_message::Message::Hello(hello)),
            }) => match check_hello(&hello) {
                Ok(node) => format!("accepted {}", node.id),
                Err(e) => format!("refused: {e}"),
            },
            Ok(_) => "not a Hello".to_string(),
        }
    }

    fn hello_bytes(id: &str, region: &str, version: &str, label: (&str, &str)) -> Vec<u8> {
        let node = Node {
            id: id.into(),
            region: region.into(),
            zone: "z".into(),
            agent_version: version.into(),
            labels: [(label.0.to_string(), label.1.to_string())].into(),
            ..Default::default()
        };
        AgentMessage {
            message: Some(agent_message::Message::Hello(Hello {
                node: Some(node),
                ..Default::default()
            })),
        }
        .encode_to_vec()
    }

    #[test]
    fn control_characters_in_agent_text_are_refused_with_the_field() {
        let ok = verdict(&hello_bytes("a", "eu", "1.0", ("k", "v")));
        assert_eq!(ok, "accepted a");
        let bad = verdict(&hello_bytes("a", "eu", "1.0\x1b[2J", ("k", "v")));
        assert!(bad.contains("agent_version"), "{bad}");
        let bad = verdict(&hello_bytes("a", "eu", "1.0", ("k", "v\nforged")));
        assert!(bad.contains("labels") && bad.contains("control"), "{bad}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        /// Any bytes as a stream's first message: decoded and judged without panicking, the
        /// same way every time.
        #[test]
        fn any_first_message_is_judged_the_same_way_every_time(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let first = verdict(&bytes);
            prop_assert_eq!(first, verdict(&bytes));
        }

        /// Hellos with arbitrary text in every field: accepted or refused naming a field.
        #[test]
        fn any_hello_is_accepted_or_refused_naming_a_field(
            id in ".{0,140}",
            region in "[a-z.-]{0,8}|.{0,8}",
            version in ".{0,140}",
            key in ".{0,70}",
            value in ".{0,300}",
        ) {
            let bytes = hello_bytes(&id, &region, &version, (&key, &value));
            let first = verdict(&bytes);
            prop_assert!(
                first.starts_with("accepted") || first.starts_with("refused"),
                "{}", first
            );
            prop_assert_eq!(first, verdict(&bytes));
        }
    }
}
