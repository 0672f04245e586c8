//! A raw-gRPC agent that does exactly what a test tells it: connect, say Hello, receive updates,
//! ACK or NACK them on command, send reports.

use std::time::Duration;

use futures::channel::mpsc;
use portico_api::pb::discovery_client::DiscoveryClient;
use portico_api::pb::{
    Ack, AgentMessage, ControlMessage, Hello, Nack, Node, Report, Update, agent_message,
    control_message,
};
use portico_proxy::config::ConfigSet;
use tonic::Status;
use tonic::transport::Channel;

/// How long [`ScriptedAgent::expect_update`] waits.
pub const UPDATE_TIMEOUT: Duration = Duration::from_secs(15);

/// A node identity.
pub fn node(id: &str, region: &str, zone: &str) -> Node {
    Node {
        id: id.to_string(),
        region: region.to_string(),
        zone: zone.to_string(),
        labels: Default::default(),
        agent_version: "scripted".to_string(),
        ..Node::default()
    }
}

/// One agent stream.
pub struct ScriptedAgent {
    tx: mpsc::UnboundedSender<AgentMessage>,
    inbound: tonic::Streaming<ControlMessage>,
    /// The config as of the last ACKed update.
    pub config: ConfigSet,
}

impl ScriptedAgent {
    /// Connects to `endpoint` (a URL) and says Hello. A refused Hello is the error.
    pub async fn connect(endpoint: &str, node: Node, applied_version: i64) -> Result<Self, Status> {
        let channel = Channel::from_shared(endpoint.to_string())
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .connect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Self::connect_on(channel, node, applied_version).await
    }

    /// Like [`ScriptedAgent::connect`] on an existing channel (many agents, one connection).
    pub async fn connect_on(
        channel: Channel,
        node: Node,
        applied_version: i64,
    ) -> Result<Self, Status> {
        let (tx, rx) = mpsc::unbounded();
        let hello = agent_message::Message::Hello(Hello {
            node: Some(node),
            applied_version,
        });
        let _ = tx.unbounded_send(AgentMessage {
            message: Some(hello),
        });
        let inbound = DiscoveryClient::new(channel).stream(rx).await?.into_inner();
        Ok(ScriptedAgent {
            tx,
            inbound,
            config: ConfigSet {
                version: applied_version,
                ..Default::default()
            },
        })
    }

    /// Connects with nothing applied, then ACKs the first (full) update.
    pub async fn synced(endpoint: &str, node: Node) -> Self {
        let id = node.id.clone();
        let mut agent = Self::connect(endpoint, node, 0)
            .await
            .unwrap_or_else(|e| panic!("connecting agent {id}: {e}"));
        let update = agent.expect_update().await;
        agent.ack(&update);
        agent
    }

    /// The next update, or None when none arrives within `timeout` or the stream ended.
    pub async fn next_update(&mut self, timeout: Duration) -> Option<Update> {
        match tokio::time::timeout(timeout, self.inbound.message()).await {
            Ok(Ok(Some(ControlMessage {
                message: Some(control_message::Message::Update(update)),
            }))) => Some(update),
            _ => None,
        }
    }

    /// The next update; panics when none arrives within [`UPDATE_TIMEOUT`].
    pub async fn expect_update(&mut self) -> Update {
        self.next_update(UPDATE_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no update within {UPDATE_TIMEOUT:?}"))
    }

    /// Applies `update` to [`ScriptedAgent::config`] and ACKs it.
    pub fn ack(&mut self, update: &Update) {
        self.config = self.config.with_update(update.clone());
        self.send(agent_message::Message::Ack(Ack {
            nonce: update.nonce.clone(),
            version: update.version,
        }));
    }

    /// NACKs `update` with `error`, keeping the config.
    pub fn nack(&mut self, update: &Update, error: &str) {
        self.send(agent_message::Message::Nack(Nack {
            nonce: update.nonce.clone(),
            version: update.version,
            error: error.to_string(),
            ..Default::default()
        }));
    }

    /// Sends a report.
    pub fn report(&mut self, report: Report) {
        self.send(agent_message::Message::Report(report));
    }

    fn send(&mut self, message: agent_message::Message) {
        let _ = self.tx.unbounded_send(AgentMessage {
            message: Some(message),
        });
    }
}
