//! `portico rollout status` for a canary rollout: its stage, canary agents, gates and time
//! left, and with `--wait`, its progress until it is promoted (exit 0) or aborted (exit 5).
//!
//! The control plane keeps one rollout record, the active rollout or the last one
//! (`GetRollout`); [`canary_mode`] decides whether `rollout status` shows it or the plain
//! agent counts of a revision.

use std::io::Write;
use std::time::{Duration, Instant};

use portico_api::pb::{
    GetRolloutRequest, GetRolloutResponse, RolloutGate, RolloutRecord, RolloutStage,
};
use serde::Serialize;
use tonic::Code;

use super::{POLL_INTERVAL, Status, StatusArgs};
use crate::client::Admin;
use crate::commands::Context;
use crate::error::{CliError, CliResult};
use crate::output::{self, Format, Table};

/// How long `--wait` waits past what the rollout's stages have left, without `--timeout`.
const WAIT_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Canary agent ids the human form lists before "and N more".
const LISTED_AGENTS: usize = 10;

/// The rollout record and the canary agents as the control plane sees them now; `None` when
/// the control plane predates canary rollouts (it does not know the call).
pub async fn get(ctx: &Context, admin: &mut Admin) -> CliResult<Option<GetRolloutResponse>> {
    match admin.get_rollout(GetRolloutRequest {}).await {
        Ok(resp) => Ok(Some(resp.into_inner())),
        Err(status) if status.code() == Code::Unimplemented => Ok(None),
        Err(status) => Err(ctx.status(status)),
    }
}

/// Whether `rollout status [REV]` shows the canary rollout of `resp` rather than the agent
/// counts of a revision: for REV, when it is the rollout's revision; without REV, while the
/// rollout is active, or when it ended with the current config revision (nothing changed
/// since it was promoted or aborted).
pub fn canary_mode(revision: Option<i64>, resp: &GetRolloutResponse) -> bool {
    let Some(record) = resp.rollout.as_ref() else {
        return false;
    };
    match revision {
        Some(revision) => revision == record.revision,
        None => {
            active(record.stage())
                || (record.ended_revision != 0 && record.ended_revision == resp.config_revision)
        }
    }
}

/// Whether a rollout in `stage` has yet to be promoted or aborted.
fn active(stage: RolloutStage) -> bool {
    matches!(
        stage,
        RolloutStage::Canary | RolloutStage::Baking | RolloutStage::Promoting
    )
}

/// A canary rollout. JSON fields are stable (cli/README.md).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rollout {
    /// The revision rolled out.
    pub revision: i64,
    /// The revision the other agents keep until promotion.
    pub previous: i64,
    /// `canary`, `baking`, `promoting`, `done` or `aborted`.
    pub stage: &'static str,
    /// The canary selector as given to `apply --canary`.
    pub selector: String,
    /// Connected canary agents.
    pub canary_agents: u32,
    /// Of those, the ones that applied the revision.
    pub canary_applied: u32,
    /// The connected canary agents' node ids (at most 100).
    pub canary_node_ids: Vec<String>,
    /// Connected agents that are not canaries.
    pub other_agents: u32,
    /// Each gate as last judged.
    pub gates: Vec<Gate>,
    /// Seconds left in the stage (the ACK timeout or the bake); 0 when none.
    pub seconds_left: u32,
    /// Why it was aborted ("" unless aborted).
    pub reason: String,
    /// Gates passed for want of traffic, and other notes.
    pub warnings: Vec<String>,
    /// The revision that promoted it or restored the previous config; null while active.
    pub ended_revision: Option<i64>,
    /// How long the canary agents' traffic is watched.
    pub bake_seconds: u64,
    /// The largest share of 5xx answers the canary agents may give.
    pub max_error_rate: f64,
    /// The largest canary p99 over the other agents' p99.
    pub max_p99_increase: f64,
    /// Whether it waits for `rollout promote` after the bake.
    pub manual: bool,
    /// How long the canary agents have to apply the revision.
    pub ack_timeout_seconds: u64,
    /// The routes whose traffic the gates judge (empty: every route).
    pub routes: Vec<String>,
    /// Who started it.
    pub author: String,
    /// When it started, RFC 3339 UTC.
    pub started: String,
    /// When it entered its stage, RFC 3339 UTC.
    pub stage_since: String,
}

