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

/// The body of every response.
pub const BODY: &[u8] = b"hello from the bench upstream\n";

/// Serves connections from `listener` until `shutdown` completes.
pub async fn run(listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        // Latency, not throughput of small writes, is what the proxies are compared on.
        stream.set_nodelay(true)?;
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("content-type", "text/plain")
                        .body(Full::new(Bytes::from_static(BODY)))
                        .unwrap_or_default(),
                )
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
