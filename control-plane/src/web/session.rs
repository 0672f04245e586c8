//! Where a dashboard request's token comes from: the `portico_session` cookie the login sets
//! (HttpOnly, so the page's script never reads it; SameSite=Strict, so no other site's page
//! sends it), or an `Authorization: Bearer` header (for scripts and curl). The cookie holds the
//! token itself, so every replica behind a load balancer accepts it and a revoked token stops
//! working at once; it lasts 12 hours or until logout.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use super::{error, json};
use crate::admin::AdminService;

/// The cookie's name.
pub const COOKIE: &str = "portico_session";
/// How long a login lasts.
const MAX_AGE_SECONDS: u64 = 12 * 3600;

/// The token `headers` present: the Authorization header first, then the cookie.
pub fn token(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value.to_string())
            .filter(|t| !t.is_empty())
    })
}

/// `POST /api/session {"token": "..."}`: checks the token (it must hold a role that may read)
/// and answers who it is, with the cookie.
pub async fn open(admin: &AdminService, body: &Bytes, secure: bool) -> Response<Full<Bytes>> {
    #[derive(serde::Deserialize)]
    struct Login {
        token: String,
    }
    let login: Login = match serde_json::from_slice(body) {
        Ok(l) => l,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "send {\"token\": \"...\"}",
            );
        }
    };
    let token = login.token.trim();
    if token.is_empty() || !token.bytes().all(cookie_safe) {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "that is not a Portico token",
        );
    }
    // The answer is WhoAmI's, refusals included: the cookie only for a token it accepts.
    let mut response =
        super::bridge::call(admin, "WhoAmI", &Bytes::new(), Some(token.to_string())).await;
    if !response.status().is_success() {
        return response;
    }
    set_cookie(&mut response, token, MAX_AGE_SECONDS, secure);
    response
}

/// `DELETE /api/session`: forgets the cookie.
pub fn close(secure: bool) -> Response<Full<Bytes>> {
    let mut response = json(StatusCode::OK, b"{}".to_vec());
    set_cookie(&mut response, "", 0, secure);
    response
}

fn set_cookie(response: &mut Response<Full<Bytes>>, value: &str, max_age: u64, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
}

/// Bytes a cookie value may hold unquoted (RFC 6265 cookie-octet, less what tokens never have).
fn cookie_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~' | b'+' | b'/' | b'=')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_header_wins_over_the_cookie_and_other_cookies_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; portico_session=pt_abc; x=1"),
        );
        assert_eq!(token(&headers).as_deref(), Some("pt_abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer pt_header"),
        );
        assert_eq!(token(&headers).as_deref(), Some("pt_header"));
        assert_eq!(token(&HeaderMap::new()), None);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_tls() {
        let mut response = json(StatusCode::OK, Vec::new());
        set_cookie(&mut response, "pt_x", 60, true);
        let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
        assert_eq!(
            cookie,
            "portico_session=pt_x; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        let closed = close(false);
        let cookie = closed.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(cookie.starts_with("portico_session=; ") && cookie.contains("Max-Age=0"));
        assert!(!cookie.contains("Secure"));
    }
}
