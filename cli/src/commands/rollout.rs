//! `portico rollout status`: how far a revision has rolled out, and with `--wait`, live
//! progress until every connected agent applied it (exit 0), one rejected it or the timeout
//! passed (exit 5). For a canary rollout (`apply --canary`) it shows the rollout instead, and
//! `--wait` follows it until it is promoted (exit 0) or aborted (exit 5); `rollout promote`
//! and `rollout abort` end it by hand.
//!
//! # Layout
//! - [`canary`]: the canary rollout view of `status`, and deciding when it applies.
//! - [`control`]: `promote` and `abort`.

pub mod canary;
pub mod control;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use portico_api::pb::{RolloutStatusRequest, RolloutStatusResponse};
use serde::Serialize;

use crate::client::Admin;
use crate::commands::Context;
use crate::error::{CliError, CliResult};
use crate::output::{self, Format};

pub use control::{EndArgs, abort, promote};

/// How often `--wait` asks the control plane.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How long `--wait` waits for a plain revision without `--timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// `portico rollout ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Agent counts for a revision, or the canary rollout; `--wait` follows it until done.
    Status(StatusArgs),
    /// Promote the active canary rollout to every agent now.
    Promote(EndArgs),
    /// Abort the active canary rollout: its canary agents get the previous config back.
    Abort(EndArgs),
}

/// `portico rollout status [REV] [--wait] [--timeout DUR]`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The revision; the current one, or the active canary rollout, when omitted.
    pub revision: Option<i64>,
    /// Wait until every connected agent applied the revision, one rejected it, or the timeout;
    /// for a canary rollout, until it is promoted or aborted.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits, e.g. "30s", "5m" [default: 5m; for a canary rollout, 5m more
    /// than its ACK timeout and bake have left].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

/// A rollout's state. JSON fields are stable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The revision.
    pub revision: i64,
    /// Connected agents that applied it (or a newer one).
    pub applied: u32,
    /// Connected agents that have not yet applied it.
    pub pending: u32,
    /// Agents that rejected it.
    pub nacked: u32,
    /// Registered agents without an open stream (not waited for).
    pub disconnected: u32,
    /// `complete`, `in-progress` or `failed`.
    pub state: &'static str,
    /// Each rejection.
    pub nacks: Vec<AgentNack>,
}

/// One agent's rejection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentNack {
    /// The agent.
    pub node_id: String,
    /// Its reason.
    pub error: String,
}

impl Status {
    /// From the API's form.
    pub fn from_pb(r: &RolloutStatusResponse) -> Status {
        let state = if r.nacked > 0 {
            "failed"
        } else if r.pending == 0 {
            "complete"
        } else {
            "in-progress"
        };
        Status {
            revision: r.revision,
            applied: r.applied,
            pending: r.pending,
            nacked: r.nacked,
            disconnected: r.disconnected,
            state,
            nacks: r
                .nacks
                .iter()
                .map(|n| AgentNack {
                    node_id: n.node_id.clone(),
                    error: n.error.clone(),
                })
                .collect(),
        }
    }

    /// Agents the rollout is waiting on or has heard from.
    pub fn total(&self) -> u32 {
        self.applied + self.pending + self.nacked
    }

    /// The one-line summary, e.g. "revision 7: 3/4 applied, 1 pending, 0 NACKed, 0 disconnected".
    pub fn line(&self) -> String {
        format!(
            "revision {}: {}/{} applied, {} pending, {} NACKed, {} disconnected",
            self.revision,
            self.applied,
            self.total(),
            self.pending,
            self.nacked,
            self.disconnected
        )
    }

    /// The human form: the summary, then one line per rejection.
    pub fn table(&self) -> String {
        let mut out = self.line();
        out.push('\n');
        for n in &self.nacks {
            out.push_str(&format!(
                "  NACK from {}: {}\n",
                output::escaped(&n.node_id, false),
                output::escaped(&n.error, false)
            ));
        }
        out
    }

    /// The failure this status is, if any.
    fn failure(&self) -> Option<CliError> {
        (self.nacked > 0).then(|| {
            let reasons: Vec<String> = self
                .nacks
                .iter()
                .map(|n| format!("{}: {}", n.node_id, n.error))
                .collect();
            CliError::Rollout(format!(
                "revision {} was rejected by {} agent(s): {}",
                self.revision,
                self.nacked,
                reasons.join("; ")
            ))
        })
    }
}

