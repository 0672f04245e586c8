//! Config sync: the agent's side of the discovery stream (DESIGN.md §5).
//!
//! One stream at a time, to one control plane. The agent sends `Hello` with the version it
//! serves, then answers every `Update` with `Ack` (applied) or `Nack` (rejected, the previous
//! config keeps serving), and sends a `Report` every report interval. When the stream fails the
//! agent waits (capped exponential backoff with full jitter) and connects to the next
//! control-plane URL, resuming from the version it serves. A control plane refusing the stream
//! as too busy (`RESOURCE_EXHAUSTED` with a retry-after hint) is tried again after the hint.
//!
//! # Base versions
//! An incremental update is a diff against what the control plane believes the agent has, and
//! names it: `base_version`. The agent applies it only when that is exactly the version it
//! serves. Otherwise it does not NACK (a NACK would leave the control plane believing the
//! agent runs that base and sending more diffs against it); it closes the stream and
//! reconnects at once with `applied_version = 0`, which asks for a full update, and applies
//! whatever comes next against an empty base. It keeps serving its config meanwhile. A full
//! update replaces everything, so it applies on any base.
//!
//! # Authentication
//! To an `https://` control plane the agent connects over TLS verified with `--ca-file` or
//! `--ca-fingerprint`, presenting its client certificate ([`crate::identity`]): before a stream
//! it joins when it has no valid certificate and holds a join token, and during a stream it
//! renews the certificate when two thirds of its lifetime are over, then reconnects at once
//! with the new one (the control plane ends a stream when the certificate it opened with
//! expires).
//!
//! # Never backwards
//! An agent never moves to a lower config version, and never replaces the config it serves
//! with an empty one at no higher version, on its own: a control plane that offers that is
//! behind the agent (restored from an older backup, started on a new store, pointed at
//! another key prefix), and applying it would close every listener and overwrite the
//! last-good cache. Such an update is NACKed with reason `OLDER_THAN_SERVED` and the version
//! served; the agent keeps serving (and caching) its config, and says so: the
//! `portico_agent_ahead_of_control_plane` gauge, `/readyz` (still 200, with the detail), and
//! `portico agents` (state `ahead-of-control-plane`). A rollback is a new, higher version and
//! is not affected. The operator moves the agent on by either making the control plane's
//! version higher than the agent's (applying changes there), or starting the agent with
//! `--accept-lower-version`. The check runs after the base check: a diff on another base
//! brings a resync first, and the full update that follows is what is judged.
//!
//! # Service endpoints
//! `ServiceEndpoints` messages carry the nodes that announce a service the agent's clusters
//! name (`Cluster.service`). They are not config versions: the agent applies them at once
//! (`ConfigSet::with_service`, then `Proxy::apply`, which recompiles only the clusters naming
//! the service) and sends no ACK. They survive config updates and resyncs (every `ConfigSet`
//! carries them on), and the last-good cache keeps them with the config.
//!
//! # Fleet budgets
//! `BudgetGrants` messages carry the budget the control plane granted for quotas and FLEET
//! rate limits; they go to the data path at once (`Proxy::grant_budgets`), with no answer.
//! When requests wait for budget, the agent sends a `BudgetRequest` at once instead of waiting
//! for the next report. While no stream is open the data path knows it and spends fleet budgets
//! at the pace of its previous grants.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use portico_api::pb::discovery_client::DiscoveryClient;
use portico_api::pb::{
    Ack, AgentMessage, BudgetRequest, ControlMessage, Hello, Nack, Node, ServiceEndpoints, Update,
    agent_message, control_message, nack,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::identity::{self, Credentials};
use crate::report;
use crate::state::{Ahead, State};
use portico_api::backoff::Backoff;
use portico_api::error::Chain;
use portico_proxy::Proxy;
use portico_proxy::config::ConfigSet;

/// Gauge: 1 while a stream to a control plane is open.
pub const CONTROL_PLANE_CONNECTED: &str = "portico_agent_control_plane_connected";
/// Counter: streams that ended, by `reason` (`error`, `resync`, `renewed`, or `busy`: refused
/// with a retry-after hint).
pub const CONTROL_PLANE_DISCONNECTS: &str = "portico_agent_control_plane_disconnects_total";
/// Gauge: 1 while the agent refuses its control plane's config as older than the one it
/// serves (see the module doc); 0 otherwise.
pub const AHEAD_OF_CONTROL_PLANE: &str = "portico_agent_ahead_of_control_plane";

/// Registers the help texts of the metrics above with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_gauge!(
        CONTROL_PLANE_CONNECTED,
        "1 while a stream to a control plane is open."
    );
    metrics::describe_counter!(
        CONTROL_PLANE_DISCONNECTS,
        "Control-plane streams that ended, by reason."
    );
    metrics::describe_gauge!(
        AHEAD_OF_CONTROL_PLANE,
        "1 while the agent refuses its control plane's config as older than the one it serves."
    );
}

