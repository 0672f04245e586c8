//! gRPC on the data path: recognising calls, the statuses the agent answers them with, their
//! deadlines, the length-prefixed message framing, and gRPC-Web translated to and from gRPC.
//!
//! The module sits at the bottom with `body` and `headers`: it imports no other module of the
//! crate, so the request body limit (`body`) and the answers (`error`, `service`) can use it.
//!
//! # Layout
//! - [`status`]: status codes, the HTTP-to-gRPC mapping and trailers-only answers.
//! - [`timeout`]: the `grpc-timeout` header.
//! - [`frames`]: the 5-byte message prefix, and the per-message size limit.
//! - [`web`]: gRPC-Web requests turned into gRPC, and the answers turned back.
//! - [`call`]: the body of an upstream's answer to a call: deadline, status seen, gRPC-Web.

pub mod call;
pub mod frames;
pub mod status;
pub mod timeout;
pub mod web;

use http::HeaderMap;
use http::header::{self, HeaderValue};

pub use call::CallBody;
pub use status::Code;

/// Errors of the bodies this module wraps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a client speaks gRPC, by its request's content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `application/grpc`, `application/grpc+proto`...
    Grpc,
    /// `application/grpc-web`, `application/grpc-web+proto`: gRPC framing over HTTP/1.1 or
    /// HTTP/2, with the trailers in the body.
    Web,
    /// `application/grpc-web-text`: gRPC-Web, base64-encoded.
    WebText,
}

impl Protocol {
    /// The protocol of a request or response with `headers`; `None` when it is not gRPC.
    pub fn of(headers: &HeaderMap) -> Option<Protocol> {
        let value = headers.get(header::CONTENT_TYPE)?.as_bytes();
        // Checked without allocating: most requests are not gRPC and fail the first test.
        let lower = |prefix: &[u8]| {
            value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)
        };
        if !lower(b"application/grpc") {
            return None;
        }
        let ends_at = |n: usize| matches!(value.get(n), None | Some(b'+' | b';' | b' '));
        if lower(b"application/grpc-web-text") && ends_at(25) {
            Some(Protocol::WebText)
        } else if lower(b"application/grpc-web") && ends_at(20) {
            Some(Protocol::Web)
        } else if ends_at(16) {
            Some(Protocol::Grpc)
        } else {
            None
        }
    }

    /// Whether this is one of the gRPC-Web forms.
    pub fn is_web(self) -> bool {
        self != Protocol::Grpc
    }

    /// The content type of answers the agent makes itself for this protocol.
    pub fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Protocol::Grpc => "application/grpc",
            Protocol::Web => "application/grpc-web+proto",
            Protocol::WebText => "application/grpc-web-text+proto",
        })
    }
}

/// The `te` value gRPC servers require: the client reads trailers.
pub static TE_TRAILERS: HeaderValue = HeaderValue::from_static("trailers");

/// Whether a request's TE header accepts trailers (`te: trailers`, possibly among others).
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_told_by_content_type() {
        let cases = [
            ("application/grpc", Some(Protocol::Grpc)),
            ("application/grpc+proto", Some(Protocol::Grpc)),
            ("Application/GRPC;charset=x", Some(Protocol::Grpc)),
            ("application/grpc-web", Some(Protocol::Web)),
            ("application/grpc-web+proto", Some(Protocol::Web)),
            ("application/grpc-web-text", Some(Protocol::WebText)),
            ("application/grpc-web-text+proto", Some(Protocol::WebText)),
            ("application/grpcx", None),
            ("application/grpc-webx", None),
            ("application/json", None),
            ("text/plain", None),
        ];
        for (value, want) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(Protocol::of(&headers), want, "{value}");
        }
        assert_eq!(Protocol::of(&HeaderMap::new()), None);
    }

    #[test]
    fn te_trailers_is_found_among_others() {
        for (value, want) in [
            ("trailers", true),
            ("gzip, Trailers", true),
            ("trailers;q=1", true),
            ("gzip", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::TE, HeaderValue::from_static(value));
            assert_eq!(accepts_trailers(&headers), want, "{value}");
        }
    }
}
