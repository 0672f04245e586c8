//! Config changes: apply, delete and rollback, from reading the stored config to the commit.

use std::time::{Instant, SystemTime};

use portico_api::limits::{
    self, MAX_CHANGE_BYTES, MAX_CHANGE_RESOURCES, MAX_ERRORS, MAX_MESSAGE_LEN,
};
use portico_api::pb::Role;
use portico_api::pb::{
    ApplyRequest, ApplyResponse, CanaryPin, ChangeType, DeleteRequest, DeleteResponse,
    HistoryRecord, ResourceChange, ResourceDelta, RollbackRequest, RollbackResponse,
};
use portico_api::{Kind, Resource, ResourceSet, reference, validate};
use prost::Message;

use super::{AdminError, AdminService, secrets};
use crate::auth::Caller;
use crate::commit::{self, Change, Marker, STALE_AFTER};
use crate::compiler;
use crate::history;
use crate::keys;
use crate::store::{Op, Revision, Store};

/// How often a change is retried when another change committed between its read and write.
const MAX_ATTEMPTS: usize = 8;
/// How long a change waits for this replica's snapshot to show it, for read-your-writes.
const SHOW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a change waits for a large change another writer is making, beyond the time after
/// which a stalled one is undone.
const STAGED_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The stored config as read for a change.
pub(super) struct Stored {
    /// The config revision (the config-revision key's value; 0 before the first change).
    pub revision: Revision,
    /// The config-revision key's mod revision, which the change's transaction compares.
    pub guard: Revision,
    pub resources: ResourceSet,
    /// The active canary rollout's pin: while it exists every other change is refused.
    pub canary: Option<CanaryPin>,
}

impl AdminService {
    /// The stored config. While a large change is being written (its marker is listed with the
    /// config) this waits for it; one whose writer stopped making progress is undone first.
    pub(super) async fn read(&self) -> Result<Stored, AdminError> {
        let deadline = Instant::now() + STALE_AFTER + STAGED_WAIT;
        loop {
            let meta = self.store.get(&self.keys.config_revision()).await?;
            let (kvs, _) = self.store.list(&self.keys.config_prefix()).await?;
            // The pin changes only with the config revision, which the commit compares.
            let canary = match self.store.get(&self.keys.canary_pin()).await? {
                Some(kv) => Some(keys::decode::<CanaryPin>(&kv.key, &kv.value)?),
                None => None,
            };
            let mut resources = ResourceSet::new();
            let mut marker = None;
            for kv in kvs {
                if self.keys.is_staged_change(&kv.key) {
                    match Marker::decode(&kv) {
                        Ok(m) => marker = Some(m),
                        Err(e) => tracing::warn!(error = %e, "undecodable staged-change marker"),
                    }
                    continue;
                }
                match keys::decode::<Resource>(&kv.key, &kv.value) {
                    Ok(r) => {
                        resources.insert(r);
                    }
                    Err(e) => tracing::warn!(error = %e, "skipping undecodable resource"),
                }
            }
            match marker {
                None => {
                    let (revision, guard) = match meta {
                        None => (0, 0),
                        Some(kv) => (keys::decode_revision(&kv.key, &kv.value)?, kv.mod_revision),
                    };
                    return Ok(Stored {
                        revision,
                        guard,
                        resources,
                        canary,
                    });
                }
                Some(m) if m.is_stale(SystemTime::now()) => {
                    commit::undo(&self.store, &self.keys, m, &self.election.replica).await?;
                }
                Some(_) if Instant::now() >= deadline => return Err(AdminError::Busy),
                Some(_) => tokio::time::sleep(commit::WAIT_POLL).await,
            }
        }
    }

    /// Writes `deltas` on top of `stored` as the next config revision, which it returns; `None`
    /// when another change committed first.
    async fn commit(
        &self,
        stored: &Stored,
        deltas: Vec<ResourceDelta>,
        caller: &Caller,
        message: &str,
        rollback_of: Revision,
    ) -> Result<Option<Revision>, AdminError> {
        let record = history::record(&caller.name, message, &deltas, rollback_of);
        self.commit_with(stored, deltas, caller, record, Vec::new())
            .await
    }

    /// [`Self::commit`] with its history record given, and more writes that commit with it.
    pub(super) async fn commit_with(
        &self,
        stored: &Stored,
        deltas: Vec<ResourceDelta>,
        caller: &Caller,
        record: HistoryRecord,
        extra: Vec<Op>,
    ) -> Result<Option<Revision>, AdminError> {
        // Secrets hold private keys: changing one takes an admin.
        if let Some(key) = deltas
            .iter()
            .filter_map(|d| d.key.as_ref())
            .find(|k| k.kind() == Kind::Secret)
        {
            caller.require(Role::Admin, format!("changing {key}"))?;
        }
        let change = Change {
            revision: stored.revision,
            guard: stored.guard,
            deltas,
            record,
            replica: &self.election.replica,
            extra,
        };
        let committed = commit::commit(&self.store, &self.keys, change).await?;
        if let Some(revision) = committed {
            self.shown(revision).await;
        }
        Ok(committed)
    }

