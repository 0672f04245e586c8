//! Real HTTP upstream servers on 127.0.0.1:0, stopped (with every connection) when dropped.
//!
//! [`Upstream`] is the one a test puts behind a proxy: it says who answered and what it
//! received, so a test reads routing, rewrites and forwarded headers from the body.
//! [`ClosingUpstream`] closes each connection after one answer, as an upstream whose idle
//! timeout fires does, for tests of connection reuse.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

/// The body of an upstream's answers.
pub type UpstreamBody = BoxBody<Bytes, hyper::Error>;

/// What an [`Upstream`] answers with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reply {
    /// Its name on the first line, `METHOD URI` on the second, then one `name: value` line
    /// per request header (see `http::Answer::upstream` and `http::Answer::seen`).
    #[default]
    Echo,
    /// Its name and a newline, nothing else.
    Name,
}

/// How to start an [`Upstream`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// What it answers with.
    pub reply: Reply,
    /// Serve HTTPS with this config instead of plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// An HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN over TLS) server answering every request
/// per its [`Reply`], with the headers `x-upstream: <name>`, `connection: x-hop` and `x-hop: 1`
/// (a hop-by-hop header a proxy must drop).
///
/// Paths with a meaning: `/slow/<ms>` answers after that many milliseconds; `/echo` answers
/// with the request body, streamed; `/hold` answers once [`Upstream::release`] lets it.
/// While failing ([`Upstream::set_failing`]) it answers every request 500, health checks
/// included.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name: the first line of its answers and its `x-upstream` header.
    pub name: String,
    counts: Arc<Counts>,
    gate: Arc<Semaphore>,
    task: JoinHandle<()>,
}

/// What a server has seen.
#[derive(Default)]
struct Counts {
    /// Requests received (counted on arrival, before any answer).
    hits: AtomicUsize,
    /// Connections accepted.
    accepted: AtomicUsize,
    /// Connections ended.
    closed: AtomicUsize,
    /// Answer every request 500.
    failing: AtomicBool,
}

impl Upstream {
    /// A plain-HTTP upstream that echoes what it received.
    pub async fn start(name: &str) -> Upstream {
        Upstream::start_with(name, Options::default()).await
    }

    /// A plain-HTTP upstream that answers with its name alone.
    pub async fn start_name_only(name: &str) -> Upstream {
        let options = Options {
            reply: Reply::Name,
            ..Options::default()
        };
        Upstream::start_with(name, options).await
    }

    /// An HTTPS upstream that echoes what it received.
    pub async fn start_tls(name: &str, tls: Arc<rustls::ServerConfig>) -> Upstream {
        let options = Options {
            tls: Some(tls),
            ..Options::default()
        };
        Upstream::start_with(name, options).await
    }

    /// An upstream as `options` say.
    pub async fn start_with(name: &str, options: Options) -> Upstream {
        let listener = bind().await;
        let addr = local_addr(&listener);
        let counts = Arc::new(Counts::default());
        let gate = Arc::new(Semaphore::new(0));
        let server = Server {
            name: name.to_string(),
            reply: options.reply,
            counts: Arc::clone(&counts),
            gate: Arc::clone(&gate),
        };
        let tls = options.tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&counts), move |stream| {
            serve(stream, server.clone(), tls.clone())
        }));
        Upstream {
            addr,
            name: name.to_string(),
            counts,
            gate,
            task,
        }
    }

    /// Requests received so far, counted on arrival.
    pub fn hits(&self) -> usize {
        self.counts.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Connections that ended so far.
    pub fn closed(&self) -> usize {
        self.counts.closed.load(Ordering::SeqCst)
    }

    /// From now on, answers every request 500 (`true`) or normally (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.counts.failing.store(failing, Ordering::SeqCst);
    }

    /// Lets `n` more requests to `/hold` answer.
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // The accept loop owns the connections' JoinSet: aborting it ends them all.
        self.task.abort();
    }
}

/// Per-upstream state each connection shares.
#[derive(Clone)]
struct Server {
    name: String,
    reply: Reply,
    counts: Arc<Counts>,
    gate: Arc<Semaphore>,
}

