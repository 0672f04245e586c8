//! gRPC status codes: reading them from answers, deriving them from HTTP statuses the way gRPC
//! clients do, and the trailers-only answers the agent gives gRPC calls itself.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::Protocol;

/// The `grpc-status` header or trailer.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The `grpc-message` header or trailer.
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// A gRPC status code (0–16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// The codes' numbers as text, for headers and metric labels.
const NUMBERS: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

impl Code {
    /// The code numbered `n`; numbers gRPC does not define read as UNKNOWN, as clients read
    /// them.
    pub fn from_number(n: u32) -> Code {
        use Code::*;
        const ALL: [Code; 17] = [
            Ok,
            Cancelled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unimplemented,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        ];
        ALL.get(n as usize).copied().unwrap_or(Unknown)
    }

    /// The code's number as text ("0", "14"...).
    pub fn number(self) -> &'static str {
        NUMBERS[self as usize]
    }

    /// The code a gRPC client reports for an HTTP answer without a gRPC status, per gRPC's
    /// "HTTP to gRPC status code mapping".
    pub fn from_http(status: u16) -> Code {
        match status {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }

    /// The `grpc-status` of `headers` (a response head of a trailers-only answer, or
    /// trailers), if they carry one.
    pub fn of(headers: &HeaderMap) -> Option<Code> {
        let value = headers.get(&GRPC_STATUS)?;
        let n = std::str::from_utf8(value.as_bytes())
            .ok()?
            .trim()
            .parse::<u32>();
        // A status that is not a number is a status all the same: the client sees UNKNOWN.
        Some(n.map_or(Code::Unknown, Code::from_number))
    }
}

/// `message` percent-encoded as `grpc-message` carries it: bytes outside printable ASCII, and
/// '%', as %XX.
pub fn encode_message(message: &str) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
    }
    // Only printable ASCII is left.
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static(""))
}

/// The trailer fields of a call ending with `code` and `message`.
pub fn trailers(code: Code, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert(GRPC_STATUS.clone(), HeaderValue::from_static(code.number()));
    if !message.is_empty() {
        trailers.insert(GRPC_MESSAGE.clone(), encode_message(message));
    }
    trailers
}

/// A trailers-only answer: HTTP 200, the protocol's content type, and the status in the head;
/// the body `B` is empty, so the head ends the stream.
pub fn trailers_only<B>(protocol: Protocol, code: Code, message: &str, empty: B) -> Response<B> {
    let mut response = Response::new(empty);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, protocol.content_type());
    headers.extend(trailers(code, message));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_as_grpc_clients_map_them() {
        for (http, code) in [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (500, Code::Unknown),
            (418, Code::Unknown),
        ] {
            assert_eq!(Code::from_http(http), code, "{http}");
        }
    }

    #[test]
    fn statuses_are_read_and_unknown_numbers_are_unknown() {
        let mut headers = HeaderMap::new();
        assert_eq!(Code::of(&headers), None);
        for (value, code) in [
            ("0", Code::Ok),
            ("14", Code::Unavailable),
            ("16", Code::Unauthenticated),
            ("17", Code::Unknown),
            ("x", Code::Unknown),
        ] {
            headers.insert(GRPC_STATUS.clone(), HeaderValue::from_static(value));
            assert_eq!(Code::of(&headers), Some(code), "{value}");
        }
        assert_eq!(Code::Unavailable.number(), "14");
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(encode_message("no route"), "no route");
        assert_eq!(encode_message("100% über\n"), "100%25 %C3%BCber%0A");
    }

    #[test]
    fn trailers_only_answers_carry_the_status_in_the_head() {
        let r = trailers_only(Protocol::Grpc, Code::Unimplemented, "no route", ());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(r.headers()["grpc-status"], "12");
        assert_eq!(r.headers()["grpc-message"], "no route");
        let web = trailers_only(Protocol::WebText, Code::Ok, "", ());
        assert_eq!(
            web.headers()["content-type"],
            "application/grpc-web-text+proto"
        );
        assert!(!web.headers().contains_key("grpc-message"));
    }
}
