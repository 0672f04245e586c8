//! Canary rollouts through the Admin API: the writes that start one (with the change, in its
//! transaction), promotion and abort (each a config revision of its own), and the status.
//!
//! Promotion is a revision without resource changes that deletes the pin, so every agent not
//! picked moves to the new config through the usual update. Abort is a rollback to the
//! revision before the change that also deletes the pin and marks the change `aborted` in
//! history, so the canary agents move to a revision newer than the one they run (versions
//! never go backwards) whose config is the previous one.

use std::collections::{BTreeSet, HashSet};
use std::time::SystemTime;

use portico_api::limits::MAX_MESSAGE_LEN;
use portico_api::pb::{
    CanaryPin, CanaryRequest, GetRolloutResponse, HistoryRecord, ResourceDelta, RolloutGate,
    RolloutRecord, RolloutStage, resource::Spec,
};
use portico_api::{Kind, ResourceKey, ResourceSet, reference};

use super::change::Stored;
use super::{AdminError, AdminService};
use crate::auth::Caller;
use crate::canary::{gates, selector};
use crate::commit::put;
use crate::history;
use crate::keys;
use crate::metrics::ROLLOUTS;
use crate::registry::timestamp;
use crate::store::{Op, Revision};
use crate::{compiler, store::Store};

/// Defaults of a canary rollout's settings.
const DEFAULT_BAKE: std::time::Duration = std::time::Duration::from_secs(300);
const DEFAULT_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const DEFAULT_MAX_ERROR_RATE: f64 = 0.01;
const DEFAULT_MAX_P99_INCREASE: f64 = 1.5;
/// The longest bake or ACK timeout.
const MAX_STAGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// How often a promotion or abort is retried when another change committed first.
const MAX_ATTEMPTS: usize = 8;