/// Full updates of large configs exceed tonic's 4 MiB default.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Opening the stream waits for the control plane's response headers.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Keepalive pings find a control plane that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A stream that stayed up this long worked, even if it brought no update.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The control plane could not be reached. `reason` holds the whole error chain, because
    /// tonic's transport error alone says only "transport error".
    #[error("connecting to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The control plane refused the stream.
    #[error("opening the stream: {0}")]
    Open(#[source] tonic::Status),
    /// The control plane did not answer the stream in time.
    #[error("opening the stream: no answer within {OPEN_TIMEOUT:?}")]
    OpenTimeout,
    /// The stream failed.
    #[error("receiving: {0}")]
    Receive(#[source] tonic::Status),
    /// The control plane ended the stream.
    #[error("the control plane closed the stream")]
    Closed,
    /// The agent could not get a certificate.
    #[error("agent certificate: {0}")]
    Identity(#[from] identity::IdentityError),
    /// The agent renewed its certificate and reconnects with the new one.
    #[error("the agent certificate was renewed; reconnecting with it")]
    Renewed,
    /// An incremental update is based on another version than the agent's (see the module
    /// doc).
    #[error(
        "incremental update to version {update} applies on version {base}, \
         but the agent serves version {applied}"
    )]
    BaseMismatch {
        update: i64,
        base: i64,
        applied: i64,
    },
}

impl StreamError {
    /// The retry-after hint of a control plane that refused the stream as too busy.
    fn pushback(&self) -> Option<Duration> {
        match self {
            StreamError::Open(status) | StreamError::Receive(status)
                if status.code() == tonic::Code::ResourceExhausted =>
            {
                portico_api::backoff::pushback(status)
            }
            _ => None,
        }
    }
}

/// The discovery client of one agent.
pub struct Client {
    /// Control plane URLs, tried in turn.
    pub control_planes: Vec<String>,
    /// The agent's identity, sent in `Hello`.
    pub node: Node,
    /// Time between reports.
    pub report_interval: Duration,
    /// Take updates to a lower version (or an empty config) too (see the module doc).
    pub accept_lower_version: bool,
    /// The data path that applies updates.
    pub proxy: Arc<Proxy>,
    /// Where applied configs are published.
    pub state: Arc<State>,
    /// How `https://` control planes are verified and the agent authenticates to them (`None`:
    /// plaintext only).
    pub credentials: Option<Arc<Credentials>>,
}

/// How a stream ended, and what it achieved before.
struct Ended {
    error: StreamError,
    /// The stream brought an update or stayed up: the next failure starts a fresh backoff.
    worked: bool,
    /// An update was ACKed, so the control plane knows the agent's version again.
    acked: bool,
}

