//! Forwarding a request upstream, in phases: prepare the upstream head (path rewrite, Host,
//! hop-by-hop headers, X-Forwarded-*, the route's header rules), then try: pick an endpoint,
//! send within the try's time, and retry what the route's policy retries; finally hand an
//! upgraded connection over to a byte pipe. gRPC calls keep `te: trailers`, are bounded by
//! their `grpc-timeout` too, and have their answers wrapped in a [`CallBody`] (deadline,
//! status, gRPC-Web).

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::redirect::rewrite_prefix;
use crate::body::{self, BodyStats, LimitedBody, ProxyBody, RequestBody};
use crate::context::ConnCtx;
use crate::error::ProxyError;
use crate::grpc::{self, CallBody, Code, Protocol};
use crate::headers;
use crate::metrics as m;
use crate::replay::Replay;
use crate::request_log::RequestLog;
use crate::response::ResponseBody;
use crate::runtime::ListenerRuntime;
use crate::runtime::retry::{Failure, RetryPolicy};
use crate::runtime::router::Route;
use crate::upstream::{Key, Outcome, Overflow, Pick, PooledBody, SendError, Upstream};

/// Where a request is forwarded.
pub(super) struct Target<'a> {
    pub upstream: &'a Upstream,
    pub route: &'a Route,
    /// The normalised path.
    pub path: &'a str,
    /// The Host header's value or the URI's authority, if the request had either.
    pub authority: Option<&'a HeaderValue>,
    /// The gRPC call, when the request is one.
    pub grpc: Option<GrpcCall>,
}

/// What forwarding needs to know of a gRPC call.
#[derive(Clone, Copy, Debug)]
pub(super) struct GrpcCall {
    /// How the client speaks gRPC.
    pub protocol: Protocol,
    /// Whether the call is translated from gRPC-Web (the route opted in).
    pub web: bool,
    /// The client's `grpc-timeout`.
    pub timeout: Option<Duration>,
}

impl Target<'_> {
    /// The time allowed until the response head: the route timeout, or a gRPC call's
    /// `grpc-timeout` when that is shorter.
    fn timeout(&self) -> Duration {
        match self.grpc.and_then(|c| c.timeout) {
            Some(t) => t.min(self.route.timeout),
            None => self.route.timeout,
        }
    }
}

/// Forwards `req` to `target` and returns the upstream's response. The request body is cut
/// off past `body_limit` (a policy's) when that is below the listener's limit.
pub(super) async fn forward(
    ctx: &ConnCtx,
    listener: &ListenerRuntime,
    target: Target<'_>,
    mut req: Request<RequestBody>,
    body_limit: Option<u64>,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ProxyError> {
    let upstream = target.upstream;
    let upgrade = req.version() == Version::HTTP_11
        && upstream.version() == Version::HTTP_11
        && headers::wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    // The version and keep-alive of the client's connection are the client's, whatever the
    // upstream speaks (an HTTP/1.0 upstream must not turn the client's answers into 1.0).
    let client_version = req.version();
    let started = Instant::now();
    let (mut parts, incoming) = req.into_parts();
    log.metrics = Some(m::request_handles(
        &ctx.listener,
        Some(&target.route.name),
        Some(upstream.name()),
    ));
    let key = upstream.key(&parts, ctx.peer);
    upstream_head(ctx, &target, &mut parts, upgrade)?;
    let retry = target
        .route
        .retry
        .as_ref()
        .filter(|r| !upgrade && r.allows(&parts.method));
    let body = request_body(listener, incoming, body_limit, target.grpc.is_some(), log);
    let (mut response, cookie) = match retry {
        None => {
            let pick = pick(upstream, &key, None, false)?;
            log.attempts = 1;
            let request = Request::from_parts(parts, body);
            let deadline = Instant::now() + target.timeout();
            let sent = attempt(&target, &pick, request, deadline, log).await;
            record(upstream, &pick, &sent, log);
            let response = settle(upstream, sent, log)?;
            log.in_flight = Some(pick.in_flight);
            (response, pick.set_cookie)
        }
        Some(policy) => retrying(&target, policy, &key, parts, body, log).await?,
    };
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if upgraded && !upgrade {
        // A switch the client did not ask for: what follows is not HTTP it can read.
        return Err(ProxyError::UpstreamProtocol("upstream_unexpected_upgrade"));
    }
    *response.version_mut() = client_version;
    if let Some(client) = client_upgrade.filter(|_| upgraded) {
        splice(ctx, client, hyper::upgrade::on(&mut response));
    }
    headers::remove_hop_by_hop(response.headers_mut(), upgraded && upgrade);
    match target.grpc {
        Some(call) => Ok(grpc_answer(call, started, response)),
        None => Ok(response.map(ResponseBody::Upstream)),
    }
}

/// An upstream's answer to a gRPC call, on its way to the client: bounded by the call's
/// deadline and, for a gRPC-Web call the upstream answered in gRPC, translated back.
fn grpc_answer(
    call: GrpcCall,
    started: Instant,
    mut response: Response<PooledBody>,
) -> Response<ResponseBody> {
    let upstream_grpc = Protocol::of(response.headers()) == Some(Protocol::Grpc);
    let protocol = if call.web && upstream_grpc {
        let headers = response.headers_mut();
        if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
            let web = grpc::web::response_content_type(content_type, call.protocol);
            headers.insert(header::CONTENT_TYPE, web);
        }
        // The trailers join the body, and text is longer than the bytes it encodes.
        headers.remove(header::CONTENT_LENGTH);
        call.protocol
    } else {
        Protocol::Grpc
    };
    let deadline = call.timeout.map(|t| started + t);
    response.map(|body| ResponseBody::Grpc(Box::new(CallBody::new(body, deadline, protocol))))
}

