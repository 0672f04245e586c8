//! `portico diff`: what `apply` would change, as a unified diff of the stored YAML against the
//! file YAML, per resource. Colored on a terminal, plain otherwise.

use std::collections::BTreeMap;

use portico_api::Kind;
use portico_api::pb::Resource;
use portico_api::reference::redacted;
use similar::TextDiff;

use crate::commands::Context;
use crate::commands::apply::absent_from;
use crate::error::{CliError, CliResult};
use crate::files::{FileArgs, load_or_fail};
use crate::output::{self, Format, Style};

/// `portico diff -f FILE|DIR [-f ...] [--prune]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub files: FileArgs,
    /// Also show the deletions `apply --prune` would make.
    #[arg(long)]
    pub prune: bool,
}

/// Runs `diff`.
pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let files = load_or_fail(&args.files.files)?;
    let mut admin = ctx.connect().await?;
    let list = ctx.list_all(&mut admin).await?;
    let stored: BTreeMap<(Kind, String), (Resource, i64)> = list
        .resources
        .into_iter()
        .filter_map(|s| {
            let r = s.resource?;
            Some(((r.kind(), r.name.clone()), (r, s.revision)))
        })
        .collect();

    let mut diffs = Vec::new();
    for l in files.loaded() {
        let key = l.resource.key();
        // Secrets come back redacted; comparing redacted forms avoids a false difference and
        // keeps secret material off the terminal.
        let new = redacted(&l.resource);
        let new_label = format!("{key} ({} document {})", l.path.display(), l.document);
        match stored.get(&(key.kind(), key.name.clone())) {
            Some((old, _)) if *old == new => {}
            Some((old, rev)) => diffs.push(unified(
                &yaml(old)?,
                &yaml(&new)?,
                &format!("{key} (stored, revision {rev})"),
                &new_label,
            )),
            None => diffs.push(unified("", &yaml(&new)?, "/dev/null", &new_label)),
        }
    }
    if args.prune {
        for key in absent_from(&files, stored.values().map(|(r, _)| r)) {
            if let Some((old, rev)) = stored.get(&(key.kind(), key.name.clone())) {
                diffs.push(unified(
                    &yaml(old)?,
                    "",
                    &format!("{key} (stored, revision {rev})"),
                    "/dev/null",
                ));
            }
        }
    }
    if diffs.is_empty() {
        eprintln!("no changes");
        return Ok(());
    }
    let style = Style::stdout();
    let mut out = String::new();
    for d in diffs {
        out.push_str(&colorize(&d, style));
    }
    use std::io::Write;
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| CliError::Other(e.into()))
}

fn yaml(resource: &Resource) -> CliResult<String> {
    output::resources(Format::Yaml, std::slice::from_ref(resource))
}

/// A unified diff with three lines of context.
pub fn unified(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_label, new_label)
        .to_string()
}

/// Colors a unified diff: headers bold, hunks cyan, removals red, additions green.
pub fn colorize(diff: &str, style: Style) -> String {
    let mut out = String::with_capacity(diff.len());
    for line in diff.split_inclusive('\n') {
        let (text, nl) = match line.strip_suffix('\n') {
            Some(t) => (t, "\n"),
            None => (line, ""),
        };
        let painted = if text.starts_with("---") || text.starts_with("+++") {
            style.bold(text)
        } else if text.starts_with("@@") {
            style.cyan(text)
        } else if text.starts_with('-') {
            style.red(text)
        } else if text.starts_with('+') {
            style.green(text)
        } else {
            text.to_string()
        };
        out.push_str(&painted);
        out.push_str(nl);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_diff_shows_changed_lines_with_labels() {
        let d = unified("a: 1\nb: 2\n", "a: 1\nb: 3\n", "old", "new");
        assert_eq!(
            d,
            "--- old\n+++ new\n@@ -1,2 +1,2 @@\n a: 1\n-b: 2\n+b: 3\n"
        );
    }

    #[test]
    fn plain_diffs_are_not_colored() {
        let d = unified("x\n", "y\n", "old", "new");
        assert_eq!(colorize(&d, Style::plain()), d);
    }
}