impl AdminService {
    /// The history record and the extra writes of a change of `deltas` (turning the stored
    /// config into `target`) rolled out as a canary.
    pub(super) fn canary_start(
        &self,
        stored: &Stored,
        deltas: &[ResourceDelta],
        target: &ResourceSet,
        req: &CanaryRequest,
        caller: &Caller,
        message: &str,
    ) -> Result<(HistoryRecord, Vec<Op>), AdminError> {
        let bad = |m: String| AdminError::BadRequest(format!("canary: {m}"));
        let selector = selector::parse(&req.selector).map_err(bad)?;
        let stage_length = |d: Option<&pbjson_types::Duration>, default, field: &str| match d
            .map(|d| gates::duration(Some(d)))
        {
            None => Ok(default),
            Some(d) if d.is_zero() => Ok(default),
            Some(d) if d > MAX_STAGE => Err(bad(format!("{field}: at most 7 days"))),
            Some(d) => Ok(d),
        };
        let bake = stage_length(req.bake.as_ref(), DEFAULT_BAKE, "bake")?;
        let ack_timeout =
            stage_length(req.ack_timeout.as_ref(), DEFAULT_ACK_TIMEOUT, "ack_timeout")?;
        let max_error_rate = req.max_error_rate.unwrap_or(DEFAULT_MAX_ERROR_RATE);
        if !(0.0..=1.0).contains(&max_error_rate) {
            return Err(bad(format!(
                "max_error_rate: {max_error_rate} is not a share between 0 and 1"
            )));
        }
        let max_p99_increase = req.max_p99_increase.unwrap_or(DEFAULT_MAX_P99_INCREASE);
        if !(max_p99_increase >= 1.0 && max_p99_increase.is_finite()) {
            return Err(bad(format!(
                "max_p99_increase: {max_p99_increase} must be at least 1"
            )));
        }
        if let Some(key) = deltas
            .iter()
            .filter_map(|d| d.key.as_ref())
            .find(|k| k.kind() == Kind::Secret)
        {
            return Err(bad(format!(
                "the change touches {key}: history keeps no secret material to restore on \
                 abort, so change Secrets without --canary"
            )));
        }
        let revision = stored.revision + 1;
        let routes = changed_routes(deltas, target);
        let now = timestamp(SystemTime::now());
        let proto_duration = |d: std::time::Duration| pbjson_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        };
        let pin = CanaryPin {
            revision,
            previous: stored.revision,
            selector: Some(selector.clone()),
            routes: routes.clone(),
        };
        let rollout = RolloutRecord {
            revision,
            previous: stored.revision,
            selector: Some(selector.clone()),
            stage: RolloutStage::Canary as i32,
            bake: Some(proto_duration(bake)),
            max_error_rate,
            max_p99_increase,
            manual: req.manual,
            ack_timeout: Some(proto_duration(ack_timeout)),
            started: Some(now),
            stage_since: Some(now),
            routes,
            author: caller.name.clone(),
            ..Default::default()
        };
        let mut record = history::record(&caller.name, message, deltas, 0);
        if let Some(entry) = record.entry.as_mut() {
            entry.canary = selector.text;
        }
        tracing::info!(revision, selector = %req.selector, "starting a canary rollout");
        let extra = vec![
            put(self.keys.canary_pin(), keys::encode(&pin)),
            put(self.keys.rollout(), keys::encode(&rollout)),
        ];
        Ok((record, extra))
    }

    /// The stored rollout record, if any.
    pub(crate) async fn rollout_record(&self) -> Result<Option<RolloutRecord>, AdminError> {
        Ok(match self.store.get(&self.keys.rollout()).await? {
            Some(kv) => Some(keys::decode(&kv.key, &kv.value)?),
            None => None,
        })
    }

    /// The record of the rollout `pin` belongs to (rebuilt from the pin should it be missing).
    async fn record_of(&self, pin: &CanaryPin) -> Result<RolloutRecord, AdminError> {
        Ok(self
            .rollout_record()
            .await?
            .filter(|r| r.revision == pin.revision)
            .unwrap_or_else(|| RolloutRecord {
                revision: pin.revision,
                previous: pin.previous,
                selector: pin.selector.clone(),
                routes: pin.routes.clone(),
                ..Default::default()
            }))
    }

    /// Promotes the active rollout to every agent; returns the revision that did.
    pub(crate) async fn promote_rollout_inner(
        &self,
        message: &str,
        warnings: Vec<String>,
        caller: &Caller,
    ) -> Result<Revision, AdminError> {
        super::change::check_message(message)?;
        for _ in 0..MAX_ATTEMPTS {
            let stored = self.read().await?;
            let Some(pin) = &stored.canary else {
                return Err(AdminError::NoRollout);
            };
            let next = stored.revision + 1;
            let mut rollout = self.record_of(pin).await?;
            rollout.stage = RolloutStage::Done as i32;
            rollout.stage_since = Some(timestamp(SystemTime::now()));
            rollout.ended_revision = next;
            rollout.warnings.extend(warnings.iter().cloned());
            let message = if message.is_empty() {
                format!("promote the canary rollout of revision {}", pin.revision)
            } else {
                message.to_string()
            };
            let mut record = history::record(&caller.name, &message, &[], 0);
            if let Some(entry) = record.entry.as_mut() {
                entry.promotion_of = pin.revision;
            }
            let extra = vec![
                Op::Delete {
                    key: self.keys.canary_pin(),
                },
                put(self.keys.rollout(), keys::encode(&rollout)),
            ];
            if let Some(revision) = self
                .commit_with(&stored, Vec::new(), caller, record, extra)
                .await?
            {
                metrics::counter!(ROLLOUTS, "outcome" => "promoted").increment(1);
                tracing::info!(
                    revision = pin.revision,
                    promoted_by = revision,
                    "canary rollout promoted"
                );
                return Ok(revision);
            }
        }
        Err(AdminError::Busy)
    }

    /// Aborts the active rollout for `reason` (with `gates` as judged, when not empty); returns
    /// the revision that restored the config before it.
    pub(crate) async fn abort_rollout_inner(
        &self,
        reason: &str,
        gates: &[RolloutGate],
        caller: &Caller,
    ) -> Result<Revision, AdminError> {
        for _ in 0..MAX_ATTEMPTS {
            let stored = self.read().await?;
            let Some(pin) = &stored.canary else {
                return Err(AdminError::NoRollout);
            };
            let next = stored.revision + 1;
            let records = history::read_all(&self.store, &self.keys).await?;
            let target = history::config_at(&stored.resources, &records, pin.previous)?;
            let deltas = history::deltas(&stored.resources, &target);
            if let Err(error) = compiler::check(target).await {
                return Err(AdminError::Invalid(vec![error]));
            }
            let mut rollout = self.record_of(pin).await?;
            rollout.stage = RolloutStage::Aborted as i32;
            rollout.stage_since = Some(timestamp(SystemTime::now()));
            rollout.ended_revision = next;
            rollout.reason = reason.to_string();
            if !gates.is_empty() {
                rollout.gates = gates.to_vec();
            }
            let message = portico_api::text::printable(
                &format!(
                    "abort the canary rollout of revision {}: {reason}",
                    pin.revision
                ),
                MAX_MESSAGE_LEN,
            );
            let record = history::record(&caller.name, &message, &deltas, pin.previous);
            let mut extra = vec![
                Op::Delete {
                    key: self.keys.canary_pin(),
                },
                put(self.keys.rollout(), keys::encode(&rollout)),
            ];
            let history_key = self.keys.history(pin.revision);
            if let Some(kv) = self.store.get(&history_key).await? {
                let mut change: HistoryRecord = keys::decode(&kv.key, &kv.value)?;
                if let Some(entry) = change.entry.as_mut() {
                    entry.aborted = true;
                }
                extra.push(put(history_key, keys::encode(&change)));
            }
            if let Some(revision) = self
                .commit_with(&stored, deltas, caller, record, extra)
                .await?
            {
                metrics::counter!(ROLLOUTS, "outcome" => "aborted").increment(1);
                tracing::warn!(
                    revision = pin.revision,
                    restored_by = revision,
                    reason,
                    "canary rollout aborted"
                );
                return Ok(revision);
            }
        }
        Err(AdminError::Busy)
    }

    /// The rollout record with the fleet's side of it.
    pub(super) async fn get_rollout_inner(&self) -> Result<GetRolloutResponse, AdminError> {
        let config_revision = self.views.current().version;
        let Some(rollout) = self.rollout_record().await? else {
            return Ok(GetRolloutResponse {
                config_revision,
                ..Default::default()
            });
        };
        let agents = self.registry.list().await?;
        let canaries: Vec<_> = gates::canaries(&rollout, &agents).collect();
        let applied = canaries
            .iter()
            .filter(|a| a.applied_version >= rollout.revision)
            .count();
        let connected = agents.iter().filter(|a| a.connected).count();
        let in_stage = gates::since(rollout.stage_since.as_ref(), SystemTime::now());
        let left = match rollout.stage() {
            RolloutStage::Canary => gates::duration(rollout.ack_timeout.as_ref()),
            RolloutStage::Baking => gates::duration(rollout.bake.as_ref()),
            _ => std::time::Duration::ZERO,
        }
        .saturating_sub(in_stage);
        Ok(GetRolloutResponse {
            canary_agents: canaries.len() as u32,
            canary_applied: applied as u32,
            other_agents: (connected - canaries.len()) as u32,
            canary_node_ids: canaries
                .iter()
                .take(100)
                .filter_map(|a| a.node.as_ref().map(|n| n.id.clone()))
                .collect(),
            seconds_left: left.as_secs().try_into().unwrap_or(u32::MAX),
            config_revision,
            rollout: Some(rollout),
        })
    }
}

