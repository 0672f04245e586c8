//! The policy phase: between routing and acting, a request runs the policies of its listener
//! and its route ([`crate::policy`]), in the fixed order of their stages, the listener's first
//! within a stage; its response then gets the response-side work (header policies,
//! compression, CORS and rate-limit headers). Routes without policies never build a [`Gate`].

use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;

use crate::body::RequestBody;
use crate::budgets::Budgets;
use crate::policy::compression::Encoder;
use crate::policy::fleet::Place;
use crate::policy::rate_limit::{RateHeaders, Subject};
use crate::policy::{Chain, Consumer, Policy, Rejection};
use crate::response::ResponseBody;
use crate::runtime::ListenerRuntime;
use crate::runtime::router::Route;

/// What the policies of one request decided, kept for its response.
pub(super) struct Gate<'r> {
    listener: Option<&'r Chain>,
    route: Option<&'r Chain>,
    /// Identifies the route's bucket for limits without a key.
    route_id: usize,
    /// Names the route's budget for fleet budgets without a key.
    place: Place<'r>,
    /// The proxy's fleet budgets.
    budgets: &'r Budgets,
    /// The client's address: the peer, or what an `ip_filter` found behind trusted proxies.
    client: IpAddr,
    /// The consumer an authentication policy identified.
    pub consumer: Option<Arc<Consumer>>,
    /// The request's Origin, kept when a CORS policy runs.
    origin: Option<HeaderValue>,
    /// The request's Accept-Encoding, kept when a compression policy runs.
    accept: Option<HeaderValue>,
    /// The tightest rate limit's headers.
    rate: Option<RateHeaders>,
    /// The smallest body limit of a request-validation policy.
    pub body_limit: Option<u64>,
    method: Method,
}

/// The policies of two chains in stage order, the first chain's first within a stage.
fn merged<'a>(a: Option<&'a Chain>, b: Option<&'a Chain>) -> impl Iterator<Item = &'a Arc<Policy>> {
    let (mut a, mut b) = (
        a.map_or(&[][..], Chain::policies),
        b.map_or(&[][..], Chain::policies),
    );
    std::iter::from_fn(move || {
        let take_a = match (a.first(), b.first()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(x), Some(y)) => x.stage() <= y.stage(),
        };
        let side = if take_a { &mut a } else { &mut b };
        let (first, rest) = side.split_first()?;
        *side = rest;
        Some(first)
    })
}

impl<'r> Gate<'r> {
    /// The gate of a request to `route` on `listener`; `None` when neither has policies.
    pub fn new(
        listener: &'r ListenerRuntime,
        route: &'r Route,
        peer: IpAddr,
        budgets: &'r Budgets,
    ) -> Option<Self> {
        if listener.policies.is_none() && route.policies.is_none() {
            return None;
        }
        Some(Gate {
            listener: listener.policies.as_deref(),
            route: route.policies.as_deref(),
            route_id: std::ptr::from_ref(route) as usize,
            place: Place {
                listener: &listener.conn.name,
                route: &route.name,
            },
            budgets,
            client: peer.to_canonical(),
            consumer: None,
            origin: None,
            accept: None,
            rate: None,
            body_limit: None,
            method: Method::GET,
        })
    }

    fn policies(&self) -> impl Iterator<Item = &'r Arc<Policy>> + use<'r> {
        merged(self.listener, self.route)
    }

