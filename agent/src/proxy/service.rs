//! Request handling: hygiene checks, routing, then the route's action (forward, redirect or a
//! fixed answer), with header rules on the way up and down.

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::Shared;
use super::access_log::{LoggedBody, RequestLog};
use super::body::{self, BodyStats, LimitedBody, ProxyBody, ResponseBody};
use super::conn::{ConnTrack, HEAD_CL_AND_TE};
use super::error::ProxyError;
use super::headers;
use super::listener::ConnSlot;
use super::path;
use super::upstream::{SendError, Upstream};
use crate::metrics as m;
use crate::runtime::action::{Action, Redirect};
use crate::runtime::router::{RequestView, Route, strip_port};
use crate::runtime::{ListenerRuntime, Runtime};

/// What every request on one client connection shares.
pub(crate) struct ConnCtx {
    /// The proxy's shared state.
    pub shared: Arc<Shared>,
    /// The listener's bind address (its key in the runtime).
    pub addr: SocketAddr,
    /// The listener's name when the connection was accepted.
    pub listener: Arc<str>,
    /// The client's address as written into X-Forwarded-For.
    pub client: HeaderValue,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Connection state shared with the I/O wrapper.
    pub track: Arc<ConnTrack>,
    /// The connection's slot, kept by an upgraded stream that outlives the HTTP connection.
    pub slot: Arc<ConnSlot>,
}

/// The runtime as a request holds it: a handle made by the request's worker, so taking and
/// dropping one per request changes no reference count shared with the other cores.
pub(crate) type WorkerRuntime = Arc<Arc<Runtime>>;

thread_local! {
    static RUNTIME: RefCell<Option<WorkerRuntime>> = const { RefCell::new(None) };
}

/// The runtime new requests use, through this thread's handle on it.
fn current_runtime(shared: &Shared) -> WorkerRuntime {
    let current = shared.runtime.load();
    RUNTIME.with_borrow_mut(|held| match held {
        Some(handle) if Arc::ptr_eq(handle.as_ref(), &current) => handle.clone(),
        _ => {
            let handle = Arc::new(arc_swap::Guard::into_inner(current));
            *held = Some(handle.clone());
            handle
        }
    })
}

/// Handles one request on the runtime current when it arrived.
pub(crate) async fn handle(ctx: Arc<ConnCtx>, mut req: Request<Incoming>) -> Response<LoggedBody> {
    let head_flags = ctx.track.begin_request();
    let runtime = current_runtime(&ctx.shared);
    let request_id = headers::request_id(req.headers_mut());
    let mut log = RequestLog::new(
        request_id.clone(),
        ctx.clone(),
        req.method().clone(),
        req.uri().path(),
        runtime.clone(),
    );
    let mut response = match route(&ctx, &runtime, req, head_flags, &mut log).await {
        Ok(response) => response,
        Err(e) => {
            log.reason = Some(e.reason());
            let id = request_id.to_str().unwrap_or_default();
            tracing::debug!(request_id = id, error = %e, "answered by the proxy");
            e.response(id).map(ResponseBody::Local)
        }
    };
    response
        .headers_mut()
        .insert(headers::REQUEST_ID.clone(), request_id);
    log.status = response.status().as_u16();
    response.map(|b| LoggedBody::new(b, log))
}

