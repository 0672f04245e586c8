//! Canary rollouts: a change served to some agents first, judged on their ACKs, NACKs and
//! traffic, then promoted to every agent or aborted.
//!
//! **Serving two revisions.** A canary change writes, in its own transaction, a pin
//! ([`CanaryPin`], `meta/canary`) in the config watch range, so every replica's snapshot of
//! the new revision carries it. [`served`] then gives each agent the snapshot it is due: the
//! new one when the selector picks it, the previous revision's otherwise. Every replica keeps
//! that previous snapshot: the one it published before the change, or, when it started after
//! it, one rebuilt from the change's history record (the watcher's job). Promotion and abort
//! are config revisions that delete the pin (`admin::rollout`).
//!
//! **Judging.** Each replica sums its agents' reported traffic on the changed routes by
//! cohort (canary agents that run the revision, every other agent) and writes the sums every
//! [`FLUSH_EVERY`] while a rollout is active (`rollout/usage/<revision>/<replica>`). The
//! leader ([`Rollouts::drive`]) reads them, with the registry, every [`TICK`], judges the gates
//! ([`gates`]), writes what it found into the rollout record, and promotes or aborts. The
//! state is all in the store, so a restart or a failover continues where it was.
//!
//! # Layout
//! - `selector`: which agents a selector picks.
//! - `gates`: the gates and the verdict.

pub mod gates;
pub mod selector;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use portico_api::pb::{
    CanaryPin, Node, RolloutRecord, RolloutStage, RolloutUsage, UsageRow, UsageStats,
};
use portico_api::usage::merge;
use tokio_util::sync::CancellationToken;

use crate::admin::AdminService;
use crate::auth::Caller;
use crate::commit::put;
use crate::election::Leadership;
use crate::keys::{self, Keys};
use crate::metered::MeteredStore;
use crate::metrics::ROLLOUT_STAGE;
use crate::registry::{Registry, timestamp};
use crate::snapshot::Snapshot;
use crate::store::{Compare, Op, Store, StoreError, Txn};
use crate::views::Views;
use gates::Verdict;

/// How often a replica writes its cohorts' traffic while a rollout is active.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often the leader judges the active rollout (and every replica updates its gauge).
pub const TICK: Duration = Duration::from_secs(1);
/// Who automatic promotions and aborts are recorded as in history.
pub const DRIVER: &str = "portico-cp";

/// The snapshot the agent of `node` is due while `current` is the newest: `current`, or, while
/// a canary rollout that does not pick the agent is active, the revision before it. `None`
/// when that revision is not at hand (the agent then keeps what it has).
pub fn served(views: &Views, current: &Arc<Snapshot>, node: &Node) -> Option<Arc<Snapshot>> {
    match &current.canary {
        Some(pin) if !picks(pin, node) => views.at(pin.previous),
        _ => Some(current.clone()),
    }
}

/// Whether `pin`'s selector picks the agent of `node`.
pub fn picks(pin: &CanaryPin, node: &Node) -> bool {
    pin.selector
        .as_ref()
        .is_some_and(|s| selector::selects(s, node))
}

/// One replica's part in canary rollouts: its agents' traffic by cohort, and the leader's
/// driving.
pub struct Rollouts {
    store: MeteredStore,
    keys: Keys,
    views: Arc<Views>,
    registry: Arc<Registry>,
    replica: String,
    cohorts: Mutex<Cohorts>,
    /// The ended rollout whose traffic sums were deleted last.
    forgotten: AtomicI64,
}

/// This replica's sums for the rollout of `usage.revision`.
#[derive(Default)]
struct Cohorts {
    usage: RolloutUsage,
    /// Changed since written.
    dirty: bool,
    /// The stored sums were read back (after a restart they are added to).
    loaded: bool,
}

