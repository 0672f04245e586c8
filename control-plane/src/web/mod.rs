//! The dashboard: a read-only web UI for the fleet, rollouts, history, traffic and health,
//! served on `--web-listen` (default `127.0.0.1:7080`).
//!
//! Everything it shows comes from the Admin API: the page calls `POST /api/v1/<Method>`, which
//! [`bridge`] turns into the same in-process Admin call the CLI makes over gRPC, with the
//! caller's token, so roles, validation and errors are the CLI's. The page itself is three
//! files under `control-plane/web/`, embedded in the binary ([`assets`]): no build step, no
//! network at run time. With authentication on, the page asks for a token once and [`session`]
//! keeps it in an HttpOnly, SameSite=Strict cookie, never in the page or a URL.
//!
//! # Layout
//! - [`assets`]: the embedded page.
//! - [`bridge`]: JSON to Admin calls and back; which methods the page may call.
//! - [`session`]: the session cookie and where a request's token comes from.

pub mod assets;
pub mod bridge;
pub mod session;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::admin::AdminService;

/// The largest request body the bridge reads (Admin requests the page makes are small).
const MAX_BODY: usize = 64 * 1024;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The header every API call must carry: a cross-site form cannot set it, and a cross-site
/// script that does needs a CORS preflight this server never grants.
pub const REQUEST_HEADER: &str = "x-portico-request";

/// What the dashboard's requests are answered with.
#[derive(Clone)]
pub struct Web {
    admin: Arc<AdminService>,
    /// Served over TLS: cookies are marked Secure.
    secure: bool,
}

/// Serves the dashboard on `listener` until `cancel`, over TLS when `tls` is given.
pub async fn run(
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    admin: Arc<AdminService>,
    cancel: CancellationToken,
) {
    let web = Web {
        admin,
        secure: tls.is_some(),
    };
    let acceptor = tls.map(|c| TlsAcceptor::from(Arc::new(c)));
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a dashboard connection failed");
                    continue;
                }
            },
        };
        let (web, acceptor, cancel) = (web.clone(), acceptor.clone(), cancel.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let web = web.clone();
                async move { Ok::<_, Infallible>(web.answer(req).await) }
            });
            match acceptor {
                None => serve(stream, service, &cancel).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => serve(stream, service, &cancel).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "dashboard TLS handshake failed"),
                        Err(_) => tracing::debug!("dashboard TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Serves HTTP/1.1 on one connection until it ends or `cancel`.
async fn serve<IO, S>(io: IO, service: S, cancel: &CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Full<Bytes>>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
{
    let conn = http1::Builder::new().serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = cancel.cancelled() => {}
        served = conn => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "dashboard connection ended");
            }
        }
    }
}

impl Web {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        if let Some(asset) = assets::get(&path) {
            return match method {
                Method::GET | Method::HEAD => asset.response(),
                _ => error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "METHOD_NOT_ALLOWED",
                    "use GET",
                ),
            };
        }
        if !path.starts_with("/api/") {
            return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such page");
        }
        if req.headers().get(REQUEST_HEADER).is_none() {
            return error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "API calls carry the header X-Portico-Request: 1",
            );
        }
        let token = session::token(req.headers());
        let body = match read_body(req).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        match (method, path.as_str()) {
            (Method::POST, "/api/session") => session::open(&self.admin, &body, self.secure).await,
            (Method::DELETE, "/api/session") => session::close(self.secure),
            (Method::POST, p) => match p.strip_prefix("/api/v1/") {
                Some(name) => bridge::call(&self.admin, name, &body, token).await,
                None => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such call"),
            },
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "use POST",
            ),
        }
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "INVALID_ARGUMENT",
            "the request body is over 64 KiB",
        )),
    }
}

/// A JSON answer.
pub fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// An error answer: `{"code": CODE, "message": MESSAGE}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "code": code, "message": message });
    json(status, body.to_string().into_bytes())
}
