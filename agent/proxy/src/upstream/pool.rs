//! HTTP/1 connection pools: one per cluster and proxy worker, holding the idle keep-alive
//! connections of each endpoint.
//!
//! A request takes its endpoint's most recently used idle connection (LIFO: the warmest one,
//! and the rest age out), sends on it through hyper's `SendRequest` from its own task, and the
//! connection comes back when the response body ends ([`PooledBody`]). Each connection's
//! driver is a task of its own, spawned once when the connection opens, on the worker that
//! opened it. A connection is dropped, which closes it, when the upstream closed it, when it
//! idled past the timeout, or when its endpoint already has the most idle connections kept.
//!
//! With a connection limit, a request finding neither an idle connection nor room for a new
//! one waits for the next connection freed, in a bounded queue.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio::time::Instant;
use tower::Service;

use super::SendError;
use crate::body::ProxyBody;
use crate::connector::{Conn, Connector};

/// The limits of one worker's pool for one cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    /// How long opening a connection (TCP and TLS) may take.
    pub connect_timeout: Duration,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint; past that the least recently used is closed.
    pub max_idle_per_endpoint: usize,
    /// Open connections (idle or busy) over all endpoints; 0 for no limit.
    pub max_connections: usize,
    /// Requests waiting for a connection at the limit; 0 for no limit.
    pub max_pending: usize,
    /// Largest response head read from an endpoint.
    pub max_response_head: usize,
}

/// One worker's connections to one cluster. Only that worker's thread takes its lock, so the
/// lock is never contended; it is a lock rather than a `RefCell` because the futures and
/// response bodies that hold connections must be `Send` for hyper and tokio.
pub(super) struct Pool {
    limits: PoolLimits,
    connector: Connector,
    builder: Builder,
    state: Mutex<State>,
    /// Signalled when a connection is checked in or closed while requests wait.
    freed: Notify,
}

struct State {
    /// Per endpoint, the least recently used first.
    idle: Vec<VecDeque<Idle>>,
    /// Connections open or being opened, idle ones included.
    open: usize,
    /// Requests waiting for a connection.
    waiting: usize,
    /// Whether a task is closing expired idle connections.
    reaping: bool,
}

struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

/// What a checkout does after looking at the pool.
enum Next<'a> {
    Use(SendRequest<ProxyBody>),
    Connect,
    Wait(Pin<Box<Notified<'a>>>),
    Overloaded,
}

impl State {
    /// The newest idle connection of `endpoint` the upstream has not closed.
    fn take_idle(&mut self, endpoint: usize) -> Option<SendRequest<ProxyBody>> {
        let queue = self.idle.get_mut(endpoint)?;
        while let Some(idle) = queue.pop_back() {
            // A connection still finishing the previous exchange (its request body) is not
            // kept waiting for: it is closed instead.
            if idle.sender.is_ready() {
                return Some(idle.sender);
            }
            self.open -= 1;
        }
        None
    }

    /// Closes the least recently used idle connection of another endpoint, making room.
    fn evict_other(&mut self, endpoint: usize) -> bool {
        let victim = self
            .idle
            .iter_mut()
            .enumerate()
            .filter(|(i, q)| *i != endpoint && !q.is_empty())
            .min_by_key(|(_, q)| q.front().map(|idle| idle.since))
            .and_then(|(_, q)| q.pop_front());
        if victim.is_some() {
            self.open -= 1;
        }
        victim.is_some()
    }