/// One gate of a rollout.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Gate {
    /// `ack`, `nack`, `error_rate` or `p99_increase`.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// The limit it is held to.
    pub threshold: f64,
    /// `pending`, `pass`, `fail` or `insufficient` (too little traffic to judge).
    pub state: String,
    /// The numbers behind the value.
    pub detail: String,
}

impl Gate {
    fn from_pb(g: &RolloutGate) -> Gate {
        Gate {
            name: g.name.clone(),
            value: g.value,
            threshold: g.threshold,
            state: g.state.clone(),
            detail: g.detail.clone(),
        }
    }

    /// `value` in the gate's unit: a share of agents or answers as a percentage, a count, a
    /// factor.
    fn show(&self, value: f64) -> String {
        match self.name.as_str() {
            "ack" | "error_rate" => format!("{}%", number(value * 100.0)),
            "nack" => number(value),
            "p99_increase" => format!("{}x", number(value)),
            _ => number(value),
        }
    }
}

/// `x` with at most two decimals and no trailing zeros.
fn number(x: f64) -> String {
    let text = format!("{x:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.to_string()
    }
}

fn seconds(d: Option<&pbjson_types::Duration>) -> u64 {
    d.map_or(0, |d| u64::try_from(d.seconds).unwrap_or(0))
}

impl Rollout {
    /// From the API's form; `None` when there was no rollout.
    pub fn from_pb(resp: &GetRolloutResponse) -> Option<Rollout> {
        let r: &RolloutRecord = resp.rollout.as_ref()?;
        Some(Rollout {
            revision: r.revision,
            previous: r.previous,
            stage: r.stage().name(),
            selector: r
                .selector
                .as_ref()
                .map(|s| s.text.clone())
                .unwrap_or_default(),
            canary_agents: resp.canary_agents,
            canary_applied: resp.canary_applied,
            canary_node_ids: resp.canary_node_ids.clone(),
            other_agents: resp.other_agents,
            gates: r.gates.iter().map(Gate::from_pb).collect(),
            seconds_left: resp.seconds_left,
            reason: r.reason.clone(),
            warnings: r.warnings.clone(),
            ended_revision: (r.ended_revision != 0).then_some(r.ended_revision),
            bake_seconds: seconds(r.bake.as_ref()),
            max_error_rate: r.max_error_rate,
            max_p99_increase: r.max_p99_increase,
            manual: r.manual,
            ack_timeout_seconds: seconds(r.ack_timeout.as_ref()),
            routes: r.routes.clone(),
            author: r.author.clone(),
            started: output::rfc3339(r.started.as_ref()),
            stage_since: output::rfc3339(r.stage_since.as_ref()),
        })
    }

    /// Whether it was promoted or aborted.
    pub fn finished(&self) -> bool {
        matches!(self.stage, "done" | "aborted")
    }

    /// How long it has left at most before it is promoted or aborted, unless it is manual:
    /// the stage's time left, and the bake after the ACKs.
    fn time_left(&self) -> Duration {
        let bake = if self.stage == "canary" {
            self.bake_seconds
        } else {
            0
        };
        Duration::from_secs(u64::from(self.seconds_left) + bake)
    }

    /// The failure an aborted rollout is (exit 5, with the reason).
    pub fn failure(&self) -> Option<CliError> {
        (self.stage == "aborted").then(|| {
            let mut text = format!(
                "the canary rollout of revision {} was aborted",
                self.revision
            );
            if !self.reason.is_empty() {
                text.push_str(&format!(": {}", self.reason));
            }
            if let Some(ended) = self.ended_revision {
                text.push_str(&format!(
                    "; revision {ended} restored revision {}",
                    self.previous
                ));
            }
            CliError::Rollout(text)
        })
    }