impl Client {
    /// Keeps a stream to a control plane open until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.control_planes.is_empty() {
            tracing::error!("no control plane URL; config sync is off");
            return;
        }
        let mut backoff = Backoff::default();
        let mut url_index = 0;
        let mut resync = false;
        loop {
            let url = &self.control_planes[url_index % self.control_planes.len()];
            let ended = tokio::select! {
                _ = shutdown.cancelled() => break,
                ended = self.stream(url, resync) => ended,
            };
            metrics::gauge!(CONTROL_PLANE_CONNECTED).set(0.0);
            // What the next control plane offers is not known yet.
            self.set_ahead(None);
            if ended.worked {
                backoff.reset();
            }
            if ended.acked {
                resync = false;
            }
            if let StreamError::BaseMismatch { .. } = ended.error {
                tracing::warn!(url, error = %ended.error, "asking for a full update");
                metrics::counter!(CONTROL_PLANE_DISCONNECTS, "reason" => "resync").increment(1);
                resync = true;
                continue;
            }
            if let StreamError::Renewed = ended.error {
                metrics::counter!(CONTROL_PLANE_DISCONNECTS, "reason" => "renewed").increment(1);
                backoff.reset();
                continue;
            }
            // A control plane that admits streams no faster than it can serve them (a storm
            // after another replica died) says when to come back, in a slot of its own: the
            // agent waits that long and returns to it.
            if let Some(after) = ended.error.pushback() {
                metrics::counter!(CONTROL_PLANE_DISCONNECTS, "reason" => "busy").increment(1);
                tracing::info!(url, retry_in = ?after, "the control plane is busy admitting streams");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(after) => continue,
                }
            }
            metrics::counter!(CONTROL_PLANE_DISCONNECTS, "reason" => "error").increment(1);
            url_index += 1;
            let delay = backoff.next_delay();
            let next = &self.control_planes[url_index % self.control_planes.len()];
            tracing::warn!(url, error = %ended.error, retry_in = ?delay, next, "control plane stream ended");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One stream, from connect until it fails. With `resync` the agent claims no config, so
    /// the control plane sends everything.
    async fn stream(&self, url: &str, resync: bool) -> Ended {
        let mut ended = Ended {
            error: StreamError::Closed,
            worked: false,
            acked: false,
        };
        let base = match (resync, self.state.applied()) {
            (false, Some(applied)) => applied,
            // Claiming no config asks for a full update; the service endpoints stay.
            (true, Some(applied)) => Arc::new(ConfigSet {
                services: applied.services.clone(),
                ..ConfigSet::default()
            }),
            (_, None) => Arc::new(ConfigSet::default()),
        };
        if let (Some(credentials), true) = (&self.credentials, url.starts_with("https://"))
            && let Err(e) = credentials.ensure(url).await
        {
            ended.error = e.into();
            return ended;
        }
        let (tx, inbound) = match self.open(url, base.version).await {
            Ok(opened) => opened,
            Err(error) => {
                ended.error = error;
                return ended;
            }
        };
        tracing::info!(
            url,
            applied_version = base.version,
            "connected to the control plane"
        );
        metrics::gauge!(CONTROL_PLANE_CONNECTED).set(1.0);
        self.proxy.set_control_plane_connected(true);
        let ended = self.serve_stream(url, base, tx, inbound, ended).await;
        self.proxy.set_control_plane_connected(false);
        ended
    }

    /// Serves an open stream until it fails.
    async fn serve_stream(
        &self,
        url: &str,
        mut base: Arc<ConfigSet>,
        tx: mpsc::Sender<AgentMessage>,
        mut inbound: tonic::Streaming<ControlMessage>,
        mut ended: Ended,
    ) -> Ended {
        let opened_at = Instant::now();
        let mut last_report = Instant::now();
        let start = tokio::time::Instant::now() + self.report_interval;
        let mut reports = tokio::time::interval_at(start, self.report_interval);
        // A long apply delays the next report; it does not cause a burst of them.
        reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The config an update replaced, held until the answer is sent: freeing a large config
        // takes longer than applying a diff to it, and need not delay the ACK.
        let mut replaced = None;
        let renewal = tokio::time::sleep_until(self.renewal_due(url));
        tokio::pin!(renewal);
        ended.error = loop {
            let reply = tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(ControlMessage { message: Some(control_message::Message::Update(update)) })) => {
                        ended.worked = true;
                        replaced = Some(Arc::clone(&base));
                        match self.apply(&mut base, update).await {
                            Ok(reply) => {
                                ended.acked |= matches!(reply, agent_message::Message::Ack(_));
                                reply
                            }
                            Err(error) => break error,
                        }
                    }
                    Ok(Some(ControlMessage { message: Some(control_message::Message::ServiceEndpoints(endpoints)) })) => {
                        ended.worked = true;
                        self.apply_service(&mut base, endpoints).await;
                        continue;
                    }
                    Ok(Some(ControlMessage { message: Some(control_message::Message::Budgets(grants)) })) => {
                        self.proxy.grant_budgets(grants.grants);
                        continue;
                    }
                    // A message kind from a newer control plane.
                    Ok(Some(_)) => continue,
                    Ok(None) => break StreamError::Closed,
                    Err(status) => break StreamError::Receive(status),
                },
                _ = reports.tick() => {
                    let since = std::mem::replace(&mut last_report, Instant::now()).elapsed();
                    agent_message::Message::Report(report::current(&self.state, &self.proxy, since))
                }
                _ = self.proxy.budgets_wanted() => {
                    let budgets = self.proxy.take_budget_requests();
                    if budgets.is_empty() {
                        continue;
                    }
                    agent_message::Message::BudgetRequest(BudgetRequest { budgets })
                }
                _ = &mut renewal => {
                    let Some(credentials) = &self.credentials else { continue };
                    match credentials.renew(url).await {
                        Ok(()) => break StreamError::Renewed,
                        Err(e) => {
                            let retry = retry_delay(credentials.current().map(|c| c.not_after));
                            tracing::warn!(url, error = %e, retry_in = ?retry, "renewing the agent certificate failed");
                            renewal.as_mut().reset(tokio::time::Instant::now() + retry);
                            continue;
                        }
                    }
                }
            };
            if tx.send(message(reply)).await.is_err() {
                break StreamError::Closed;
            }
            drop(replaced.take());
        };
        ended.worked |= opened_at.elapsed() >= STABLE_AFTER;
        ended
    }

    /// Connects, sends `Hello` and opens the stream.
    async fn open(
        &self,
        url: &str,
        applied_version: i64,
    ) -> Result<(mpsc::Sender<AgentMessage>, tonic::Streaming<ControlMessage>), StreamError> {
        let connect_err = |e: tonic::transport::Error| StreamError::Connect {
            url: url.to_string(),
            reason: Chain(&e).to_string(),
        };
        let endpoint = match (&self.credentials, url.starts_with("https://")) {
            (Some(credentials), true) => credentials.endpoint(url),
            _ => Endpoint::from_shared(url.to_string()),
        };
        let channel = endpoint
            .map_err(connect_err)?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect()
            .await
            .map_err(connect_err)?;
        let mut client = DiscoveryClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel(16);
        let hello = agent_message::Message::Hello(Hello {
            node: Some(self.node.clone()),
            applied_version,
        });
        // The channel is new and has room: this cannot fail.
        let _ = tx.try_send(message(hello));
        let response = tokio::time::timeout(OPEN_TIMEOUT, client.stream(ReceiverStream::new(rx)))
            .await
            .map_err(|_| StreamError::OpenTimeout)?
            .map_err(StreamError::Open)?;
        Ok((tx, response.into_inner()))
    }

    /// Applies `update` on top of `base` (what the control plane believes the agent has) and
    /// returns the answer. On ACK, `base` becomes the new config.
    async fn apply(
        &self,
        base: &mut Arc<ConfigSet>,
        update: Update,
    ) -> Result<agent_message::Message, StreamError> {
        let (version, full, nonce) = (update.version, update.full, update.nonce.clone());
        let (upserts, removals) = (update.upserts.len(), update.removals.len());
        let next = Arc::new(updated(base, update)?);
        if let Some(served) = self.state.applied()
            && older(&next, &served)
        {
            if !self.accept_lower_version {
                return Ok(self.refuse(&served, version, nonce));
            }
            tracing::warn!(
                version,
                served = served.version,
                "taking the control plane's older config, as --accept-lower-version says"
            );
        }
        match self.proxy.apply(&next).await {
            Ok(()) => {
                tracing::info!(version, full, upserts, removals, "acked update");
                self.set_ahead(None);
                self.state.publish(Arc::clone(&next));
                *base = next;
                Ok(agent_message::Message::Ack(Ack { nonce, version }))
            }
            Err(e) => {
                let error = e.to_string();
                tracing::warn!(version, error, "nacked update");
                Ok(agent_message::Message::Nack(Nack {
                    nonce,
                    version,
                    error,
                    ..Default::default()
                }))
            }
        }
    }
}

