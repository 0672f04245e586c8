//! `portico apply`: create, update (and with `--prune` delete) resources from files in one
//! revision, printing what changed.

use portico_api::Kind;
use portico_api::limits::{self, MAX_CHANGE_BYTES, MAX_CHANGE_RESOURCES, MAX_MESSAGE_LEN};
use portico_api::pb::{ApplyRequest, Resource, ResourceKey};
use prost::Message;

use crate::changes::{Change, Outcome};
use crate::commands::Context;
use crate::error::{CliError, CliResult};
use crate::files::{self, FileArgs, Files};
use crate::output::{self, Format, Style};

/// `portico apply -f FILE|DIR [-f ...] [--dry-run] [-m MSG] [--prune]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub files: FileArgs,
    /// Validate and show the changes; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why; kept in history.
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Also delete stored resources of the kinds in the files that the files do not contain.
    #[arg(long)]
    pub prune: bool,
    /// Fail with a conflict (exit 3) unless the config is at this revision.
    #[arg(long, value_name = "REV")]
    pub expected_revision: Option<i64>,
}

/// Runs `apply`.
pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let files = match Files::load(&args.files.files)? {
        Ok(files) => files,
        Err(errors) => {
            return fail_validation(
                ctx.format,
                Outcome {
                    errors,
                    ..Default::default()
                },
            );
        }
    };
    let mut admin = ctx.connect().await?;
    let mut expected_revision = args.expected_revision;
    let deletions = if args.prune {
        let (deletions, revision) = prune_list(ctx, &mut admin, &files).await?;
        // Prune decides from a list read at one revision; writing on top of a newer config
        // could delete something created meanwhile, so the write is conditional on it.
        expected_revision.get_or_insert(revision);
        deletions
    } else {
        Vec::new()
    };
    let req = ApplyRequest {
        resources: files.resources(),
        deletions,
        expected_revision,
        dry_run: args.dry_run,
        message: args.message.unwrap_or_default(),
    };
    check_size(&req)?;
    // Validation errors come back in the response, with their resources and field paths,
    // whether this is a dry run or not.
    let resp = match admin.apply(req).await {
        Ok(r) => r.into_inner(),
        Err(status) => return Err(ctx.write_failed(status, "apply")),
    };
    let outcome = Outcome {
        revision: resp.revision,
        noop: resp.noop,
        dry_run: args.dry_run,
        rollback_of: None,
        changes: resp.changes.iter().map(Change::from_pb).collect(),
        errors: resp.errors.iter().map(|e| files.locate(e)).collect(),
    };
    if !outcome.errors.is_empty() {
        return fail_validation(ctx.format, outcome);
    }
    output::print(ctx.format, &outcome, || outcome.table(Style::stdout()))
}

/// Refuses an apply larger than the control plane takes (`portico_api::limits`) before sending
/// it: the control plane would cut the request off before reading it.
fn check_size(req: &ApplyRequest) -> CliResult {
    let named = req.resources.len() + req.deletions.len();
    let bytes: usize = req.resources.iter().map(Message::encoded_len).sum();
    let problem = if named > MAX_CHANGE_RESOURCES {
        format!(
            "the files name {named} resources; one apply may name at most \
             {MAX_CHANGE_RESOURCES}: apply them in several parts"
        )
    } else if bytes > MAX_CHANGE_BYTES {
        format!(
            "the files hold {} of resources; one apply may hold at most {}: apply them in \
             several parts",
            limits::bytes(bytes),
            limits::bytes(MAX_CHANGE_BYTES)
        )
    } else if req.message.len() > MAX_MESSAGE_LEN {
        format!(
            "the message is {} bytes long; the limit is {MAX_MESSAGE_LEN}",
            req.message.len()
        )
    } else {
        return Ok(());
    };
    Err(CliError::Validation(vec![problem]))
}

/// The stored resources of the kinds in `files` that `files` lacks, and the revision read at.
async fn prune_list(
    ctx: &Context,
    admin: &mut crate::client::Admin,
    files: &Files,
) -> CliResult<(Vec<ResourceKey>, i64)> {
    let list = ctx.list_all(admin).await?;
    let stored = list.resources.iter().filter_map(|s| s.resource.as_ref());
    Ok((absent_from(files, stored), list.revision))
}

/// What `--prune` deletes: the `stored` resources of the kinds in `files` that `files` lacks.
pub fn absent_from<'a>(
    files: &Files,
    stored: impl Iterator<Item = &'a Resource>,
) -> Vec<ResourceKey> {
    let kinds: Vec<Kind> = files.loaded().iter().map(|l| l.resource.kind()).collect();
    stored
        .filter(|r| kinds.contains(&r.kind()) && !files.contains(r.kind(), &r.name))
        .map(|r| r.key())
        .collect()
}

/// Prints the errors (as data on stdout for `-o json|yaml`) and fails with exit code 4.
fn fail_validation(format: Format, outcome: Outcome) -> CliResult {
    if format != Format::Table {
        output::print(format, &outcome, String::new)?;
    }
    Err(files::validation_failed(&outcome.errors))
}