impl Rollouts {
    pub fn new(
        store: MeteredStore,
        keys: Keys,
        views: Arc<Views>,
        registry: Arc<Registry>,
        replica: String,
    ) -> Self {
        Rollouts {
            store,
            keys,
            views,
            registry,
            replica,
            cohorts: Mutex::default(),
            forgotten: AtomicI64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cohorts> {
        // Plain counters: whole at every step.
        self.cohorts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the usage rows of a report from the agent of `node`, which runs `applied`.
    pub fn report(&self, node: &Node, applied: i64, rows: &[UsageRow]) {
        let current = self.views.current();
        let Some(pin) = &current.canary else {
            return;
        };
        let canary = picks(pin, node);
        // A canary agent's traffic counts once it runs the revision.
        if canary && applied < pin.revision {
            return;
        }
        let mut sum = UsageStats::default();
        let mut errors = 0;
        for row in rows
            .iter()
            .filter(|r| pin.routes.is_empty() || pin.routes.contains(&r.route))
        {
            let stats = row.stats.clone().unwrap_or_default();
            if row.status_class == "5xx" {
                errors += stats.requests;
            }
            merge(&mut sum, &stats);
        }
        if sum.requests == 0 {
            return;
        }
        let mut cohorts = self.lock();
        if cohorts.usage.revision != pin.revision {
            *cohorts = Cohorts {
                usage: RolloutUsage {
                    revision: pin.revision,
                    ..Default::default()
                },
                ..Default::default()
            };
        }
        let usage = &mut cohorts.usage;
        if canary {
            merge(usage.canary.get_or_insert_default(), &sum);
            usage.canary_5xx += errors;
        } else {
            merge(usage.baseline.get_or_insert_default(), &sum);
        }
        cohorts.dirty = true;
    }

    /// Writes this replica's sums when they changed, every [`FLUSH_EVERY`], until `cancel`.
    pub async fn run_flusher(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
            }
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "writing the canary rollout's traffic failed");
            }
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (mut usage, loaded) = {
            let mut cohorts = self.lock();
            if !cohorts.dirty {
                return Ok(());
            }
            cohorts.dirty = false;
            (cohorts.usage.clone(), cohorts.loaded)
        };
        let key = self.keys.rollout_usage(usage.revision, &self.replica);
        if !loaded {
            // What this replica wrote before a restart.
            if let Some(kv) = self.store.get(&key).await?
                && let Ok(stored) = keys::decode::<RolloutUsage>(&kv.key, &kv.value)
            {
                let mut cohorts = self.lock();
                if cohorts.usage.revision == stored.revision {
                    add(&mut cohorts.usage, &stored);
                    usage = cohorts.usage.clone();
                }
            }
            self.lock().loaded = true;
        }
        self.store
            .txn(Txn {
                compares: Vec::new(),
                ops: vec![put(key, keys::encode(&usage))],
            })
            .await?;
        Ok(())
    }

    /// Every replica's sums for the rollout of `revision`.
    async fn usage(&self, revision: i64) -> Result<RolloutUsage, StoreError> {
        let (kvs, _) = self
            .store
            .list(&self.keys.rollout_usage_prefix(revision))
            .await?;
        let mut total = RolloutUsage {
            revision,
            ..Default::default()
        };
        for kv in kvs {
            match keys::decode::<RolloutUsage>(&kv.key, &kv.value) {
                Ok(u) => add(&mut total, &u),
                Err(e) => tracing::warn!(error = %e, "skipping undecodable rollout traffic"),
            }
        }
        Ok(total)
    }

