//! The Admin service: config changes (apply, delete, rollback), reads, history and fleet status.
//!
//! Every change reads the stored config and the config-revision key, validates and diffs, then
//! writes the changed resources, a history record and the next config revision (the one read
//! plus one) in one transaction that compares the config-revision key's mod revision with the
//! one read. Concurrent changes through any replica therefore serialize: the loser re-reads and
//! retries (or, when the caller named an expected revision, fails with a conflict), and config
//! revisions count changes, 1, 2, 3, …, whichever replica wrote them. Reads (Get, List) are
//! served from this replica's snapshot, so they keep working while the store is away.
//!
//! An apply that fails validation answers with the errors in `ApplyResponse.errors` (dry run
//! or not), so the caller gets each error's resource and field path from one request.

use std::sync::Arc;
use std::time::Duration;

use portico_api::pb::Role;
use portico_api::pb::admin_server::Admin;
use portico_api::pb::{
    AgentsRequest, AgentsResponse, ApplyRequest, ApplyResponse, ChangeType, CreateTokenRequest,
    CreateTokenResponse, DeleteRequest, DeleteResponse, GetCaRequest, GetCaResponse, GetRequest,
    GetResponse, HealthRequest, HealthResponse, HistoryRequest, HistoryResponse, ListRequest,
    ListResponse, ListTokensRequest, ListTokensResponse, ResourceChange, ResourceDelta,
    RevokeAgentRequest, RevokeAgentResponse, RevokeTokenRequest, RevokeTokenResponse,
    RollbackRequest, RollbackResponse, RolloutStatusRequest, RolloutStatusResponse, StoredResource,
};
use portico_api::{Kind, Resource, ResourceKey, ResourceSet, reference, validate};
use tonic::{Request, Response, Status};

use crate::auth::{self, Auth, AuthError, Caller};
use crate::health;
use crate::history::{self, HistoryError};
use crate::keys::{self, Keys};
use crate::metered::MeteredStore;
use crate::registry::Registry;
use crate::rollout;
use crate::store::{Compare, MAX_TXN_OPS, Op, Revision, Store, StoreError, Txn, TxnOutcome};
use crate::views::Views;

/// How often a change is retried when another change committed between its read and write.
const MAX_ATTEMPTS: usize = 8;
/// Most resources one change may touch: a store transaction holds [`MAX_TXN_OPS`] ops, two of
/// which are the history record and the meta key.
pub const MAX_CHANGED: usize = MAX_TXN_OPS - 2;
/// How long a change waits for this replica's snapshot to show it, for read-your-writes.
const SHOW_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an Admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading history failed or named no change.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The caller expected another config revision.
    #[error("config changed: the current revision is {current}, not {expected}")]
    Conflict {
        expected: Revision,
        current: Revision,
    },
    /// Other changes kept committing first.
    #[error("config kept changing concurrently; try again")]
    Busy,
    /// The resulting config is invalid.
    #[error("invalid config:\n{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<validate::ValidationError>),
    /// The change is larger than one store transaction holds.
    #[error(
        "this change touches {0} resources; one change may touch at most {MAX_CHANGED} (split it)"
    )]
    TooLarge(usize),
    /// The request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No such resource.
    #[error("{0} not found")]
    NotFound(ResourceKey),
    /// The resource is still referenced.
    #[error("{key} is referenced by {by} ({field})")]
    Referenced {
        key: ResourceKey,
        by: ResourceKey,
        field: String,
    },
    /// The caller is unknown, or its role does not allow the call.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// No agent identity of this node id.
    #[error("node {0:?} has no certificate to revoke (it never joined)")]
    NoIdentity(String),
}

/// The stored config as read for a change.
struct Stored {
    /// The config revision (the config-revision key's value; 0 before the first change).
    revision: Revision,
    /// The config-revision key's mod revision, which the change's transaction compares.
    guard: Revision,
    resources: ResourceSet,
}

/// The Admin service.
pub struct AdminService {
    store: MeteredStore,
    keys: Keys,
    views: Arc<Views>,
    registry: Arc<Registry>,
    auth: Arc<Auth>,
}

impl AdminService {
    /// The service over one store.
    pub fn new(
        store: MeteredStore,
        keys: Keys,
        views: Arc<Views>,
        registry: Arc<Registry>,
        auth: Arc<Auth>,
    ) -> Self {
        AdminService {
            store,
            keys,
            views,
            registry,
            auth,
        }
    }

    /// The caller of `req`, refused unless its role allows `need`.
    fn caller<T>(&self, req: &Request<T>, need: Role, what: &str) -> Result<Caller, Status> {
        self.auth
            .caller(req, need, what)
            .map_err(|e| Status::from(AdminError::from(e)))
    }

