//! Checks of single values shared by every kind: names, durations, sizes, regexes, HTTP
//! tokens, header parts and URI paths, host and TLS server names, and CIDRs. Each returns the
//! message for a bad value.

use std::collections::{BTreeMap, HashMap};

use pbjson_types::Duration;

use super::Errors;
use crate::limits::{MAX_LABEL_KEY_LEN, MAX_LABEL_VALUE_LEN, MAX_LABELS};
use crate::pb::HeaderTransform;

/// Upper bound of timeouts.
pub(crate) const MAX_TIMEOUT_SECS: i64 = 3600;
/// Upper bound of periods and intervals.
pub(crate) const MAX_PERIOD_SECS: i64 = 24 * 3600;

/// The longest resource name (a DNS name's limit).
pub(crate) const MAX_NAME_LEN: usize = 253;

/// A resource name: a DNS name of labels joined by '.', each 1–63 lowercase letters, digits and
/// '-' not starting or ending with '-', at most [`MAX_NAME_LEN`] in all. Dots let an API
/// listener carry the name gRPC clients dial (`xds:///greeter.example.internal`).
pub(crate) fn resource_name(name: &str) -> Result<(), String> {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() <= MAX_NAME_LEN && name.split('.').all(label) {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: use labels of 1-63 lowercase letters, digits and '-' \
             (not starting or ending with '-') joined by '.', at most {MAX_NAME_LEN} characters"
        ))
    }
}

/// Longest name (of a route, a virtual host, a label key, a selector value) and label value,
/// in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 253;

/// `value` for an error message, cut after 64 characters so a huge input is not echoed whole.
pub(crate) fn shown(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// A name that is not a resource name (a route's, a virtual host's, a label key, a selector
/// value): 1–253 bytes of visible ASCII (letters, digits and punctuation; no spaces).
pub(crate) fn name(value: &str) -> Result<(), String> {
    let valid = !value.is_empty()
        && value.len() <= MAX_NAME_BYTES
        && value.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid name {}: use 1-{MAX_NAME_BYTES} bytes of visible ASCII (letters, digits and \
             punctuation, no spaces)",
            shown(value)
        ))
    }
}

/// A label value: at most 253 bytes, without control characters.
pub(crate) fn label_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_NAME_BYTES {
        Err(format!(
            "label value {} is {} bytes; the limit is {MAX_NAME_BYTES}",
            shown(value),
            value.len()
        ))
    } else if value.chars().any(char::is_control) {
        Err(format!(
            "label value {} contains a control character",
            shown(value)
        ))
    } else {
        Ok(())
    }
}

/// Label keys and values of a selector (see [`name`] and [`label_value`]), at `field`.
pub(crate) fn labels_at<'a>(
    e: &mut Errors,
    field: &str,
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) {
    for (key, value) in labels {
        if let Err(message) = name(key) {
            e.add(field, format!("label key: {message}"));
        } else {
            e.check(format!("{field}.{key}"), label_value(value));
        }
    }
}

/// A resource's labels: at most [`MAX_LABELS`], keys of 1–[`MAX_LABEL_KEY_LEN`] characters of
/// `[A-Za-z0-9._/-]`, values of at most [`MAX_LABEL_VALUE_LEN`] bytes without control
/// characters. A bad key is named shortened, so an error never repeats a huge one.
pub(crate) fn labels(labels: &BTreeMap<String, String>, e: &mut Errors) {
    if labels.len() > MAX_LABELS {
        e.add(
            "labels",
            format!("{} labels; the limit is {MAX_LABELS}", labels.len()),
        );
    }
    for (key, value) in labels {
        let at = format!("labels[{:?}]", shortened(key));
        let key_ok = !key.is_empty()
            && key.len() <= MAX_LABEL_KEY_LEN
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'));
        if !key_ok {
            e.add(
                &at,
                format!(
                    "label keys are 1-{MAX_LABEL_KEY_LEN} characters of letters, digits, \
                     '.', '_', '/' and '-' (this one is {} bytes)",
                    key.len()
                ),
            );
        }
        if value.len() > MAX_LABEL_VALUE_LEN {
            e.add(
                &at,
                format!(
                    "the value is {} bytes long; the limit is {MAX_LABEL_VALUE_LEN}",
                    value.len()
                ),
            );
        } else if value.chars().any(char::is_control) {
            e.add(&at, "the value contains a control character");
        }
    }
}

