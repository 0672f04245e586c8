//! Showing an error with its causes, for logs, NACK texts and terminal messages.

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources: `connect to a:80: connection refused`.
pub struct Chain<'a>(pub &'a dyn Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
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
}
