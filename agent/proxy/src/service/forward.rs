//! Forwarding a request upstream, in phases: pick the endpoint, prepare the upstream request
//! (path rewrite, Host, hop-by-hop headers, X-Forwarded-*, the route's header rules), send it
//! within the route timeout, and hand an upgraded connection over to a byte pipe.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::redirect::rewrite_prefix;
use crate::body::{self, BodyStats, LimitedBody, ProxyBody};
use crate::context::ConnCtx;
use crate::error::ProxyError;
use crate::headers;
use crate::metrics as m;
use crate::request_log::RequestLog;
use crate::response::ResponseBody;
use crate::runtime::ListenerRuntime;
use crate::runtime::router::Route;
use crate::upstream::{SendError, Upstream};

/// Where a request is forwarded.
pub(super) struct Target<'a> {
    pub upstream: &'a Upstream,
    pub route: &'a Route,
    /// The normalised path.
    pub path: &'a str,
    /// The Host header's value or the URI's authority, if the request had either.
    pub authority: Option<&'a HeaderValue>,
}

/// Forwards `req` to `target` and returns the upstream's response.
pub(super) async fn forward(
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
    upstream_head(ctx, &target, &mut parts, upgrade)?;
    let body = request_body(listener, incoming, log);
    let request = Request::from_parts(parts, body);
    let mut response = send(&target, endpoint, request, log).await?;
    let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if let Some(client) = client_upgrade.filter(|_| upgraded) {
        splice(ctx, client, hyper::upgrade::on(&mut response));
    }
    headers::remove_hop_by_hop(response.headers_mut(), upgraded && upgrade);
    Ok(response.map(ResponseBody::Upstream))
}

/// The request head as the upstream receives it: the origin-form target (rewritten when the
/// route says so), the upstream's HTTP version, Host, no hop-by-hop headers, X-Forwarded-*,
/// and the route's header rules last.
fn upstream_head(
    ctx: &ConnCtx,
    target: &Target<'_>,
    parts: &mut Parts,
    upgrade: bool,
) -> Result<(), ProxyError> {
    let route = target.route;
    let rewritten = match (&route.prefix_rewrite, route.matched_prefix()) {
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
    parts.version = target.upstream.version();
    let host = target.authority.filter(|v| !v.is_empty());
    if !parts.headers.contains_key(header::HOST)
        && let Some(host) = host
    {
        parts.headers.insert(header::HOST, host.clone());
    }
    headers::remove_hop_by_hop(&mut parts.headers, upgrade);
    headers::set_forwarded(&mut parts.headers, &ctx.client, ctx.tls, host);
    route.request_headers.apply(&mut parts.headers);
    Ok(())
}

/// The body sent upstream: streamed, counted, and cut off past the listener's limit.
fn request_body(listener: &ListenerRuntime, incoming: Incoming, log: &mut RequestLog) -> ProxyBody {
    if incoming.is_end_stream() {
        return body::empty();
    }
    let stats = Arc::new(BodyStats::default());
    log.body_in = Some(stats.clone());
    let limit = listener.conn.limits.max_request_body_bytes;
    LimitedBody::new(incoming, limit, stats).boxed()
}

/// Sends `request` to `endpoint` within the route timeout and classifies a failure.
async fn send(
    target: &Target<'_>,
    endpoint: usize,
    request: Request<ProxyBody>,
    log: &RequestLog,
) -> Result<Response<crate::upstream::PooledBody>, ProxyError> {
    let upstream = target.upstream;
    let sent = tokio::time::timeout(target.route.timeout, upstream.send(endpoint, request)).await;
    match sent {
        Err(_) => Err(ProxyError::UpstreamTimeout),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(_)) if log.body_too_large() => Err(ProxyError::BodyTooLarge),
        Ok(Err(SendError::Overloaded)) => Err(ProxyError::UpstreamOverloaded),
        Ok(Err(e)) if e.is_connect() => {
            upstream.count_connect_error();
            Err(ProxyError::UpstreamConnect(e))
        }
        Ok(Err(e)) => Err(ProxyError::UpstreamRequest(e)),
    }
}

/// Pipes the bytes of an upgraded connection (WebSocket...) between client and upstream
/// until either side closes or the shutdown grace period ends.
fn splice(ctx: &ConnCtx, client: OnUpgrade, server: OnUpgrade) {
    ctx.track.mark_upgraded();
    let slot = ctx.slot.clone();
    let kill = ctx.shared.kill.clone();
    ctx.shared.tracker.spawn(async move {
        // The upgraded stream keeps the connection's place under the listener's limit.
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