/// The names of the routes a change of `deltas` touches in `target`: routes whose definition
/// changed, and routes that refer to a changed resource (a cluster, a policy). Empty when the
/// change touches no named route (then every route is judged).
fn changed_routes(deltas: &[ResourceDelta], target: &ResourceSet) -> Vec<String> {
    let changed: HashSet<ResourceKey> = deltas.iter().filter_map(|d| d.key.clone()).collect();
    let mut routes = BTreeSet::new();
    for table in target.of_kind(Kind::RouteTable) {
        let Some(Spec::RouteTable(spec)) = &table.spec else {
            continue;
        };
        let before = deltas
            .iter()
            .find(|d| d.key.as_ref() == Some(&table.key()))
            .map(|d| d.before.as_ref());
        let old_routes: Vec<_> = match before {
            Some(Some(before)) => match &before.spec {
                Some(Spec::RouteTable(old)) => {
                    old.virtual_hosts.iter().flat_map(|v| &v.routes).collect()
                }
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        let table_changed = before.is_some();
        let flat: Vec<_> = spec
            .virtual_hosts
            .iter()
            .enumerate()
            .flat_map(|(v, host)| {
                host.routes
                    .iter()
                    .enumerate()
                    .map(move |(r, route)| (v, r, route))
            })
            .collect();
        for (_, _, route) in &flat {
            if table_changed
                && !route.name.is_empty()
                && !old_routes
                    .iter()
                    .any(|old| old.name == route.name && *old == *route)
            {
                routes.insert(route.name.clone());
            }
        }
        for r in reference::references(table)
            .into_iter()
            .filter(|r| changed.contains(&r.target))
        {
            if let Some((v, i)) = route_index(&r.field)
                && let Some((_, _, route)) = flat.iter().find(|(fv, fr, _)| *fv == v && *fr == i)
                && !route.name.is_empty()
            {
                routes.insert(route.name.clone());
            }
        }
    }
    routes.into_iter().collect()
}

/// The virtual host and route indexes of a field path `virtual_hosts[V].routes[R]…`.
fn route_index(field: &str) -> Option<(usize, usize)> {
    let rest = field.strip_prefix("virtual_hosts[")?;
    let (v, rest) = rest.split_once(']')?;
    let rest = rest.strip_prefix(".routes[")?;
    let (r, _) = rest.split_once(']')?;
    Some((v.parse().ok()?, r.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(yaml: &str) -> Vec<portico_api::Resource> {
        portico_test_support::resources::parse(yaml)
    }

    #[test]
    fn the_changed_routes_are_the_ones_edited_or_pointing_at_a_changed_resource() {
        let before = resources(
            "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: [\"*\"]\n      routes:\n\
             \x20       - {name: api, match: {prefix: /api}, action: {cluster: api}}\n\
             \x20       - {name: web, match: {prefix: /}, action: {cluster: web}}\n\
             \x20       - {name: old, match: {prefix: /old}, action: {cluster: web}}\n\
             ---\nkind: Cluster\nname: api\nspec: {endpoints: [{address: 127.0.0.1, port: 1}]}\n\
             ---\nkind: Cluster\nname: web\nspec: {endpoints: [{address: 127.0.0.1, port: 2}]}\n",
        );
        let from: ResourceSet = before.iter().cloned().collect();
        // The api cluster moves; the web route gets another prefix.
        let mut to = from.clone();
        for r in resources(
            "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: [\"*\"]\n      routes:\n\
             \x20       - {name: api, match: {prefix: /api}, action: {cluster: api}}\n\
             \x20       - {name: web, match: {prefix: /w}, action: {cluster: web}}\n\
             \x20       - {name: old, match: {prefix: /old}, action: {cluster: web}}\n\
             ---\nkind: Cluster\nname: api\nspec: {endpoints: [{address: 127.0.0.1, port: 3}]}\n",
        ) {
            to.insert(r);
        }
        let deltas = history::deltas(&from, &to);
        assert_eq!(changed_routes(&deltas, &to), ["api", "web"]);
        assert_eq!(
            route_index("virtual_hosts[2].routes[10].action.cluster"),
            Some((2, 10))
        );
        assert_eq!(route_index("listener"), None);
    }
}
