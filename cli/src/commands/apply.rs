//! `portico apply`: create, update (and with `--prune` delete) resources from files in one
//! revision, printing what changed. With `--canary` the revision goes to the selected agents
//! first and the control plane promotes or aborts it by its gates (`portico rollout status`).

use std::time::Duration;

use portico_api::Kind;
use portico_api::limits::{self, MAX_CHANGE_BYTES, MAX_CHANGE_RESOURCES, MAX_MESSAGE_LEN};
use portico_api::pb::{ApplyRequest, CanaryRequest, Resource, ResourceKey};
use prost::Message;

use crate::changes::{Change, Outcome};
use crate::commands::Context;
use crate::error::{CliError, CliResult};
use crate::files::{self, FileArgs, Files};
use crate::output::{self, Format, Style};

/// `portico apply -f FILE|DIR [-f ...] [--dry-run] [-m MSG] [--prune] [--expected-revision REV]
/// [--canary SELECTOR|PERCENT [--bake DUR] [--max-error-rate X] [--max-p99-increase F]
/// [--manual] [--ack-timeout DUR]] [--force]`.
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
    #[command(flatten)]
    pub rollout: CanaryArgs,
    /// Abort the active canary rollout first; without it an apply is refused while one is
    /// active.
    #[arg(long)]
    pub force: bool,
}

/// The canary options of `apply`. Every one but `--canary` needs `--canary` (clap refuses
/// them alone, exit 2); the control plane fills in what is left unset.
#[derive(Debug, Default, clap::Args)]
pub struct CanaryArgs {
    /// Roll the change out to these agents first: labels (`slot=1`, `tier=edge,region=eu`;
    /// the keys `region` and `zone` match the agent's) or a share of the fleet (`5%`).
    #[arg(long, value_name = "SELECTOR|PERCENT", value_parser = parse_selector)]
    pub canary: Option<String>,
    /// How long the canary agents' traffic is watched before promotion, e.g. "10m"
    /// [control plane default: 5m].
    #[arg(long, value_name = "DUR", requires = "canary", value_parser = parse_period)]
    pub bake: Option<Duration>,
    /// Abort when more than this share (0 to 1) of the canary agents' answers on the changed
    /// routes are 5xx [control plane default: 0.01].
    #[arg(long, value_name = "X", requires = "canary", value_parser = parse_error_rate)]
    pub max_error_rate: Option<f64>,
    /// Abort when the canary agents' p99 latency is more than this many times the other
    /// agents' (at least 1) [control plane default: 1.5].
    #[arg(long, value_name = "F", requires = "canary", value_parser = parse_p99_increase)]
    pub max_p99_increase: Option<f64>,
    /// Wait for `portico rollout promote` after the bake instead of promoting (a failing gate
    /// still aborts).
    #[arg(long, requires = "canary")]
    pub manual: bool,
    /// Abort unless every canary agent applied the change within this time
    /// [control plane default: 30s].
    #[arg(long, value_name = "DUR", requires = "canary", value_parser = parse_period)]
    pub ack_timeout: Option<Duration>,
}

impl CanaryArgs {
    /// What the request carries: nothing without `--canary`.
    pub fn request(&self) -> Option<CanaryRequest> {
        let selector = self.canary.clone()?;
        Some(CanaryRequest {
            selector,
            bake: self.bake.map(pb_duration),
            max_error_rate: self.max_error_rate,
            max_p99_increase: self.max_p99_increase,
            manual: self.manual,
            ack_timeout: self.ack_timeout.map(pb_duration),
        })
    }
}

/// A duration in the API's form (saturating at the largest whole-second count it holds).
fn pb_duration(d: Duration) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// `--canary`: any non-blank text; the control plane parses it and names what is wrong.
fn parse_selector(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("give labels (slot=1, tier=edge,region=eu) or a share (5%)".into());
    }
    Ok(s.to_string())
}

/// `--bake` and `--ack-timeout`: a duration above zero (the API reads 0 as "the default").
fn parse_period(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d.is_zero() {
        return Err("must be above zero (leave the option out for the default)".into());
    }
    Ok(d)
}

/// `--max-error-rate`: a share, 0 to 1.
fn parse_error_rate(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.0..=1.0).contains(&x) {
        return Err(format!(
            "{s} is not a share between 0 and 1 (0.01 is 1 % of the answers)"
        ));
    }
    Ok(x)
}

