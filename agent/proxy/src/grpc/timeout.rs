//! The `grpc-timeout` request header: how long the client waits for the call, as 1–8 digits
//! and a unit (H, M, S, m, u, n).

use std::time::Duration;

use http::HeaderMap;
use http::header::HeaderName;

/// The `grpc-timeout` header.
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The call's timeout, if the request states a valid one. An invalid value is ignored, as gRPC
/// servers ignore it.
pub fn of(headers: &HeaderMap) -> Option<Duration> {
    parse(headers.get(&GRPC_TIMEOUT)?.as_bytes())
}

/// A `grpc-timeout` value.
pub fn parse(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_by_unit() {
        let cases: [(&str, Option<Duration>); 10] = [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("123456789m", None),
            ("m", None),
            ("10x", None),
            ("-1S", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse(value.as_bytes()), want, "{value}");
        }
    }
}
