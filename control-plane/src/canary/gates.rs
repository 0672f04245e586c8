//! Judging a canary rollout: its gates against the registry and the canary agents' traffic.
//!
//! - `ack`: every connected canary agent applied the revision within the ACK timeout (no
//!   canary agent at all by then fails it too: there is nothing to judge the change on).
//! - `nack`: no canary agent rejected it.
//! - `error_rate`: during the bake, the canary agents' share of 5xx answers on the changed
//!   routes stays at most `max_error_rate`; judged as soon as [`MIN_REQUESTS`] were seen, so
//!   a broken change aborts early.
//! - `p99_increase`: at the end of the bake, the canary p99 on the changed routes is at most
//!   `max_p99_increase` × the other agents' p99 there (both with [`MIN_LATENCY_REQUESTS`]).
//!   Latencies are known by bucket (`portico_api::usage::LATENCY_BOUNDS_MS`), so the gate
//!   compares what is proven: the lower bound of the canary's p99 bucket against the upper
//!   bound of the others'. A canary p99 of 2–5 ms against 1–2 ms passes; 50–100 ms against
//!   5–10 ms fails.
//!
//! A gate with too little traffic is `insufficient`: the rollout passes it after the bake with
//! a warning, unless it is manual (then the operator decides).

use std::time::{Duration, SystemTime};

use portico_api::pb::{AgentRecord, RolloutGate, RolloutRecord, RolloutStage, RolloutUsage};
use portico_api::usage::{LATENCY_BOUNDS_MS, quantile_ms};

use super::selector;
use crate::registry::system_time;

/// Canary requests needed to judge the error rate.
pub const MIN_REQUESTS: u64 = 20;
/// Requests needed on each side to judge the p99: with fewer, the p99 is the slowest one or
/// two requests, and a canary's are often its first ones on a new config, over upstream
/// connections still being opened.
pub const MIN_LATENCY_REQUESTS: u64 = 1000;

/// What the rollout should do next.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Stay in the stage.
    Wait,
    /// Every canary agent runs the revision: start the bake.
    Bake,
    /// The bake passed: promote, with these warnings.
    Promote(Vec<String>),
    /// The bake passed; a manual rollout waits for the operator.
    AwaitOperator(Vec<String>),
    /// A gate failed: abort, for this reason.
    Abort(String),
}

/// The canary agents among `agents`: connected ones the selector picks.
pub fn canaries<'a>(
    record: &'a RolloutRecord,
    agents: &'a [AgentRecord],
) -> impl Iterator<Item = &'a AgentRecord> {
    let selector = record.selector.clone().unwrap_or_default();
    agents.iter().filter(move |a| {
        a.connected
            && a.node
                .as_ref()
                .is_some_and(|n| selector::selects(&selector, n))
    })
}