impl Client {
    /// The NACK of an update to `version` that would move the agent back from `served`.
    fn refuse(&self, served: &ConfigSet, version: i64, nonce: String) -> agent_message::Message {
        let error = format!(
            "refused version {version}: this agent serves version {}, and never moves to an \
             older or empty config on its own (is the control plane restored from an older \
             backup, new, or on another key prefix?). Apply changes on the control plane until \
             its version passes {}, or start the agent with --accept-lower-version",
            served.version, served.version
        );
        tracing::error!(
            version,
            served = served.version,
            "the control plane offers an older config than the one served; keeping it"
        );
        self.set_ahead(Some(Ahead {
            served: served.version,
            offered: version,
        }));
        agent_message::Message::Nack(Nack {
            nonce,
            version,
            error,
            reason: nack::Reason::OlderThanServed.into(),
            served_version: served.version,
        })
    }

    fn set_ahead(&self, ahead: Option<Ahead>) {
        metrics::gauge!(AHEAD_OF_CONTROL_PLANE).set(if ahead.is_some() { 1.0 } else { 0.0 });
        self.state.set_ahead(ahead);
    }

    /// Applies a service's endpoints to the config served and to `base`, the config the next
    /// update applies on (they differ only while a resync waits for its full update). A set the
    /// data path refuses is logged and dropped; the previous one keeps serving.
    async fn apply_service(&self, base: &mut Arc<ConfigSet>, message: ServiceEndpoints) {
        let ServiceEndpoints { service, endpoints } = message;
        let count = endpoints.len();
        let next_base = Arc::new(base.with_service(&service, endpoints.clone()));
        let served = self.state.applied();
        let next = match &served {
            Some(s) if Arc::ptr_eq(s, base) => Some(Arc::clone(&next_base)),
            Some(s) => Some(Arc::new(s.with_service(&service, endpoints))),
            None => None,
        };
        if let Some(next) = next {
            if let Err(e) = self.proxy.apply(&next).await {
                tracing::warn!(service, endpoints = count, error = %e, "service endpoints refused");
                return;
            }
            self.state.publish(next);
        }
        tracing::info!(service, endpoints = count, "service endpoints applied");
        *base = next_base;
    }
}

