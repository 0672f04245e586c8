//! `portico rollback REV`: restore the config of an earlier revision as a new revision.

use portico_api::pb::RollbackRequest;

use crate::changes::{Change, Outcome};
use crate::commands::Context;
use crate::error::CliResult;
use crate::output::{self, Style};

/// `portico rollback REV [-m MSG] [--expected-revision REV]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The revision whose config is restored (see `portico history`).
    pub revision: i64,
    /// Why; kept in history.
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Fail with a conflict (exit 3) unless the config is at this revision.
    #[arg(long, value_name = "REV")]
    pub expected_revision: Option<i64>,
}

/// Runs `rollback`.
pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let mut admin = ctx.connect().await?;
    let req = RollbackRequest {
        revision: args.revision,
        message: args.message.unwrap_or_default(),
        expected_revision: args.expected_revision,
    };
    let resp = match admin.rollback(req).await {
        Ok(r) => r.into_inner(),
        Err(status) => return Err(ctx.write_failed(status, "rollback")),
    };
    let changes: Vec<Change> = resp.changes.iter().map(Change::from_pb).collect();
    let outcome = Outcome {
        revision: resp.revision,
        noop: changes.iter().all(|c| c.change == "unchanged"),
        rollback_of: Some(args.revision),
        changes,
        ..Default::default()
    };
    output::print(ctx.format, &outcome, || outcome.table(Style::stdout()))
}
