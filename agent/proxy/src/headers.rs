//! Header hygiene and transforms: hop-by-hop removal, forwarding headers, the request id, and
//! the per-route add/set/remove lists.

use std::cell::RefCell;
use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use portico_api::pb;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Most header fields a request may carry (a repeated name counts each time): hyper's limit
/// for HTTP/1 heads, which answers 431 past it, applied to HTTP/2 requests by the head checks.
pub const MAX_REQUEST_HEADERS: usize = 100;

/// The request id header, generated when absent and echoed on the response.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection hop and never travel through a proxy (RFC 9110 §7.6.1).
fn hop_by_hop() -> [&'static HeaderName; 8] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ]
}

/// Removes hop-by-hop headers, including those named in `Connection`. With `keep_upgrade` the
/// `Upgrade` header survives and `Connection: upgrade` is restored, for protocol upgrades.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over the names finds out without hashing any.
    let hop = hop_by_hop();
    let mut present = [false; 8];
    for name in headers.keys() {
        if let Some(i) = hop.iter().position(|h| *h == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let upgrade = headers.get(header::UPGRADE).cloned();
    for name in &named {
        headers.remove(name);
    }
    for (name, _) in hop.iter().zip(present).filter(|(_, here)| *here) {
        headers.remove(*name);
    }
    if keep_upgrade && let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether the request asks for a protocol upgrade (WebSocket...).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The request id: the client's when it sent a usable one, else a new random one, which is
/// written into `headers` so the upstream sees it.
pub fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers
        .get(&REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.to_str().is_ok())
    {
        return id.clone();
    }
    let id = new_request_id();
    headers.insert(REQUEST_ID.clone(), id.clone());
    id
}

thread_local! {
    /// Request ids need to be unique, not secret (clients choose their own at will): a fast
    /// generator per thread, seeded from the OS-seeded thread generator.
    static IDS: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// A fresh random request id: 32 hex digits.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n: u128 = IDS.with_borrow_mut(|ids| ids.random());
    let mut id = [0u8; 32];
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = HEX[(n >> ((31 - i) * 4)) as usize & 0xf];
    }
    // Hex digits are always a valid value.
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"))
}

/// The client address as the agent writes it into X-Forwarded-For; made once per connection.
pub fn client_address(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_canonical().to_string())
        .unwrap_or(HeaderValue::from_static("unknown"))
}

/// Sets X-Forwarded-For (appending `client`, from [`client_address`]), X-Forwarded-Proto and
/// X-Forwarded-Host (`host`, when the request named one and did not set the header itself).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    tls: bool,
    host: Option<&HeaderValue>,
) {
    // One lookup per header: each costs a hash of the name.
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Occupied(mut prior) => {
            let appended = prior
                .get()
                .to_str()
                .ok()
                .filter(|prior| !prior.trim().is_empty())
                .zip(client.to_str().ok())
                .and_then(|(prior, client)| {
                    HeaderValue::from_str(&format!("{prior}, {client}")).ok()
                });
            prior.insert(appended.unwrap_or_else(|| client.clone()));
        }
        Entry::Vacant(none) => {
            none.insert(client.clone());
        }
    }
    let proto = if tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(host) = host.filter(|h| !h.is_empty())
        && let Entry::Vacant(none) = headers.entry(&X_FORWARDED_HOST)
    {
        none.insert(host.clone());
    }
}

/// Why a header transform does not compile.
#[derive(Debug, thiserror::Error)]
pub enum HeaderTransformError {
    /// A header name is not valid.
    #[error("invalid header name {0:?}")]
    Name(String),
    /// A header value is not valid.
    #[error("invalid value for header {0:?}")]
    Value(String),
}

