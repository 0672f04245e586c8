//! Request path normalisation, applied before route matching and kept for forwarding, so that
//! the path a route matched is exactly the path the upstream receives: no route can be reached
//! through another route's prefix by dot segments, encoded dots or doubled slashes.

use std::borrow::Cow;

/// Why a request path is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with '/'.
    #[error("path must start with '/'")]
    NotAbsolute,
    /// A '%' is not followed by two hex digits.
    #[error("bad percent-encoding")]
    BadEscape,
}

/// The normalised form of `path` (without the query): percent-encoded unreserved characters
/// decoded and other escapes upper-cased, runs of '/' merged when `merge_slashes`, then dot
/// segments removed (RFC 3986 §5.2.4). Borrows when nothing changes.
pub fn normalise(path: &str, merge_slashes: bool) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let needs_work =
        path.contains('%') || path.contains("/.") || (merge_slashes && path.contains("//"));
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let merged = if merge_slashes {
        merge_runs_of_slashes(&decoded)
    } else {
        decoded
    };
    Ok(Cow::Owned(remove_dot_segments(&merged)))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let end = bytes[i..]
                .iter()
                .position(|b| *b == b'%')
                .map_or(bytes.len(), |p| i + p);
            out.push_str(&path[i..end]);
            i = end;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex_value),
            bytes.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(PathError::BadEscape);
        };
        let value = hi * 16 + lo;
        if is_unreserved(value) {
            out.push(char::from(value));
        } else {
            out.push('%');
            out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
            out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
        }
        i += 3;
    }
    Ok(out)
}

fn merge_runs_of_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    // The path starts with '/', so the first split part is empty and skipped.
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let last = parts.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, part) in parts.iter().enumerate() {
        match *part {
            "." => trailing_slash = i == last,
            ".." => {
                segments.pop();
                trailing_slash = i == last;
            }
            _ => {
                segments.push(part);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(input: &str, merge: bool, expected: Result<&str, PathError>) {
        let got = normalise(input, merge);
        assert_eq!(got.as_deref().map_err(|e| *e), expected, "{input:?}");
    }

    #[test]
    fn normalisation_table() {
        use PathError::*;
        let cases: &[(&str, bool, Result<&str, PathError>)] = &[
            ("/", false, Ok("/")),
            ("/a/b", false, Ok("/a/b")),
            ("/a/b/", false, Ok("/a/b/")),
            ("/a/./b", false, Ok("/a/b")),
            ("/a/../b", false, Ok("/b")),
            ("/a/b/..", false, Ok("/a/")),
            ("/a/b/.", false, Ok("/a/b/")),
            ("/..", false, Ok("/")),
            ("/../../etc/passwd", false, Ok("/etc/passwd")),
            ("/public/../admin", false, Ok("/admin")),
            ("/public/%2e%2e/admin", false, Ok("/admin")),
            ("/public/%2E%2E/admin", false, Ok("/admin")),
            ("/public/.%2e/admin", false, Ok("/admin")),
            ("/%61dmin", false, Ok("/admin")),
            ("/a%2fb", false, Ok("/a%2Fb")),
            ("/a%20b", false, Ok("/a%20b")),
            ("/a..b/c", false, Ok("/a..b/c")),
            ("/.hidden", false, Ok("/.hidden")),
            ("//a//b", false, Ok("//a//b")),
            ("//a//b", true, Ok("/a/b")),
            ("/public//../admin", true, Ok("/admin")),
            ("/public//../admin", false, Ok("/public/admin")),
            ("/a%zz", false, Err(BadEscape)),
            ("/a%2", false, Err(BadEscape)),
            ("a/b", false, Err(NotAbsolute)),
            ("*", false, Err(NotAbsolute)),
        ];
        for (input, merge, expected) in cases {
            check(input, *merge, *expected);
        }
    }

    mod properties {
        use super::*;
        use portico_test_support::fuzz::CASES;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(CASES))]

            /// Whatever the path, normalising it twice gives what normalising it once gave, with
            /// no dot segment left (and no run of '/' when merging), and the same input always
            /// gives the same answer.
            #[test]
            fn normalised_paths_are_stable_and_free_of_dot_segments(
                path in proptest::collection::vec(
                    proptest::sample::select(&[
                        "/", ".", "..", "%", "%2e", "%2E", "%2f", "%41", "%zz", "%4", "a", "é", "?", " ",
                    ][..]),
                    0..16,
                ).prop_map(|p| format!("/{}", p.concat())),
                merge in any::<bool>(),
            ) {
                let first = normalise(&path, merge);
                prop_assert_eq!(&first, &normalise(&path, merge));
                if let Ok(out) = first {
                    prop_assert!(out.starts_with('/'));
                    prop_assert!(!out.split('/').any(|s| s == "." || s == ".."), "{:?}", out);
                    prop_assert!(!merge || !out.contains("//"), "{:?}", out);
                    let again = normalise(&out, merge).map(Cow::into_owned);
                    prop_assert_eq!(again, Ok(out.to_string()));
                }
            }
        }
    }

    #[test]
    fn clean_paths_are_borrowed() {
        assert!(matches!(
            normalise("/api/v1/items", true),
            Ok(Cow::Borrowed(_))
        ));
    }
}
