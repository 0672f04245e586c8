//! Config sync: the agent's side of the discovery stream (DESIGN.md §5).
//!
//! One stream at a time, to one control plane. The agent sends `Hello` with the version it
//! serves, then answers every `Update` with `Ack` (applied) or `Nack` (rejected, the previous
//! config keeps serving), and sends a `Report` every report interval. When the stream fails the
//! agent waits (capped exponential backoff with jitter) and connects to the next control-plane
//! URL, resuming from the version it serves.
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
use std::time::{Duration, Instant};

use portico_api::pb::discovery_client::DiscoveryClient;
use portico_api::pb::{
    Ack, AgentMessage, BudgetRequest, ControlMessage, Hello, Nack, Node, ServiceEndpoints, Update,
    agent_message, control_message, nack,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::report;
use crate::state::{Ahead, State};
use portico_api::backoff::Backoff;
use portico_api::error::Chain;
use portico_proxy::Proxy;
use portico_proxy::config::ConfigSet;

/// Gauge: 1 while a stream to a control plane is open.
pub const CONTROL_PLANE_CONNECTED: &str = "portico_agent_control_plane_connected";
/// Counter: streams that ended, by `reason` (`error` or `resync`).
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
        let ended = self.serve_stream(base, tx, inbound, ended).await;
        self.proxy.set_control_plane_connected(false);
        ended
    }

    /// Serves an open stream until it fails.
    async fn serve_stream(
        &self,
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
        let channel = Endpoint::from_shared(url.to_string())
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
        if !update.full && update.base_version != base.version {
            return Err(StreamError::BaseMismatch {
                update: update.version,
                base: update.base_version,
                applied: base.version,
            });
        }
        let (version, full, nonce) = (update.version, update.full, update.nonce.clone());
        let (upserts, removals) = (update.upserts.len(), update.removals.len());
        let next = Arc::new(base.with_update(update));
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