/// A compiled [`pb::HeaderTransform`]: remove, then set, then add.
#[derive(Clone, Debug, Default)]
pub struct HeaderTransform {
    add: Vec<(HeaderName, HeaderValue)>,
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

fn name(n: &str) -> Result<HeaderName, HeaderTransformError> {
    HeaderName::from_bytes(n.as_bytes()).map_err(|_| HeaderTransformError::Name(n.to_string()))
}

fn pairs(
    values: &[pb::HeaderValue],
) -> Result<Vec<(HeaderName, HeaderValue)>, HeaderTransformError> {
    values
        .iter()
        .map(|h| {
            let value = HeaderValue::from_str(&h.value)
                .map_err(|_| HeaderTransformError::Value(h.name.clone()))?;
            Ok((name(&h.name)?, value))
        })
        .collect()
}

impl HeaderTransform {
    /// Compiles the transform; `None` is the empty transform.
    pub fn compile(spec: Option<&pb::HeaderTransform>) -> Result<Self, HeaderTransformError> {
        let Some(spec) = spec else {
            return Ok(Self::default());
        };
        Ok(HeaderTransform {
            add: pairs(&spec.add)?,
            set: pairs(&spec.set)?,
            remove: spec
                .remove
                .iter()
                .map(|n| name(n))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Applies the transform to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (n, v) in pairs {
            headers.append(*n, HeaderValue::from_static(v));
        }
        headers
    }

    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut headers, false);
        assert_eq!(names(&headers), ["accept"]);

        let mut clean = map(&[("accept", "*/*"), ("x-secret", "1")]);
        remove_hop_by_hop(&mut clean, false);
        assert_eq!(names(&clean), ["accept", "x-secret"]);
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut headers = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&headers));
        remove_hop_by_hop(&mut headers, true);
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(headers["connection"], "upgrade");
    }

    #[test]
    fn forwarded_headers_append_the_client() {
        let mut headers = map(&[("x-forwarded-for", "10.0.0.1")]);
        let client = client_address("192.0.2.7".parse().unwrap());
        let host = HeaderValue::from_static("shop.example");
        set_forwarded(&mut headers, &client, true, Some(&host));
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "shop.example");

        let mut fresh = map(&[("x-forwarded-for", " "), ("x-forwarded-host", "kept")]);
        let mapped = client_address("::ffff:127.0.0.1".parse().unwrap());
        set_forwarded(&mut fresh, &mapped, false, Some(&host));
        assert_eq!(fresh["x-forwarded-for"], "127.0.0.1");
        assert_eq!(fresh["x-forwarded-proto"], "http");
        assert_eq!(fresh["x-forwarded-host"], "kept");

        let mut hostless = HeaderMap::new();
        set_forwarded(&mut hostless, &mapped, false, None);
        assert!(!hostless.contains_key("x-forwarded-host"));
    }

    #[test]
    fn request_id_is_kept_or_generated() {
        let mut given = map(&[("x-request-id", "abc")]);
        assert_eq!(request_id(&mut given), "abc");
        let mut none = HeaderMap::new();
        let id = request_id(&mut none);
        assert_eq!(id.len(), 32);
        assert!(
            id.as_bytes()
                .iter()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(new_request_id(), new_request_id());
        assert_eq!(none["x-request-id"], id);
    }

    #[test]
    fn transform_removes_sets_then_adds() {
        let spec = pb::HeaderTransform {
            add: vec![pb::HeaderValue {
                name: "x-tag".into(),
                value: "b".into(),
            }],
            set: vec![pb::HeaderValue {
                name: "x-env".into(),
                value: "prod".into(),
            }],
            remove: vec!["x-drop".into()],
        };
        let transform = HeaderTransform::compile(Some(&spec)).unwrap();
        let mut headers = map(&[("x-tag", "a"), ("x-env", "dev"), ("x-drop", "1")]);
        transform.apply(&mut headers);
        let tags: Vec<_> = headers.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["a", "b"]);
        assert_eq!(headers["x-env"], "prod");
        assert!(!headers.contains_key("x-drop"));

        let bad = pb::HeaderTransform {
            remove: vec!["bad name".into()],
            ..Default::default()
        };
        assert!(HeaderTransform::compile(Some(&bad)).is_err());
    }
}