async fn route(
    ctx: &ConnCtx,
    runtime: &Runtime,
    req: Request<Incoming>,
    head_flags: u8,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ProxyError> {
    let listener = runtime
        .listeners
        .get(&ctx.addr)
        .ok_or(ProxyError::ListenerRemoved)?;
    if head_flags & HEAD_CL_AND_TE != 0 {
        return Err(ProxyError::BadRequest(
            "content_length_and_transfer_encoding",
        ));
    }
    let host_header = req.headers().get(header::HOST);
    if req.version() == Version::HTTP_11 && host_header.is_none() {
        return Err(ProxyError::BadRequest("missing_host"));
    }
    // The Host header's value is shared, not copied; HTTP/2 and absolute-form requests name
    // the authority in the URI instead.
    let authority_value = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => host_header.cloned(),
    };
    let authority = authority_value
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let host = lowercase(strip_port(authority));
    let uri = req.uri().clone();
    let path = path::normalise(uri.path(), listener.merge_slashes)
        .map_err(|_| ProxyError::BadRequest("bad_path"))?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > listener.conn.limits.max_request_body_bytes) {
        return Err(ProxyError::BodyTooLarge);
    }
    let view = RequestView {
        host: &host,
        path: &path,
        query: req.uri().query(),
        method: req.method(),
        headers: req.headers(),
    };
    let (_, route) = listener.routes.find(&view).ok_or(ProxyError::NoRoute)?;
    if !matches!(route.action, Action::Forward(_)) {
        log.metrics = Some(m::request_handles(&ctx.listener, Some(&route.name), None));
    }
    let mut response = match &route.action {
        Action::Direct {
            status,
            body: content,
            content_type,
        } => {
            let mut r = Response::new(ResponseBody::Local(body::full(content.clone())));
            *r.status_mut() = *status;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, content_type.clone());
            r
        }
        Action::Redirect(redirect) => {
            redirect_response(redirect, ctx.tls, authority, &path, &req).map(ResponseBody::Local)
        }
        Action::Forward(targets) => {
            let target = Target {
                upstream: targets.pick(),
                route,
                path: &path,
                authority: authority_value.as_ref(),
            };
            forward(ctx, listener, target, req, log).await?
        }
    };
    route.response_headers.apply(response.headers_mut());
    Ok(response)
}

fn redirect_response(
    r: &Redirect,
    tls: bool,
    authority: &str,
    path: &str,
    req: &Request<Incoming>,
) -> Response<ProxyBody> {
    let scheme = r
        .scheme
        .as_deref()
        .unwrap_or(if tls { "https" } else { "http" });
    let request_host = strip_port(authority);
    let request_port = authority
        .strip_prefix(request_host)
        .and_then(|p| p.strip_prefix(':'));
    let host = r.host.as_deref().unwrap_or(request_host);
    let port = match (r.port, r.scheme.is_none() && r.host.is_none()) {
        (Some(p), _) => Some(p.to_string()),
        (None, true) => request_port.map(str::to_string),
        (None, false) => None,
    };
    let target = match (&r.path, req.uri().query()) {
        (Some(p), _) => p.clone(),
        (None, Some(q)) => format!("{path}?{q}"),
        (None, None) => path.to_string(),
    };
    let location = match port {
        Some(port) => format!("{scheme}://{host}:{port}{target}"),
        None => format!("{scheme}://{host}{target}"),
    };
    let mut response = Response::new(body::empty());
    *response.status_mut() = r.status;
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// `s` in lower case, copied only when it is not already.
fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// Where a request is forwarded.
struct Target<'a> {
    upstream: &'a Upstream,
    route: &'a Route,
    path: &'a str,
    /// The Host header's value or the URI's authority, if the request had either.
    authority: Option<&'a HeaderValue>,
}

