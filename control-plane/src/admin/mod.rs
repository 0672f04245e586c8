//! The Admin service: config changes (apply, delete, rollback), reads, history and fleet status.
//!
//! Every change reads the stored config and the config-revision key, validates it (the
//! validation rules, then the agents' own compiler, [`crate::compiler`]) and diffs, then writes
//! the changed resources, a history record and the next config revision (the one read plus
//! one) through [`crate::commit`]: one transaction that compares the config-revision key's mod
//! revision with the one read, or for a change too large for one, several behind one config
//! revision. Concurrent changes through any replica therefore serialise: the loser re-reads
//! and retries (or, when the caller named an expected revision, fails with a conflict), and
//! config revisions count changes, 1, 2, 3, …, whichever replica wrote them. Reads (Get, List)
//! are served from this replica's snapshot, so they keep working while the store is away.
//!
//! An apply that fails validation answers with the errors in `ApplyResponse.errors` (dry run
//! or not), so the caller gets each error's resource and field path from one request.
//!
//! # Layout
//! - `change`: apply, delete and rollback, from the read to the commit.
//! - `fleet`: every agent's state against the revision due to it, summed by region and zone.
//! - `listing`: List, a page at a time, every page of a listing read from one snapshot.
//! - `rollout`: canary rollouts: their start (with the change), promotion, abort and status.
//! - `secrets`: the redacted placeholder applied back keeps the stored secret material.

mod change;
mod fleet;
mod listing;
mod rollout;
mod secrets;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portico_api::pb::Role;
use portico_api::pb::admin_server::Admin;
use portico_api::pb::{
    AbortRolloutRequest, AbortRolloutResponse, AgentsRequest, AgentsResponse, ApplyRequest,
    ApplyResponse, CreateTokenRequest, CreateTokenResponse, DeleteRequest, DeleteResponse,
    GetCaRequest, GetCaResponse, GetRequest, GetResponse, GetRolloutRequest, GetRolloutResponse,
    HealthRequest, HealthResponse, HistoryRequest, HistoryResponse, ListRequest, ListResponse,
    ListTokensRequest, ListTokensResponse, PromoteRolloutRequest, PromoteRolloutResponse,
    RevokeAgentRequest, RevokeAgentResponse, RevokeTokenRequest, RevokeTokenResponse,
    RollbackRequest, RollbackResponse, RolloutStatusRequest, RolloutStatusResponse, StatusRequest,
    StatusResponse, StoredResource, UsageRequest, UsageResponse, WhoAmIRequest, WhoAmIResponse,
};
use portico_api::pb::{FleetRequest, FleetResponse, GetChangeRequest, GetChangeResponse};
use portico_api::{Kind, Resource, ResourceKey, reference, validate};
use tonic::{Request, Response, Status};

use crate::auth::{self, Auth, AuthError, Caller};
use crate::commit::CommitError;
use crate::election::Election;
use crate::health;
use crate::history::{self, HistoryError};
use crate::keys::Keys;
use crate::metered::MeteredStore;
use crate::registry::Registry;
use crate::store::{Revision, StoreError};
use crate::usage::{self, UsageRollups};
use crate::views::Views;
use listing::Listings;