/// The config `update` makes of `base`, or why it does not apply to it (an incremental update
/// based on another version, see the module doc). Whatever the update holds, this does not
/// fail otherwise: what the config is worth is for the data path to judge.
fn updated(base: &ConfigSet, update: Update) -> Result<ConfigSet, StreamError> {
    if !update.full && update.base_version != base.version {
        return Err(StreamError::BaseMismatch {
            update: update.version,
            base: update.base_version,
            applied: base.version,
        });
    }
    Ok(base.with_update(update))
}

impl Client {
    /// When the certificate the stream to `url` presents is due for renewal (far away when it
    /// presents none).
    fn renewal_due(&self, url: &str) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let due = match (&self.credentials, url.starts_with("https://")) {
            (Some(credentials), true) => credentials.current().map(|c| c.renew_at),
            _ => None,
        };
        match due {
            Some(at) => now + at.duration_since(SystemTime::now()).unwrap_or_default(),
            None => now + Duration::from_secs(100 * 365 * 24 * 3600),
        }
    }
}

/// How long to wait before trying a failed renewal again: a tenth of the time left, between 1 s
/// and a minute.
fn retry_delay(not_after: Option<SystemTime>) -> Duration {
    let left = not_after
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
        .unwrap_or_default();
    (left / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Whether `next` would move the agent back from `served`: a lower version, or an empty config
/// in place of a non-empty one at no higher version.
fn older(next: &ConfigSet, served: &ConfigSet) -> bool {
    next.version < served.version
        || (next.version == served.version
            && next.resources.is_empty()
            && !served.resources.is_empty())
}

fn message(m: agent_message::Message) -> AgentMessage {
    AgentMessage { message: Some(m) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_api::pb::ResourceKey;
    use portico_proxy::runtime::{NodeInfo, Runtime};
    use portico_test_support::fixtures::valid;
    use portico_test_support::fuzz::{ByteEdit, CASES, byte_edits, edit_bytes};
    use proptest::prelude::*;
    use prost::Message;

    /// A stream's messages built from the fixtures: upserts, removals and versions picked by
    /// the case, then the encoded message edited byte by byte.
    fn message_bytes(
        picks: &[usize],
        removals: &[usize],
        (version, base, full): (i64, i64, bool),
        edits: &[ByteEdit],
    ) -> Vec<u8> {
        let fixtures = valid();
        let update = Update {
            version,
            base_version: base,
            full,
            nonce: "n".into(),
            upserts: picks
                .iter()
                .map(|i| fixtures[i % fixtures.len()].clone())
                .collect(),
            removals: removals
                .iter()
                .map(|i| fixtures[i % fixtures.len()].key())
                .chain([ResourceKey::default()])
                .collect(),
        };
        let message = ControlMessage {
            message: Some(control_message::Message::Update(update)),
        };
        edit_bytes(message.encode_to_vec(), edits)
    }

    /// Decodes one message and, for an update, makes and compiles the config as the agent
    /// does (less binding sockets): the outcome as text, to compare.
    fn handle(bytes: &[u8], base: &ConfigSet) -> String {
        let update = match ControlMessage::decode(bytes) {
            Err(e) => return format!("undecodable: {e}"),
            Ok(ControlMessage {
                message: Some(control_message::Message::Update(update)),
            }) => update,
            Ok(other) => return format!("not an update: {}", other.message.is_some()),
        };
        let next = match updated(base, update) {
            Ok(next) => next,
            Err(e) => return e.to_string(),
        };
        let compiled = Runtime::compile(&next, &NodeInfo::default(), &Runtime::default(), 1);
        match compiled {
            Ok(runtime) => format!("version {} compiled", runtime.version),
            Err(e) => format!("nack: {e}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        /// Whatever arrives on the stream, the agent decodes it and applies or refuses it
        /// without panicking, the same way every time.
        #[test]
        fn any_update_is_applied_or_refused_without_panicking(
            picks in proptest::collection::vec(any::<usize>(), 0..4),
            removals in proptest::collection::vec(any::<usize>(), 0..2),
            versions in (any::<i64>(), 0i64..3, any::<bool>()),
            edits in byte_edits(8),
            base_version in 0i64..3,
        ) {
            let bytes = message_bytes(&picks, &removals, versions, &edits);
            let base = ConfigSet {
                version: base_version,
                ..ConfigSet::default()
            }
            .with_update(Update {
                version: base_version,
                full: true,
                upserts: valid().into_iter().take(3).collect(),
                ..Default::default()
            });
            let first = handle(&bytes, &base);
            prop_assert_eq!(first, handle(&bytes, &base));
        }
    }

    /// The generated messages reach compiling: some apply, some are refused by the data path.
    #[test]
    fn generated_updates_reach_the_data_path() {
        let base = ConfigSet::default();
        let whole = message_bytes(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], &[], (1, 0, true), &[]);
        assert_eq!(handle(&whole, &base), "version 1 compiled");
        let partial = message_bytes(&[1], &[], (2, 0, true), &[]);
        assert!(
            handle(&partial, &base).starts_with("nack: "),
            "{}",
            handle(&partial, &base)
        );
        let mismatch = message_bytes(&[0], &[], (2, 1, false), &[]);
        assert!(handle(&mismatch, &base).contains("applies on version 1"));
    }
}
