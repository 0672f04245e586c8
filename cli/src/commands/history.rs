//! `portico history`: config changes, newest first.

use portico_api::pb::{GetChangeRequest, HistoryEntry, HistoryRequest};
use serde::Serialize;

use crate::commands::Context;
use crate::error::CliResult;
use crate::output::{self, Table};

/// `portico history [--limit N] [--before REV]`, or `portico history --diff REV`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// At most this many entries (at most 1000).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Only entries older than this revision (for paging).
    #[arg(long, value_name = "REV")]
    pub before: Option<i64>,
    /// Show what the change that made REV changed instead, as a unified diff of the
    /// resources' YAML (Secrets redacted, as history keeps them).
    #[arg(long, value_name = "REV", conflicts_with_all = ["limit", "before"])]
    pub diff: Option<i64>,
}

/// One history entry. JSON fields are stable.
#[derive(Debug, Serialize)]
pub struct Entry {
    /// The revision the change created.
    pub revision: i64,
    /// When, RFC 3339 UTC.
    pub time: String,
    /// Who.
    pub author: String,
    /// Why.
    pub message: String,
    /// Resources created.
    pub created: u32,
    /// Resources updated.
    pub updated: u32,
    /// Resources deleted.
    pub deleted: u32,
    /// The revision restored, when the change was a rollback.
    pub rollback_of: Option<i64>,
    /// The change's before and after were pruned (older than the control plane's
    /// `--history-retention`): it can no longer be rolled back through.
    pub pruned: bool,
    /// The canary selector, when the change was rolled out as a canary (`apply --canary`).
    pub canary: Option<String>,
    /// The change's canary rollout was aborted (the next change restored the config before it).
    pub aborted: bool,
    /// The revision whose canary rollout this change promoted to every agent.
    pub promotion_of: Option<i64>,
}

/// The whole output.
#[derive(Debug, Serialize)]
pub struct History {
    /// Newest first.
    pub entries: Vec<Entry>,
    /// Pass as `--before` for the next page; null when there is none.
    pub next_before_revision: Option<i64>,
}

impl Entry {
    fn from_pb(e: &HistoryEntry) -> Entry {
        Entry {
            revision: e.revision,
            time: output::rfc3339(e.time.as_ref()),
            author: e.author.clone(),
            message: e.message.clone(),
            created: e.created,
            updated: e.updated,
            deleted: e.deleted,
            rollback_of: (e.rollback_of != 0).then_some(e.rollback_of),
            pruned: e.pruned,
            canary: (!e.canary.is_empty()).then(|| e.canary.clone()),
            aborted: e.aborted,
            promotion_of: (e.promotion_of != 0).then_some(e.promotion_of),
        }
    }

    /// The MESSAGE column: what kind of change it was (a rollback, a canary rollout and
    /// whether it was aborted, a promotion), then the message after a colon; `(pruned)` first
    /// for a pruned record.
    fn message_cell(&self) -> String {
        let mut tags = Vec::new();
        if let Some(old) = self.rollback_of {
            tags.push(format!("rollback to {old}"));
        }
        if let Some(selector) = &self.canary {
            tags.push(format!("canary {selector}"));
        }
        if self.aborted {
            tags.push("aborted".to_string());
        }
        if let Some(revision) = self.promotion_of {
            tags.push(format!("promotes {revision}"));
        }
        let tags = tags.join(", ");
        let cell = match (tags.is_empty(), self.message.is_empty()) {
            (true, _) => self.message.clone(),
            (false, true) => tags,
            (false, false) => format!("{tags}: {}", self.message),
        };
        if self.pruned {
            format!("(pruned) {cell}")
        } else {
            cell
        }
    }
}

/// One change with its diff (`--diff`). JSON fields are stable.
#[derive(Debug, Serialize)]
pub struct Change {
    /// The change, as `history` lists it.
    #[serde(flatten)]
    pub entry: Entry,
    /// The unified diff.
    pub diff: String,
}

