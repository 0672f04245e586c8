//! Showing an error with its causes, for logs, NACK texts and terminal messages.

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources: `connect to a:80: connection refused`.
/// A source whose text the line already holds is left out (wrappers such as tonic's repeat
/// their cause in their own message).
pub struct Chain<'a>(pub &'a dyn Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(s) = source {
            let part = s.to_string();
            if !text.contains(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            source = s.source();
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connect to a:80")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn shows_every_source_in_order() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(Chain(&e).to_string(), "connect to a:80: connection refused");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("transport error: {0}")]
    struct Repeating(#[source] std::io::Error);

    #[test]
    fn leaves_out_a_source_the_line_already_holds() {
        let e = Repeating(std::io::Error::other("connection refused"));
        assert_eq!(Chain(&e).to_string(), "transport error: connection refused");
    }
}
