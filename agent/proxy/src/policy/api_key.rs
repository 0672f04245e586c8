//! `api_key_auth`: a key from a header or a query parameter identifies a Consumer; the key
//! never goes upstream.

use std::collections::HashSet;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, StatusCode};
use portico_api::pb;

use super::{CONSUMER_HEADER, Consumer, Consumers, Rejection, header_or};

static DEFAULT_HEADER: HeaderName = HeaderName::from_static("x-api-key");

/// A compiled `api_key_auth` policy.
#[derive(Debug)]
pub struct ApiKeyAuth {
    header: HeaderName,
    query_param: Option<String>,
    /// The consumers allowed; `None` allows every consumer.
    allowed: Option<HashSet<String>>,
    consumers: Arc<Consumers>,
    /// Where the consumer's name goes upstream.
    pub consumer_header: HeaderName,
}

impl ApiKeyAuth {
    /// Compiles the policy against the consumer directory.
    pub fn compile(
        spec: &pb::ApiKeyAuth,
        consumers: &Arc<Consumers>,
    ) -> Result<ApiKeyAuth, (String, String)> {
        for (i, name) in spec.consumers.iter().enumerate() {
            if consumers.get(name).is_none() {
                return Err((
                    format!("api_key_auth.consumers[{i}]"),
                    format!("consumer {name:?} does not exist"),
                ));
            }
        }
        Ok(ApiKeyAuth {
            header: header_or(&spec.header, &DEFAULT_HEADER, "api_key_auth.header")?,
            query_param: (!spec.query_param.is_empty()).then(|| spec.query_param.clone()),
            allowed: (!spec.consumers.is_empty()).then(|| spec.consumers.iter().cloned().collect()),
            consumers: consumers.clone(),
            consumer_header: header_or(
                &spec.consumer_header,
                &CONSUMER_HEADER,
                "api_key_auth.consumer_header",
            )?,
        })
    }

    /// The consumer `req`'s key belongs to. The key is removed from the request (header or
    /// query parameter) whatever the outcome. A missing and an unknown key are refused with
    /// the same answer; only the reason code in the log tells them apart.
    pub fn check<B>(&self, req: &mut Request<B>) -> Result<Arc<Consumer>, Rejection> {
        let key = match req.headers_mut().remove(&self.header) {
            Some(v) => Some(KeyBytes::Header(v)),
            None => self
                .query_param
                .as_deref()
                .and_then(|p| take_query_param(req, p))
                .map(KeyBytes::Query),
        };
        let unauthorized = |reason| Rejection::new(StatusCode::UNAUTHORIZED, reason);
        let key = key.ok_or(unauthorized("auth_missing"))?;
        let consumer = self
            .consumers
            .by_key(key.as_bytes())
            .ok_or(unauthorized("auth_invalid"))?;
        if self
            .allowed
            .as_ref()
            .is_some_and(|allowed| !allowed.contains(&*consumer.name))
        {
            return Err(Rejection::new(StatusCode::FORBIDDEN, "consumer_forbidden"));
        }
        Ok(consumer.clone())
    }
}

/// A key as the request carried it.
enum KeyBytes {
    Header(HeaderValue),
    Query(String),
}

impl KeyBytes {
    fn as_bytes(&self) -> &[u8] {
        match self {
            KeyBytes::Header(v) => v.as_bytes(),
            KeyBytes::Query(s) => s.as_bytes(),
        }
    }
}

/// The percent-decoded value of query parameter `name`, removed from the request's URI with
/// every other occurrence of it; the other parameters are kept as they were written.
fn take_query_param<B>(req: &mut Request<B>, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    let mut value = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let raw_name = pair.split_once('=').map_or(pair, |(n, _)| n);
        let decoded: String = form_urlencoded::parse(raw_name.as_bytes())
            .next()
            .map(|(n, _)| n.into_owned())
            .unwrap_or_default();
        if decoded == name {
            if value.is_none() {
                value = form_urlencoded::parse(pair.as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned());
            }
        } else {
            kept.push(pair);
        }
    }
    let value = value?;
    let path = req.uri().path();
    let rebuilt = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = rebuilt.parse::<PathAndQuery>() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    Some(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_query_parameter_is_taken_out_and_the_rest_kept() {
        let mut req = Request::get("/a/b?x=1&key=s%2Bcr&y=a+b&key=2")
            .body(())
            .unwrap();
        assert_eq!(take_query_param(&mut req, "key").as_deref(), Some("s+cr"));
        assert_eq!(req.uri(), "/a/b?x=1&y=a+b");
        let mut only = Request::get("/p?key=k").body(()).unwrap();
        assert_eq!(take_query_param(&mut only, "key").as_deref(), Some("k"));
        assert_eq!(only.uri(), "/p");
        let mut none = Request::get("/p?other=k").body(()).unwrap();
        assert!(take_query_param(&mut none, "key").is_none());
        assert_eq!(none.uri(), "/p?other=k");
    }
}