/// Runs `history`.
pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let mut admin = ctx.connect().await?;
    if let Some(revision) = args.diff {
        let change = admin
            .get_change(GetChangeRequest { revision })
            .await
            .map_err(|s| ctx.status(s))?
            .into_inner();
        let change = Change {
            entry: Entry::from_pb(&change.entry.unwrap_or_default()),
            diff: change.diff,
        };
        return output::print(ctx.format, &change, || {
            let e = &change.entry;
            let head = format!(
                "revision {}  {}  {}  +{} ~{} -{}  {}\n",
                e.revision,
                e.time,
                e.author,
                e.created,
                e.updated,
                e.deleted,
                e.message_cell()
            );
            let body = if e.pruned {
                "(pruned: the change's before and after are no longer kept)\n".to_string()
            } else {
                output::escaped(&change.diff, true)
            };
            format!(
                "{}{}",
                output::escaped(&head, true),
                crate::commands::diff::colorize(&body, output::Style::stdout())
            )
        });
    }
    let resp = admin
        .history(HistoryRequest {
            limit: args.limit,
            before_revision: args.before.unwrap_or(0),
        })
        .await
        .map_err(|s| ctx.status(s))?
        .into_inner();
    let history = History {
        entries: resp.entries.iter().map(Entry::from_pb).collect(),
        next_before_revision: (resp.next_before_revision != 0).then_some(resp.next_before_revision),
    };
    output::print(ctx.format, &history, || table(&history))
}

fn table(history: &History) -> String {
    let mut t = Table::new(["REVISION", "TIME", "AUTHOR", "CHANGES", "MESSAGE"]);
    for e in &history.entries {
        t.row([
            e.revision.to_string(),
            e.time.clone(),
            e.author.clone(),
            format!("+{} ~{} -{}", e.created, e.updated, e.deleted),
            e.message_cell(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(revision: i64, message: &str) -> HistoryEntry {
        HistoryEntry {
            revision,
            author: "ci".into(),
            message: message.into(),
            updated: 1,
            ..Default::default()
        }
    }

    #[test]
    fn message_column_marks_rollbacks_canaries_aborts_and_promotions() {
        let cases = [
            (entry(5, "more workers"), "more workers"),
            (
                HistoryEntry {
                    rollback_of: 3,
                    ..entry(6, "")
                },
                "rollback to 3",
            ),
            (
                HistoryEntry {
                    canary: "slot=1".into(),
                    ..entry(7, "new timeout")
                },
                "canary slot=1: new timeout",
            ),
            (
                HistoryEntry {
                    canary: "5%".into(),
                    aborted: true,
                    ..entry(8, "retries")
                },
                "canary 5%, aborted: retries",
            ),
            (
                HistoryEntry {
                    promotion_of: 7,
                    ..entry(9, "")
                },
                "promotes 7",
            ),
            (
                HistoryEntry {
                    pruned: true,
                    ..entry(2, "old")
                },
                "(pruned) old",
            ),
            (
                HistoryEntry {
                    pruned: true,
                    rollback_of: 1,
                    ..entry(3, "undo")
                },
                "(pruned) rollback to 1: undo",
            ),
        ];
        for (pb, want) in cases {
            assert_eq!(Entry::from_pb(&pb).message_cell(), want, "{pb:?}");
        }
    }

    #[test]
    fn json_has_the_rollout_fields() {
        let pb = HistoryEntry {
            canary: "slot=1".into(),
            aborted: true,
            ..entry(8, "retries")
        };
        let v = serde_json::to_value(Entry::from_pb(&pb)).unwrap();
        assert_eq!(v["canary"], "slot=1");
        assert_eq!(v["aborted"], true);
        assert_eq!(v["promotion_of"], serde_json::Value::Null);
        let v = serde_json::to_value(Entry::from_pb(&HistoryEntry {
            promotion_of: 8,
            ..entry(9, "")
        }))
        .unwrap();
        assert_eq!(v["canary"], serde_json::Value::Null);
        assert_eq!(v["aborted"], false);
        assert_eq!(v["promotion_of"], 8);
    }
}
