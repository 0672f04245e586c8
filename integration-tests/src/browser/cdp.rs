//! The DevTools connection: one websocket to the browser, its pages' sessions multiplexed on
//! it (flattened sessions: a command names its session in `sessionId`).
//!
//! The reader task owns the incoming half: answers go by id to the command waiting for them,
//! events to the listeners that asked for their method and session, in the browser's order.
//! The writer task owns the outgoing half. When the socket ends, every waiting command fails
//! and every listener sees the end.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::lock;

/// How long a command may wait for its answer.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The browser refused a command (the answer's `error` field).
#[derive(Debug)]
pub(super) struct Refusal {
    method: String,
    code: i64,
    message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {} (CDP error {})",
            self.method, self.message, self.code
        )
    }
}

impl std::error::Error for Refusal {}

/// A command got no answer in time.
#[derive(Debug)]
pub(super) struct NoAnswer {
    method: String,
    timeout: Duration,
}

impl fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} got no answer within {:?}", self.method, self.timeout)
    }
}

impl std::error::Error for NoAnswer {}

/// An event from the browser.
pub(super) struct Event {
    pub(super) method: String,
    pub(super) params: Value,
}

/// Who wants which events of which session.
struct Listener {
    session: String,
    methods: &'static [&'static str],
    events: mpsc::UnboundedSender<Event>,
}

/// An answer: the result, or the error's code and message.
type Answer = Result<Value, (i64, String)>;

/// What the reader task and the callers share.
#[derive(Default)]
struct Shared {
    pending: HashMap<u64, oneshot::Sender<Answer>>,
    listeners: Vec<Listener>,
    /// Why the connection ended, once it has.
    closed: Option<String>,
}

/// The DevTools connection: commands out through the writer task, answers and events in
/// through the reader task.
pub(super) struct Cdp {
    next_id: AtomicU64,
    outgoing: mpsc::UnboundedSender<String>,
    shared: Arc<Mutex<Shared>>,
}

impl Cdp {
    pub(super) fn start(socket: Socket) -> Arc<Cdp> {
        let (sink, stream) = socket.split();
        let (outgoing, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        tokio::spawn(write(sink, queue));
        tokio::spawn(read(stream, shared.clone()));
        Arc::new(Cdp {
            next_id: AtomicU64::new(1),
            outgoing,
            shared,
        })
    }

    pub(super) async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> anyhow::Result<Value> {
        self.call_within(session, method, params, COMMAND_TIMEOUT)
            .await
    }

    /// Sends a command and waits up to `timeout` for its answer; an `error` answer is a
    /// [`Refusal`], no answer a [`NoAnswer`].
    pub(super) async fn call_within(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        {
            let mut shared = lock(&self.shared);
            if let Some(why) = &shared.closed {
                bail!("{method}: the browser connection is closed ({why})");
            }
            shared.pending.insert(id, answer);
        }
        if self
            .outgoing
            .send(command(id, session, method, params))
            .is_err()
        {
            lock(&self.shared).pending.remove(&id);
            bail!("{method}: the browser connection is closed");
        }
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err((code, message)))) => Err(Refusal {
                method: method.to_string(),
                code,
                message,
            }
            .into()),
            Ok(Err(_)) => bail!(
                "{method}: the browser connection closed before the answer ({})",
                self.closed_because()
            ),
            Err(_) => {
                lock(&self.shared).pending.remove(&id);
                Err(NoAnswer {
                    method: method.to_string(),
                    timeout,
                }
                .into())
            }
        }
    }

    /// Sends a browser-level command without waiting for its answer (for `Drop`).
    pub(super) fn send_only(&self, method: &str, params: Value) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.outgoing.send(command(id, None, method, params));
    }

    /// The events named in `methods` of `session`, from now on, until the connection ends.
    pub(super) fn subscribe(
        &self,
        session: &str,
        methods: &'static [&'static str],
    ) -> mpsc::UnboundedReceiver<Event> {
        let (events, received) = mpsc::unbounded_channel();
        let mut shared = lock(&self.shared);
        shared.listeners.retain(|l| !l.events.is_closed());
        // After the end, the sender is dropped here and the receiver sees the end at once.
        if shared.closed.is_none() {
            shared.listeners.push(Listener {
                session: session.to_string(),
                methods,
                events,
            });
        }
        received
    }

    pub(super) fn closed_because(&self) -> String {
        lock(&self.shared)
            .closed
            .clone()
            .unwrap_or_else(|| "no reason known".to_string())
    }
}