    /// The first line: the revision, the selector, the stage and what it waits for.
    fn headline(&self) -> String {
        let state = match (self.stage, self.ended_revision) {
            ("canary", _) => format!(
                "canary, waiting for the canary agents to apply it ({} left)",
                left(self.seconds_left)
            ),
            ("baking", _) if self.seconds_left == 0 && self.manual => {
                "baking, baked: waiting for `portico rollout promote` or `portico rollout abort`"
                    .into()
            }
            ("baking", _) => format!("baking, {} left", left(self.seconds_left)),
            ("done", Some(ended)) => format!("done, promoted to every agent by revision {ended}"),
            ("aborted", Some(ended)) => format!(
                "aborted, revision {ended} restored revision {}",
                self.previous
            ),
            (stage, _) => stage.to_string(),
        };
        format!(
            "canary rollout of revision {} (previous {}) to {}: {state}",
            self.revision,
            self.previous,
            output::escaped(&self.selector, false)
        )
    }

    /// The canary agents line, e.g. "canary agents: 2 (2 applied): edge-1, edge-2; 10 other
    /// agents keep revision 7".
    fn agents_line(&self) -> String {
        let mut line = format!(
            "canary agents: {} ({} applied)",
            self.canary_agents, self.canary_applied
        );
        if !self.canary_node_ids.is_empty() {
            let listed: Vec<String> = self
                .canary_node_ids
                .iter()
                .take(LISTED_AGENTS)
                .map(|id| output::escaped(id, false))
                .collect();
            line.push_str(&format!(": {}", listed.join(", ")));
            let more = (self.canary_agents as usize).saturating_sub(listed.len());
            if more > 0 {
                line.push_str(&format!(" and {more} more"));
            }
        }
        let others = if self.other_agents == 1 {
            "agent"
        } else {
            "agents"
        };
        line.push_str(&format!("; {} other {others}", self.other_agents));
        if !self.finished() {
            line.push_str(&format!(" keep revision {}", self.previous));
        }
        line
    }

    /// The human form: headline, canary agents, gates, warnings, and the reason of an abort.
    pub fn table(&self) -> String {
        let mut out = format!("{}\n{}\n", self.headline(), self.agents_line());
        if !self.gates.is_empty() {
            let mut t = Table::new(["GATE", "VALUE", "LIMIT", "STATE", "DETAIL"]);
            for g in &self.gates {
                // Too little traffic: the value measures nothing.
                let value = if g.state == "insufficient" {
                    "-".to_string()
                } else {
                    g.show(g.value)
                };
                t.row([
                    g.name.clone(),
                    value,
                    g.show(g.threshold),
                    g.state.clone(),
                    g.detail.clone(),
                ]);
            }
            out.push_str(&t.render());
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {}\n", output::escaped(w, false)));
        }
        if self.stage == "aborted" && !self.reason.is_empty() {
            out.push_str(&format!(
                "reason: {}\n",
                output::escaped(&self.reason, false)
            ));
        }
        out
    }

    /// One progress line for `--wait`.
    fn progress_line(&self) -> String {
        let mut line = format!(
            "canary rollout of revision {}: {}",
            self.revision, self.stage
        );
        if matches!(self.stage, "canary" | "baking") && self.seconds_left > 0 {
            line.push_str(&format!(" ({} left)", left(self.seconds_left)));
        }
        line.push_str(&format!(
            "; {}/{} canary agents applied",
            self.canary_applied, self.canary_agents
        ));
        if !self.gates.is_empty() {
            let gates: Vec<String> = self
                .gates
                .iter()
                .map(|g| format!("{} {}", g.name, g.state))
                .collect();
            line.push_str(&format!("; {}", gates.join(", ")));
        }
        output::escaped(&line, false)
    }

    /// What a progress line is printed on a change of.
    fn progress_key(&self) -> ProgressKey {
        ProgressKey {
            stage: self.stage,
            canary_agents: self.canary_agents,
            canary_applied: self.canary_applied,
            gates: self
                .gates
                .iter()
                .map(|g| (g.name.clone(), g.state.clone()))
                .collect(),
            warnings: self.warnings.len(),
        }
    }
}

/// What `--wait` prints a progress line on a change of: not the gates' values, which move with
/// every request, nor the time left.
#[derive(Debug, PartialEq)]
struct ProgressKey {
    stage: &'static str,
    canary_agents: u32,
    canary_applied: u32,
    /// Each gate's name and state.
    gates: Vec<(String, String)>,
    warnings: usize,
}

/// `seconds` humanized, e.g. "4m 12s".
fn left(seconds: u32) -> String {
    humantime::format_duration(Duration::from_secs(u64::from(seconds))).to_string()
}