/// The tries of a request whose route retries: each on an endpoint other than the one before
/// when another is available, the body replayed, a backoff between, all within the route
/// timeout. The last try's answer is the request's, and so is the answer of a try whose retry
/// a cluster limit or the retry budget refused.
async fn retrying(
    target: &Target<'_>,
    policy: &RetryPolicy,
    key: &Key,
    parts: Parts,
    body: ProxyBody,
    log: &mut RequestLog,
) -> Result<(Response<PooledBody>, Option<HeaderValue>), ProxyError> {
    let upstream = target.upstream;
    let deadline = Instant::now() + target.timeout();
    let replay = Replay::new(body, policy.buffer_bytes);
    let mut current = pick(upstream, key, None, false)?;
    let mut tries = 0;
    loop {
        tries += 1;
        log.attempts = tries;
        let request = Request::from_parts(parts.clone(), replay.attempt());
        let try_deadline = policy
            .per_try_timeout
            .map_or(deadline, |t| (Instant::now() + t).min(deadline));
        let sent = attempt(target, &current, request, try_deadline, log).await;
        record(upstream, &current, &sent, log);
        let failure = match &sent {
            Ok(r) => Failure::Status(r.status().as_u16()),
            Err(Tried::TimedOut) => Failure::Timeout,
            Err(Tried::Failed(e)) if e.is_connect() => Failure::Connect,
            Err(Tried::Failed(e)) if e.is_refused_stream() => Failure::RefusedStream,
            Err(Tried::Failed(_)) => Failure::Reset,
        };
        // A gRPC status in the head is a trailers-only answer: the call's outcome.
        let grpc = match &sent {
            Ok(r) if target.grpc.is_some() => Code::of(r.headers()),
            _ => None,
        };
        let wait = policy.backoff(tries);
        let again = tries <= policy.attempts
            && (policy.retries(failure) || grpc.is_some_and(|c| policy.retries(Failure::Grpc(c))))
            && replay.replayable()
            && !client_fault(&sent, log)
            && Instant::now() + wait < deadline;
        let next = match again {
            true => match upstream.pick(key, Some(current.index), true) {
                Ok(next) => next,
                Err(overflow) => {
                    m::overflow(upstream.name(), overflow.limit());
                    None
                }
            },
            false => None,
        };
        let Some(next) = next else {
            let response = settle(upstream, sent, log)?;
            log.in_flight = Some(current.in_flight);
            return Ok((response, current.set_cookie));
        };
        drop(sent);
        current = next;
        m::upstream_retry(upstream.name());
        tokio::time::sleep(wait).await;
    }
}

/// How one try ended without a response head.
enum Tried {
    /// The try's time ran out.
    TimedOut,
    /// Sending failed.
    Failed(SendError),
}

/// An endpoint for the next try, counted in flight.
fn pick(
    upstream: &Upstream,
    key: &Key,
    avoid: Option<usize>,
    retry: bool,
) -> Result<Pick, ProxyError> {
    match upstream.pick(key, avoid, retry) {
        Ok(Some(pick)) => Ok(pick),
        Ok(None) => Err(ProxyError::NoEndpoint(upstream.name().to_string())),
        Err(overflow) => Err(overflowed(upstream, overflow)),
    }
}

/// Counts a request refused at a cluster limit.
fn overflowed(upstream: &Upstream, overflow: Overflow) -> ProxyError {
    m::overflow(upstream.name(), overflow.limit());
    ProxyError::Overflow(overflow.limit())
}

