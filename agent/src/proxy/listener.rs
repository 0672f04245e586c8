//! Bound sockets: the accept loop of each listener and the serving of each connection.
//!
//! A bound socket lives as long as some config has a listener on its address; everything else
//! about the listener (protocol, TLS, limits, routes) is read from the current runtime per
//! connection or per request, so config changes never restart it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::task::AtomicWaker;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::conn::{ConnIo, ConnTrack};
use super::service::{self, ConnCtx};
use crate::metrics as m;
use crate::runtime::ConnSettings;

/// The smallest read buffer hyper accepts; smaller header limits are raised to it.
const MIN_HEAD_BUFFER: usize = 8192;
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Pending connections per listening socket (tokio's default).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds one socket on `addr` per worker, registered with that worker. With `SO_REUSEPORT` the
/// kernel spreads new connections over the sockets; workers sharing one socket instead saw
/// whichever woke first take every connection. The first bind still fails when another socket
/// (without `SO_REUSEPORT`) holds the address.
pub(crate) fn bind(addr: SocketAddr, workers: &[Handle]) -> io::Result<Vec<TcpListener>> {
    let mut sockets = Vec::with_capacity(workers.len());
    for worker in workers {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let _worker = worker.enter();
        sockets.push(socket.listen(LISTEN_BACKLOG)?);
    }
    Ok(sockets)
}

/// A socket being accepted on.
pub(crate) struct Bound {
    /// Stops accepting and drains the listener's connections.
    stop: CancellationToken,
    semaphore: Arc<Semaphore>,
    max_connections: u32,
    accepting: Vec<tokio::task::JoinHandle<()>>,
}

impl Bound {
    /// Starts accepting on `sockets`, each on the worker it was registered with.
    pub fn spawn(
        shared: Arc<Shared>,
        addr: SocketAddr,
        sockets: Vec<TcpListener>,
        workers: &[Handle],
        max_connections: u32,
    ) -> Bound {
        let stop = shared.shutdown.child_token();
        let semaphore = Arc::new(Semaphore::new(max_connections as usize));
        let accepting = sockets
            .into_iter()
            .zip(workers)
            .map(|(socket, worker)| {
                let task = accept_loop(
                    shared.clone(),
                    addr,
                    socket,
                    semaphore.clone(),
                    stop.clone(),
                );
                worker.spawn(shared.tracker.track_future(task))
            })
            .collect();
        Bound {
            stop,
            semaphore,
            max_connections,
            accepting,
        }
    }

    /// Stops accepting and waits until the socket is closed, so its address can be bound
    /// again at once; the listener's connections drain in the background.
    pub async fn close(self) {
        self.stop.cancel();
        for task in self.accepting {
            let _ = task.await;
        }
    }

    /// Applies a new connection limit to connections accepted from now on.
    pub fn set_max_connections(&mut self, max: u32) {
        if max > self.max_connections {
            self.semaphore
                .add_permits((max - self.max_connections) as usize);
        } else {
            self.semaphore
                .forget_permits((self.max_connections - max) as usize);
        }
        self.max_connections = max;
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    addr: SocketAddr,
    listener: TcpListener,
    semaphore: Arc<Semaphore>,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Accept first, then wait for a slot: the limit is shared by every worker, and a
        // worker holding a free slot while blocked in accept() on its own SO_REUSEPORT socket
        // would starve a connection queued on another worker's socket. So a connection past
        // the limit waits here (one per worker at most) until a slot frees.
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = semaphore.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let Some(settings) = shared
            .runtime
            .load()
            .listeners
            .get(&addr)
            .map(|l| l.conn.clone())
        else {
            break;
        };
        let conn = serve(
            shared.clone(),
            settings,
            addr,
            stream,
            peer,
            permit,
            stop.clone(),
        );
        shared.tracker.spawn(conn);
    }
    tracing::debug!(%addr, "listener stopped accepting");
}

/// A connection's place under the listener's limit, and its count among the open
/// connections; held until the connection, or the upgraded stream it became, is gone.
pub(crate) struct ConnSlot {
    _permit: OwnedSemaphorePermit,
    _active: ActiveGuard,
}

/// Counts an open connection for as long as it lives.
struct ActiveGuard {
    shared: Arc<Shared>,
    listener: Arc<str>,
}

impl ActiveGuard {
    fn new(shared: Arc<Shared>, listener: Arc<str>) -> Self {
        shared.active.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(m::ACTIVE_CONNECTIONS, m::LABEL_LISTENER => listener.clone())
            .increment(1.0);
        ActiveGuard { shared, listener }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(m::ACTIVE_CONNECTIONS, m::LABEL_LISTENER => self.listener.clone())
            .decrement(1.0);
    }
}

async fn serve(
    shared: Arc<Shared>,
    settings: Arc<ConnSettings>,
    addr: SocketAddr,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    stop: CancellationToken,
) {
    let slot = Arc::new(ConnSlot {
        _permit: permit,
        _active: ActiveGuard::new(shared.clone(), settings.name.clone()),
    });
    let _ = stream.set_nodelay(true);
    let limits = settings.limits;
    match &settings.tls {
        None => {
            serve_http(
                shared,
                &settings,
                addr,
                stream,
                peer,
                (false, false),
                slot,
                stop,
            )
            .await
        }
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await;
            let tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "tls handshake timed out");
                    return;
                }
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            serve_http(shared, &settings, addr, tls, peer, (true, h2), slot, stop).await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_http<S>(
    shared: Arc<Shared>,
    settings: &ConnSettings,
    addr: SocketAddr,
    stream: S,
    peer: SocketAddr,
    (tls, h2): (bool, bool),
    slot: Arc<ConnSlot>,
    stop: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = settings.limits;
    let kill = shared.kill.clone();
    let head_limit = (limits.max_request_header_bytes as usize).max(MIN_HEAD_BUFFER);
    let track = Arc::new(ConnTrack::default());
    let io = ConnIo::new(
        stream,
        track.clone(),
        settings.name.clone(),
        limits.header_read_timeout,
        head_limit,
        h2,
    );
    let ctx = Arc::new(ConnCtx {
        shared,
        addr,
        listener: settings.name.clone(),
        client: super::headers::client_address(peer.ip()),
        tls,
        track: track.clone(),
        slot,
    });
    let svc = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, std::convert::Infallible>(service::handle(ctx, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(head_limit)
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_request_header_bytes);
    let builder = if h2 { builder.http2_only() } else { builder };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let killed = kill.cancelled();
    let stopped = stop.cancelled();
    let idle = tokio::time::sleep_until(track.idle_deadline(limits.idle_timeout));
    tokio::pin!(killed, stopped, idle);
    let signals = Signals::new();
    let mut draining = false;
    loop {
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Event::Ended(result));
            }
            signals.poll(cx, |cx| {
                if killed.as_mut().poll(cx).is_ready() {
                    Some(Event::Killed)
                } else if draining {
                    None
                } else if stopped.as_mut().poll(cx).is_ready() {
                    Some(Event::Stopped)
                } else if idle.as_mut().poll(cx).is_ready() {
                    Some(Event::IdleCheck)
                } else {
                    None
                }
            })
        })
        .await;
        match event {
            Event::Ended(result) => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            Event::Killed => break,
            Event::Stopped => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            Event::IdleCheck if track.is_idle(limits.idle_timeout) => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            Event::IdleCheck => {
                idle.as_mut()
                    .reset(track.idle_deadline(limits.idle_timeout));
                signals.rearm();
            }
        }
    }
}

