//! Data-path errors, classified in one place: which side failed, and the status it maps to.
//!
//! Everything the agent answers itself (404, 413, 502, 504...) is a [`ProxyError`]; its
//! [`ProxyError::response`] is the only place such answers are built.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, ProxyBody};
use crate::grpc::{self, Code};
use crate::policy::Rejection;
use crate::upstream::SendError;

/// Which party a failure is attributed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client sent something the agent does not accept.
    Downstream,
    /// The upstream could not be reached or did not answer in time.
    Upstream,
    /// The agent's own state (config, listener) could not serve the request.
    Internal,
}

/// Why the agent answered a request itself instead of forwarding it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request is malformed (bad path, missing Host...).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// No virtual host or route matches.
    #[error("no route")]
    NoRoute,
    /// The body is larger than the listener allows.
    #[error("request body too large")]
    BodyTooLarge,
    /// The request carries more header fields than an agent accepts.
    #[error("more than {} request headers", crate::headers::MAX_REQUEST_HEADERS)]
    TooManyHeaders,
    /// The client's request body was malformed (bad chunked framing) or cut off.
    #[error("malformed request body")]
    BodyMalformed,
    /// The client sent its request body too slowly: the route timeout ran out while it was
    /// still arriving.
    #[error("request body timed out")]
    BodyTimeout,
    /// The listener was removed while the connection stayed open.
    #[error("listener removed")]
    ListenerRemoved,
    /// The cluster has no endpoint to send to.
    #[error("cluster {0} has no endpoints")]
    NoEndpoint(String),
    /// Connecting to the upstream failed.
    #[error("upstream connect")]
    UpstreamConnect(#[source] SendError),
    /// A cluster limit was reached (circuit breakers, the retry budget).
    #[error("cluster limit {0} reached")]
    Overflow(&'static str),
    /// The upstream's answer broke HTTP: a response head too large, or a protocol switch the
    /// client did not ask for.
    #[error("upstream protocol: {0}")]
    UpstreamProtocol(&'static str),
    /// The upstream did not answer within the route timeout.
    #[error("upstream timeout")]
    UpstreamTimeout,
    /// The upstream connection failed after it was established.
    #[error("upstream request")]
    UpstreamRequest(#[source] SendError),
    /// A gateway policy refused the request.
    #[error("refused by a policy: {}", .0.reason)]
    Rejected(Box<Rejection>),
}

impl ProxyError {
    /// The side the failure is attributed to.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::NoRoute
            | ProxyError::BodyTooLarge
            | ProxyError::TooManyHeaders
            | ProxyError::BodyMalformed
            | ProxyError::BodyTimeout
            | ProxyError::Rejected(_) => Side::Downstream,
            ProxyError::ListenerRemoved | ProxyError::NoEndpoint(_) => Side::Internal,
            ProxyError::UpstreamConnect(_)
            | ProxyError::Overflow(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::UpstreamTimeout
            | ProxyError::UpstreamRequest(_) => Side::Upstream,
        }
    }

    /// The status the client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyMalformed => StatusCode::BAD_REQUEST,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ListenerRemoved | ProxyError::NoEndpoint(_) | ProxyError::Overflow(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamRequest(_)
            | ProxyError::UpstreamProtocol(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Rejected(r) => r.status,
        }
    }

    /// A short stable name for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(why) => why,
            ProxyError::NoRoute => "no_route",
            ProxyError::BodyTooLarge => "body_too_large",
            ProxyError::TooManyHeaders => "too_many_headers",
            ProxyError::BodyMalformed => "client_body_malformed",
            ProxyError::BodyTimeout => "client_body_timeout",
            ProxyError::ListenerRemoved => "listener_removed",
            ProxyError::NoEndpoint(_) => "no_endpoint",
            ProxyError::UpstreamConnect(_) => "upstream_connect",
            ProxyError::Overflow(_) => "overflow",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::UpstreamProtocol(why) => why,
            ProxyError::UpstreamRequest(_) => "upstream_request",
            ProxyError::Rejected(r) => r.reason,
        }
    }

    /// Whether the client connection should close after this answer: after a malformed request
    /// the rest of the byte stream cannot be trusted.
    fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::ListenerRemoved
                | ProxyError::BodyMalformed
                | ProxyError::BodyTimeout
        )
    }

    /// The status a gRPC client receives: gRPC's own mapping of the HTTP status, made precise
    /// where the agent knows more (a timeout is DEADLINE_EXCEEDED, a limit RESOURCE_EXHAUSTED,
    /// a policy's 400 INVALID_ARGUMENT).
    pub fn grpc_code(&self) -> Code {
        match self {
            ProxyError::NoRoute => Code::Unimplemented,
            ProxyError::UpstreamTimeout | ProxyError::BodyTimeout => Code::DeadlineExceeded,
            ProxyError::BodyTooLarge | ProxyError::TooManyHeaders => Code::ResourceExhausted,
            ProxyError::BadRequest(_) | ProxyError::BodyMalformed => Code::Internal,
            ProxyError::ListenerRemoved
            | ProxyError::NoEndpoint(_)
            | ProxyError::UpstreamConnect(_)
            | ProxyError::Overflow(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::UpstreamRequest(_) => Code::Unavailable,
            ProxyError::Rejected(r) => match r.status {
                StatusCode::BAD_REQUEST => Code::InvalidArgument,
                StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => {
                    Code::ResourceExhausted
                }
                other => Code::from_http(other.as_u16()),
            },
        }
    }

    /// The answer sent to the client: for a gRPC call (`grpc` is how the client speaks it), a
    /// trailers-only gRPC answer; otherwise the status and a short body naming the request id.
    pub fn response(&self, request_id: &str, grpc: Option<grpc::Protocol>) -> Response<ProxyBody> {
        let status = self.status();
        if let Some(protocol) = grpc {
            let message = format!("{} (request id {request_id})", self.grpc_message(status));
            let mut response =
                grpc::status::trailers_only(protocol, self.grpc_code(), &message, body::empty());
            self.extra_headers(response.headers_mut());
            return response;
        }
        // The same words for every refusal of one status: a client cannot tell a missing key
        // from an unknown one.
        let detail = match self {
            ProxyError::Rejected(r) => r.detail.as_deref().map(|d| format!(": {d}")),
            _ => None,
        };
        let text = format!(
            "{} {}{} (request id {request_id})\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("error"),
            detail.unwrap_or_default()
        );
        let mut response = Response::new(body::full(text));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        self.extra_headers(response.headers_mut());
        response
    }

    /// What a gRPC answer's `grpc-message` says: the reason code, and a policy's detail.
    fn grpc_message(&self, status: StatusCode) -> String {
        let words = status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase();
        match self {
            ProxyError::Rejected(r) => match &r.detail {
                Some(detail) => format!("{words}: {detail}"),
                None => words,
            },
            _ => format!("{words}: {}", self.reason()),
        }
    }

    /// The headers every answer to this error carries: a policy's (WWW-Authenticate,
    /// Retry-After...), and `Connection: close` when the connection cannot go on.
    fn extra_headers(&self, headers: &mut http::HeaderMap) {
        if let ProxyError::Rejected(r) = self {
            for (name, value) in &r.headers {
                headers.append(name.clone(), value.clone());
            }
        }
        if self.closes_connection() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_status_and_side() {
        let cases = [
            (ProxyError::BadRequest("x"), 400, Side::Downstream),
            (ProxyError::NoRoute, 404, Side::Downstream),
            (ProxyError::BodyTooLarge, 413, Side::Downstream),
            (ProxyError::BodyMalformed, 400, Side::Downstream),
            (ProxyError::BodyTimeout, 408, Side::Downstream),
            (ProxyError::ListenerRemoved, 503, Side::Internal),
            (ProxyError::NoEndpoint("c".into()), 503, Side::Internal),
            (
                ProxyError::UpstreamConnect(SendError::NoEndpoint(1)),
                502,
                Side::Upstream,
            ),
            (ProxyError::Overflow("max_requests"), 503, Side::Upstream),
            (ProxyError::UpstreamTimeout, 504, Side::Upstream),
            (
                ProxyError::UpstreamProtocol("upstream_unexpected_upgrade"),
                502,
                Side::Upstream,
            ),
            (
                ProxyError::UpstreamRequest(SendError::Overloaded),
                502,
                Side::Upstream,
            ),
        ];
        for (err, status, side) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.side(), side, "{err}");
        }
    }

    #[test]
    fn response_body_names_the_request_id() {
        let response = ProxyError::NoRoute.response("abc123", None);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(!response.headers().contains_key(header::CONNECTION));
        let bad = ProxyError::BadRequest("missing_host").response("r", None);
        assert_eq!(bad.headers()[header::CONNECTION], "close");
    }

    #[test]
    fn grpc_calls_get_trailers_only_answers_with_their_status() {
        let rejected = |status: u16| {
            ProxyError::Rejected(Box::new(Rejection::new(
                StatusCode::from_u16(status).unwrap(),
                "x",
            )))
        };
        let cases = [
            (ProxyError::NoRoute, Code::Unimplemented),
            (ProxyError::NoEndpoint("c".into()), Code::Unavailable),
            (ProxyError::Overflow("max_requests"), Code::Unavailable),
            (
                ProxyError::UpstreamConnect(SendError::NoEndpoint(1)),
                Code::Unavailable,
            ),
            (ProxyError::UpstreamTimeout, Code::DeadlineExceeded),
            (ProxyError::BodyTooLarge, Code::ResourceExhausted),
            (ProxyError::BadRequest("bad_path"), Code::Internal),
            (ProxyError::BodyMalformed, Code::Internal),
            (rejected(401), Code::Unauthenticated),
            (rejected(403), Code::PermissionDenied),
            (rejected(429), Code::ResourceExhausted),
            (rejected(413), Code::ResourceExhausted),
            (rejected(400), Code::InvalidArgument),
        ];
        for (err, code) in cases {
            let response = err.response("id1", Some(grpc::Protocol::Grpc));
            assert_eq!(response.status(), StatusCode::OK, "{err}");
            assert_eq!(response.headers()["grpc-status"], code.number(), "{err}");
            assert_eq!(response.headers()["content-type"], "application/grpc");
            let message = response.headers()["grpc-message"].to_str().unwrap();
            assert!(message.contains("(request id id1)"), "{message}");
            assert!(http_body::Body::is_end_stream(response.body()), "{err}");
        }
        let web = ProxyError::NoRoute.response("i", Some(grpc::Protocol::WebText));
        assert_eq!(
            web.headers()["content-type"],
            "application/grpc-web-text+proto"
        );
    }
}
