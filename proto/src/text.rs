//! Text that agents send (NACK reasons, health reasons, versions), made safe to keep, log and
//! print: bounded in size, and without control characters, so that a rogue agent can neither
//! fill the store nor move a terminal's cursor or forge log lines.

/// `s` cut to at most `max` bytes (on a character boundary) with every control character
/// (C0, DEL, C1: newlines and ANSI escapes included) and every bidirectional override written
/// as a Rust escape (`\n`, `\r`, `\u{1b}`), as the CLI writes text from the network, so
/// text escaped here shows the same there. The escapes count towards `max`.
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    let mut buf = [0u8; 4];
    for c in s.chars() {
        let escaped;
        let piece: &str = if unsafe_char(c) {
            escaped = c.escape_default().to_string();
            &escaped
        } else {
            c.encode_utf8(&mut buf)
        };
        if out.len() + piece.len() > max {
            break;
        }
        out.push_str(piece);
    }
    out
}

/// Whether `s` holds a control character or a bidirectional override.
pub fn has_control(s: &str) -> bool {
    s.chars().any(unsafe_char)
}

/// A control character, or a bidirectional override that reorders what a terminal shows.
fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_result_is_bounded() {
        for (input, max, want) in [
            ("bind: permission denied", 100, "bind: permission denied"),
            ("a\x1b[2Jb", 100, "a\\u{1b}[2Jb"),
            ("line\nforged", 100, "line\\nforged"),
            ("a\rb\u{202e}c", 100, "a\\rb\\u{202e}c"),
            ("\u{9b}x", 100, "\\u{9b}x"),
            ("abcdef", 3, "abc"),
            ("ééé", 5, "éé"),
            ("a\x1b", 4, "a"),
            ("", 0, ""),
        ] {
            assert_eq!(printable(input, max), want, "{input:?}");
            assert!(printable(input, max).len() <= max);
        }
        assert!(has_control("a\x07"));
        assert!(!has_control("plain é"));
    }
}