    /// Closes idle connections older than `timeout`; returns when the next one expires.
    fn expire(&mut self, timeout: Duration, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for queue in &mut self.idle {
            while queue
                .front()
                .is_some_and(|idle| idle.since + timeout <= now)
            {
                queue.pop_front();
                self.open -= 1;
            }
            if let Some(front) = queue.front() {
                let at = front.since + timeout;
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }
}

impl Pool {
    /// A pool for `endpoints` endpoints, connecting through `connector`.
    pub fn new(endpoints: usize, connector: Connector, limits: PoolLimits) -> Arc<Pool> {
        Arc::new(Pool {
            limits,
            connector,
            builder: {
                let mut b = Builder::new();
                // The header limit checks a head that arrived whole too; the buffer limit
                // alone only one still arriving.
                b.writev(false)
                    .max_buf_size(limits.max_response_head)
                    .max_header_size(limits.max_response_head);
                b
            },
            state: Mutex::new(State {
                idle: (0..endpoints).map(|_| VecDeque::new()).collect(),
                open: 0,
                waiting: 0,
                reaping: false,
            }),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every step, so a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` to endpoint `endpoint` (`authority`). A request the pool's connection
    /// turned out to be closed before it was written is sent again on another connection.
    pub async fn send(
        self: &Arc<Self>,
        endpoint: usize,
        authority: &Authority,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        loop {
            let mut conn = self.checkout(endpoint, authority).await?;
            match conn.sender.try_send_request(request).await {
                Ok(response) => return Ok(conn.attach(response)),
                Err(mut e) => match e.take_message() {
                    // Bounded: every retry drops one idle connection, and a fresh one is
                    // never retried.
                    Some(unsent) if conn.reused => request = unsent,
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    /// A connection to `endpoint`: the newest idle one, a new one, or at the connection limit
    /// the next one freed.
    async fn checkout(
        self: &Arc<Self>,
        endpoint: usize,
        authority: &Authority,
    ) -> Result<Pooled, SendError> {
        loop {
            let next = {
                let mut state = self.lock();
                let limits = &self.limits;
                if let Some(sender) = state.take_idle(endpoint) {
                    Next::Use(sender)
                } else if limits.max_connections == 0
                    || state.open < limits.max_connections
                    || state.evict_other(endpoint)
                {
                    state.open += 1;
                    Next::Connect
                } else if limits.max_pending != 0 && state.waiting >= limits.max_pending {
                    Next::Overloaded
                } else {
                    // Registered before the lock is released, so no check-in is missed.
                    let mut freed = Box::pin(self.freed.notified());
                    freed.as_mut().enable();
                    state.waiting += 1;
                    Next::Wait(freed)
                }
            };
            match next {
                Next::Use(sender) => {
                    return Ok(Pooled {
                        slot: Slot(Some(self.clone())),
                        endpoint,
                        sender,
                        reused: true,
                    });
                }
                Next::Connect => {
                    // A failed or abandoned connect frees the slot again.
                    let slot = Slot(Some(self.clone()));
                    let sender = self.connect(authority).await?;
                    return Ok(Pooled {
                        slot,
                        endpoint,
                        sender,
                        reused: false,
                    });
                }
                Next::Wait(freed) => {
                    let _waiting = Waiting(self);
                    freed.await;
                }
                Next::Overloaded => return Err(SendError::Overloaded),
            }
        }
    }

    /// Opens a connection and spawns its driver on the current worker.
    async fn connect(&self, authority: &Authority) -> Result<SendRequest<ProxyBody>, SendError> {
        let connect_error = |source| SendError::Connect {
            endpoint: authority.clone(),
            source,
        };
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| connect_error(e.into()))?;
        let mut connector = self.connector.clone();
        let timeout = self.limits.connect_timeout;
        let io: Conn = match tokio::time::timeout(timeout, connector.call(uri)).await {
            Ok(io) => io.map_err(connect_error)?,
            Err(_) => {
                return Err(SendError::ConnectTimeout {
                    endpoint: authority.clone(),
                    timeout,
                });
            }
        };
        let (sender, conn) = self
            .builder
            .handshake(io)
            .await
            .map_err(|e| connect_error(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Keeps `sender` as `endpoint`'s newest idle connection.
    fn check_in(self: &Arc<Self>, endpoint: usize, sender: SendRequest<ProxyBody>) {
        let mut state = self.lock();
        let max_idle = self.limits.max_idle_per_endpoint;
        match state.idle.get_mut(endpoint) {
            Some(queue) if max_idle > 0 && !sender.is_closed() => {
                let evicted = if queue.len() >= max_idle {
                    queue.pop_front()
                } else {
                    None
                };
                queue.push_back(Idle {
                    sender,
                    since: Instant::now(),
                });
                if evicted.is_some() {
                    state.open -= 1;
                }
                if !state.reaping
                    && let Ok(runtime) = tokio::runtime::Handle::try_current()
                {
                    state.reaping = true;
                    runtime.spawn(reap(Arc::downgrade(self)));
                }
            }
            _ => state.open -= 1,
        }
        if state.waiting > 0 {
            self.freed.notify_one();
        }
    }

    /// Forgets a connection that is closed or no longer HTTP (upgraded).
    fn release(&self) {
        let mut state = self.lock();
        state.open -= 1;
        if state.waiting > 0 {
            self.freed.notify_one();
        }
    }
}

/// Closes `pool`'s idle connections as they expire; ends when none is left idle.
async fn reap(pool: Weak<Pool>) {
    loop {
        let next = {
            let Some(pool) = pool.upgrade() else { return };
            let mut state = pool.lock();
            let next = state.expire(pool.limits.idle_timeout, Instant::now());
            if next.is_none() {
                state.reaping = false;
            }
            next
        };
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => return,
        }
    }
}

/// Counts a request waiting for a connection for as long as it waits.
struct Waiting<'a>(&'a Pool);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

/// A connection's place among the pool's open connections; dropped, it is given up.
struct Slot(Option<Arc<Pool>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            pool.release();
        }
    }
}

/// A connection taken from the pool. Dropped, it is closed and its place under the connection
/// limit freed; it goes back only through [`Pooled::check_in`].
struct Pooled {
    slot: Slot,
    endpoint: usize,
    sender: SendRequest<ProxyBody>,
    /// Whether it served a request before this one.
    reused: bool,
}

impl Pooled {
    fn check_in(self) {
        let Pooled {
            mut slot,
            endpoint,
            sender,
            ..
        } = self;
        if let Some(pool) = slot.0.take() {
            pool.check_in(endpoint, sender);
        }
    }

    /// The response with this connection riding along until its body ends.
    fn attach(self, response: Response<Incoming>) -> Response<PooledBody> {
        let (parts, body) = response.into_parts();
        let conn = if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now carries the upgraded protocol; it never serves HTTP again.
            None
        } else if body.is_end_stream() {
            self.check_in();
            None
        } else {
            Some(self)
        };
        Response::from_parts(parts, PooledBody { inner: body, conn })
    }
}

/// A response body from a pooled connection; the connection goes back to the pool when the
/// body has been read to its end, and is closed when the body is dropped before that.
pub struct PooledBody {
    inner: Incoming,
    conn: Option<Pooled>,
}

impl PooledBody {
    /// A body that returns no connection (HTTP/2 multiplexes, with its own pool).
    pub fn plain(inner: Incoming) -> Self {
        PooledBody { inner, conn: None }
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.check_in();
        }
    }
}

impl Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(),
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Whoever read the body may stop at its known length without polling for the end.
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "pool_tests.rs"]
mod tests;