    async fn read(&self) -> Result<Stored, AdminError> {
        let meta = self.store.get(&self.keys.config_revision()).await?;
        let (kvs, _) = self.store.list(&self.keys.config_prefix()).await?;
        let mut resources = ResourceSet::new();
        for kv in kvs {
            match keys::decode::<Resource>(&kv.key, &kv.value) {
                Ok(r) => {
                    resources.insert(r);
                }
                Err(e) => tracing::warn!(error = %e, "skipping undecodable resource"),
            }
        }
        let (revision, guard) = match meta {
            None => (0, 0),
            Some(kv) => (keys::decode_revision(&kv.key, &kv.value)?, kv.mod_revision),
        };
        Ok(Stored {
            revision,
            guard,
            resources,
        })
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
        if deltas.len() > MAX_CHANGED {
            return Err(AdminError::TooLarge(deltas.len()));
        }
        // Secrets hold private keys: changing one takes an admin.
        if let Some(key) = deltas
            .iter()
            .filter_map(|d| d.key.as_ref())
            .find(|k| k.kind() == Kind::Secret)
        {
            caller.require(Role::Admin, format!("changing {key}"))?;
        }
        let mut ops = Vec::with_capacity(deltas.len() + 2);
        for delta in &deltas {
            let Some(key) = &delta.key else { continue };
            let key = self.keys.config(key.kind(), &key.name);
            ops.push(match &delta.after {
                Some(after) => Op::Put {
                    key,
                    value: keys::encode(after),
                    lease: None,
                },
                None => Op::Delete { key },
            });
        }
        let revision = stored.revision + 1;
        let record = history::record(&caller.name, message, deltas, rollback_of);
        ops.push(Op::Put {
            key: self.keys.history(revision),
            value: keys::encode(&record),
            lease: None,
        });
        ops.push(Op::Put {
            key: self.keys.config_revision(),
            value: keys::encode_revision(revision),
            lease: None,
        });
        let txn = Txn {
            compares: vec![Compare::ModRevision {
                key: self.keys.config_revision(),
                revision: stored.guard,
            }],
            ops,
        };
        match self.store.txn(txn).await? {
            TxnOutcome::Committed(_) => {
                self.shown(revision).await;
                Ok(Some(revision))
            }
            TxnOutcome::Conflict(_) => Ok(None),
        }
    }

    /// Waits (bounded) until this replica's snapshot includes `revision`, so a Get right after
    /// a change sees it and this replica's agents are already being updated.
    async fn shown(&self, revision: Revision) {
        let mut rx = self.views.subscribe();
        let _ = tokio::time::timeout(SHOW_TIMEOUT, rx.wait_for(|s| s.version >= revision)).await;
    }

    async fn apply_inner(
        &self,
        req: ApplyRequest,
        caller: &Caller,
    ) -> Result<ApplyResponse, AdminError> {
        check_request(&req)?;
        for _ in 0..MAX_ATTEMPTS {
            let stored = self.read().await?;
            if let Some(expected) = req.expected_revision
                && expected != stored.revision
            {
                return Err(AdminError::Conflict {
                    expected,
                    current: stored.revision,
                });
            }
            let changes = changes(&stored.resources, &req);
            let target =
                match validate::validate_apply(&stored.resources, &req.resources, &req.deletions) {
                    Ok(target) => target,
                    Err(errors) => {
                        return Ok(ApplyResponse {
                            revision: stored.revision,
                            changes,
                            errors: errors.into_iter().map(Into::into).collect(),
                            noop: false,
                        });
                    }
                };
            let deltas = history::deltas(&stored.resources, &target);
            let noop = deltas.is_empty();
            if noop || req.dry_run {
                return Ok(ApplyResponse {
                    revision: stored.revision,
                    changes,
                    errors: Vec::new(),
                    noop,
                });
            }
            if let Some(revision) = self
                .commit(&stored, deltas, caller, &req.message, 0)
                .await?
            {
                return Ok(ApplyResponse {
                    revision,
                    changes,
                    errors: Vec::new(),
                    noop: false,
                });
            }
        }
        Err(AdminError::Busy)
    }