/// Judges `record` (in stage CANARY or BAKING) at `now`: the gates as they stand, and what to
/// do.
pub fn judge(
    record: &RolloutRecord,
    agents: &[AgentRecord],
    usage: &RolloutUsage,
    now: SystemTime,
) -> (Vec<RolloutGate>, Verdict) {
    let revision = record.revision;
    let canaries: Vec<&AgentRecord> = canaries(record, agents).collect();
    let applied = canaries
        .iter()
        .filter(|a| !a.ahead_of_control_plane && a.applied_version >= revision)
        .count();
    // Canary agents whose last NACK rejected this revision (or a newer one) they do not run.
    let rejected: Vec<&&AgentRecord> = canaries
        .iter()
        .filter(|a| {
            a.last_nack
                .as_ref()
                .is_some_and(|n| n.version >= revision && a.applied_version < revision)
        })
        .collect();
    let nacks = rejected.len();
    let nack = rejected.first().map(|a| {
        let id = a.node.as_ref().map(|n| n.id.as_str()).unwrap_or_default();
        let error = a
            .last_nack
            .as_ref()
            .map(|n| n.error.as_str())
            .unwrap_or_default();
        format!("agent {id} rejected revision {revision}: {error}")
    });
    let in_stage = since(record.stage_since.as_ref(), now);
    let baking = record.stage() == RolloutStage::Baking;
    let ack_timeout = duration(record.ack_timeout.as_ref());
    let bake = duration(record.bake.as_ref());

    let all_applied = !canaries.is_empty() && applied == canaries.len();
    let ack = RolloutGate {
        name: "ack".into(),
        value: if canaries.is_empty() {
            0.0
        } else {
            applied as f64 / canaries.len() as f64
        },
        threshold: 1.0,
        state: if all_applied || baking {
            "pass"
        } else if in_stage >= ack_timeout {
            "fail"
        } else {
            "pending"
        }
        .into(),
        detail: format!(
            "{applied} of {} canary agents applied revision {revision}",
            canaries.len()
        ),
    };
    let nack_gate = RolloutGate {
        name: "nack".into(),
        value: nacks as f64,
        threshold: 0.0,
        state: if nacks > 0 { "fail" } else { "pass" }.into(),
        detail: nack
            .clone()
            .unwrap_or_else(|| "no canary agent rejected it".into()),
    };

    let canary = usage.canary.clone().unwrap_or_default();
    let baseline = usage.baseline.clone().unwrap_or_default();
    let error_rate = if canary.requests > 0 {
        usage.canary_5xx as f64 / canary.requests as f64
    } else {
        0.0
    };
    let error_judged = canary.requests >= MIN_REQUESTS;
    let error_failed = error_judged && error_rate > record.max_error_rate;
    let error_gate = RolloutGate {
        name: "error_rate".into(),
        value: error_rate,
        threshold: record.max_error_rate,
        state: if !baking {
            "pending"
        } else if error_failed {
            "fail"
        } else if error_judged {
            "pass"
        } else {
            "insufficient"
        }
        .into(),
        detail: format!(
            "{} of {} canary requests on the changed routes were 5xx",
            usage.canary_5xx, canary.requests
        ),
    };
    let latency_judged =
        canary.requests >= MIN_LATENCY_REQUESTS && baseline.requests >= MIN_LATENCY_REQUESTS;
    let (canary_p99, baseline_p99) = (p99(&canary), p99(&baseline));
    let canary_floor = lower_bound(canary_p99);
    let increase = canary_floor as f64 / baseline_p99.max(1) as f64;
    let bake_over = baking && in_stage >= bake;
    let latency_failed = latency_judged && increase > record.max_p99_increase;
    let p99_gate = RolloutGate {
        name: "p99_increase".into(),
        value: if latency_judged { increase } else { 0.0 },
        threshold: record.max_p99_increase,
        state: if !baking {
            "pending"
        } else if !latency_judged {
            "insufficient"
        } else if latency_failed && bake_over {
            "fail"
        } else if bake_over {
            "pass"
        } else {
            "pending"
        }
        .into(),
        detail: if latency_judged {
            format!(
                "canary p99 {canary_floor}–{canary_p99} ms, other agents' p99 ≤ {baseline_p99} ms"
            )
        } else {
            format!(
                "{} canary and {} other requests on the changed routes; {MIN_LATENCY_REQUESTS} \
                 of each needed",
                canary.requests, baseline.requests
            )
        },
    };

    let verdict = if let Some(nack) = nack {
        Verdict::Abort(format!("nack: {nack}"))
    } else if !baking {
        if all_applied {
            Verdict::Bake
        } else if in_stage >= ack_timeout {
            Verdict::Abort(if canaries.is_empty() {
                format!(
                    "ack: no connected agent matches the canary selector {:?} after {}",
                    record
                        .selector
                        .as_ref()
                        .map(|s| s.text.as_str())
                        .unwrap_or_default(),
                    humantime::format_duration(ack_timeout)
                )
            } else {
                format!(
                    "ack: {applied} of {} canary agents applied revision {revision} within {} \
                     (threshold: all)",
                    canaries.len(),
                    humantime::format_duration(ack_timeout)
                )
            })
        } else {
            Verdict::Wait
        }
    } else if error_failed {
        Verdict::Abort(format!(
            "error_rate: {error_rate:.4} > {} ({} of {} canary requests on the changed routes \
             were 5xx)",
            record.max_error_rate, usage.canary_5xx, canary.requests
        ))
    } else if !bake_over {
        Verdict::Wait
    } else if latency_failed {
        Verdict::Abort(format!(
            "p99_increase: {increase:.2} > {} (canary p99 {canary_floor}–{canary_p99} ms, other agents' \
             p99 ≤ {baseline_p99} ms)",
            record.max_p99_increase
        ))
    } else {
        let mut warnings = Vec::new();
        if !error_judged {
            warnings.push(format!(
                "error_rate: too little traffic to judge ({} canary requests on the changed \
                 routes, {MIN_REQUESTS} needed)",
                canary.requests
            ));
        }
        if !latency_judged {
            warnings.push(format!(
                "p99_increase: too little traffic to judge ({} canary and {} other requests \
                 on the changed routes, {MIN_LATENCY_REQUESTS} of each needed)",
                canary.requests, baseline.requests
            ));
        }
        if record.manual {
            Verdict::AwaitOperator(warnings)
        } else {
            Verdict::Promote(warnings)
        }
    };
    (vec![ack, nack_gate, error_gate, p99_gate], verdict)
}

