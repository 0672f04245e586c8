//! Request handling, in named phases: [`handle`] checks the request head, routes it, runs the
//! gateway policies of the listener and the route ([`policy`]), and runs the route's action (a
//! fixed answer, a redirect, or [`forward`] upstream), then applies the route's response header
//! rules and the policies' response side. Every answer the agent gives itself comes from a
//! [`ProxyError`] or an action; the request's record becomes its log line and metrics when the
//! response body ends. A gRPC call (by its content type) is answered in gRPC when the agent
//! answers it itself, and a gRPC-Web call to a route that opts in is translated to gRPC just
//! before its action, after the policies.
//!
//! # Layout
//! - [`forward`]: the upstream phases: pick an endpoint, prepare the upstream request, send it,
//!   hand over upgraded connections.
//! - [`redirect`]: redirect answers and prefix rewrites.
//! - [`policy`]: the policy phase, and the per-request state it keeps for the response.

mod forward;
mod policy;
mod redirect;

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::Incoming;

use crate::body::{self, RequestBody};
use crate::conn::HEAD_CL_AND_TE;
use crate::context::ConnCtx;
use crate::error::ProxyError;
use crate::grpc::{self, Code};
use crate::headers;
use crate::host;
use crate::metrics as m;
use crate::path;
use crate::request_log::RequestLog;
use crate::response::{LoggedBody, ResponseBody};
use crate::runtime::action::Action;
use crate::runtime::router::{RequestView, Route, strip_port};
use crate::runtime::{ListenerRuntime, Runtime};
use forward::{GrpcCall, Target};
use policy::Gate;

/// Handles one request on the runtime current when it arrived.
pub(crate) async fn handle(ctx: Arc<ConnCtx>, mut req: Request<Incoming>) -> Response<LoggedBody> {
    let head_flags = ctx.track.begin_request();
    let runtime = ctx.shared.current_runtime();
    let request_id = headers::request_id(req.headers_mut());
    let mut log = RequestLog::new(
        request_id.clone(),
        ctx.clone(),
        req.method().clone(),
        req.uri().path(),
        runtime.clone(),
    );
    log.grpc = grpc::Protocol::of(req.headers());
    let mut response = match serve(&ctx, &runtime, req, head_flags, &mut log).await {
        Ok(response) => response,
        Err(e) => {
            log.reason = Some(e.reason());
            let id = request_id.to_str().unwrap_or_default();
            tracing::debug!(request_id = id, error = %portico_api::error::Chain(&e), "answered by the proxy");
            e.response(id, log.grpc).map(ResponseBody::Local)
        }
    };
    if log.grpc.is_some()
        && let Some(code) = Code::of(response.headers())
    {
        // A trailers-only answer: the status is in the head.
        log.grpc_status = Some(code);
    }
    response
        .headers_mut()
        .insert(headers::REQUEST_ID.clone(), request_id);
    log.status = response.status().as_u16();
    response.map(|b| LoggedBody::new(b, log))
}

/// The phases of one request: check the head, route, act, apply the response header rules.
async fn serve(
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
    // The path routing uses borrows from this copy of the URI (shared bytes), while the
    // request itself moves on to the action.
    let uri = req.uri().clone();
    let head = Head::check(listener, &req, &uri, head_flags)?;
    if let Some(redirect) = &listener.redirect_to_https {
        // An HTTP→HTTPS redirect listener: no route, no policy, the same URL over HTTPS.
        log.metrics = Some(m::request_handles(&ctx.listener, None, None));
        if head.authority.is_none() {
            return Err(ProxyError::BadRequest("missing_host"));
        }
        let response =
            redirect::response(redirect, false, head.authority(), &head.path, uri.query());
        return Ok(response.map(ResponseBody::Local));
    }
    let route = head.route(listener, &req)?;
    if !matches!(route.action, Action::Forward(_)) {
        log.metrics = Some(m::request_handles(&ctx.listener, Some(&route.name), None));
    }
    let mut req = req.map(RequestBody::Incoming);
    let Some(mut gate) = Gate::new(listener, route, ctx.peer, &ctx.shared.budgets) else {
        let req = grpc_call(route, req, log);
        let mut response = act(ctx, listener, route, &head, req, None, log).await?;
        route.response_headers.apply(response.headers_mut());
        return Ok(response);
    };
    // Phase three: the policies.
    let decided = gate.request(&mut req).await;
    log.consumer = gate.consumer.as_ref().map(|c| c.name.clone());
    match decided {
        Ok(None) => {}
        Ok(Some(mut answer)) => {
            answered_on(ctx, route, log);
            route.response_headers.apply(answer.headers_mut());
            return Ok(answer);
        }
        Err(rejection) => return Ok(reject(ctx, route, &gate, rejection, log)),
    }
    let req = grpc_call(route, req, log);
    let acted = act(ctx, listener, route, &head, req, gate.body_limit, log).await;
    let mut response = match acted {
        Ok(response) => response,
        // The body went past a request-validation limit while it streamed.
        Err(ProxyError::BodyTooLarge)
            if gate
                .body_limit
                .is_some_and(|l| l < listener.conn.limits.max_request_body_bytes) =>
        {
            let too_large = crate::policy::Rejection::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
            );
            return Ok(reject(ctx, route, &gate, too_large, log));
        }
        Err(e) => return Err(e),
    };
    route.response_headers.apply(response.headers_mut());
    Ok(gate.respond(response))
}

