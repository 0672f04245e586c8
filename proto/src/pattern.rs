//! Regular expressions as every part of Portico compiles them: anchored to the whole value,
//! within one set of limits, so that validation accepts exactly what agents compile, and no
//! config makes an agent spend unbounded memory or time on one.
//!
//! The `regex` crate matches in time linear in the input (it never backtracks), so bounding the
//! compiled program bounds both compile time and matching cost:
//! - a pattern is at most [`MAX_LEN`] bytes (4096);
//! - its compiled program at most [`MAX_SIZE`] bytes (1 MiB), and groups nest at most
//!   [`MAX_NEST`] deep;
//! - the regex paths of one virtual host, which agents match as one set, compile within
//!   [`MAX_SET_SIZE`] bytes (10 MiB) together.

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

/// Longest accepted pattern, in bytes.
pub const MAX_LEN: usize = 4096;
/// Largest compiled program of one pattern, in bytes.
pub const MAX_SIZE: usize = 1 << 20;
/// Largest compiled program of a set of patterns, in bytes.
pub const MAX_SET_SIZE: usize = 10 << 20;
/// Deepest nesting of groups and repetitions.
pub const MAX_NEST: u32 = 64;

/// Why a pattern does not compile.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// The pattern is longer than [`MAX_LEN`].
    #[error("regex is {0} bytes long; the limit is {MAX_LEN}")]
    TooLong(usize),
    /// The pattern is invalid, or compiles past a limit.
    #[error("invalid regex: {0}")]
    Invalid(#[from] regex::Error),
}

fn check_len(pattern: &str) -> Result<(), PatternError> {
    if pattern.len() > MAX_LEN {
        Err(PatternError::TooLong(pattern.len()))
    } else {
        Ok(())
    }
}

/// `pattern` matching a whole value (`^(?:pattern)$`).
pub fn anchored(pattern: &str) -> Result<Regex, PatternError> {
    check_len(pattern)?;
    Ok(RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(MAX_SIZE)
        .nest_limit(MAX_NEST)
        .build()?)
}

/// `patterns` as one set, each matching a whole value.
pub fn anchored_set<'a>(
    patterns: impl IntoIterator<Item = &'a str>,
) -> Result<RegexSet, PatternError> {
    let mut anchored = Vec::new();
    for p in patterns {
        check_len(p)?;
        anchored.push(format!("^(?:{p})$"));
    }
    Ok(RegexSetBuilder::new(anchored)
        .size_limit(MAX_SET_SIZE)
        .nest_limit(MAX_NEST)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_give_clear_errors() {
        assert!(anchored("/a/[0-9]+").is_ok_and(|r| r.is_match("/a/12") && !r.is_match("x/a/1")));
        let long = "a".repeat(MAX_LEN + 1);
        assert_eq!(
            anchored(&long).map(|_| ()).map_err(|e| e.to_string()),
            Err(format!(
                "regex is {} bytes long; the limit is 4096",
                MAX_LEN + 1
            ))
        );
        let huge = anchored(r"\w{1000}\w{1000}")
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(
            huge.as_ref().is_err_and(|e| e.contains("size limit")),
            "{huge:?}"
        );
        let nested = format!("{}a{}", "(".repeat(100), ")".repeat(100));
        let deep = anchored(&nested).map(|_| ()).map_err(|e| e.to_string());
        assert!(deep.as_ref().is_err_and(|e| e.contains("nest")), "{deep:?}");
        let set = anchored_set(["/a", "/b/.*"]);
        assert!(set.is_ok_and(|s| s.matches("/b/c").matched(1)));
    }
}