/// `text` cut to its first 40 characters, marked when cut.
fn shortened(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// A duration, when set, is positive, well-formed and at most `max_secs`.
pub(crate) fn duration(e: &mut Errors, field: &str, value: Option<&Duration>, max_secs: i64) {
    let Some(d) = value else { return };
    let result = if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        Err("must be positive".to_string())
    } else if d.seconds == 0 && d.nanos == 0 {
        Err("must be positive (leave it out for the default)".to_string())
    } else if d.seconds > max_secs || (d.seconds == max_secs && d.nanos > 0) {
        Err(format!("must be at most {max_secs}s"))
    } else {
        Ok(())
    };
    e.check(field, result);
}

/// A count or size, where 0 means "unset", is at most `max`.
pub(crate) fn at_most(e: &mut Errors, field: &str, value: u64, max: u64) {
    if value > max {
        e.add(field, format!("{value} is above the limit of {max}"));
    }
}

/// A regular expression compiles as agents compile it, within the limits of
/// [`crate::pattern`].
pub(crate) fn regex(pattern: &str) -> Result<(), String> {
    crate::pattern::anchored(pattern)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// An HTTP token (RFC 9110): a header name or a method.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A valid cookie name (an HTTP token, RFC 6265).
pub(crate) fn cookie_name(name: &str) -> Result<(), String> {
    if name.is_empty() || !is_token(name) {
        Err(format!("{name:?} is not a cookie name (an HTTP token)"))
    } else {
        Ok(())
    }
}

/// A valid HTTP header name.
pub(crate) fn header_name(name: &str) -> Result<(), String> {
    if is_token(name) {
        Ok(())
    } else {
        Err(format!("invalid header name {name:?}"))
    }
}

pub(crate) fn method(method: &str) -> Result<(), String> {
    if is_token(method) {
        Ok(())
    } else {
        Err(format!("invalid method {method:?}"))
    }
}

/// A header value as agents send it: visible ASCII, spaces and tabs. Agents write values
/// as they are, so a non-ASCII character would need an encoding nobody agreed on.
pub(crate) fn header_value(value: &str) -> Result<(), String> {
    if value.bytes().any(|b| b != b'\t' && b.is_ascii_control()) {
        Err("header value contains a control character".to_string())
    } else if !value.is_ascii() {
        Err("header value contains a non-ASCII character".to_string())
    } else {
        Ok(())
    }
}

/// A path sent in a request line or a Location header: starts with '/', without a query or
/// fragment, in the characters a URI allows (others percent-encoded).
pub(crate) fn uri_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must start with '/'".to_string());
    }
    match path.parse::<http::uri::PathAndQuery>() {
        Ok(p) if path.is_ascii() && p.as_str() == path && p.query().is_none() => Ok(()),
        _ => Err(format!(
            "invalid path {path:?}: percent-encode spaces and non-ASCII characters, \
             and leave out '?' and '#'"
        )),
    }
}

/// A DNS host name or an IP address (IPv6 in brackets or bare).
pub(crate) fn is_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    if let Some(ip) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return ip.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

pub(crate) fn host(host: &str) -> Result<(), String> {
    if is_host(host) {
        Ok(())
    } else {
        Err(format!("invalid host name {host:?}"))
    }
}

/// A name TLS can send as SNI and verify a certificate against: a DNS name or an IP address.
pub(crate) fn server_name(name: &str) -> Result<(), String> {
    match rustls_pki_types::ServerName::try_from(name) {
        Ok(_) if is_host(name) => Ok(()),
        _ => Err(format!(
            "invalid server name {name:?}: expected a DNS name or an IP address"
        )),
    }
}

