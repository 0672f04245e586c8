//! Simulated agents, many streams on few connections: each opens a Discovery stream, says
//! Hello with the version it has, ACKs every update at once and reports what it received when.
//! Like a real agent it fails over between control planes and honours a busy replica's
//! retry-after hint (full-jitter backoff otherwise), so it stands in for a fleet in storm
//! tests and in the fan-out benchmark (`bench/fleet`) without the simulator being the
//! bottleneck: it reads only an update's version and nonce (`Received`), skipping the
//! resources undecoded, since a simulated agent applies nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use portico_api::backoff::{Backoff, pushback};
use portico_api::codec::SmallBuffers;
use portico_api::pb::{Ack, AgentMessage, Hello, Node, agent_message};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

/// The regions simulated agents are spread over.
pub const REGIONS: [&str; 5] = ["us-east", "us-west", "eu-west", "eu-central", "ap-south"];

/// What a simulated agent tells the test.
#[derive(Debug)]
pub enum Event {
    /// Agent `agent`'s stream to `url` was accepted at `at` (the control plane read its Hello,
    /// claiming `version`).
    Connected {
        agent: usize,
        url: Arc<str>,
        version: i64,
        at: Instant,
    },
    /// Agent `agent` received (and ACKed) an update to `version` at `at`.
    Received {
        agent: usize,
        version: i64,
        at: Instant,
    },
}

/// Where the agents of a fleet connect.
#[derive(Clone, Debug)]
pub struct Placement {
    /// Agent `i` connects first to `homes[i % homes.len()]`, then fails over through the
    /// other homes in turn.
    pub homes: Vec<String>,
    /// Tried after the homes, in turn.
    pub fallbacks: Vec<String>,
    /// Agent streams per HTTP/2 connection (under the server's concurrent-stream limit).
    pub streams_per_connection: usize,
    /// Node ids are `<prefix>-<agent number>`.
    pub id_prefix: String,
}

impl Placement {
    /// Every agent on `url`, 100 streams per connection.
    pub fn on(url: &str) -> Placement {
        Placement {
            homes: vec![url.to_string()],
            fallbacks: Vec::new(),
            streams_per_connection: 100,
            id_prefix: "sim".into(),
        }
    }

    fn urls_of(&self, agent: usize) -> Vec<Arc<str>> {
        let n = self.homes.len().max(1);
        (0..self.homes.len())
            .map(|k| self.homes[(agent + k) % n].as_str())
            .chain(self.fallbacks.iter().map(String::as_str))
            .map(Arc::from)
            .collect()
    }
}

/// Lazily made channels, one per (url, connection number).
#[derive(Default)]
struct Channels(Mutex<HashMap<(Arc<str>, usize), Channel>>);

impl Channels {
    fn get(&self, url: &Arc<str>, connection: usize) -> anyhow::Result<Channel> {
        let mut map = self
            .0
            .lock()
            .map_err(|_| anyhow::anyhow!("channel map poisoned"))?;
        if let Some(channel) = map.get(&(url.clone(), connection)) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(url.to_string())
            .context("discovery url")?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            // No keepalive pings of its own: a simulator busy decoding updates would miss
            // their deadlines and drop healthy connections. A killed replica's connections
            // are reset by its kernel.
            .connect_lazy();
        map.insert((url.clone(), connection), channel.clone());
        Ok(channel)
    }
}

/// Counters over the whole fleet.
#[derive(Debug, Default)]
pub struct Counters {
    /// Streams reopened after an error.
    pub retries: AtomicU64,
    /// Streams refused with a retry-after hint (and retried after it).
    pub pushed_back: AtomicU64,
}

/// A running simulated fleet.
pub struct Fleet {
    tasks: JoinSet<()>,
    /// Events from every agent.
    pub events: mpsc::UnboundedReceiver<Event>,
    /// Number of agents.
    pub size: usize,
    /// Retries and refusals.
    pub counters: Arc<Counters>,
}

impl Fleet {
    /// Starts `size` agents placed by `placement`.
    pub fn start(placement: &Placement, size: usize) -> Fleet {
        let channels = Arc::new(Channels::default());
        let (tx, events) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let mut tasks = JoinSet::new();
        let per_connection = placement.streams_per_connection.max(1);
        for agent in 0..size {
            let urls = placement.urls_of(agent);
            let node = node(&placement.id_prefix, agent);
            let (channels, tx, counters) = (channels.clone(), tx.clone(), counters.clone());
            tasks.spawn(async move {
                let version = AtomicI64::new(0);
                let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
                let mut at = 0;
                loop {
                    let url = &urls[at % urls.len()];
                    let stream = Stream {
                        agent,
                        url,
                        node: &node,
                        version: &version,
                        events: &tx,
                    };
                    let error = match channels.get(url, agent / per_connection) {
                        Ok(channel) => stream.run(channel, &mut backoff).await,
                        Err(e) => e,
                    };
                    if tx.is_closed() {
                        return;
                    }
                    let hint = error
                        .downcast_ref::<tonic::Status>()
                        .filter(|s| s.code() == tonic::Code::ResourceExhausted)
                        .and_then(pushback);
                    if let Some(after) = hint {
                        counters.pushed_back.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(after).await;
                        continue;
                    }
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    at += 1;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            });
        }
        Fleet {
            tasks,
            events,
            size,
            counters,
        }
    }

    /// Waits until every agent has an event that `reached` accepts, and returns how long
    /// after `since` each one first did, sorted. Fails after `deadline`, saying how many had.
    pub async fn wait_until(
        &mut self,
        what: &str,
        since: Instant,
        deadline: Duration,
        reached: impl Fn(&Event) -> bool,
    ) -> anyhow::Result<Vec<Duration>> {
        let mut done: Vec<Option<Duration>> = vec![None; self.size];
        let mut remaining = self.size;
        let end = since + deadline;
        while remaining > 0 {
            let event = tokio::time::timeout_at(end, self.events.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{remaining} of {} agents had not {what} after {deadline:?}",
                        self.size
                    )
                })?
                .context("every agent stopped")?;
            let (Event::Connected { agent, at, .. } | Event::Received { agent, at, .. }) = event;
            if reached(&event)
                && let Some(slot @ None) = done.get_mut(agent)
            {
                *slot = Some(at.saturating_duration_since(since));
                remaining -= 1;
            }
        }
        let mut times: Vec<Duration> = done.into_iter().flatten().collect();
        times.sort();
        Ok(times)
    }

    /// Waits until every agent has received a version ≥ `version`; see [`Fleet::wait_until`].
    pub async fn wait_for(
        &mut self,
        version: i64,
        since: Instant,
        deadline: Duration,
    ) -> anyhow::Result<Vec<Duration>> {
        let what = format!("received version {version}");
        self.wait_until(
            &what,
            since,
            deadline,
            |e| matches!(e, Event::Received { version: v, .. } if *v >= version),
        )
        .await
    }

    /// Closes every stream.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// The node of simulated agent `agent`.