async fn serve(stream: TcpStream, server: Server, tls: Option<tokio_rustls::TlsAcceptor>) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        server.counts.hits.fetch_add(1, Ordering::SeqCst);
        let server = server.clone();
        async move { Ok::<_, Infallible>(server.answer(req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    match tls {
        None => {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
        Some(acceptor) => {
            if let Ok(stream) = acceptor.accept(stream).await {
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        }
    }
}

impl Server {
    async fn answer(&self, req: Request<Incoming>) -> Response<UpstreamBody> {
        let path = req.uri().path();
        if let Some(ms) = path.strip_prefix("/slow/").and_then(|ms| ms.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if path == "/hold" {
            // The semaphore is never closed, so acquiring only waits.
            if let Ok(permit) = self.gate.acquire().await {
                permit.forget();
            }
        }
        let mut response = if req.uri().path() == "/echo" {
            Response::new(req.into_body().boxed())
        } else {
            let mut text = format!("{}\n", self.name);
            if self.reply == Reply::Echo {
                text.push_str(&format!("{} {}\n", req.method(), req.uri()));
                for (name, value) in req.headers() {
                    text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
                }
            }
            Response::new(full(text))
        };
        if self.counts.failing.load(Ordering::SeqCst) {
            *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        }
        let headers = response.headers_mut();
        if let Ok(name) = self.name.parse() {
            headers.insert("x-upstream", name);
        }
        headers.insert(
            "connection",
            hyper::header::HeaderValue::from_static("x-hop"),
        );
        headers.insert("x-hop", hyper::header::HeaderValue::from_static("1"));
        response
    }
}

fn full(text: String) -> UpstreamBody {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

/// An HTTP/1.1 upstream that answers the first request of each connection with `200 ok`,
/// keep-alive by its headers, and then closes the connection without saying so: what an
/// upstream whose idle timeout fires right after an answer does.
pub struct ClosingUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    task: JoinHandle<()>,
}

impl ClosingUpstream {
    /// Starts one on 127.0.0.1:0.
    pub async fn start() -> ClosingUpstream {
        let listener = bind().await;
        let addr = local_addr(&listener);
        let counts = Arc::new(Counts::default());
        let shared = Arc::clone(&counts);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&counts), move |stream| {
            answer_once(stream, Arc::clone(&shared))
        }));
        ClosingUpstream { addr, counts, task }
    }

    /// Requests received so far (whole request heads).
    pub fn hits(&self) -> usize {
        self.counts.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Connections closed so far (after their answer, or after the client left).
    pub fn closed(&self) -> usize {
        self.counts.closed.load(Ordering::SeqCst)
    }
}

impl Drop for ClosingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer_once(mut stream: TcpStream, counts: Arc<Counts>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    counts.hits.fetch_add(1, Ordering::SeqCst);
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await;
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding an upstream on 127.0.0.1:0: {e}"))
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("an upstream's address: {e}"))
}

/// Accepts connections until aborted, counting them, and runs `serve` on each in a task of a
/// set this loop owns, so aborting the loop ends every connection too. A connection counts as
/// closed when `serve` returns and the stream is dropped.
async fn accept_loop<F, Fut>(listener: TcpListener, counts: Arc<Counts>, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, or a connection reset before it was accepted: the
            // next accept may work.
            continue;
        };
        while connections.try_join_next().is_some() {}
        counts.accepted.fetch_add(1, Ordering::SeqCst);
        let (serving, counts) = (serve(stream), Arc::clone(&counts));
        connections.spawn(async move {
            serving.await;
            counts.closed.fetch_add(1, Ordering::SeqCst);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{fetch, get};
    use crate::wait::eventually;

    #[tokio::test]
    async fn echoes_the_request_and_counts_what_it_sees() {
        let up = Upstream::start("blue").await;
        let answer = get(up.addr.port(), "shop.example", "/a?b=1").await;
        assert_eq!(answer.upstream(), "blue");
        assert_eq!(answer.body.lines().nth(1), Some("GET /a?b=1"));
        assert_eq!(answer.seen("host"), Some("shop.example"));
        assert_eq!(answer.headers["x-upstream"], "blue");
        assert_eq!((up.hits(), up.accepted()), (1, 1));
        eventually(
            "the connection to close",
            Duration::from_secs(5),
            || async { (up.closed() == 1).then_some(()) },
        )
        .await;
    }

    #[tokio::test]
    async fn answers_with_its_name_alone_when_asked_to() {
        let up = Upstream::start_name_only("green").await;
        let url = format!("http://{}/slow/10", up.addr);
        assert_eq!(fetch(url).await, Some((200, "green\n".to_string())));
    }

    #[tokio::test]
    async fn held_requests_answer_once_released() {
        let up = Upstream::start("up").await;
        let held = tokio::spawn(fetch(format!("http://{}/hold", up.addr)));
        eventually("the request to arrive", Duration::from_secs(5), || async {
            (up.hits() == 1).then_some(())
        })
        .await;
        assert!(!held.is_finished());
        up.release(1);
        let answer = held.await.expect("the request task");
        assert_eq!(answer.map(|(status, _)| status), Some(200));
    }

    #[tokio::test]
    async fn a_closing_upstream_closes_after_one_answer() {
        let up = ClosingUpstream::start().await;
        let answer = crate::http::raw(
            up.addr.port(),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
        assert_eq!((up.hits(), up.accepted()), (1, 1));
        eventually("the count of the close", Duration::from_secs(5), || async {
            (up.closed() == 1).then_some(())
        })
        .await;
    }
}
