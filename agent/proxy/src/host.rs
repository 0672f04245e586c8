//! The one host a request is for: the authority routing matches and the Host the upstream
//! receives, decided once so the two can never differ.
//!
//! RFC 9112 §3.2.2: an absolute-form request target's authority wins over Host. A request with
//! two Host headers, or an HTTP/2 request whose Host differs from its `:authority`, is refused:
//! either would let one host be routed and another forwarded. The host is lowercased and one
//! trailing dot (`example.com.`) dropped, and it must be a plain host name or address, so that
//! what is forwarded, logged or written into a redirect's Location is never something else.

use http::header::GetAll;
use http::uri::Authority;
use http::{HeaderValue, Version};

/// Why a request's host is refused (its reason code, answered 400).
pub type Refusal = &'static str;

/// The normalised `host[:port]` of a request from its URI's authority (absolute form, or
/// HTTP/2's `:authority`) and its Host headers; `None` when it names none (HTTP/1.0).
pub fn normalise(
    version: Version,
    authority: Option<&Authority>,
    hosts: GetAll<'_, HeaderValue>,
) -> Result<Option<HeaderValue>, Refusal> {
    let mut hosts = hosts.iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("duplicate_host");
    }
    let value = match (authority, host) {
        (Some(a), Some(h))
            if version == Version::HTTP_2
                && !a.as_str().eq_ignore_ascii_case(h.to_str().unwrap_or("")) =>
        {
            return Err("conflicting_host");
        }
        // The absolute form (and :authority) wins; Host is replaced by it.
        (Some(a), _) => a.as_str().as_bytes(),
        (None, Some(h)) => h.as_bytes(),
        (None, None) if version == Version::HTTP_11 => return Err("missing_host"),
        (None, None) => return Ok(None),
    };
    let form = form(value).ok_or("bad_host")?;
    match (form, authority, host) {
        // Already normal: the header's own value, shared rather than copied.
        (Form::Normal, None, Some(h)) => Ok(Some(h.clone())),
        (Form::Normal, _, _) => HeaderValue::from_bytes(value)
            .map(Some)
            .map_err(|_| "bad_host"),
        (Form::Changed(normal), _, _) => HeaderValue::from_str(&normal)
            .map(Some)
            .map_err(|_| "bad_host"),
    }
}

/// A valid `host[:port]` as it is, or in its normal form.
enum Form {
    Normal,
    Changed(String),
}