fn node(prefix: &str, agent: usize) -> Node {
    let region = REGIONS[agent % REGIONS.len()];
    Node {
        id: format!("{prefix}-{agent:06}"),
        region: region.into(),
        zone: format!("{region}-{}", agent % 3),
        agent_version: "simulated".into(),
        ..Default::default()
    }
}

/// One stream of one agent.
struct Stream<'a> {
    agent: usize,
    url: &'a Arc<str>,
    node: &'a Node,
    /// The version the agent has (ACKed last), which its Hello claims.
    version: &'a AtomicI64,
    events: &'a mpsc::UnboundedSender<Event>,
}

impl Stream<'_> {
    /// Runs until the stream fails (it never ends otherwise); returns why. `backoff` starts
    /// over once the stream is accepted.
    async fn run(self, channel: Channel, backoff: &mut Backoff) -> anyhow::Error {
        match self.serve(channel, backoff).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn serve(
        &self,
        channel: Channel,
        backoff: &mut Backoff,
    ) -> anyhow::Result<std::convert::Infallible> {
        let (tx, rx) = mpsc::channel(4);
        let version = self.version.load(Ordering::Relaxed);
        tx.send(message(agent_message::Message::Hello(Hello {
            node: Some(self.node.clone()),
            applied_version: version,
        })))
        .await?;
        let mut client = tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20);
        client.ready().await?;
        // Small buffers: with tonic's 8 KiB each way, 100,000 simulated streams would
        // allocate 1.6 GB, and the page faults cost the simulator more than it measures.
        let codec = SmallBuffers::<AgentMessage, Received>::default();
        let path = PathAndQuery::from_static("/portico.v1.Discovery/Stream");
        let request = tonic::Request::new(ReceiverStream::new(rx));
        let mut inbound = client.streaming(request, path, codec).await?.into_inner();
        backoff.reset();
        let _ = self.events.send(Event::Connected {
            agent: self.agent,
            url: self.url.clone(),
            version,
            at: Instant::now(),
        });
        while let Some(msg) = inbound.message().await? {
            let Some(update) = msg.update else {
                continue;
            };
            let at = Instant::now();
            tx.send(message(agent_message::Message::Ack(Ack {
                nonce: update.nonce,
                version: update.version,
            })))
            .await?;
            self.version.store(update.version, Ordering::Relaxed);
            let _ = self.events.send(Event::Received {
                agent: self.agent,
                version: update.version,
                at,
            });
        }
        anyhow::bail!("the control plane closed the stream")
    }
}

/// What a simulated agent reads of a `ControlMessage`: its update's version and nonce (the
/// field numbers of `portico.v1.ControlMessage.update`, `Update.version` and `Update.nonce`);
/// every other field is skipped by length, not decoded.
#[derive(Clone, PartialEq, prost::Message)]
struct Received {
    #[prost(message, optional, tag = "1")]
    update: Option<ReceivedUpdate>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReceivedUpdate {
    #[prost(int64, tag = "1")]
    version: i64,
    #[prost(string, tag = "2")]
    nonce: String,
}

fn message(m: agent_message::Message) -> AgentMessage {
    AgentMessage { message: Some(m) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_api::pb::{ControlMessage, ServiceEndpoints, Update, control_message};
    use portico_test_support::resources::listener;
    use prost::Message;

    #[test]
    fn a_simulated_agent_reads_the_version_and_nonce_of_a_real_update() {
        let update = ControlMessage {
            message: Some(control_message::Message::Update(Update {
                version: 42,
                nonce: "n-42".into(),
                full: true,
                upserts: vec![listener("web", 8080, "routes")],
                ..Default::default()
            })),
        };
        let read = Received::decode(update.encode_to_vec().as_slice()).expect("decodes");
        let update = read.update.expect("an update");
        assert_eq!((update.version, update.nonce.as_str()), (42, "n-42"));

        let endpoints = ControlMessage {
            message: Some(control_message::Message::ServiceEndpoints(
                ServiceEndpoints {
                    service: "billing".into(),
                    ..Default::default()
                },
            )),
        };
        let read = Received::decode(endpoints.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(read.update, None);
    }
}
