//! `portico history`: config changes, newest first.

use portico_api::pb::{HistoryEntry, HistoryRequest};
use serde::Serialize;

use crate::commands::Context;
use crate::error::CliResult;
use crate::output::{self, Table};

/// `portico history [--limit N] [--before REV]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// At most this many entries (at most 1000).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Only entries older than this revision (for paging).
    #[arg(long, value_name = "REV")]
    pub before: Option<i64>,
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
        }
    }
}

/// Runs `history`.
pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let mut admin = ctx.connect().await?;
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
        let mut message = e.message.clone();
        if let Some(old) = e.rollback_of {
            message = format!(
                "rollback to {old}{}{message}",
                if message.is_empty() { "" } else { ": " }
            );
        }
        if e.pruned {
            message = format!("(pruned) {message}");
        }
        t.row([
            e.revision.to_string(),
            e.time.clone(),
            e.author.clone(),
            format!("+{} ~{} -{}", e.created, e.updated, e.deleted),
            message,
        ]);
    }
    t.render()
}
