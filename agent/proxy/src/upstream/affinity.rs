//! What a hashing cluster hashes a request by (a header, a cookie, the client address, a query
//! parameter), and session affinity by a cookie the agent sets.

use std::net::IpAddr;
use std::time::Duration;

use http::header::{self, HeaderName};
use http::request::Parts;
use http::{HeaderMap, HeaderValue};

use super::hash::hash;

/// The request key of a hashing cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashPolicy {
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The client's IP address.
    SourceIp,
    /// A query parameter's value.
    QueryParam(String),
    /// Session affinity by a cookie the agent sets.
    Session(SessionCookie),
}

/// The cookie of session affinity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionCookie {
    /// Cookie name.
    pub name: String,
    /// Max-Age; `None` for a session cookie.
    pub ttl: Option<Duration>,
    /// Cookie path.
    pub path: String,
}

/// What a request says about its endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Key {
    /// Nothing: the balancer picks as it would without a key.
    None,
    /// Hash this onto the cluster's table.
    Hash(u64),
    /// A session cookie: the endpoint whose token it is, when available, else the hash of
    /// its value.
    Session(u64),
    /// A session request without the cookie: pick freely and set the cookie.
    NewSession,
}

impl HashPolicy {
    /// The key of a request with head `head` from `client`.
    pub fn key(&self, head: &Parts, client: IpAddr) -> Key {
        match self {
            HashPolicy::Header(name) => head
                .headers
                .get(name)
                .map_or(Key::None, |v| Key::Hash(hash(v.as_bytes()))),
            HashPolicy::Cookie(name) => {
                cookie(&head.headers, name).map_or(Key::None, |v| Key::Hash(hash(v.as_bytes())))
            }
            HashPolicy::SourceIp => Key::Hash(match client {
                IpAddr::V4(a) => hash(&a.octets()),
                IpAddr::V6(a) => hash(&a.octets()),
            }),
            HashPolicy::QueryParam(name) => head
                .uri
                .query()
                .and_then(|q| {
                    form_urlencoded::parse(q.as_bytes()).find(|(n, _)| n == name.as_str())
                })
                .map_or(Key::None, |(_, v)| Key::Hash(hash(v.as_bytes()))),
            HashPolicy::Session(s) => match cookie(&head.headers, &s.name) {
                Some(v) => Key::Session(token_of(v).unwrap_or_else(|| hash(v.as_bytes()))),
                None => Key::NewSession,
            },
        }
    }
}

impl SessionCookie {
    /// The `Set-Cookie` value naming the endpoint with `token`.
    pub fn set_cookie(&self, token: u64) -> Option<HeaderValue> {
        let mut value = format!("{}={token:016x}; Path={}", self.name, self.path);
        if let Some(ttl) = self.ttl {
            value.push_str(&format!("; Max-Age={}", ttl.as_secs()));
        }
        value.push_str("; HttpOnly");
        HeaderValue::from_str(&value).ok()
    }
}

/// The token a session cookie holds for the endpoint at `authority`.
pub fn token(authority: &str) -> u64 {
    hash(authority.as_bytes())
}

/// A session cookie's value as a token: 16 lowercase hex digits.
fn token_of(value: &str) -> Option<u64> {
    (value.len() == 16)
        .then(|| u64::from_str_radix(value, 16).ok())
        .flatten()
}

/// The value of cookie `name` in the request's Cookie headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name).then_some(v.trim_matches('"'))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn head(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn keys_come_from_the_part_of_the_request_the_policy_names() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let req = head(
            "/x?user=ann&b=2",
            &[("x-user", "ann"), ("cookie", "a=1; sid=ann; c=3")],
        );
        let bare = head("/x", &[]);
        let ann = Key::Hash(hash(b"ann"));
        let cases = [
            (
                HashPolicy::Header(HeaderName::from_static("x-user")),
                &req,
                ann,
            ),
            (
                HashPolicy::Cookie("sid".into()),
                &req,
                Key::Hash(hash(b"ann")),
            ),
            (
                HashPolicy::QueryParam("user".into()),
                &req,
                Key::Hash(hash(b"ann")),
            ),
            (
                HashPolicy::Header(HeaderName::from_static("x-user")),
                &bare,
                Key::None,
            ),
            (HashPolicy::Cookie("sid".into()), &bare, Key::None),
            (HashPolicy::QueryParam("user".into()), &bare, Key::None),
            (HashPolicy::SourceIp, &bare, Key::Hash(hash(&[10, 1, 2, 3]))),
        ];
        for (policy, req, expected) in cases {
            assert_eq!(policy.key(req, ip), expected, "{policy:?}");
        }
    }

    #[test]
    fn session_cookies_name_their_endpoint() {
        let session = SessionCookie {
            name: "affinity".into(),
            ttl: Some(Duration::from_secs(60)),
            path: "/".into(),
        };
        let t = token("10.0.0.1:80");
        let set = session.set_cookie(t).unwrap();
        assert_eq!(
            set.to_str().unwrap(),
            format!("affinity={t:016x}; Path=/; Max-Age=60; HttpOnly")
        );
        let policy = HashPolicy::Session(session);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let back = head("/", &[("cookie", &format!("affinity={t:016x}"))]);
        assert_eq!(policy.key(&back, ip), Key::Session(t));
        let foreign = head("/", &[("cookie", "affinity=whatever")]);
        assert_eq!(policy.key(&foreign, ip), Key::Session(hash(b"whatever")));
        assert_eq!(policy.key(&head("/", &[]), ip), Key::NewSession);
    }
}