fn rewrite_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    let joined = if replacement.ends_with('/') && rest.starts_with('/') {
        format!("{replacement}{}", &rest[1..])
    } else {
        format!("{replacement}{rest}")
    };
    if joined.is_empty() {
        "/".into()
    } else {
        joined
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn forward(
    ctx: &ConnCtx,
    listener: &ListenerRuntime,
    target: Target<'_>,
    mut req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ProxyError> {
    let upstream = target.upstream;
    let upgrade = req.version() == Version::HTTP_11
        && upstream.version() == Version::HTTP_11
        && headers::wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, incoming) = req.into_parts();
    log.metrics = Some(m::request_handles(
        &ctx.listener,
        Some(&target.route.name),
        Some(upstream.name()),
    ));
    let (endpoint, authority) = upstream
        .pick()
        .ok_or_else(|| ProxyError::NoEndpoint(upstream.name().to_string()))?;
    if log.enabled() {
        log.upstream = Some(authority.clone());
    }

    let rewritten = match (&target.route.prefix_rewrite, target.route.matched_prefix()) {
        (Some(replacement), Some(prefix)) => Some(rewrite_prefix(target.path, prefix, replacement)),
        _ => None,
    };
    // The request line is sent in origin form; the URI is rebuilt only when it changes.
    let unchanged =
        rewritten.is_none() && parts.uri.scheme().is_none() && parts.uri.path() == target.path;
    if !unchanged {
        let path = rewritten.as_deref().unwrap_or(target.path);
        let path_and_query = match parts.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        parts.uri = path_and_query
            .parse::<PathAndQuery>()
            .map(Uri::from)
            .map_err(|_| ProxyError::BadRequest("bad_uri"))?;
    }
    parts.version = upstream.version();
    let host = target.authority.filter(|v| !v.is_empty());
    if !parts.headers.contains_key(header::HOST)
        && let Some(host) = host
    {
        parts.headers.insert(header::HOST, host.clone());
    }
    headers::remove_hop_by_hop(&mut parts.headers, upgrade);
    headers::set_forwarded(&mut parts.headers, &ctx.client, ctx.tls, host);
    target.route.request_headers.apply(&mut parts.headers);

    let body = if incoming.is_end_stream() {
        body::empty()
    } else {
        let stats = Arc::new(BodyStats::default());
        log.body_in = Some(stats.clone());
        let limit = listener.conn.limits.max_request_body_bytes;
        LimitedBody::new(incoming, limit, stats).boxed()
    };
    let request = Request::from_parts(parts, body);
    let sent = tokio::time::timeout(target.route.timeout, upstream.send(endpoint, request)).await;
    let too_large = || {
        log.body_in
            .as_ref()
            .is_some_and(|s| s.exceeded.load(std::sync::atomic::Ordering::Relaxed))
    };
    let mut response = match sent {
        Err(_) => return Err(ProxyError::UpstreamTimeout),
        Ok(Err(_)) if too_large() => return Err(ProxyError::BodyTooLarge),
        Ok(Err(SendError::Overloaded)) => return Err(ProxyError::UpstreamOverloaded),
        Ok(Err(e)) if e.is_connect() => {
            upstream.count_connect_error();
            return Err(ProxyError::UpstreamConnect(error_chain(&e)));
        }
        Ok(Err(e)) => return Err(ProxyError::UpstreamRequest(error_chain(&e))),
        Ok(Ok(response)) => response,
    };
    let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match client_upgrade {
        Some(client) if upgraded => {
            ctx.track.mark_upgraded();
            let server = hyper::upgrade::on(&mut response);
            let slot = ctx.slot.clone();
            let kill = ctx.shared.kill.clone();
            ctx.shared.tracker.spawn(async move {
                let _slot = slot;
                let (Ok(client), Ok(server)) = tokio::join!(client, server) else {
                    return;
                };
                let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = kill.cancelled() => {}
                }
            });
        }
        _ => {}
    }
    headers::remove_hop_by_hop(response.headers_mut(), upgraded && upgrade);
    Ok(response.map(ResponseBody::Upstream))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrite_table() {
        let cases = [
            ("/api/v1/x", "/api", "/svc", "/svc/v1/x"),
            ("/api", "/api", "/svc", "/svc"),
            ("/api/x", "/api", "/", "/x"),
            ("/api/x", "/api/", "/v2/", "/v2/x"),
            ("/api", "/api", "", "/"),
        ];
        for (path, prefix, replacement, expected) in cases {
            assert_eq!(
                rewrite_prefix(path, prefix, replacement),
                expected,
                "{path}"
            );
        }
    }
}
