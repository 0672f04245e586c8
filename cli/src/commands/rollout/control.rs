//! `portico rollout promote` and `portico rollout abort`: end the active canary rollout now,
//! by promoting its revision to every agent or by restoring the previous config.

use portico_api::pb::{AbortRolloutRequest, PromoteRolloutRequest};
use serde::Serialize;

use super::canary::{self, Rollout};
use crate::commands::Context;
use crate::error::CliResult;
use crate::output;

/// `portico rollout promote [-m MSG]` and `portico rollout abort [-m MSG]`.
#[derive(Debug, clap::Args)]
pub struct EndArgs {
    /// Why; kept in history (and for an abort, as the rollout's reason).
    #[arg(short = 'm', long)]
    pub message: Option<String>,
}

/// What `promote` and `abort` print. JSON fields are stable (cli/README.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ended {
    /// The revision that promoted the rollout or restored the previous config.
    pub revision: i64,
    /// The revision the rollout rolled out; null when the control plane did not say.
    pub rollout_revision: Option<i64>,
    /// For an abort: the revision whose config was restored; null for a promotion or when the
    /// control plane did not say.
    pub restored_revision: Option<i64>,
    /// `promoted` or `aborted`.
    pub outcome: &'static str,
}

impl Ended {
    /// From the new `revision` and the rollout record read after it: the record's numbers
    /// count only when the record is the rollout that `revision` ended.
    fn new(outcome: &'static str, revision: i64, rollout: Option<&Rollout>) -> Ended {
        let rollout = rollout.filter(|r| r.ended_revision == Some(revision));
        Ended {
            revision,
            rollout_revision: rollout.map(|r| r.revision),
            restored_revision: if outcome == "aborted" {
                rollout.map(|r| r.previous)
            } else {
                None
            },
            outcome,
        }
    }

    /// The human form, e.g. "promoted revision 8 to every agent (revision 9)".
    pub fn line(&self) -> String {
        match (self.outcome, self.rollout_revision, self.restored_revision) {
            ("promoted", Some(rolled), _) => format!(
                "promoted revision {rolled} to every agent (revision {})",
                self.revision
            ),
            ("promoted", None, _) => format!(
                "promoted the canary rollout to every agent (revision {})",
                self.revision
            ),
            (_, Some(rolled), Some(restored)) => format!(
                "aborted the rollout of revision {rolled}; revision {} restores revision \
                 {restored}",
                self.revision
            ),
            _ => format!(
                "aborted the canary rollout; revision {} restores the config before it",
                self.revision
            ),
        }
    }
}

/// Runs `rollout promote`.
pub async fn promote(ctx: &Context, args: EndArgs) -> CliResult {
    let mut admin = ctx.connect().await?;
    let req = PromoteRolloutRequest {
        message: args.message.unwrap_or_default(),
    };
    let revision = match admin.promote_rollout(req).await {
        Ok(resp) => resp.into_inner().revision,
        Err(status) => return Err(ctx.write_failed(status, "promotion")),
    };
    // Only for the numbers printed: the promotion is done whatever this answers.
    let rollout = canary::get(ctx, &mut admin)
        .await
        .ok()
        .flatten()
        .and_then(|r| Rollout::from_pb(&r));
    let ended = Ended::new("promoted", revision, rollout.as_ref());
    output::print(ctx.format, &ended, || ended.line())
}

/// Runs `rollout abort`.
pub async fn abort(ctx: &Context, args: EndArgs) -> CliResult {
    let mut admin = ctx.connect().await?;
    let req = AbortRolloutRequest {
        message: args.message.unwrap_or_default(),
    };
    let revision = match admin.abort_rollout(req).await {
        Ok(resp) => resp.into_inner().revision,
        Err(status) => return Err(ctx.write_failed(status, "abort")),
    };
    let rollout = canary::get(ctx, &mut admin)
        .await
        .ok()
        .flatten()
        .and_then(|r| Rollout::from_pb(&r));
    let ended = Ended::new("aborted", revision, rollout.as_ref());
    output::print(ctx.format, &ended, || ended.line())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(ended: Option<i64>) -> Rollout {
        Rollout {
            revision: 8,
            previous: 7,
            stage: "aborted",
            selector: "slot=1".into(),
            canary_agents: 1,
            canary_applied: 1,
            canary_node_ids: vec![],
            other_agents: 3,
            gates: vec![],
            seconds_left: 0,
            reason: String::new(),
            warnings: vec![],
            ended_revision: ended,
            bake_seconds: 300,
            max_error_rate: 0.01,
            max_p99_increase: 1.5,
            manual: false,
            ack_timeout_seconds: 30,
            routes: vec![],
            author: String::new(),
            started: String::new(),
            stage_since: String::new(),
        }
    }

    #[test]
    fn lines_name_the_rollout_and_the_new_revision() {
        let r = rollout(Some(9));
        assert_eq!(
            Ended::new("promoted", 9, Some(&r)).line(),
            "promoted revision 8 to every agent (revision 9)"
        );
        assert_eq!(
            Ended::new("aborted", 9, Some(&r)).line(),
            "aborted the rollout of revision 8; revision 9 restores revision 7"
        );
    }

    #[test]
    fn a_record_of_another_rollout_is_not_used() {
        let other = rollout(Some(12));
        let ended = Ended::new("aborted", 9, Some(&other));
        assert_eq!(ended.rollout_revision, None);
        assert_eq!(
            ended.line(),
            "aborted the canary rollout; revision 9 restores the config before it"
        );
        assert_eq!(
            Ended::new("promoted", 9, None).line(),
            "promoted the canary rollout to every agent (revision 9)"
        );
    }

    #[test]
    fn json_has_the_new_revision() {
        let r = rollout(Some(9));
        assert_eq!(
            serde_json::to_value(Ended::new("aborted", 9, Some(&r))).unwrap(),
            serde_json::json!({"revision": 9, "rollout_revision": 8, "restored_revision": 7,
                               "outcome": "aborted"})
        );
        assert_eq!(
            serde_json::to_value(Ended::new("promoted", 9, Some(&r))).unwrap(),
            serde_json::json!({"revision": 9, "rollout_revision": 8, "restored_revision": null,
                               "outcome": "promoted"})
        );
    }
}
