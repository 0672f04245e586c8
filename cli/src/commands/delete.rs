//! `portico delete KIND NAME`: delete one resource (refused while something refers to it).

use portico_api::pb::{DeleteRequest, ResourceKey};

use crate::changes::{Change, Outcome};
use crate::commands::{Context, parse_kind};
use crate::error::CliResult;
use crate::output::{self, Style};

/// `portico delete KIND NAME [-m MSG]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kind.
    pub kind: String,
    /// The resource's name.
    pub name: String,
    /// Why; kept in history.
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Fail with a conflict (exit 3) unless the config is at this revision.
    #[arg(long, value_name = "REV")]
    pub expected_revision: Option<i64>,
}

/// Runs `delete`.
pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let kind = parse_kind(&args.kind)?;
    let mut admin = ctx.connect().await?;
    let req = DeleteRequest {
        key: Some(ResourceKey::new(kind, args.name.as_str())),
        expected_revision: args.expected_revision,
        message: args.message.unwrap_or_default(),
    };
    let resp = match admin.delete(req).await {
        Ok(r) => r.into_inner(),
        Err(status) => return Err(ctx.write_failed(status, "delete")),
    };
    let outcome = Outcome {
        revision: resp.revision,
        changes: vec![Change {
            kind: kind.display_name().into(),
            name: args.name,
            change: "deleted",
        }],
        ..Default::default()
    };
    output::print(ctx.format, &outcome, || outcome.table(Style::stdout()))
}