fn command(id: u64, session: Option<&str>, method: &str, params: Value) -> String {
    let mut command = json!({"id": id, "method": method, "params": params});
    if let Some(session) = session {
        command["sessionId"] = Value::from(session);
    }
    command.to_string()
}

/// The writer task: sends the queued commands until every sender is gone or the socket fails.
async fn write(mut sink: SplitSink<Socket, Message>, mut queue: mpsc::UnboundedReceiver<String>) {
    while let Some(text) = queue.recv().await {
        if sink.send(Message::text(text)).await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

/// The reader task: dispatches every message until the socket ends, then fails the commands
/// still waiting and ends every listener.
async fn read(mut stream: SplitStream<Socket>, shared: Arc<Mutex<Shared>>) {
    let why = loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => dispatch(&shared, text.as_str()),
            Some(Ok(Message::Close(frame))) => break format!("the browser closed it: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => break format!("reading it failed: {e}"),
            None => break "it ended".to_string(),
        }
    };
    let mut shared = lock(&shared);
    shared.closed = Some(why);
    // Dropping the senders wakes whoever waits on them.
    shared.pending.clear();
    shared.listeners.clear();
}

fn dispatch(shared: &Mutex<Shared>, text: &str) {
    // The browser only sends JSON objects; anything else has no one to go to.
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return;
    };
    if let Some(id) = message.get("id").and_then(Value::as_u64) {
        let answer = match message.get("error") {
            Some(error) => {
                let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
                let mut text = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("(no message)")
                    .to_string();
                if let Some(data) = error.get("data").and_then(Value::as_str) {
                    text = format!("{text}: {data}");
                }
                Err((code, text))
            }
            None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
        };
        // Gone when its caller timed out or was dropped (and for `send_only`'s commands).
        if let Some(waiting) = lock(shared).pending.remove(&id) {
            let _ = waiting.send(answer);
        }
    } else if let Some(method) = message.get("method").and_then(Value::as_str) {
        let session = message.get("sessionId").and_then(Value::as_str);
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        lock(shared).listeners.retain(|listener| {
            if session != Some(listener.session.as_str()) || !listener.methods.contains(&method) {
                return true;
            }
            let event = Event {
                method: method.to_string(),
                params: params.clone(),
            };
            listener.events.send(event).is_ok()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_go_to_their_caller_and_events_to_their_listener() {
        let shared = Mutex::new(Shared::default());
        let (answer, mut answered) = oneshot::channel();
        let (events, mut received) = mpsc::unbounded_channel();
        {
            let mut shared = lock(&shared);
            shared.pending.insert(7, answer);
            shared.listeners.push(Listener {
                session: "s1".to_string(),
                methods: &["Page.loadEventFired"],
                events,
            });
        }
        dispatch(
            &shared,
            r#"{"method":"Page.loadEventFired","sessionId":"s2","params":{}}"#,
        );
        dispatch(
            &shared,
            r#"{"method":"Page.frameNavigated","sessionId":"s1","params":{}}"#,
        );
        dispatch(
            &shared,
            r#"{"method":"Page.loadEventFired","sessionId":"s1","params":{"timestamp":1}}"#,
        );
        dispatch(
            &shared,
            r#"{"id":7,"error":{"code":-32000,"message":"No target"}}"#,
        );
        dispatch(&shared, "not json");

        let event = received.try_recv().ok();
        assert_eq!(event.map(|e| e.params), Some(json!({"timestamp": 1})));
        assert!(received.try_recv().is_err(), "only the matching event");
        assert_eq!(
            answered.try_recv().ok(),
            Some(Err((-32000, "No target".to_string())))
        );
    }
}