    /// Judges the active rollout every [`TICK`] on the leader, and keeps every replica's stage
    /// gauge, until `cancel`.
    pub async fn drive(
        self: Arc<Self>,
        admin: Arc<AdminService>,
        leadership: Arc<Leadership>,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            let record = match self.store.get(&self.keys.rollout()).await {
                Ok(Some(kv)) => match keys::decode::<RolloutRecord>(&kv.key, &kv.value) {
                    Ok(r) => Some((r, kv.mod_revision)),
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable rollout record");
                        None
                    }
                },
                Ok(None) => None,
                Err(e) => {
                    tracing::debug!(error = %e, "reading the rollout record failed");
                    continue;
                }
            };
            let stage = record.as_ref().map(|(r, _)| r.stage());
            for s in [
                RolloutStage::Canary,
                RolloutStage::Baking,
                RolloutStage::Promoting,
                RolloutStage::Done,
                RolloutStage::Aborted,
            ] {
                let value = if stage == Some(s) { 1.0 } else { 0.0 };
                metrics::gauge!(ROLLOUT_STAGE, "stage" => s.name()).set(value);
            }
            let Some(term) = leadership.term() else {
                continue;
            };
            let Some((record, mod_revision)) = record else {
                continue;
            };
            let step = self.step(&admin, record, mod_revision, term.fence());
            if let Some(Err(e)) = term.run(step).await {
                tracing::warn!(error = %e, "driving the canary rollout failed; trying again");
            }
        }
    }

    /// One judgement of `record` (stored at `mod_revision`) by the leader.
    async fn step(
        &self,
        admin: &AdminService,
        mut record: RolloutRecord,
        mod_revision: i64,
        fence: Compare,
    ) -> Result<(), crate::admin::AdminError> {
        let caller = Caller {
            name: DRIVER.into(),
            role: portico_api::pb::Role::Admin,
        };
        match record.stage() {
            RolloutStage::Canary | RolloutStage::Baking => {}
            RolloutStage::Promoting => {
                // A leader that died mid-promotion: finish it.
                return self.promote(admin, &caller, Vec::new()).await;
            }
            _ => return Ok(self.forget_usage(record.revision).await?),
        }
        let agents = self.registry.list().await?;
        let usage = self.usage(record.revision).await?;
        let now = SystemTime::now();
        let (gates, verdict) = gates::judge(&record, &agents, &usage, now);
        let before = record.clone();
        match verdict {
            Verdict::Abort(reason) => {
                match admin.abort_rollout_inner(&reason, &gates, &caller).await {
                    Ok(_) | Err(crate::admin::AdminError::NoRollout) => {}
                    Err(e) => return Err(e),
                }
                return Ok(());
            }
            Verdict::Promote(warnings) => {
                record.stage = RolloutStage::Promoting as i32;
                record.stage_since = Some(timestamp(now));
                record.gates = gates;
                if self.write(&record, mod_revision, fence).await? {
                    self.promote(admin, &caller, warnings).await?;
                }
                return Ok(());
            }
            Verdict::Bake => {
                tracing::info!(
                    revision = record.revision,
                    "every canary agent applied the revision; baking"
                );
                record.stage = RolloutStage::Baking as i32;
                record.stage_since = Some(timestamp(now));
            }
            Verdict::AwaitOperator(warnings) => {
                record.warnings = warnings;
                record.warnings.push(
                    "the bake is over: waiting for `portico rollout promote` or `abort`".into(),
                );
            }
            Verdict::Wait => {}
        }
        record.gates = gates;
        if record != before {
            self.write(&record, mod_revision, fence).await?;
        }
        Ok(())
    }

    /// Deletes the traffic sums of rollouts that ended, once per rollout `revision` that ended
    /// while this replica ran.
    async fn forget_usage(&self, revision: i64) -> Result<(), StoreError> {
        if self.forgotten.load(Ordering::Relaxed) == revision {
            return Ok(());
        }
        let (kvs, _) = self
            .store
            .list_keys(&self.keys.rollout_usages_prefix())
            .await?;
        if kvs.is_empty() {
            return Ok(());
        }
        let ops = kvs
            .into_iter()
            .map(|kv| Op::Delete { key: kv.key })
            .collect::<Vec<_>>();
        for chunk in ops.chunks(crate::store::MAX_TXN_OPS) {
            self.store
                .txn(Txn {
                    compares: Vec::new(),
                    ops: chunk.to_vec(),
                })
                .await?;
        }
        self.forgotten.store(revision, Ordering::Relaxed);
        Ok(())
    }

    async fn promote(
        &self,
        admin: &AdminService,
        caller: &Caller,
        warnings: Vec<String>,
    ) -> Result<(), crate::admin::AdminError> {
        match admin.promote_rollout_inner("", warnings, caller).await {
            Ok(_) | Err(crate::admin::AdminError::NoRollout) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes `record` over the one stored at `mod_revision` while this term lasts; false when
    /// it changed meanwhile (an operator promoted or aborted it).
    async fn write(
        &self,
        record: &RolloutRecord,
        mod_revision: i64,
        fence: Compare,
    ) -> Result<bool, StoreError> {
        let outcome = self
            .store
            .txn(Txn {
                compares: vec![
                    fence,
                    Compare::ModRevision {
                        key: self.keys.rollout(),
                        revision: mod_revision,
                    },
                ],
                ops: vec![put(self.keys.rollout(), keys::encode(record))],
            })
            .await?;
        Ok(matches!(outcome, crate::store::TxnOutcome::Committed(_)))
    }
}

/// Adds `b`'s sums to `a`.
fn add(a: &mut RolloutUsage, b: &RolloutUsage) {
    for (x, y) in [(&mut a.canary, &b.canary), (&mut a.baseline, &b.baseline)] {
        if let Some(y) = y {
            merge(x.get_or_insert_default(), y);
        }
    }
    a.canary_5xx += b.canary_5xx;
}