/// `rollout status` of a canary rollout: the agent counts of its revision, as for any
/// revision, and the rollout. JSON fields are stable (cli/README.md).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CanaryStatus {
    /// The agent counts of the rollout's revision (the fields of a plain `rollout status`).
    #[serde(flatten)]
    pub status: Status,
    /// The rollout.
    pub rollout: Rollout,
}

impl CanaryStatus {
    /// The human form: the rollout, then the agent counts of its revision.
    pub fn table(&self) -> String {
        format!(
            "{}all agents: {}",
            self.rollout.table(),
            self.status.table()
        )
    }
}

/// Shows the rollout of `resp` (which has one); with `--wait`, follows it until it is promoted
/// or aborted.
pub async fn status(
    ctx: &Context,
    admin: &mut Admin,
    resp: GetRolloutResponse,
    args: &StatusArgs,
) -> CliResult {
    let Some(rollout) = Rollout::from_pb(&resp) else {
        return Err(CliError::Server("the control plane has no rollout".into()));
    };
    let revision = rollout.revision;
    let mut view = CanaryStatus {
        status: super::fetch(ctx, admin, revision).await?,
        rollout,
    };
    if !args.wait {
        output::print(ctx.format, &view, || view.table())?;
        return view.rollout.failure().map_or(Ok(()), Err);
    }
    let wait = args
        .timeout
        .unwrap_or_else(|| WAIT_MARGIN + view.rollout.time_left());
    let deadline = Instant::now() + wait;
    let mut progress = Progress::new(ctx.format);
    loop {
        progress.show(&view.rollout);
        if view.rollout.finished() {
            break;
        }
        if Instant::now() >= deadline {
            output::print(ctx.format, &view, || view.table())?;
            return Err(CliError::Rollout(format!(
                "timed out after {} waiting for the canary rollout of revision {revision}: it is \
                 in stage {}",
                humantime::format_duration(wait),
                view.rollout.stage
            )));
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())))
            .await;
        let resp = get(ctx, admin).await?.unwrap_or_default();
        match Rollout::from_pb(&resp) {
            Some(rollout) if rollout.revision == revision => view.rollout = rollout,
            other => {
                output::print(ctx.format, &view, || view.table())?;
                return Err(replaced(revision, other.map(|r| r.revision)));
            }
        }
        view.status = super::fetch(ctx, admin, revision).await?;
    }
    output::print(ctx.format, &view, || view.table())?;
    view.rollout.failure().map_or(Ok(()), Err)
}

/// The rollout being followed is no longer the control plane's record.
fn replaced(revision: i64, now: Option<i64>) -> CliError {
    CliError::Rollout(match now {
        Some(other) => format!(
            "the canary rollout of revision {revision} was replaced by the rollout of revision \
             {other} (an apply with --force aborts the active rollout first)"
        ),
        None => {
            format!("the control plane no longer has the canary rollout of revision {revision}")
        }
    })
}

/// Progress lines on stderr while `--wait` follows a rollout: one per change of stage, canary
/// agents or gate states; nothing for `-o json|yaml` (scripts read the final status).
struct Progress {
    quiet: bool,
    last: Option<ProgressKey>,
}

impl Progress {
    fn new(format: Format) -> Progress {
        Progress {
            quiet: format != Format::Table,
            last: None,
        }
    }