/// An exact host name or a "*.suffix" wildcard (and "*" when `allow_any`).
pub(crate) fn host_pattern(pattern: &str, allow_any: bool) -> Result<(), String> {
    let bare = pattern.strip_prefix("*.").unwrap_or(pattern);
    if (allow_any && pattern == "*") || is_host(bare) {
        Ok(())
    } else {
        let any = if allow_any { ", \"*\"" } else { "" };
        Err(format!(
            "invalid domain {pattern:?}: use a host name, \"*.suffix\"{any} (without a port)"
        ))
    }
}

/// A CIDR ("10.0.0.0/8") or a single address.
pub(crate) fn cidr(s: &str) -> Result<(), String> {
    if s.parse::<ipnet::IpNet>().is_ok() || s.parse::<std::net::IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(format!("invalid CIDR {s:?}"))
    }
}

/// A media type "type/subtype", the subtype "*" when `allow_wildcard`.
pub(crate) fn media_type(s: &str, allow_wildcard: bool) -> Result<(), String> {
    let valid = s.split_once('/').is_some_and(|(t, sub)| {
        is_token(t) && (is_token(sub) && sub != "*" || allow_wildcard && sub == "*")
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid media type {s:?}: expected \"type/subtype\""
        ))
    }
}

/// One of `allowed`.
pub(crate) fn one_of(value: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "unknown value {value:?}; expected one of: {}",
            allowed.join(", ")
        ))
    }
}

/// An enum field holds a value this build knows.
pub(crate) fn known_enum<E: TryFrom<i32>>(e: &mut Errors, field: &str, value: i32) {
    if E::try_from(value).is_err() {
        e.add(field, format!("unknown enum value {value}"));
    }
}

/// Headers that frame a message or describe one hop. The agent writes them for each hop from
/// the message itself (the body's length and coding, the connection's persistence, the
/// upstream's authority), so a rule that set or removed one would cut bodies short or hang
/// connections: routes and policies cannot write them.
pub(crate) const FRAMING: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// A header name a route or policy may write (add, set or remove): a valid name that is not
/// one of [`FRAMING`].
pub(crate) fn written_header(name: &str) -> Result<(), String> {
    header_name(name)?;
    if FRAMING.iter().any(|f| f.eq_ignore_ascii_case(name)) {
        Err(format!(
            "{name:?} is a framing or hop-by-hop header: the agent writes it for each hop \
             from the message itself, so rules cannot set, add or remove it"
        ))
    } else {
        Ok(())
    }
}

/// Header names and values of a transform: names that may be written ([`written_header`]),
/// values agents can send.
pub(crate) fn header_transform(e: &mut Errors, at: &str, t: Option<&HeaderTransform>) {
    let Some(t) = t else { return };
    for (list, values) in [("add", &t.add), ("set", &t.set)] {
        for (i, h) in values.iter().enumerate() {
            e.check(format!("{at}.{list}[{i}].name"), written_header(&h.name));
            e.check(format!("{at}.{list}[{i}].value"), header_value(&h.value));
        }
    }
    for (i, name) in t.remove.iter().enumerate() {
        e.check(format!("{at}.remove[{i}]"), written_header(name));
    }
}

/// A referenced name in a list or required field is not empty.
pub(crate) fn required(value: &str, what: &str) -> Result<(), String> {
    if value.is_empty() {
        Err(format!("{what} is required"))
    } else {
        Ok(())
    }
}

/// Records that `owner[index]` uses `value` (case-insensitively) and reports a value that is
/// used twice, naming the first user.
pub(crate) fn unique(
    e: &mut Errors,
    seen: &mut HashMap<String, usize>,
    (owner, index): (&str, usize),
    (field, what, value): (&str, &str, &str),
) {
    match seen.insert(value.to_ascii_lowercase(), index) {
        Some(first) if first != index => e.add(
            field,
            format!("{what} {value:?} is also used by {owner}[{first}]"),
        ),
        Some(_) => e.add(field, format!("{what} {value:?} is listed twice")),
        None => {}
    }
}