/// `--max-p99-increase`: a factor, at least 1.
fn parse_p99_increase(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(x.is_finite() && x >= 1.0) {
        return Err(format!(
            "{s} is not a factor of at least 1 (1.5 allows a p99 half again the other agents')"
        ));
    }
    Ok(x)
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
        canary: args.rollout.request(),
        force: args.force,
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
        canary: args.rollout.canary.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EXIT_USAGE;
    use clap::Parser;

    /// `portico ARGS…` parsed as `apply`, or clap's error.
    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let cli = crate::Cli::try_parse_from(["portico"].iter().chain(args))?;
        match cli.command {
            crate::Command::Apply(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn canary_flags_fill_the_request() {
        let args = parse(&[
            "apply",
            "-f",
            "routes.yaml",
            "--canary",
            "slot=1",
            "--bake",
            "5m",
            "--max-error-rate",
            "0.02",
            "--max-p99-increase",
            "2",
            "--manual",
            "--ack-timeout",
            "45s",
            "--force",
        ])
        .unwrap();
        assert!(args.force);
        let req = args.rollout.request().unwrap();
        assert_eq!(req.selector, "slot=1");
        assert_eq!(req.bake.map(|d| d.seconds), Some(300));
        assert_eq!(req.max_error_rate, Some(0.02));
        assert_eq!(req.max_p99_increase, Some(2.0));
        assert!(req.manual);
        assert_eq!(req.ack_timeout.map(|d| d.seconds), Some(45));

        // Unset options are left to the control plane's defaults.
        let args = parse(&["apply", "-f", "r.yaml", "--canary", "5%"]).unwrap();
        let req = args.rollout.request().unwrap();
        assert_eq!(req.selector, "5%");
        assert_eq!(
            (
                req.bake,
                req.max_error_rate,
                req.max_p99_increase,
                req.ack_timeout
            ),
            (None, None, None, None)
        );
        assert!(!req.manual && !args.force);
    }

    #[test]
    fn force_works_without_canary() {
        let args = parse(&["apply", "-f", "r.yaml", "--force"]).unwrap();
        assert!(args.force);
        assert!(args.rollout.request().is_none());
    }

    #[test]
    fn canary_options_without_canary_are_usage_errors() {
        for extra in [
            &["--bake", "5m"][..],
            &["--max-error-rate", "0.1"],
            &["--max-p99-increase", "2"],
            &["--manual"],
            &["--ack-timeout", "30s"],
        ] {
            let mut args = vec!["apply", "-f", "r.yaml"];
            args.extend_from_slice(extra);
            let err = parse(&args).unwrap_err();
            assert_eq!(err.exit_code(), i32::from(EXIT_USAGE), "{extra:?}: {err}");
            assert!(err.to_string().contains("--canary"), "{extra:?}: {err}");
        }
    }

    #[test]
    fn out_of_range_canary_options_are_usage_errors() {
        for (flag, value) in [
            ("--max-error-rate", "1.5"),
            ("--max-error-rate", "-0.1"),
            ("--max-error-rate", "NaN"),
            ("--max-error-rate", "lots"),
            ("--max-p99-increase", "0.9"),
            ("--max-p99-increase", "inf"),
            ("--bake", "five minutes"),
            ("--ack-timeout", "-1s"),
            ("--ack-timeout", "0s"),
            ("--bake", "0m"),
        ] {
            let args = ["apply", "-f", "r.yaml", "--canary", "slot=1", flag, value];
            let err = parse(&args).unwrap_err();
            assert_eq!(
                err.exit_code(),
                i32::from(EXIT_USAGE),
                "{flag} {value}: {err}"
            );
        }
        let err = parse(&["apply", "-f", "r.yaml", "--canary", " "]).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(EXIT_USAGE), "{err}");
        // The bounds themselves are accepted.
        for (flag, value) in [
            ("--max-error-rate", "0"),
            ("--max-error-rate", "1"),
            ("--max-p99-increase", "1"),
        ] {
            let args = ["apply", "-f", "r.yaml", "--canary", "slot=1", flag, value];
            assert!(parse(&args).is_ok(), "{flag} {value}");
        }
    }
}