/// What `value` (`host[:port]`) is; `None` when it is not a host name or address.
fn form(value: &[u8]) -> Option<Form> {
    let text = std::str::from_utf8(value).ok()?;
    let (host, port) = split_port(text)?;
    if host.is_empty() || host.len() > 255 {
        return None;
    }
    let bracketed = host.starts_with('[');
    let valid = if bracketed {
        host.ends_with(']')
            && host[1..host.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        host.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    if !valid {
        return None;
    }
    let trimmed = if !bracketed && host.len() > 1 {
        host.strip_suffix('.').unwrap_or(host)
    } else {
        host
    };
    // A name with an empty label ("a..b", ".a", "a.." once one dot is dropped) is no host name,
    // and would not stay the same when normalised again.
    if !bracketed && trimmed.split('.').any(str::is_empty) {
        return None;
    }
    let lower = trimmed.bytes().any(|b| b.is_ascii_uppercase());
    if trimmed.len() == host.len() && !lower {
        return Some(Form::Normal);
    }
    let mut out = trimmed.to_ascii_lowercase();
    if let Some(port) = port {
        out.push(':');
        out.push_str(port);
    }
    Some(Form::Changed(out))
}

/// `host[:port]` split at the port, which must be digits.
fn split_port(text: &str) -> Option<(&str, Option<&str>)> {
    let colon = if text.starts_with('[') {
        text.find(']')
            .map(|end| end + 1)
            .filter(|i| *i < text.len())
    } else {
        text.rfind(':')
    };
    match colon {
        None => Some((text, None)),
        Some(i) => {
            let (host, port) = (&text[..i], &text[i + 1..]);
            (!port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()))
                .then_some((host, Some(port)))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::{HeaderMap, header};

    type Expected = Result<Option<String>, Refusal>;

    fn check(version: Version, target: Option<&str>, hosts: &[&str]) -> Expected {
        let mut headers = HeaderMap::new();
        for h in hosts {
            headers.append(header::HOST, HeaderValue::from_str(h).unwrap());
        }
        let authority = target.map(|a| a.parse::<Authority>().unwrap());
        normalise(version, authority.as_ref(), headers.get_all(header::HOST))
            .map(|v| v.map(|v| v.to_str().unwrap().to_string()))
    }

    mod properties {
        use super::*;
        use portico_test_support::fuzz::CASES;
        use proptest::prelude::*;

        fn normalised(
            version: Version,
            authority: Option<&Authority>,
            hosts: &[HeaderValue],
        ) -> Result<Option<HeaderValue>, Refusal> {
            let mut headers = HeaderMap::new();
            for h in hosts {
                headers.append(header::HOST, h.clone());
            }
            normalise(version, authority, headers.get_all(header::HOST))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(CASES))]

            /// Whatever the Host headers and authority, the answer is the same every time, and
            /// a host it accepts is accepted again as it is (it is already normal).
            #[test]
            fn any_host_is_refused_or_normalised_for_good(
                hosts in proptest::collection::vec(
                    prop_oneof![
                        proptest::collection::vec(any::<u8>(), 0..24),
                        proptest::collection::vec(
                            proptest::sample::select(b"aZ09.-_:[]@%".to_vec()),
                            0..24,
                        ),
                    ],
                    0..3,
                ),
                authority in proptest::option::of("[a-zA-Z0-9.:\\[\\]@_-]{0,24}"),
                h2 in any::<bool>(),
            ) {
                let version = if h2 { Version::HTTP_2 } else { Version::HTTP_11 };
                let hosts: Vec<HeaderValue> =
                    hosts.iter().filter_map(|h| HeaderValue::from_bytes(h).ok()).collect();
                let authority = authority.and_then(|a| a.parse::<Authority>().ok());
                let first = normalised(version, authority.as_ref(), &hosts);
                prop_assert_eq!(&first, &normalised(version, authority.as_ref(), &hosts));
                if let Ok(Some(host)) = first {
                    let again = normalised(Version::HTTP_11, None, std::slice::from_ref(&host));
                    prop_assert_eq!(again, Ok(Some(host)));
                }
            }
        }
    }

    #[test]
    fn one_host_is_routed_and_forwarded() {
        use Version as V;
        let ok = |s: &str| Ok(Some(s.to_string()));
        let cases: &[(Version, Option<&str>, &[&str], Expected)] = &[
            (
                V::HTTP_11,
                None,
                &["shop.example.com"],
                ok("shop.example.com"),
            ),
            (
                V::HTTP_11,
                None,
                &["Shop.Example.COM:8080"],
                ok("shop.example.com:8080"),
            ),
            (
                V::HTTP_11,
                None,
                &["shop.example.com."],
                ok("shop.example.com"),
            ),
            (V::HTTP_11, None, &["shop.example.com.."], Err("bad_host")),
            (V::HTTP_11, None, &["shop..example.com"], Err("bad_host")),
            (V::HTTP_11, None, &[".example.com"], Err("bad_host")),
            (
                V::HTTP_11,
                None,
                &["shop.example.com.:80"],
                ok("shop.example.com:80"),
            ),
            (V::HTTP_11, None, &["[::1]:8080"], ok("[::1]:8080")),
            (
                V::HTTP_11,
                Some("other.example"),
                &["shop.example.com"],
                ok("other.example"),
            ),
            (
                V::HTTP_11,
                None,
                &["a.example", "b.example"],
                Err("duplicate_host"),
            ),
            (
                V::HTTP_11,
                None,
                &["a.example", "a.example"],
                Err("duplicate_host"),
            ),
            (
                V::HTTP_2,
                Some("a.example"),
                &["b.example"],
                Err("conflicting_host"),
            ),
            (
                V::HTTP_2,
                Some("a.example"),
                &["A.example"],
                ok("a.example"),
            ),
            (V::HTTP_2, Some("a.example"), &[], ok("a.example")),
            (V::HTTP_11, None, &[], Err("missing_host")),
            (V::HTTP_10, None, &[], Ok(None)),
            (V::HTTP_11, None, &["evil.example/path"], Err("bad_host")),
            (V::HTTP_11, None, &["evil\"><script>"], Err("bad_host")),
            (V::HTTP_11, None, &["a.example:port"], Err("bad_host")),
            (V::HTTP_11, None, &[""], Err("bad_host")),
        ];
        for (version, target, hosts, expected) in cases {
            assert_eq!(
                &check(*version, *target, hosts),
                expected,
                "{version:?} {target:?} {hosts:?}"
            );
        }
    }
}
