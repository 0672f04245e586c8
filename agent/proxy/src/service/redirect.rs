//! Redirect answers, and the prefix rewrite of forwarded paths.

use http::Response;
use http::header::{self, HeaderValue};

use crate::body::{self, ProxyBody};
use crate::runtime::action::Redirect;
use crate::runtime::router::strip_port;

/// The redirect `r` for a request to `authority` and `path` (with `query`), on a TLS
/// connection or not. Parts the redirect leaves unset are kept from the request.
pub(super) fn response(
    r: &Redirect,
    tls: bool,
    authority: &str,
    path: &str,
    query: Option<&str>,
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
    let target = match (&r.path, query) {
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

/// `path` with its matched `prefix` replaced by `replacement`, never empty.
pub(super) fn rewrite_prefix(path: &str, prefix: &str, replacement: &str) -> String {
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

#[cfg(test)]
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
