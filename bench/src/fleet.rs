//! Simulated agents: each opens a Discovery stream, says Hello, and ACKs every Update at once,
//! reporting when it received which version. Many streams share a few HTTP/2 connections so
//! that the simulator is not the bottleneck.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use portico_api::backoff::Backoff;
use portico_api::pb::discovery_client::DiscoveryClient;
use portico_api::pb::{Ack, AgentMessage, Hello, Node, agent_message, control_message};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::config::REGIONS;

/// What a simulated agent tells the bench.
#[derive(Debug)]
pub enum Event {
    /// Agent `agent` received (and ACKed) an update to `version` at `at`.
    Received {
        agent: usize,
        version: i64,
        at: Instant,
    },
    /// Agent `agent`'s stream ended with this error.
    Failed { agent: usize, error: String },
}

/// A running simulated fleet.
pub struct Fleet {
    tasks: JoinSet<()>,
    /// Events from every agent.
    pub events: mpsc::UnboundedReceiver<Event>,
    /// Number of agents.
    pub size: usize,
    /// Streams reopened after an error, over every agent.
    pub retries: Arc<AtomicU64>,
}

impl Fleet {
    /// Opens `size` agent streams to the Discovery service at `url`, `streams_per_connection`
    /// per HTTP/2 connection. Agent `i` is in region `REGIONS[i % 5]`.
    pub async fn start(
        url: &str,
        size: usize,
        streams_per_connection: usize,
    ) -> anyhow::Result<Fleet> {
        let connections = size.div_ceil(streams_per_connection.max(1)).max(1);
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections {
            let channel = Endpoint::from_shared(url.to_string())
                .context("discovery url")?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connecting to discovery at {url}"))?;
            channels.push(channel);
        }
        let (tx, events) = mpsc::unbounded_channel();
        let retries = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for agent in 0..size {
            let channel = channels[agent % connections].clone();
            let tx = tx.clone();
            let retries = retries.clone();
            tasks.spawn(async move {
                // Like a real agent, reconnect with a growing delay; during a storm the
                // control plane may refuse a stream whose Hello it did not get in time.
                let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
                let mut attempt = 0;
                let error = loop {
                    let Err(e) = run_agent(channel.clone(), agent, tx.clone()).await;
                    attempt += 1;
                    if attempt > MAX_RETRIES {
                        break e;
                    }
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff.next_delay()).await;
                };
                let _ = tx.send(Event::Failed {
                    agent,
                    error: format!("{error:#}"),
                });
            });
        }
        Ok(Fleet {
            tasks,
            events,
            size,
            retries,
        })
    }

    /// Waits until every agent has received a version ≥ `version`, and returns how long after
    /// `since` each one first did, sorted. Fails after `deadline` or when an agent fails.
    pub async fn wait_for(
        &mut self,
        version: i64,
        since: Instant,
        deadline: Duration,
    ) -> anyhow::Result<Vec<Duration>> {
        let mut reached: Vec<Option<Duration>> = vec![None; self.size];
        let mut remaining = self.size;
        let end = since + deadline;
        while remaining > 0 {
            let event = tokio::time::timeout_at(end, self.events.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{remaining} of {} agents had not received version {version} after {deadline:?}",
                        self.size
                    )
                })?
                .context("every agent stopped")?;
            match event {
                Event::Received {
                    agent,
                    version: v,
                    at,
                } if v >= version => {
                    if let Some(slot @ None) = reached.get_mut(agent) {
                        *slot = Some(at.saturating_duration_since(since));
                        remaining -= 1;
                    }
                }
                Event::Received { .. } => {}
                Event::Failed { agent, error } => {
                    anyhow::bail!("agent {agent} failed: {error}")
                }
            }
        }
        let mut times: Vec<Duration> = reached.into_iter().flatten().collect();
        times.sort();
        Ok(times)
    }

    /// Closes every stream.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Reconnects per agent before it counts as failed.
const MAX_RETRIES: u64 = 5;

/// Runs one agent stream until it fails (it never ends otherwise).
async fn run_agent(
    channel: Channel,
    agent: usize,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<std::convert::Infallible> {
    let region = REGIONS[agent % REGIONS.len()];
    let node = Node {
        id: format!("sim-{agent:05}"),
        region: region.into(),
        zone: format!("{region}-{}", agent % 3),
        agent_version: "bench-fleet".into(),
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel(4);
    tx.send(message(agent_message::Message::Hello(Hello {
        node: Some(node),
        applied_version: 0,
    })))
    .await?;
    let mut client = DiscoveryClient::new(channel).max_decoding_message_size(64 << 20);
    let mut inbound = client
        .stream(ReceiverStream::new(rx))
        .await
        .context("opening the stream")?
        .into_inner();
    while let Some(msg) = inbound.message().await.context("receiving")? {
        let Some(control_message::Message::Update(update)) = msg.message else {
            continue;
        };
        let at = Instant::now();
        tx.send(message(agent_message::Message::Ack(Ack {
            nonce: update.nonce,
            version: update.version,
        })))
        .await?;
        let _ = events.send(Event::Received {
            agent,
            version: update.version,
            at,
        });
    }
    anyhow::bail!("the control plane closed the stream")
}

fn message(m: agent_message::Message) -> AgentMessage {
    AgentMessage { message: Some(m) }
}

/// The value at quantile `q` (0..=1) of sorted `values`.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&values, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&values, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&values, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