    /// Waits (bounded) until this replica's snapshot includes `revision`, so a Get right after
    /// a change sees it and this replica's agents are already being updated.
    async fn shown(&self, revision: Revision) {
        let mut rx = self.views.subscribe();
        let _ = tokio::time::timeout(SHOW_TIMEOUT, rx.wait_for(|s| s.version >= revision)).await;
    }

    pub(super) async fn apply_inner(
        &self,
        mut req: ApplyRequest,
        caller: &Caller,
    ) -> Result<ApplyResponse, AdminError> {
        check_request(&req)?;
        for _ in 0..MAX_ATTEMPTS {
            let stored = self.read().await?;
            if let Some(pin) = &stored.canary
                && !req.dry_run
            {
                if !req.force {
                    return Err(AdminError::RolloutActive(active(pin)));
                }
                let reason = format!("aborted by a forced apply of {}", caller.name);
                self.abort_rollout_inner(&reason, &[], caller).await?;
                continue;
            }
            expect_revision(req.expected_revision, stored.revision)?;
            let kept = secrets::keep_redacted(&stored.resources, &mut req.resources);
            let changes = changes(&stored.resources, &req);
            let invalid = |errors: Vec<validate::ValidationError>| ApplyResponse {
                revision: stored.revision,
                changes: changes.clone(),
                errors_omitted: errors.len().saturating_sub(MAX_ERRORS) as u32,
                errors: errors
                    .into_iter()
                    .take(MAX_ERRORS)
                    .map(Into::into)
                    .collect(),
                noop: false,
            };
            if let Err(errors) = kept {
                return Ok(invalid(errors));
            }
            let target =
                match validate::validate_apply(&stored.resources, &req.resources, &req.deletions) {
                    Ok(target) => target,
                    Err(errors) => return Ok(invalid(errors)),
                };
            let deltas = history::deltas(&stored.resources, &target);
            let noop = deltas.is_empty();
            let canary = match &req.canary {
                Some(canary) if !noop => Some(self.canary_start(
                    &stored,
                    &deltas,
                    &target,
                    canary,
                    caller,
                    &req.message,
                )?),
                _ => None,
            };
            if !noop && let Err(error) = compiler::check(target).await {
                return Ok(invalid(vec![error]));
            }
            if noop || req.dry_run {
                return Ok(ApplyResponse {
                    revision: stored.revision,
                    changes,
                    errors: Vec::new(),
                    noop,
                    errors_omitted: 0,
                });
            }
            let committed = match canary {
                Some((record, extra)) => {
                    self.commit_with(&stored, deltas, caller, record, extra)
                        .await?
                }
                None => {
                    self.commit(&stored, deltas, caller, &req.message, 0)
                        .await?
                }
            };
            if let Some(revision) = committed {
                return Ok(ApplyResponse {
                    revision,
                    changes,
                    errors: Vec::new(),
                    noop: false,
                    errors_omitted: 0,
                });
            }
        }
        Err(AdminError::Busy)
    }

    pub(super) async fn delete_inner(
        &self,
        req: DeleteRequest,
        caller: &Caller,
    ) -> Result<DeleteResponse, AdminError> {
        let key = req
            .key
            .ok_or_else(|| AdminError::BadRequest("delete needs a resource key".into()))?;
        let stored = self.read().await?;
        if !stored.resources.contains(key.kind(), &key.name) {
            return Err(AdminError::NotFound(key));
        }
        for r in stored.resources.iter().filter(|r| r.key() != key) {
            if let Some(reference) = reference::references(r)
                .into_iter()
                .find(|x| x.target == key)
            {
                return Err(AdminError::Referenced {
                    key,
                    by: r.key(),
                    field: reference.field,
                });
            }
        }
        let response = self
            .apply_inner(
                ApplyRequest {
                    deletions: vec![key],
                    expected_revision: req.expected_revision,
                    message: req.message,
                    ..Default::default()
                },
                caller,
            )
            .await?;
        if !response.errors.is_empty() {
            let errors = response.errors.into_iter().map(Into::into).collect();
            return Err(AdminError::Invalid(errors));
        }
        Ok(DeleteResponse {
            revision: response.revision,
        })
    }