/// The answer to a request a policy refused, counted and logged with its reason.
fn reject(
    ctx: &ConnCtx,
    route: &Route,
    gate: &Gate<'_>,
    rejection: crate::policy::Rejection,
    log: &mut RequestLog,
) -> Response<ResponseBody> {
    answered_on(ctx, route, log);
    log.reason = Some(rejection.reason);
    log.rejection = Some(rejection.reason);
    m::rejection(&ctx.listener, &route.name, rejection.reason);
    let id = log.request_id.to_str().unwrap_or_default();
    let mut response = ProxyError::Rejected(Box::new(rejection))
        .response(id, log.grpc)
        .map(ResponseBody::Local);
    gate.decorate(&mut response);
    response
}

/// Records that the agent answered a request to `route` itself (a policy refused it or
/// answered a preflight): its log line, metrics and usage name the route, with no cluster.
fn answered_on(ctx: &ConnCtx, route: &Route, log: &mut RequestLog) {
    if log.metrics.is_none() {
        log.metrics = Some(m::request_handles(&ctx.listener, Some(&route.name), None));
    }
}

/// A gRPC-Web call to a route that opts in, turned into gRPC: head and (for the text form)
/// body. Other requests pass as they are.
fn grpc_call(
    route: &Route,
    mut req: Request<RequestBody>,
    log: &RequestLog,
) -> Request<RequestBody> {
    let Some(protocol) = log.grpc.filter(|p| p.is_web() && route.grpc_web) else {
        return req;
    };
    grpc::web::request_head(req.headers_mut(), protocol);
    if protocol != grpc::Protocol::WebText {
        return req;
    }
    req.map(|body| {
        use http_body_util::BodyExt;
        RequestBody::Translated(grpc::web::TextDecode::new(body).boxed())
    })
}

/// A request head that passed the checks every request must pass before routing, with the
/// values routing and forwarding use.
struct Head<'r> {
    /// The request's host (`host[:port]`, normalised): routed by, and forwarded as Host.
    authority: Option<HeaderValue>,
    /// The normalised path.
    path: Cow<'r, str>,
}

impl<'r> Head<'r> {
    /// Phase one: request hygiene. Framing conflicts, a missing Host, a bad path and a declared
    /// body over the listener's limit are answered before anything else runs.
    fn check(
        listener: &ListenerRuntime,
        req: &Request<Incoming>,
        uri: &'r Uri,
        head_flags: u8,
    ) -> Result<Self, ProxyError> {
        if head_flags & HEAD_CL_AND_TE != 0 {
            return Err(ProxyError::BadRequest(
                "content_length_and_transfer_encoding",
            ));
        }
        if req.headers().len() > headers::MAX_REQUEST_HEADERS {
            return Err(ProxyError::TooManyHeaders);
        }
        let authority = host::normalise(
            req.version(),
            uri.authority(),
            req.headers().get_all(header::HOST),
        )
        .map_err(ProxyError::BadRequest)?;
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
        Ok(Head { authority, path })
    }

    /// The authority as text; empty when the request named none.
    fn authority(&self) -> &str {
        self.authority
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Phase two: the route, by host, path, method, headers and query.
    fn route<'l>(
        &self,
        listener: &'l ListenerRuntime,
        req: &Request<Incoming>,
    ) -> Result<&'l Route, ProxyError> {
        let host = lowercase(strip_port(self.authority()));
        let view = RequestView {
            host: &host,
            path: &self.path,
            query: req.uri().query(),
            method: req.method(),
            headers: req.headers(),
        };
        let (_, route) = listener.routes.find(&view).ok_or(ProxyError::NoRoute)?;
        Ok(route)
    }
}

/// Phase three: the route's action.
async fn act(
    ctx: &ConnCtx,
    listener: &ListenerRuntime,
    route: &Route,
    head: &Head<'_>,
    req: Request<RequestBody>,
    body_limit: Option<u64>,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ProxyError> {
    Ok(match &route.action {
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
        Action::Redirect(r) => {
            let query = req.uri().query();
            redirect::response(r, ctx.tls, head.authority(), &head.path, query)
                .map(ResponseBody::Local)
        }
        Action::Forward(targets) => {
            let grpc = log.grpc.map(|protocol| GrpcCall {
                protocol,
                web: protocol.is_web() && route.grpc_web,
                timeout: grpc::timeout::of(req.headers()),
            });
            let target = Target {
                upstream: targets.pick(),
                route,
                path: &head.path,
                authority: head.authority.as_ref(),
                grpc,
            };
            forward::forward(ctx, listener, target, req, body_limit, log).await?
        }
    })
}

/// `s` in lower case, copied only when it is not already.
fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}