/// The agent counts of `revision` (0: the current one).
async fn fetch(ctx: &Context, admin: &mut Admin, revision: i64) -> CliResult<Status> {
    let resp = admin
        .rollout_status(RolloutStatusRequest { revision })
        .await
        .map_err(|s| ctx.status(s))?
        .into_inner();
    Ok(Status::from_pb(&resp))
}

/// Runs `rollout status`: the canary rollout when [`canary::canary_mode`] says so, else the
/// agent counts of the revision.
pub async fn status(ctx: &Context, args: StatusArgs) -> CliResult {
    let mut admin = ctx.connect().await?;
    // Revision 0 is how the API says "the current one", as an omitted REV does.
    let requested = args.revision.filter(|r| *r != 0);
    if let Some(rollout) = canary::get(ctx, &mut admin).await?
        && canary::canary_mode(requested, &rollout)
    {
        return canary::status(ctx, &mut admin, rollout, &args).await;
    }
    let mut revision = requested.unwrap_or(0);
    let mut status = fetch(ctx, &mut admin, revision).await?;
    if !args.wait {
        output::print(ctx.format, &status, || status.table())?;
        return status.failure().map_or(Ok(()), Err);
    }
    // Follow the revision first reported, even if a newer one is applied meanwhile.
    revision = status.revision;
    let timeout = args.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let deadline = Instant::now() + timeout;
    let mut progress = Progress::new(ctx.format);
    loop {
        progress.show(&status);
        if status.nacked > 0 || status.pending == 0 {
            break;
        }
        if Instant::now() >= deadline {
            progress.finish();
            output::print(ctx.format, &status, || status.table())?;
            return Err(CliError::Rollout(format!(
                "timed out after {} waiting for revision {}: {} of {} agents applied it",
                humantime::format_duration(timeout),
                revision,
                status.applied,
                status.total()
            )));
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())))
            .await;
        status = fetch(ctx, &mut admin, revision).await?;
    }
    progress.finish();
    output::print(ctx.format, &status, || status.table())?;
    status.failure().map_or(Ok(()), Err)
}

/// Live progress on stderr: a redrawn bar on a terminal, a line per change otherwise, nothing
/// for `-o json|yaml` (scripts read the final status).
struct Progress {
    tty: bool,
    quiet: bool,
    last: Option<Status>,
}

impl Progress {
    fn new(format: Format) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            quiet: format != Format::Table,
            last: None,
        }
    }

    fn show(&mut self, status: &Status) {
        if self.quiet || self.last.as_ref() == Some(status) {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            let label = format!("agents applied revision {}", status.revision);
            write!(
                err,
                "\r\x1b[2K{}",
                output::progress_bar(status.applied, status.total(), 30, &label)
            )
        } else {
            writeln!(err, "{}", status.line())
        };
        let _ = err.flush();
        self.last = Some(status.clone());
    }

    fn finish(&mut self) {
        if self.tty && !self.quiet && self.last.is_some() {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_api::pb::AgentNack as PbNack;

    fn resp(applied: u32, pending: u32, nacked: u32) -> RolloutStatusResponse {
        RolloutStatusResponse {
            revision: 7,
            applied,
            pending,
            nacked,
            disconnected: 1,
            nacks: (0..nacked)
                .map(|i| PbNack {
                    node_id: format!("edge-{i}"),
                    error: "certificate expired".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn state_is_failed_on_any_nack_and_complete_when_nothing_is_pending() {
        assert_eq!(Status::from_pb(&resp(3, 0, 0)).state, "complete");
        assert_eq!(Status::from_pb(&resp(2, 1, 0)).state, "in-progress");
        assert_eq!(Status::from_pb(&resp(2, 0, 1)).state, "failed");
    }

    #[test]
    fn a_nack_fails_with_the_rollout_exit_code_and_the_reason() {
        let err = Status::from_pb(&resp(2, 0, 1)).failure().unwrap();
        assert_eq!(err.exit_code(), crate::error::EXIT_ROLLOUT);
        assert!(
            err.to_string().contains("edge-0: certificate expired"),
            "{err}"
        );
        assert!(Status::from_pb(&resp(3, 0, 0)).failure().is_none());
    }

    #[test]
    fn table_lists_counts_then_rejections() {
        assert_eq!(
            Status::from_pb(&resp(2, 0, 1)).table(),
            "revision 7: 2/3 applied, 0 pending, 1 NACKed, 1 disconnected\n\
             \x20 NACK from edge-0: certificate expired\n"
        );
    }
}