    fn show(&mut self, rollout: &Rollout) {
        let key = rollout.progress_key();
        if self.quiet || self.last.as_ref() == Some(&key) {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", rollout.progress_line());
        let _ = err.flush();
        self.last = Some(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_api::pb::CanarySelector;

    fn record(stage: RolloutStage, ended_revision: i64) -> RolloutRecord {
        RolloutRecord {
            revision: 8,
            previous: 7,
            selector: Some(CanarySelector {
                text: "slot=1".into(),
                ..Default::default()
            }),
            stage: stage as i32,
            bake: Some(pbjson_types::Duration {
                seconds: 300,
                nanos: 0,
            }),
            max_error_rate: 0.01,
            max_p99_increase: 1.5,
            ack_timeout: Some(pbjson_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
            ended_revision,
            ..Default::default()
        }
    }

    fn resp(stage: RolloutStage, ended_revision: i64, config_revision: i64) -> GetRolloutResponse {
        GetRolloutResponse {
            rollout: Some(record(stage, ended_revision)),
            canary_agents: 2,
            canary_applied: 2,
            other_agents: 10,
            canary_node_ids: vec!["edge-1".into(), "edge-2".into()],
            seconds_left: 252,
            config_revision,
        }
    }

    #[test]
    fn canary_mode_follows_the_active_or_just_ended_rollout_or_its_revision() {
        use RolloutStage::*;
        // (REV, stage, ended revision, config revision) → canary mode
        let cases = [
            (None, Canary, 0, 8, true),
            (None, Baking, 0, 8, true),
            (None, Promoting, 0, 8, true),
            // Ended, and nothing changed since.
            (None, Done, 9, 9, true),
            (None, Aborted, 9, 9, true),
            // Ended, and the config changed since: the plain status of the current revision.
            (None, Done, 9, 10, false),
            (None, Aborted, 9, 12, false),
            // REV names the rollout's revision, whatever its stage.
            (Some(8), Done, 9, 15, true),
            (Some(8), Baking, 0, 8, true),
            (Some(7), Baking, 0, 8, false),
            (Some(9), Done, 9, 9, false),
        ];
        for (revision, stage, ended, current, want) in cases {
            let r = resp(stage, ended, current);
            assert_eq!(
                canary_mode(revision, &r),
                want,
                "REV {revision:?}, {stage:?}, ended {ended}, current {current}"
            );
        }
        // Never without a rollout.
        let none = GetRolloutResponse {
            config_revision: 3,
            ..Default::default()
        };
        assert!(!canary_mode(None, &none));
        assert!(!canary_mode(Some(3), &none));
    }

    fn sample(stage: RolloutStage, ended_revision: i64) -> Rollout {
        let mut r = resp(stage, ended_revision, 8);
        if let Some(record) = r.rollout.as_mut() {
            record.gates = vec![
                RolloutGate {
                    name: "ack".into(),
                    value: 1.0,
                    threshold: 1.0,
                    state: "pass".into(),
                    detail: "2 of 2 canary agents applied revision 8".into(),
                },
                RolloutGate {
                    name: "error_rate".into(),
                    value: 0.0012,
                    threshold: 0.01,
                    state: "pass".into(),
                    detail: "1 of 830 requests were 5xx".into(),
                },
                RolloutGate {
                    name: "p99_increase".into(),
                    value: 1.0,
                    threshold: 1.5,
                    state: "insufficient".into(),
                    detail: "40 canary requests".into(),
                },
            ];
            if stage == RolloutStage::Aborted {
                record.reason = "error_rate 4% above 1%".into();
            }
        }
        Rollout::from_pb(&r).unwrap()
    }

    fn plain_status() -> Status {
        Status {
            revision: 8,
            applied: 2,
            pending: 10,
            nacked: 0,
            disconnected: 0,
            state: "in-progress",
            nacks: vec![],
        }
    }

    #[test]
    fn json_holds_the_plain_fields_and_the_rollout() {
        let view = CanaryStatus {
            status: plain_status(),
            rollout: sample(RolloutStage::Baking, 0),
        };
        let v = serde_json::to_value(&view).unwrap();
        for field in [
            "revision",
            "applied",
            "pending",
            "nacked",
            "disconnected",
            "state",
            "nacks",
        ] {
            assert!(v.get(field).is_some(), "{field} missing from {v}");
        }
        let r = &v["rollout"];
        assert_eq!(r["revision"], 8);
        assert_eq!(r["previous"], 7);
        assert_eq!(r["stage"], "baking");
        assert_eq!(r["selector"], "slot=1");
        assert_eq!(r["canary_agents"], 2);
        assert_eq!(r["canary_applied"], 2);
        assert_eq!(
            r["canary_node_ids"],
            serde_json::json!(["edge-1", "edge-2"])
        );
        assert_eq!(r["other_agents"], 10);
        assert_eq!(
            r["gates"][1],
            serde_json::json!({"name": "error_rate", "value": 0.0012, "threshold": 0.01,
                               "state": "pass", "detail": "1 of 830 requests were 5xx"})
        );
        assert_eq!(r["seconds_left"], 252);
        assert_eq!(r["reason"], "");
        assert_eq!(r["warnings"], serde_json::json!([]));
        assert_eq!(r["ended_revision"], serde_json::Value::Null);
        assert_eq!(r["bake_seconds"], 300);
        assert_eq!(r["max_error_rate"], 0.01);
        assert_eq!(r["max_p99_increase"], 1.5);
        assert_eq!(r["manual"], false);

        // YAML carries the same fields, the flattened ones at the top.
        let yaml = output::render(Format::Yaml, &view, || unreachable!()).unwrap();
        assert!(yaml.contains("\nstate: in-progress"), "{yaml}");
        assert!(yaml.contains("stage: baking"), "{yaml}");
    }

    #[test]
    fn done_exits_0_and_aborted_exits_5_with_the_reason() {
        assert!(sample(RolloutStage::Done, 9).failure().is_none());
        assert!(sample(RolloutStage::Baking, 0).failure().is_none());
        let err = sample(RolloutStage::Aborted, 9).failure().unwrap();
        assert_eq!(err.exit_code(), crate::error::EXIT_ROLLOUT);
        assert_eq!(
            err.to_string(),
            "the canary rollout of revision 8 was aborted: error_rate 4% above 1%; revision 9 \
             restored revision 7"
        );
    }

    #[test]
    fn table_shows_stage_agents_gates_and_time_left() {
        let mut rollout = sample(RolloutStage::Baking, 0);
        rollout.warnings = vec!["p99_increase: too little traffic to judge".into()];
        assert_eq!(
            rollout.table(),
            "canary rollout of revision 8 (previous 7) to slot=1: baking, 4m 12s left\n\
             canary agents: 2 (2 applied): edge-1, edge-2; 10 other agents keep revision 7\n\
             GATE           VALUE   LIMIT   STATE          DETAIL\n\
             ack            100%    100%    pass           2 of 2 canary agents applied revision 8\n\
             error_rate     0.12%   1%      pass           1 of 830 requests were 5xx\n\
             p99_increase   -       1.5x    insufficient   40 canary requests\n\
             warning: p99_increase: too little traffic to judge\n"
        );
    }

    #[test]
    fn table_of_an_ended_rollout_says_how_it_ended() {
        let done = sample(RolloutStage::Done, 9).table();
        assert!(
            done.starts_with(
                "canary rollout of revision 8 (previous 7) to slot=1: done, promoted to every \
                 agent by revision 9\n"
            ),
            "{done}"
        );
        let aborted = sample(RolloutStage::Aborted, 9).table();
        assert!(
            aborted.starts_with(
                "canary rollout of revision 8 (previous 7) to slot=1: aborted, revision 9 \
                 restored revision 7\n"
            ),
            "{aborted}"
        );
        assert!(
            aborted.ends_with("reason: error_rate 4% above 1%\n"),
            "{aborted}"
        );
        let mut manual = sample(RolloutStage::Baking, 0);
        manual.manual = true;
        manual.seconds_left = 0;
        assert!(
            manual
                .table()
                .contains("waiting for `portico rollout promote`"),
            "{}",
            manual.table()
        );
    }

    #[test]
    fn progress_lines_follow_stages_and_gate_states_not_values() {
        let a = sample(RolloutStage::Baking, 0);
        let mut b = a.clone();
        b.gates[1].value = 0.002;
        b.seconds_left = 100;
        assert_eq!(a.progress_key(), b.progress_key());
        b.gates[1].state = "fail".into();
        assert_ne!(a.progress_key(), b.progress_key());
        assert_eq!(
            a.progress_line(),
            "canary rollout of revision 8: baking (4m 12s left); 2/2 canary agents applied; \
             ack pass, error_rate pass, p99_increase insufficient"
        );
    }

    #[test]
    fn wait_without_timeout_covers_the_acks_and_the_bake() {
        let mut r = sample(RolloutStage::Canary, 0);
        r.seconds_left = 30;
        assert_eq!(r.time_left(), Duration::from_secs(330));
        let baking = sample(RolloutStage::Baking, 0);
        assert_eq!(baking.time_left(), Duration::from_secs(252));
    }

    #[test]
    fn numbers_have_at_most_two_decimals() {
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.126), "0.13");
        assert_eq!(number(12.5), "12.5");
        assert_eq!(number(-0.0001), "0");
    }
}
