//! The fixed-response HTTP server every data-plane benchmark proxies to.
//!
//! It answers every request with the same small body so that the upstream costs the same
//! behind every proxy and in the direct baseline. HTTP/1.1 and HTTP/2 with prior knowledge
//! are both served, so h2load can hit it directly too.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The body of every response but those to `…/json10k`.
pub const BODY: &[u8] = b"hello from the bench upstream\n";

/// The body of responses to paths ending in `/json10k`: 10 KB of JSON, for compression cells.
pub fn json_10k() -> Bytes {
    let item = r#"{"id": 12345, "name": "portico bench item", "tags": ["edge", "gateway"], "price": 19.99}"#;
    let mut body = String::from("{\"items\": [");
    while body.len() < 10_000 {
        if !body.ends_with('[') {
            body.push_str(", ");
        }
        body.push_str(item);
    }
    body.push_str("]}");
    Bytes::from(body)
}

/// Serves connections from `listener` until `shutdown` completes.
pub async fn run(listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let builder = auto::Builder::new(TokioExecutor::new());
    let json = json_10k();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        // Latency, not throughput of small writes, is what the proxies are compared on.
        stream.set_nodelay(true)?;
        let builder = builder.clone();
        let json = json.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (kind, body) = if req.uri().path().ends_with("/json10k") {
                    ("application/json", json.clone())
                } else {
                    ("text/plain", Bytes::from_static(BODY))
                };
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", kind)
                            .body(Full::new(body))
                            .unwrap_or_default(),
                    )
                }
            });
            // A client that resets its connection mid-request is normal under load.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn answers_every_request_with_the_fixed_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(listener, async {
            let _ = stopped.await;
        }));
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /any/path HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        conn.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8(response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.ends_with(std::str::from_utf8(BODY).unwrap()),
            "{response}"
        );
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
