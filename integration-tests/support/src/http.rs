//! HTTP clients for tests: requests through a proxy read whole into an [`Answer`], a `GET`
//! that says whether anything answers at all, and raw bytes on a socket for what a
//! well-behaved client never sends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// An HTTP/1.1 client (HTTP/2 when the request says so) with a connection pool.
pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub body: String,
}

impl Answer {
    /// The first body line: which [`crate::upstream::Upstream`] answered.
    pub fn upstream(&self) -> &str {
        self.body.lines().next().unwrap_or("")
    }

    /// The value of a header the upstream received, from the lines an echoing
    /// [`crate::upstream::Upstream`] answers with.
    pub fn seen(&self, header: &str) -> Option<&str> {
        self.body
            .lines()
            .skip(2)
            .find_map(|l| l.strip_prefix(header)?.strip_prefix(": "))
    }
}

/// A new client with its own pool.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `req` and reads the whole answer; panics when no answer comes.
pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Answer {
    let target = req.uri().clone();
    let response = client
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("no answer to {target}: {e}"));
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("reading the body from {target}: {e}"))
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// `GET http://127.0.0.1:<port><target>` with Host `host`, on a new connection.
pub async fn get(port: u16, host: &str, target: &str) -> Answer {
    let req = Request::get(format!("http://127.0.0.1:{port}{target}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|e| panic!("a request for {target}: {e}"));
    send(&client(), req).await
}

/// `GET http://127.0.0.1:<port><target>` with `headers`, through `client` (which keeps its
/// connections for the next request).
pub async fn get_with(
    client: &TestClient,
    port: u16,
    target: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = Request::get(format!("http://127.0.0.1:{port}{target}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|e| panic!("a request for {target}: {e}"));
    send(client, req).await
}

/// `GET url`: the status and body, or `None` when nothing answers (or the body breaks off).
pub async fn fetch(url: impl AsRef<str>) -> Option<(u16, String)> {
    let url = url.as_ref();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = url.parse().unwrap_or_else(|e| panic!("URL {url:?}: {e}"));
    let response = client.get(uri).await.ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// [`fetch`] for code that is not async: an HTTP/1.0 `GET path` to `addr`, the status and
/// body, or `None` when nothing answers within 500 ms or the answer takes over 5 s.
pub fn fetch_blocking(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The whole body of `response` as text.
pub async fn text(response: Response<Incoming>) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("reading a body: {e}"))
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Writes `raw` on a new connection to 127.0.0.1:`port` and reads until the server closes it
/// or `timeout` passes; what was read, as text.
pub async fn raw(port: u16, raw: &[u8], timeout: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    stream
        .write_all(raw)
        .await
        .unwrap_or_else(|e| panic!("writing to 127.0.0.1:{port}: {e}"));
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