    async fn delete_inner(
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

    async fn rollback_inner(
        &self,
        req: RollbackRequest,
        caller: &Caller,
    ) -> Result<RollbackResponse, AdminError> {
        for _ in 0..MAX_ATTEMPTS {
            let stored = self.read().await?;
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

/// Rejects requests whose resources or keys name no kind (they have no place in the store).
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

fn stored_resource(resource: &Resource, revision: Revision) -> StoredResource {
    StoredResource {
        resource: Some(reference::redacted(resource)),
        revision,
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let caller = self.caller(&req, Role::Operator, "apply")?;
        let response = self.apply_inner(req.into_inner(), &caller).await;
        response.map(Response::new).map_err(Status::from)
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.caller(&req, Role::Viewer, "get")?;
        let key = req.into_inner().key.unwrap_or_default();
        let snapshot = self.views.current();
        match snapshot.get(key.kind(), &key.name) {
            Some(s) => Ok(Response::new(GetResponse {
                resource: Some(stored_resource(&s.resource, s.version)),
            })),
            None => Err(AdminError::NotFound(key).into()),
        }
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        self.caller(&req, Role::Viewer, "list")?;
        let kind = req.into_inner().kind();
        let snapshot = self.views.current();
        let resources = snapshot
            .iter()
            .filter(|s| kind == Kind::Unspecified || s.resource.kind() == kind)
            .map(|s| stored_resource(&s.resource, s.version))
            .collect();
        Ok(Response::new(ListResponse {
            resources,
            revision: snapshot.version,
        }))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let caller = self.caller(&req, Role::Operator, "delete")?;
        let response = self.delete_inner(req.into_inner(), &caller).await;
        response.map(Response::new).map_err(Status::from)
    }

    async fn history(
        &self,
        req: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        self.caller(&req, Role::Viewer, "history")?;
        let req = req.into_inner();
        let records = history::read_all(&self.store, &self.keys)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(history::page(
            &records,
            req.limit,
            req.before_revision,
        )))
    }

    async fn rollback(
        &self,
        req: Request<RollbackRequest>,
    ) -> Result<Response<RollbackResponse>, Status> {
        let caller = self.caller(&req, Role::Operator, "rollback")?;
        let response = self.rollback_inner(req.into_inner(), &caller).await;
        response.map(Response::new).map_err(Status::from)
    }

    async fn agents(
        &self,
        req: Request<AgentsRequest>,
    ) -> Result<Response<AgentsResponse>, Status> {
        self.caller(&req, Role::Viewer, "agents")?;
        let req = req.into_inner();
        let records = self.registry.list().await.map_err(Status::from)?;
        let agents = records
            .into_iter()
            .filter(|a| {
                let node = a.node.clone().unwrap_or_default();
                (req.region.is_empty() || node.region == req.region)
                    && req
                        .labels
                        .iter()
                        .all(|(k, v)| node.labels.get(k) == Some(v))
            })
            .collect();
        Ok(Response::new(AgentsResponse {
            agents,
            config_revision: self.views.current().version,
        }))
    }

    async fn rollout_status(
        &self,
        req: Request<RolloutStatusRequest>,
    ) -> Result<Response<RolloutStatusResponse>, Status> {
        self.caller(&req, Role::Viewer, "rollout status")?;
        let revision = match req.into_inner().revision {
            0 => self.views.current().version,
            r => r,
        };
        let records = self.registry.list().await.map_err(Status::from)?;
        Ok(Response::new(rollout::status(revision, &records)))
    }

    async fn health(
        &self,
        req: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        self.caller(&req, Role::Viewer, "health")?;
        let req = req.into_inner();
        if !req.cluster.is_empty()
            && self
                .views
                .current()
                .get(Kind::Cluster, &req.cluster)
                .is_none()
        {
            return Err(AdminError::NotFound(ResourceKey::new(Kind::Cluster, &req.cluster)).into());
        }
        let agents = self.registry.health().await.map_err(Status::from)?;
        Ok(Response::new(health::view(
            &agents,
            &req.cluster,
            &req.region,
        )))
    }

    async fn get_ca(&self, req: Request<GetCaRequest>) -> Result<Response<GetCaResponse>, Status> {
        self.caller(&req, Role::Admin, "ca show")?;
        let authority = &self.auth.authority;
        Ok(Response::new(GetCaResponse {
            fingerprint: authority.fingerprint().to_string(),
            certificate_pem: authority.certificate_pem().to_string(),
            not_after: Some(crate::registry::timestamp(authority.not_after())),
        }))
    }

    async fn create_token(
        &self,
        req: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        self.caller(&req, Role::Admin, "token create")?;
        let created = auth::tokens::create(&self.auth, req.into_inner()).await;
        created
            .map(Response::new)
            .map_err(|e| AdminError::from(e).into())
    }

    async fn list_tokens(
        &self,
        req: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        self.caller(&req, Role::Admin, "token list")?;
        Ok(Response::new(auth::tokens::list(&self.auth)))
    }

    async fn revoke_token(
        &self,
        req: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        self.caller(&req, Role::Admin, "token revoke")?;
        let name = req.into_inner().name;
        auth::tokens::revoke(&self.auth, &name)
            .await
            .map_err(|e| Status::from(AdminError::from(e)))?;
        Ok(Response::new(RevokeTokenResponse {}))
    }

    async fn revoke_agent(
        &self,
        req: Request<RevokeAgentRequest>,
    ) -> Result<Response<RevokeAgentResponse>, Status> {
        self.caller(&req, Role::Admin, "agents revoke")?;
        let node_id = req.into_inner().node_id;
        match auth::identity::revoke(&self.auth, &node_id).await {
            Ok(true) => Ok(Response::new(RevokeAgentResponse {})),
            Ok(false) => Err(AdminError::NoIdentity(node_id).into()),
            Err(e) => Err(e.into()),
        }
    }
}