    pub(super) async fn rollback_inner(
        &self,
        req: RollbackRequest,
        caller: &Caller,
    ) -> Result<RollbackResponse, AdminError> {
        check_message(&req.message)?;
        for _ in 0..MAX_ATTEMPTS {
            let stored = self.read().await?;
            if let Some(pin) = &stored.canary {
                return Err(AdminError::RolloutActive(active(pin)));
            }
            expect_revision(req.expected_revision, stored.revision)?;
            let records = history::read_all(&self.store, &self.keys).await?;
            let target = history::config_at(&stored.resources, &records, req.revision)?;
            let deltas = history::deltas(&stored.resources, &target);
            let changes = deltas.iter().map(delta_change).collect();
            if deltas.is_empty() {
                return Ok(RollbackResponse {
                    revision: stored.revision,
                    changes,
                });
            }
            // What the revision held was valid for the rules of its time; the agents must
            // still be able to build it now.
            if let Err(error) = compiler::check(target).await {
                return Err(AdminError::Invalid(vec![error]));
            }
            let message = if req.message.is_empty() {
                format!("rollback to revision {}", req.revision)
            } else {
                req.message.clone()
            };
            if let Some(revision) = self
                .commit(&stored, deltas, caller, &message, req.revision)
                .await?
            {
                return Ok(RollbackResponse { revision, changes });
            }
        }
        Err(AdminError::Busy)
    }
}

/// Rejects requests whose resources or keys name no kind (they have no place in the store),
/// and requests larger than one change may be (`portico_api::limits`).
fn check_request(req: &ApplyRequest) -> Result<(), AdminError> {
    if let Some(r) = req.resources.iter().find(|r| r.kind() == Kind::Unspecified) {
        return Err(AdminError::BadRequest(format!(
            "resource {:?} has no spec, so no kind",
            r.name
        )));
    }
    if let Some(k) = req.deletions.iter().find(|k| k.kind() == Kind::Unspecified) {
        return Err(AdminError::BadRequest(format!(
            "deletion of {:?} names no kind",
            k.name
        )));
    }
    let named = req.resources.len() + req.deletions.len();
    if named > MAX_CHANGE_RESOURCES {
        return Err(AdminError::BadRequest(format!(
            "this apply names {named} resources; one apply may name at most \
             {MAX_CHANGE_RESOURCES} (split it into several)"
        )));
    }
    let bytes: usize = req.resources.iter().map(Message::encoded_len).sum();
    if bytes > MAX_CHANGE_BYTES {
        return Err(AdminError::BadRequest(format!(
            "this apply holds {} of resources; one apply may hold at most {} (split it into \
             several)",
            limits::bytes(bytes),
            limits::bytes(MAX_CHANGE_BYTES)
        )));
    }
    check_message(&req.message)
}

pub(super) fn check_message(message: &str) -> Result<(), AdminError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(AdminError::BadRequest(format!(
            "the message is {} bytes long; the limit is {MAX_MESSAGE_LEN}",
            message.len()
        )));
    }
    Ok(())
}

/// What the request does to each resource it names.
fn changes(stored: &ResourceSet, req: &ApplyRequest) -> Vec<ResourceChange> {
    let upserts = req.resources.iter().map(|r| {
        let change = match stored.get(r.kind(), &r.name) {
            None => ChangeType::Created,
            Some(old) if old == r => ChangeType::Unchanged,
            Some(_) => ChangeType::Updated,
        };
        (r.key(), change)
    });
    let deletions = req.deletions.iter().map(|k| {
        let change = if stored.contains(k.kind(), &k.name) {
            ChangeType::Deleted
        } else {
            ChangeType::Unchanged
        };
        (k.clone(), change)
    });
    upserts
        .chain(deletions)
        .map(|(key, change)| ResourceChange {
            key: Some(key),
            change: change as i32,
        })
        .collect()
}

fn delta_change(delta: &ResourceDelta) -> ResourceChange {
    let change = match (&delta.before, &delta.after) {
        (None, _) => ChangeType::Created,
        (_, None) => ChangeType::Deleted,
        _ => ChangeType::Updated,
    };
    ResourceChange {
        key: delta.key.clone(),
        change: change as i32,
    }
}
/// What refusing a change names of the active rollout of `pin`.
fn active(pin: &CanaryPin) -> String {
    format!(
        "the canary rollout of revision {} (to {}) is active",
        pin.revision,
        pin.selector
            .as_ref()
            .map(|s| s.text.as_str())
            .unwrap_or_default()
    )
}

/// Refuses a change made against another config revision than the caller expected.
fn expect_revision(expected: Option<i64>, current: Revision) -> Result<(), AdminError> {
    match expected {
        Some(expected) if expected != current => Err(AdminError::Conflict { expected, current }),
        _ => Ok(()),
    }
}
