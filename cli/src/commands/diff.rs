//! `portico diff`: what `apply` would change, as a unified diff of the stored YAML against the
//! file YAML, per resource. Colored on a terminal, plain otherwise.
//!
//! Which resources change is the control plane's answer to a dry run of the same apply: only
//! it sees secret material, so a secret whose material changes is listed (its material never
//! shown), and one applied back with the `<redacted>` placeholder is unchanged because the
//! placeholder keeps what is stored. The dry run's validation errors end the diff with exit 4,
//! as `apply` would.

use std::collections::{BTreeMap, HashMap};

use portico_api::Kind;
use portico_api::diff::unified;
use portico_api::pb::{ApplyRequest, ChangeType, Resource, resource::Spec, secret};
use portico_api::reference::{REDACTED, redacted};

use crate::commands::Context;
use crate::commands::apply::absent_from;
use crate::error::{CliError, CliResult};
use crate::files::{FileArgs, load_or_fail, validation_failed};
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

    let deletions = if args.prune {
        absent_from(&files, stored.values().map(|(r, _)| r))
    } else {
        Vec::new()
    };
    let dry_run = ApplyRequest {
        resources: files.resources(),
        deletions,
        dry_run: true,
        ..Default::default()
    };
    let answer = admin
        .apply(dry_run)
        .await
        .map_err(|s| ctx.status(s))?
        .into_inner();
    let changes: HashMap<(Kind, String), ChangeType> = answer
        .changes
        .iter()
        .filter_map(|c| {
            let key = c.key.as_ref()?;
            Some(((key.kind(), key.name.clone()), c.change()))
        })
        .collect();

    let mut diffs = Vec::new();
    let mut notes = Vec::new();
    for l in files.loaded() {
        let key = l.resource.key();
        let name = output::escaped(&key.to_string(), false);
        // Secrets come back redacted; comparing redacted forms keeps secret material off the
        // terminal, and the dry run says whether the material changes.
        let new = redacted(&l.resource);
        let new_label = format!(
            "{name} ({} document {})",
            output::escaped(&l.path.display().to_string(), false),
            l.document
        );
        let change = changes.get(&(key.kind(), key.name.clone()));
        match stored.get(&(key.kind(), key.name.clone())) {
            _ if change == Some(&ChangeType::Unchanged) => {
                if let Some(field) = placeholder(&l.resource) {
                    notes.push(format!(
                        "{name}: unchanged: its {field} is the {REDACTED} placeholder, which \
                         keeps the stored value"
                    ));
                }
            }
            Some((old, _)) if *old == new => {
                if change == Some(&ChangeType::Updated) {
                    notes.push(format!("{name}: its secret material changes (not shown)"));
                }
            }
            Some((old, rev)) => diffs.push(unified(
                &yaml(old)?,
                &yaml(&new)?,
                &format!("{name} (stored, revision {rev})"),
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
    for note in &notes {
        eprintln!("{note}");
    }
    if diffs.is_empty() && notes.is_empty() {
        eprintln!("no changes");
    }
    let style = Style::stdout();
    let mut out = String::new();
    for d in diffs {
        out.push_str(&colorize(&d, style));
    }
    use std::io::Write;
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| CliError::Other(e.into()))?;
    if answer.errors.is_empty() {
        return Ok(());
    }
    let errors: Vec<_> = answer.errors.iter().map(|e| files.locate(e)).collect();
    Err(validation_failed(&errors))
}

/// The secret field of `resource` that holds the `<redacted>` placeholder, if any.
fn placeholder(resource: &Resource) -> Option<&'static str> {
    match &resource.spec {
        Some(Spec::Secret(s)) => match &s.secret {
            Some(secret::Secret::Tls(t)) if t.private_key == REDACTED => Some("private key"),
            Some(secret::Secret::Opaque(v)) if v == REDACTED => Some("opaque value"),
            _ => None,
        },
        _ => None,
    }
}

fn yaml(resource: &Resource) -> CliResult<String> {
    output::resources(Format::Yaml, std::slice::from_ref(resource))
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
    fn plain_diffs_are_not_colored() {
        let d = unified("x\n", "y\n", "old", "new");
        assert_eq!(colorize(&d, Style::plain()), d);
    }
}
