//! Rendering command output: aligned tables for people, YAML and JSON for scripts, and the
//! terminal styling (colors, progress) used only when stdout is a terminal.
//!
//! JSON and YAML carry the same fields; both are rendered from the serializable structs the
//! commands define, so the field names documented in `cli/README.md` are the struct fields.

use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portico_api::Resource;
use portico_api::file;
use serde::Serialize;

use crate::error::{CliError, CliResult};

/// The output format chosen with `-o`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

/// Prints `data` as JSON or YAML, or calls `table` for the human form.
pub fn print<T: Serialize>(format: Format, data: &T, table: impl FnOnce() -> String) -> CliResult {
    let text = render(format, data, table)?;
    print!("{text}");
    Ok(())
}

/// What [`print()`] prints.
pub fn render<T: Serialize>(
    format: Format,
    data: &T,
    table: impl FnOnce() -> String,
) -> CliResult<String> {
    let mut text = match format {
        Format::Table => table(),
        Format::Json => serde_json::to_string_pretty(data)
            .map_err(|e| CliError::Other(anyhow::anyhow!("rendering JSON: {e}")))?,
        Format::Yaml => serde_saphyr::to_string(data)
            .map_err(|e| CliError::Other(anyhow::anyhow!("rendering YAML: {e}")))?,
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// Resources in the file format (YAML documents or a JSON array), which `apply` reads back.
pub fn resources(format: Format, resources: &[Resource]) -> CliResult<String> {
    let text = match format {
        Format::Json => file::to_json(resources),
        Format::Yaml | Format::Table => file::to_yaml(resources),
    };
    text.map_err(|e| CliError::Other(e.into()))
}

/// `text` safe to show on a terminal: control characters (escape sequences, carriage returns,
/// newlines) and the bidirectional overrides that reorder what a terminal shows are written as
/// Rust escapes (`\u{1b}`), so text from the network (NACK reasons, names, messages) cannot
/// move the cursor, recolor the terminal or hide what follows. With `keep_newlines`, `\n` stays.
pub fn escaped(text: &str, keep_newlines: bool) -> String {
    let unsafe_char = |c: char| {
        (c.is_control() && !(keep_newlines && c == '\n'))
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Rows under a header, each column as wide as its widest cell, separated by three spaces.
/// Cells are [`escaped`].
#[derive(Clone, Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut row: Vec<String> = cells
            .into_iter()
            .map(|c| escaped(&c.into(), false))
            .collect();
        row.resize(self.header.len(), String::new());
        self.rows.push(row);
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rendered table, one line per row, without trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("   ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Terminal colors, on only when the stream is a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    enabled: bool,
}

impl Style {
    /// Colors for stdout: on when it is a terminal and `NO_COLOR` is unset.
    pub fn stdout() -> Style {
        Style {
            enabled: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// No colors.
    pub fn plain() -> Style {
        Style { enabled: false }
    }

    /// `text` in green.
    pub fn green(self, text: &str) -> String {
        self.paint("32", text)
    }

    /// `text` in red.
    pub fn red(self, text: &str) -> String {
        self.paint("31", text)
    }

    /// `text` in yellow.
    pub fn yellow(self, text: &str) -> String {
        self.paint("33", text)
    }

    /// `text` in cyan.
    pub fn cyan(self, text: &str) -> String {
        self.paint("36", text)
    }

    /// `text` in bold.
    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// A protobuf timestamp as RFC 3339 (UTC, seconds), or "" when unset.
pub fn rfc3339(ts: Option<&pbjson_types::Timestamp>) -> String {
    system_time(ts)
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default()
}

/// How long ago a protobuf timestamp was, e.g. "3s ago", or "never" when unset.
pub fn ago(ts: Option<&pbjson_types::Timestamp>, now: SystemTime) -> String {
    let Some(t) = system_time(ts) else {
        return "never".into();
    };
    let secs = now.duration_since(t).unwrap_or_default().as_secs();
    let text = match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    };
    format!("{text} ago")
}

fn system_time(ts: Option<&pbjson_types::Timestamp>) -> Option<SystemTime> {
    let ts = ts?;
    let secs = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// A one-line progress bar, e.g. `[#########-----------]  9/20 agents applied revision 7`.
pub fn progress_bar(done: u32, total: u32, width: usize, label: &str) -> String {
    let filled = if total == 0 {
        width
    } else {
        (width as u64 * u64::from(done.min(total)) / u64::from(total)) as usize
    };
    format!(
        "[{}{}] {done}/{total} {label}",
        "#".repeat(filled),
        "-".repeat(width - filled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row {
        name: String,
        revision: i64,
    }

    fn sample() -> Vec<Row> {
        vec![
            Row {
                name: "web".into(),
                revision: 3,
            },
            Row {
                name: "api-gateway".into(),
                revision: 12,
            },
        ]
    }

    fn sample_table() -> String {
        let mut t = Table::new(["NAME", "REVISION"]);
        for r in sample() {
            t.row([r.name, r.revision.to_string()]);
        }
        t.render()
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        assert_eq!(
            sample_table(),
            "NAME          REVISION\n\
             web           3\n\
             api-gateway   12\n"
        );
    }

    #[test]
    fn short_rows_are_padded_with_blank_cells() {
        let mut t = Table::new(["A", "B", "C"]);
        t.row(["x"]);
        assert_eq!(t.render(), "A   B   C\nx\n");
    }

    #[test]
    fn json_and_yaml_carry_the_struct_fields() {
        let json = render(Format::Json, &sample(), || unreachable!()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value[1]["name"], "api-gateway");
        assert_eq!(value[1]["revision"], 12);

        let yaml = render(Format::Yaml, &sample(), || unreachable!()).unwrap();
        assert!(yaml.contains("name: api-gateway"), "{yaml}");
        assert!(yaml.contains("revision: 12"), "{yaml}");
    }

    #[test]
    fn table_format_uses_the_table() {
        let text = render(Format::Table, &sample(), sample_table).unwrap();
        assert!(text.starts_with("NAME"));
    }

    #[test]
    fn plain_style_adds_no_escape_codes() {
        assert_eq!(Style::plain().red("x"), "x");
        assert_eq!(Style { enabled: true }.red("x"), "\x1b[31mx\x1b[0m");
    }

    #[test]
    fn timestamps_render_as_rfc3339_and_relative() {
        let ts = pbjson_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(rfc3339(Some(&ts)), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(None), "");
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_125);
        assert_eq!(ago(Some(&ts), now), "2m ago");
        assert_eq!(ago(None, now), "never");
    }

    #[test]
    fn progress_bar_fills_in_proportion() {
        assert_eq!(progress_bar(1, 4, 8, "applied"), "[##------] 1/4 applied");
        assert_eq!(progress_bar(0, 0, 4, "applied"), "[####] 0/0 applied");
    }
}