/// What ends or drains a connection.
enum Event<E> {
    /// The connection is over.
    Ended(Result<(), E>),
    /// The shutdown grace period is over.
    Killed,
    /// The listener stops: finish the request in flight, then close.
    Stopped,
    /// The idle timer fired; the connection may have been busy since it was set.
    IdleCheck,
}

/// Wakes a connection's task for its shutdown and idle signals apart from its I/O, so that the
/// signals are polled only when one of them fired. The I/O wakes the task several times per
/// request, and polling a cancellation token takes a lock shared by every worker.
struct Signals {
    state: Arc<SignalState>,
    waker: Waker,
}

struct SignalState {
    /// Set when a signal woke the task; initially set, so the first poll registers them all.
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for SignalState {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Signals {
    fn new() -> Self {
        let state = Arc::new(SignalState {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Signals {
            waker: Waker::from(state.clone()),
            state,
        }
    }

    /// Runs `check` with the signals' own waker if a signal fired since the last check.
    fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        check: impl FnOnce(&mut Context<'_>) -> Option<T>,
    ) -> Poll<T> {
        self.state.task.register(cx.waker());
        if !self.state.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        match check(&mut Context::from_waker(&self.waker)) {
            Some(event) => Poll::Ready(event),
            None => Poll::Pending,
        }
    }

    /// Makes the next poll check the signals, e.g. after a timer was reset.
    fn rearm(&self) {
        self.state.woken.store(true, Ordering::Release);
    }
}