/// Sends one try to the picked endpoint, until `deadline`.
async fn attempt(
    target: &Target<'_>,
    pick: &Pick,
    request: Request<ProxyBody>,
    deadline: Instant,
    log: &mut RequestLog,
) -> Result<Response<PooledBody>, Tried> {
    if log.enabled() {
        log.upstream = target
            .upstream
            .endpoints()
            .get(pick.index)
            .map(|e| e.authority.clone());
    }
    let send = target.upstream.send(pick.index, request);
    match tokio::time::timeout_at(deadline, send).await {
        Err(_) => Err(Tried::TimedOut),
        Ok(Err(e)) => Err(Tried::Failed(e)),
        Ok(Ok(response)) => Ok(response),
    }
}

/// Counts how a try on the picked endpoint went, for outlier detection and reports.
fn record(
    upstream: &Upstream,
    pick: &Pick,
    sent: &Result<Response<PooledBody>, Tried>,
    log: &RequestLog,
) {
    let outcome = match sent {
        Ok(response) => Outcome::of_status(response.status().as_u16()),
        // The client's body failed the try, not the endpoint.
        Err(_) if client_fault(sent, log) => return,
        // The cluster's own queue refused it: the endpoint did nothing wrong.
        Err(Tried::Failed(SendError::Overloaded)) => return,
        Err(Tried::Failed(e)) => {
            if e.is_connect() {
                upstream.count_connect_error();
            }
            Outcome::GatewayFailure
        }
        Err(Tried::TimedOut) => Outcome::GatewayFailure,
    };
    upstream.record(pick.index, outcome);
}

/// Whether a failed try was the client's doing: its body too large or malformed, or still
/// arriving when the time ran out.
fn client_fault(sent: &Result<Response<PooledBody>, Tried>, log: &RequestLog) -> bool {
    match sent {
        Ok(_) => false,
        Err(Tried::TimedOut) => log.body_unfinished(),
        Err(Tried::Failed(_)) => log.body_too_large() || log.body_failed(),
    }
}

/// The request's answer from its last try: the response, or the error the agent answers
/// with.
fn settle(
    upstream: &Upstream,
    sent: Result<Response<PooledBody>, Tried>,
    log: &RequestLog,
) -> Result<Response<PooledBody>, ProxyError> {
    match sent {
        Ok(response) => Ok(response),
        // The client's fault, not the upstream's: still sending its body when time ran out,
        // or sending a body that could not be read.
        Err(Tried::TimedOut) if log.body_unfinished() => Err(ProxyError::BodyTimeout),
        Err(Tried::TimedOut) => Err(ProxyError::UpstreamTimeout),
        Err(Tried::Failed(_)) if log.body_too_large() => Err(ProxyError::BodyTooLarge),
        Err(Tried::Failed(_)) if log.body_failed() => Err(ProxyError::BodyMalformed),
        Err(Tried::Failed(SendError::Overloaded)) => {
            Err(overflowed(upstream, Overflow::MaxPending))
        }
        Err(Tried::Failed(e)) if e.is_connect() => Err(ProxyError::UpstreamConnect(e)),
        Err(Tried::Failed(e)) if e.is_head_too_large() => {
            Err(ProxyError::UpstreamProtocol("upstream_header_too_large"))
        }
        Err(Tried::Failed(e)) => Err(ProxyError::UpstreamRequest(e)),
    }
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
    // HTTP/2 allows one TE value, "trailers", and gRPC servers require it.
    let te_trailers = target.grpc.is_some() || grpc::accepts_trailers(&parts.headers);
    // The host routing matched is the Host the upstream sees.
    let host = target.authority;
    if let Some(host) = host {
        parts.headers.insert(header::HOST, host.clone());
    }
    headers::remove_hop_by_hop(&mut parts.headers, upgrade);
    if te_trailers && parts.version == Version::HTTP_2 {
        parts.headers.insert(header::TE, grpc::TE_TRAILERS.clone());
    }
    headers::set_forwarded(&mut parts.headers, &ctx.client, ctx.tls, host);
    route.request_headers.apply(&mut parts.headers);
    Ok(())
}

/// The body sent upstream: streamed, counted, and cut off past the listener's limit (or a
/// policy's smaller one); for a gRPC call, past a message over the limit.
fn request_body(
    listener: &ListenerRuntime,
    incoming: RequestBody,
    policy_limit: Option<u64>,
    grpc: bool,
    log: &mut RequestLog,
) -> ProxyBody {
    if incoming.is_end_stream() {
        return body::empty();
    }
    let stats = Arc::new(BodyStats::default());
    log.body_in = Some(stats.clone());
    let limit = listener.conn.limits.max_request_body_bytes;
    let limit = policy_limit.map_or(limit, |p| p.min(limit));
    let body = LimitedBody::new(incoming, limit, stats);
    if grpc {
        body.per_message().boxed()
    } else {
        body.boxed()
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