/// Why an Admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading history failed or named no change.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// Writing the change failed.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// The caller expected another config revision.
    #[error("the config is at revision {current}, not {expected}")]
    Conflict {
        expected: Revision,
        current: Revision,
    },
    /// Other changes kept committing first, or a large change kept writing.
    #[error("config kept changing concurrently; try again")]
    Busy,
    /// The resulting config is invalid.
    #[error("invalid config:\n{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<validate::ValidationError>),
    /// The request itself is malformed, or larger than a change may be.
    #[error("{0}")]
    BadRequest(String),
    /// No such resource.
    #[error("{0} not found")]
    NotFound(ResourceKey),
    /// No config revision of that number.
    #[error("revision {revision} does not exist: the config is at revision {current}")]
    NoSuchRevision {
        revision: Revision,
        current: Revision,
    },
    /// The resource is still referenced.
    #[error("{key} is referenced by {by} ({field})")]
    Referenced {
        key: ResourceKey,
        by: ResourceKey,
        field: String,
    },
    /// A listing is larger than one answer and the caller did not ask for pages.
    #[error(
        "the listing is larger than one answer ({resources} resources, {bytes}); ask for it a \
         page at a time (page_size, page_token)"
    )]
    Unpaged { resources: usize, bytes: String },
    /// A page token names a listing no longer kept, or is not one this service made.
    #[error("{0}; list again")]
    PageToken(String),
    /// The caller is unknown, or its role does not allow the call.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A canary rollout is active: every other change waits for it.
    #[error(
        "{0}: wait for it (`portico rollout status --wait`), end it (`portico rollout \
         promote` or `abort`), or apply with --force to abort it first"
    )]
    RolloutActive(String),
    /// Promote or abort with no canary rollout active.
    #[error("no canary rollout is active")]
    NoRollout,
    /// A stored value does not decode.
    #[error(transparent)]
    Decode(#[from] crate::keys::DecodeError),
    /// No agent identity of this node id.
    #[error("node {0:?} has no certificate to revoke (it never joined)")]
    NoIdentity(String),
}

/// How far back `Usage` looks by default.
const DEFAULT_USAGE_SINCE: Duration = Duration::from_secs(3600);

/// The Admin service.
pub struct AdminService {
    store: MeteredStore,
    keys: Keys,
    views: Arc<Views>,
    registry: Arc<Registry>,
    usage: Arc<UsageRollups>,
    /// This replica's name (which a staged change's marker carries) and its election.
    election: Arc<Election>,
    listings: Listings,
    auth: Arc<Auth>,
}

impl AdminService {
    /// The service over one store, as the replica of `election`.
    pub fn new(
        store: MeteredStore,
        keys: Keys,
        views: Arc<Views>,
        registry: Arc<Registry>,
        usage: Arc<UsageRollups>,
        election: Arc<Election>,
        auth: Arc<Auth>,
    ) -> Self {
        AdminService {
            store,
            keys,
            views,
            registry,
            usage,
            election,
            listings: Listings::default(),
            auth,
        }
    }

    /// The caller of `req`, refused unless its role allows `need`.
    fn caller<T>(&self, req: &Request<T>, need: Role, what: &str) -> Result<Caller, Status> {
        self.auth
            .caller(req, need, what)
            .map_err(|e| Status::from(AdminError::from(e)))
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
        let response = self.listings.page(&self.views, req.into_inner());
        response.map(Response::new).map_err(Status::from)
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
        let current = self.views.current().version;
        let revision = match req.into_inner().revision {
            0 => current,
            r if r < 0 || r > current => {
                return Err(AdminError::NoSuchRevision {
                    revision: r,
                    current,
                }
                .into());
            }
            r => r,
        };
        let records = self.registry.list().await.map_err(Status::from)?;
        Ok(Response::new(crate::rollout::status(revision, &records)))
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

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        self.caller(&req, Role::Viewer, "status")?;
        Ok(Response::new(self.election.status().await))
    }

    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        self.caller(&req, Role::Viewer, "usage")?;
        let req = req.into_inner();
        let since = match req.since {
            None => DEFAULT_USAGE_SINCE,
            Some(d) if d.seconds < 0 || d.nanos < 0 || (d.seconds == 0 && d.nanos == 0) => {
                return Err(AdminError::BadRequest("since: must be above zero".into()).into());
            }
            Some(d) => Duration::new(d.seconds as u64, d.nanos as u32),
        };
        if since > usage::MAX_SINCE {
            return Err(AdminError::BadRequest(format!(
                "since: at most {}h: usage is kept that long",
                usage::MAX_SINCE.as_secs() / 3600
            ))
            .into());
        }
        let step = match req.step {
            None => None,
            Some(d) if d.seconds < 0 || d.nanos < 0 || (d.seconds == 0 && d.nanos == 0) => {
                return Err(AdminError::BadRequest("step: must be above zero".into()).into());
            }
            Some(d) => Some(Duration::new(d.seconds as u64, d.nanos as u32)),
        };
        if step.is_some_and(|s| s.as_secs().saturating_mul(usage::MAX_STEPS) < since.as_secs()) {
            return Err(AdminError::BadRequest(format!(
                "step: at most {} steps in the time asked for",
                usage::MAX_STEPS
            ))
            .into());
        }
        let some = |s: String| (!s.is_empty()).then_some(s);
        let filter = usage::Filter {
            consumer: some(req.consumer),
            route: some(req.route),
            region: some(req.region),
        };
        let answer = self
            .usage
            .query(since, step, &filter, SystemTime::now())
            .await
            .map_err(Status::from)?;
        Ok(Response::new(UsageResponse {
            rows: answer.rows,
            from_ms: answer.from,
            to_ms: answer.to,
            series: answer.series,
            latency_bounds_ms: portico_api::usage::LATENCY_BOUNDS_MS.to_vec(),
        }))
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