/// The upper bound of the bucket holding the p99 of `s`, in milliseconds (the unbounded last
/// bucket counts as twice the last bound).
fn p99(s: &portico_api::pb::UsageStats) -> u64 {
    quantile_ms(s, 0.99).unwrap_or(2 * LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1])
}

/// The lower bound of the latency bucket whose upper bound is `upper`.
fn lower_bound(upper: u64) -> u64 {
    LATENCY_BOUNDS_MS
        .iter()
        .rev()
        .find(|b| **b < upper)
        .copied()
        .unwrap_or(0)
}

/// How long ago `t` was (zero when unset or in the future).
pub fn since(t: Option<&pbjson_types::Timestamp>, now: SystemTime) -> Duration {
    t.map_or(Duration::ZERO, |t| {
        now.duration_since(system_time(t)).unwrap_or_default()
    })
}

/// A stored duration (zero when unset or negative).
pub fn duration(d: Option<&pbjson_types::Duration>) -> Duration {
    d.map_or(Duration::ZERO, |d| {
        Duration::new(
            d.seconds.max(0) as u64,
            d.nanos.clamp(0, 999_999_999) as u32,
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use portico_api::pb::{CanarySelector, NackInfo, Node, UsageStats};

    use super::*;
    use crate::registry::timestamp;

    const T0: Duration = Duration::from_secs(1_000_000);

    fn record(stage: RolloutStage) -> RolloutRecord {
        RolloutRecord {
            revision: 7,
            previous: 6,
            selector: Some(CanarySelector {
                text: "slot=1".into(),
                labels: BTreeMap::from([("slot".into(), "1".into())]),
                percent: 0.0,
            }),
            stage: stage as i32,
            bake: Some(pbjson_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            ack_timeout: Some(pbjson_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
            max_error_rate: 0.01,
            max_p99_increase: 1.5,
            stage_since: Some(timestamp(SystemTime::UNIX_EPOCH + T0)),
            ..Default::default()
        }
    }

    fn agent(id: &str, slot: &str, applied: i64) -> AgentRecord {
        AgentRecord {
            node: Some(Node {
                id: id.into(),
                labels: BTreeMap::from([("slot".into(), slot.into())]),
                ..Default::default()
            }),
            applied_version: applied,
            connected: true,
            ..Default::default()
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    fn stats(requests: u64, bucket: usize) -> UsageStats {
        let mut latency = vec![0; bucket + 1];
        latency[bucket] = requests;
        UsageStats {
            requests,
            latency,
            ..Default::default()
        }
    }

    fn usage(canary: UsageStats, errors: u64, baseline: UsageStats) -> RolloutUsage {
        RolloutUsage {
            revision: 7,
            canary: Some(canary),
            baseline: Some(baseline),
            canary_5xx: errors,
        }
    }

    #[test]
    fn the_bake_starts_once_every_canary_agent_applied_the_revision() {
        let r = record(RolloutStage::Canary);
        let none = RolloutUsage::default();
        let pending = [agent("a", "1", 6), agent("b", "1", 7), agent("c", "2", 6)];
        assert_eq!(judge(&r, &pending, &none, at(5)).1, Verdict::Wait);
        let applied = [agent("a", "1", 7), agent("b", "1", 7), agent("c", "2", 6)];
        let (gates, verdict) = judge(&r, &applied, &none, at(5));
        assert_eq!(verdict, Verdict::Bake);
        assert_eq!(gates[0].state, "pass");
        assert_eq!(gates[0].detail, "2 of 2 canary agents applied revision 7");
    }

    #[test]
    fn a_missing_ack_or_any_nack_aborts_naming_the_gate() {
        let r = record(RolloutStage::Canary);
        let none = RolloutUsage::default();
        let late = [agent("a", "1", 6)];
        let Verdict::Abort(reason) = judge(&r, &late, &none, at(31)).1 else {
            panic!("no abort")
        };
        assert!(reason.starts_with("ack: 0 of 1"), "{reason}");
        let Verdict::Abort(reason) = judge(&r, &[], &none, at(31)).1 else {
            panic!("no abort")
        };
        assert!(reason.contains("no connected agent matches"), "{reason}");
        let mut nacked = agent("a", "1", 6);
        nacked.last_nack = Some(NackInfo {
            version: 7,
            error: "bind: address in use".into(),
            time: None,
        });
        let Verdict::Abort(reason) = judge(&r, &[nacked], &none, at(1)).1 else {
            panic!("no abort")
        };
        assert_eq!(
            reason,
            "nack: agent a rejected revision 7: bind: address in use"
        );
    }

    #[test]
    fn errors_abort_during_the_bake_and_latency_is_judged_at_its_end() {
        let r = record(RolloutStage::Baking);
        let agents = [agent("a", "1", 7)];
        let broken = usage(stats(100, 3), 40, stats(500, 3));
        let Verdict::Abort(reason) = judge(&r, &agents, &broken, at(5)).1 else {
            panic!("no abort")
        };
        assert!(
            reason.starts_with("error_rate: 0.4000 > 0.01 (40 of 100"),
            "{reason}"
        );
        // Slow canaries: 250 ms against 10 ms, judged only once the bake is over.
        let slow = usage(stats(2000, 7), 0, stats(5000, 3));
        assert_eq!(judge(&r, &agents, &slow, at(5)).1, Verdict::Wait);
        let Verdict::Abort(reason) = judge(&r, &agents, &slow, at(61)).1 else {
            panic!("no abort")
        };
        assert!(reason.starts_with("p99_increase: 10.00 > 1.5"), "{reason}");
        // One bucket apart is not proof: 2–5 ms against 1–2 ms.
        let close = usage(stats(2000, 2), 0, stats(5000, 1));
        assert_eq!(
            judge(&r, &agents, &close, at(61)).1,
            Verdict::Promote(Vec::new())
        );
        let fine = usage(stats(2000, 3), 1, stats(5000, 3));
        assert_eq!(
            judge(&r, &agents, &fine, at(61)).1,
            Verdict::Promote(Vec::new())
        );
    }

    #[test]
    fn too_little_traffic_passes_with_warnings_or_waits_for_the_operator() {
        let mut r = record(RolloutStage::Baking);
        let agents = [agent("a", "1", 7)];
        let quiet = usage(stats(5, 3), 0, stats(5, 3));
        let (gates, verdict) = judge(&r, &agents, &quiet, at(61));
        assert_eq!(gates[2].state, "insufficient");
        let Verdict::Promote(warnings) = verdict else {
            panic!("no promotion")
        };
        assert_eq!(warnings.len(), 2);
        r.manual = true;
        assert!(matches!(
            judge(&r, &agents, &quiet, at(61)).1,
            Verdict::AwaitOperator(_)
        ));
    }
}
