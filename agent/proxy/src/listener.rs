//! Bound sockets: the accept loop of each listener and the serving of each connection.
//!
//! A bound socket lives as long as some config has a listener on its address; everything else
//! about the listener (protocol, TLS, limits, routes) is read from the current runtime per
//! connection or per request, so config changes never restart it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::conn::{ConnIo, ConnTrack};
use crate::context::{ConnCtx, ConnSlot};
use crate::headers;
use crate::runtime::{ConnSettings, Limits};
use crate::service;
use crate::shared::Shared;
use crate::signals::Signals;

/// The smallest read buffer hyper accepts; smaller header limits are raised to it.
const MIN_HEAD_BUFFER: usize = 8192;
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// The longest a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pending connections per listening socket (tokio's default).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds one socket on `addr` per worker, registered with that worker. With `SO_REUSEPORT` the
/// kernel spreads new connections over the sockets; workers sharing one socket instead saw
/// whichever woke first take every connection.
///
/// `SO_REUSEPORT` would also let this agent quietly share an address another process of the
/// same user already listens on (each then gets part of the traffic), so the address is first
/// bound once without it: that fails when anything holds the address. A process of the same
/// user that joins later with `SO_REUSEPORT` cannot be kept out; run agents as their own user.
pub(crate) fn bind(addr: SocketAddr, workers: &[Handle]) -> io::Result<Vec<TcpListener>> {
    probe(addr)?;
    let mut sockets = Vec::with_capacity(workers.len());
    for worker in workers {
        let socket = new_socket(addr)?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let _worker = worker.enter();
        sockets.push(socket.listen(LISTEN_BACKLOG)?);
    }
    Ok(sockets)
}

/// Fails with `AddrInUse` when another socket (ours or not, with `SO_REUSEPORT` or not)
/// listens on `addr`.
fn probe(addr: SocketAddr) -> io::Result<()> {
    let socket = new_socket(addr)?;
    // Without SO_REUSEADDR a recently closed connection's TIME_WAIT would fail the probe too.
    socket.set_reuseaddr(true)?;
    socket.bind(addr).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is already in use by another socket"),
            )
        } else {
            e
        }
    })
}

fn new_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
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
        let conn = Accepted {
            slot: Arc::new(ConnSlot::new(permit, shared.clone(), settings.name.clone())),
            shared: shared.clone(),
            settings,
            addr,
            peer,
            stop: stop.clone(),
        };
        shared.tracker.spawn(serve(conn, stream));
    }
    tracing::debug!(%addr, "listener stopped accepting");
}

/// An accepted connection and what serving it needs, whatever its protocol.
struct Accepted {
    shared: Arc<Shared>,
    /// The listener's connection settings when the connection was accepted.
    settings: Arc<ConnSettings>,
    addr: SocketAddr,
    peer: SocketAddr,
    slot: Arc<ConnSlot>,
    /// Cancelled when the listener stops: the connection drains.
    stop: CancellationToken,
}

/// Serves one connection: TLS first on HTTPS listeners, then HTTP.
async fn serve(conn: Accepted, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    match conn.settings.tls.clone() {
        None => serve_http(conn, stream, false, false).await,
        Some(config) => {
            let Some(tls) = handshake(&conn, config, stream).await else {
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            serve_http(conn, tls, true, h2).await;
        }
    }
}

/// The TLS handshake, bounded by its own short timeout (at most the header read timeout): a
/// handshake is a few round trips, and a client that stalls in it holds a connection slot.
async fn handshake(
    conn: &Accepted,
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let timeout = conn
        .settings
        .limits
        .header_read_timeout
        .min(TLS_HANDSHAKE_TIMEOUT);
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(peer = %conn.peer, error = %e, "tls handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(peer = %conn.peer, "tls handshake timed out");
            None
        }
    }
}

/// Serves HTTP on `stream` (`h2` when ALPN already chose HTTP/2) until the connection ends.
async fn serve_http<S>(conn: Accepted, stream: S, tls: bool, h2: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = conn.settings.limits;
    let head_limit = (limits.max_request_header_bytes as usize).max(MIN_HEAD_BUFFER);
    let track = Arc::new(ConnTrack::default());
    let io = ConnIo::new(
        stream,
        track.clone(),
        conn.settings.name.clone(),
        limits.header_read_timeout,
        head_limit,
        h2,
    );
    let ctx = Arc::new(ConnCtx {
        shared: conn.shared.clone(),
        addr: conn.addr,
        listener: conn.settings.name.clone(),
        peer: conn.peer.ip(),
        client: headers::client_address(conn.peer.ip()),
        tls,
        track: track.clone(),
        slot: conn.slot,
    });
    let svc = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, std::convert::Infallible>(service::handle(ctx, req).await) }
    });
    let builder = http_builder(&limits, head_limit, h2);
    let http = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(http);
    let ends = Ends {
        kill: &conn.shared.kill,
        stop: &conn.stop,
        track: &track,
        first_request: limits.header_read_timeout,
        idle_timeout: limits.idle_timeout,
    };
    let drain = |http: Pin<&mut _>| auto::UpgradeableConnection::graceful_shutdown(http);
    if let Err(e) = ends.drive(http, drain).await {
        tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
    }
}

/// hyper's HTTP/1 and HTTP/2 server settings for a listener's limits.
fn http_builder(limits: &Limits, head_limit: usize, h2: bool) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // ConnIo answers slow heads with a 408; hyper's own timeout would only close.
        .header_read_timeout(None)
        .max_buf_size(head_limit)
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_request_header_bytes);
    if h2 { builder.http2_only() } else { builder }
}

/// What ends or drains one connection besides the connection itself.
struct Ends<'a> {
    /// The shutdown grace period is over: drop the connection.
    kill: &'a CancellationToken,
    /// The listener stops: finish the request in flight, then close.
    stop: &'a CancellationToken,
    track: &'a ConnTrack,
    /// How long a new connection may stay silent before its first request.
    first_request: Duration,
    /// How long a keep-alive connection may idle between requests.
    idle_timeout: Duration,
}

impl Ends<'_> {
    /// When the connection counts as idle if nothing happens before.
    fn deadline(&self) -> tokio::time::Instant {
        self.track
            .idle_deadline(self.first_request, self.idle_timeout)
    }

    /// Polls `http` to its end, draining it (`drain`) when the listener stops or the
    /// connection idles, and dropping it when killed.
    async fn drive<C, E>(&self, mut http: Pin<&mut C>, drain: impl Fn(Pin<&mut C>)) -> Result<(), E>
    where
        C: Future<Output = Result<(), E>>,
    {
        let killed = self.kill.cancelled();
        let stopped = self.stop.cancelled();
        let idle = tokio::time::sleep_until(self.deadline());
        tokio::pin!(killed, stopped, idle);
        let signals = Signals::new();
        let mut draining = false;
        loop {
            let event = std::future::poll_fn(|cx| {
                if let Poll::Ready(result) = http.as_mut().poll(cx) {
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
                Event::Ended(result) => return result,
                Event::Killed => return Ok(()),
                Event::Stopped => {
                    drain(http.as_mut());
                    draining = true;
                }
                Event::IdleCheck if self.track.is_idle(self.first_request, self.idle_timeout) => {
                    drain(http.as_mut());
                    draining = true;
                }
                Event::IdleCheck => {
                    idle.as_mut().reset(self.deadline());
                    signals.rearm();
                }
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