    async fn get_rollout(
        &self,
        req: Request<GetRolloutRequest>,
    ) -> Result<Response<GetRolloutResponse>, Status> {
        self.caller(&req, Role::Viewer, "rollout status")?;
        let response = self.get_rollout_inner().await;
        response.map(Response::new).map_err(Status::from)
    }

    async fn promote_rollout(
        &self,
        req: Request<PromoteRolloutRequest>,
    ) -> Result<Response<PromoteRolloutResponse>, Status> {
        let caller = self.caller(&req, Role::Operator, "rollout promote")?;
        let message = req.into_inner().message;
        let promoted = self
            .promote_rollout_inner(&message, Vec::new(), &caller)
            .await;
        promoted
            .map(|revision| Response::new(PromoteRolloutResponse { revision }))
            .map_err(Status::from)
    }

    async fn abort_rollout(
        &self,
        req: Request<AbortRolloutRequest>,
    ) -> Result<Response<AbortRolloutResponse>, Status> {
        let caller = self.caller(&req, Role::Operator, "rollout abort")?;
        let message = req.into_inner().message;
        change::check_message(&message).map_err(Status::from)?;
        let reason = if message.is_empty() {
            format!("aborted by {}", caller.name)
        } else {
            format!("aborted by {}: {message}", caller.name)
        };
        let aborted = self.abort_rollout_inner(&reason, &[], &caller).await;
        aborted
            .map(|revision| Response::new(AbortRolloutResponse { revision }))
            .map_err(Status::from)
    }

    async fn who_am_i(
        &self,
        req: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let caller = self.caller(&req, Role::Viewer, "whoami")?;
        Ok(Response::new(WhoAmIResponse {
            name: caller.name,
            role: caller.role.name().to_string(),
            auth: self.auth.on,
        }))
    }

    async fn fleet(&self, req: Request<FleetRequest>) -> Result<Response<FleetResponse>, Status> {
        self.caller(&req, Role::Viewer, "fleet")?;
        let snapshot = self.views.current();
        let records = self.registry.list().await.map_err(Status::from)?;
        let pin = snapshot.canary.as_deref();
        let fleet = fleet::view(&records, snapshot.version, pin, &req.into_inner());
        fleet.map(Response::new).map_err(Status::from)
    }

    async fn get_change(
        &self,
        req: Request<GetChangeRequest>,
    ) -> Result<Response<GetChangeResponse>, Status> {
        self.caller(&req, Role::Viewer, "history")?;
        let revision = req.into_inner().revision;
        let record = history::read_one(&self.store, &self.keys, revision)
            .await
            .map_err(|e| Status::from(AdminError::from(e)))?;
        let diff = portico_api::diff::change(revision, &record.deltas)
            .map_err(|e| Status::internal(format!("rendering the change: {e}")))?;
        Ok(Response::new(GetChangeResponse {
            entry: record.entry,
            deltas: record.deltas,
            diff,
        }))
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
