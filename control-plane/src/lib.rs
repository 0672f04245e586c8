//! `portico-control-plane`: holds Portico's configuration in a store and streams it to agents.
//!
//! A change arrives through the Admin API, is validated and written with a history record in
//! one store transaction; every replica's watcher turns it into a new immutable snapshot, from
//! which per-scope views and encoded updates are derived and streamed to agents.
//!
//! # Layout
//! - [`server`]: `run(listener, metrics_listener, config, shutdown)`, the entry point.
//! - [`config`]: flags (and `PORTICO_CP_*` environment variables).
//! - [`store`]: the store trait and its `etcd` and `embedded` implementations.
//! - [`keys`]: key layout and value encoding; nothing else builds store keys.
//! - [`metered`]: the store wrapper timing every call and tracking reachability.
//! - [`snapshot`]: the materialized config at a config revision (pure data).
//! - [`watcher`]: loads the config and follows the store's watch, publishing snapshots.
//! - [`scope`]: which listeners an agent gets, computed once per node identity and selector set.
//! - [`views`]: per-scope views, diffs by revision and the encoded-update cache.
//! - [`throttle`]: how fast new agent streams are admitted, and the retry-after hints of the
//!   rest.
//! - [`discovery`]: agent streams (Hello, updates, ACK/NACK, coalescing, resume).
//! - [`xds`]: the same config for Envoy proxies and proxyless gRPC clients, over xDS v3 (ADS,
//!   state of the world and incremental).
//! - [`admin`]: the Admin service (apply, get, list, delete, history, rollback, status).
//! - [`auth`]: the certificate authority, tokens and roles, agent identities.
//! - [`tls`]: plaintext or TLS (given or issued certificates), and where plaintext is refused.
//! - [`compiler`]: the agents' own compiler run on a change before it is written.
//! - [`commit`]: writing a change, in one transaction or staged in several behind one config
//!   revision.
//! - [`history`]: history records and rollback reconstruction.
//! - [`registry`]: the store-backed agent registry and its batched flusher; which agents are
//!   service endpoints; each agent's endpoint health.
//! - [`election`]: leader election through the store, fencing of the leader's singleton work,
//!   and each replica's record (`portico status`).
//! - [`services`]: the endpoints of each announced service, the same on every replica.
//! - [`budgets`]: fleet budgets (quotas, FLEET rate limits) granted to agents from records in
//!   the store.
//! - [`usage`]: the usage agents report, rolled up by minute and hour in the store.
//! - [`health`]: every endpoint's state as each agent sees it, grouped for `portico health`.
//! - [`rollout`]: rollout status of a revision.
//! - [`canary`]: canary rollouts: which agents get which revision, the gates, the leader's
//!   driving.
//! - [`status`]: the one place errors become gRPC statuses (`From<E> for Status`).
//! - [`probes`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`web`]: the dashboard, a read-only web UI over the Admin API.
//! - [`metrics`]: metric names and the Prometheus recorder.

pub mod admin;
pub mod auth;
pub mod budgets;
pub mod canary;
pub mod commit;
pub mod compiler;
pub mod config;
pub mod discovery;
pub mod election;
pub mod health;
pub mod history;
pub mod keys;
pub mod metered;
pub mod metrics;
pub mod probes;
pub mod registry;
pub mod rollout;
pub mod scope;
pub mod server;
pub mod services;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod usage;
pub mod views;
pub mod watcher;
pub mod web;
pub mod xds;