    /// Runs the request side: `Ok(None)` lets the request go on, `Ok(Some(answer))` is the
    /// agent's answer (a CORS preflight), `Err` a refusal.
    pub async fn request(
        &mut self,
        req: &mut Request<RequestBody>,
    ) -> Result<Option<Response<ResponseBody>>, Rejection> {
        self.method = req.method().clone();
        let peer = self.client;
        for policy in self.policies() {
            match &**policy {
                Policy::IpFilter(f) => {
                    self.client = f.client(peer, req.headers());
                    f.check(self.client)?;
                }
                Policy::Cors(c) => {
                    if let Some(answer) = c.preflight(req) {
                        return answer.map(|r| Some(r.map(ResponseBody::Local)));
                    }
                    if self.origin.is_none() {
                        self.origin = req.headers().get(header::ORIGIN).cloned();
                    }
                }
                Policy::ApiKey(a) => {
                    req.headers_mut().remove(&a.consumer_header);
                    let consumer = a.check(req)?;
                    identify(req, &a.consumer_header, &consumer);
                    self.consumer = Some(consumer);
                }
                Policy::Jwt(j) => {
                    req.headers_mut().remove(&j.consumer_header);
                    if let Some(consumer) = j.check(req.headers_mut())? {
                        identify(req, &j.consumer_header, &consumer);
                        self.consumer = Some(consumer);
                    }
                }
                Policy::Validation(v) => {
                    if let Some(max) = v.max_body_bytes {
                        self.body_limit = Some(self.body_limit.map_or(max, |l| l.min(max)));
                    }
                    if let Some(max_json) = v.check_head(req)? {
                        let body = std::mem::replace(req.body_mut(), RequestBody::Buffered(None));
                        let bytes = read_bounded(body, max_json).await?;
                        v.check_json(&bytes)?;
                        *req.body_mut() = RequestBody::Buffered(Some(bytes));
                    }
                }
                Policy::RateLimit(r) => {
                    let subject = Subject {
                        route: self.route_id,
                        consumer: self.consumer.as_deref(),
                        client: self.client,
                        headers: req.headers(),
                    };
                    let headers = r.check(&subject)?;
                    self.tighten(headers);
                }
                Policy::Fleet(f) => {
                    let consumer = self.consumer.as_deref();
                    if let Some(headers) = f.check(self.budgets, consumer, &self.place).await? {
                        self.tighten(headers);
                    }
                }
                Policy::Headers(h) => h.request.apply(req.headers_mut()),
                Policy::Compression(_) => {
                    if self.accept.is_none() {
                        self.accept = req.headers().get(header::ACCEPT_ENCODING).cloned();
                    }
                }
            }
        }
        Ok(None)
    }

    /// Keeps `headers` if they are the tightest limit's so far.
    fn tighten(&mut self, headers: RateHeaders) {
        if self
            .rate
            .as_ref()
            .is_none_or(|h| headers.remaining < h.remaining)
        {
            self.rate = Some(headers);
        }
    }

    /// Runs the response side on an answer from the route's action.
    pub fn respond(&self, response: Response<ResponseBody>) -> Response<ResponseBody> {
        let (mut parts, mut body) = response.into_parts();
        for policy in self.policies() {
            if let Policy::Headers(h) = &**policy {
                h.respond(&mut parts.headers);
            }
        }
        let mut compressed = false;
        for policy in self.policies() {
            if let Policy::Compression(c) = &**policy
                && !compressed
            {
                let algorithm = self.accept.as_ref().and_then(|a| c.negotiate(a));
                let length = body.size_hint().exact();
                let head = (&self.method, parts.status);
                if let Some(a) = c.prepare(head, &mut parts.headers, length, algorithm) {
                    body = ResponseBody::Compressed(Box::new(Encoder::new(body, a)));
                    compressed = true;
                }
            }
        }
        let mut response = Response::from_parts(parts, body);
        self.decorate(&mut response);
        response
    }

    /// The CORS and rate-limit headers, which refusals carry too.
    pub fn decorate(&self, response: &mut Response<ResponseBody>) {
        for policy in self.policies() {
            if let Policy::Cors(c) = &**policy {
                let allowed = self.origin.as_ref().and_then(|o| c.allowed(o));
                c.decorate(allowed.as_ref(), response.headers_mut());
            }
        }
        if let Some(rate) = &self.rate
            && response.status() != StatusCode::TOO_MANY_REQUESTS
        {
            rate.apply(response.headers_mut());
        }
    }
}

/// Sends the consumer's name upstream in `header`.
fn identify(req: &mut Request<RequestBody>, header: &header::HeaderName, consumer: &Consumer) {
    if let Ok(v) = HeaderValue::from_str(&consumer.name) {
        req.headers_mut().insert(header.clone(), v);
    }
}

/// The whole body, refused with 413 past `max` bytes.
async fn read_bounded(mut body: RequestBody, max: u64) -> Result<Bytes, Rejection> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|_| Rejection::new(StatusCode::BAD_REQUEST, "body_unreadable"))?;
        if let Ok(data) = frame.into_data() {
            if (out.len() + data.len()) as u64 > max {
                return Err(Rejection::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                ));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}
