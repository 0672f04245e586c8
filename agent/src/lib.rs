//! `portico-agent`: receives config from the control plane and serves HTTP traffic with it.
//!
//! [`run`] runs a whole agent (the binary and `portico dev` both use it).
//!
//! # Layout
//! - [`agent`]: one whole agent from start to a drained shutdown ([`run`], [`serve`]).
//! - [`settings`]: flags and environment ([`settings::Settings`]).
//! - [`config`]: [`config::ConfigSet`], the agent's whole config at one version, and how an
//!   update changes it.
//! - [`sync`]: the discovery stream to the control plane: apply, ACK/NACK, fail over, resume.
//! - [`backoff`]: reconnect delays.
//! - [`cache`]: the last-good config on disk.
//! - [`state`]: what the agent serves now, shared by sync, cache, reports and admin.
//! - [`report`]: the agent's periodic health report.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `/config`.
//! - [`proxy`]: the data path. [`proxy::Proxy::apply`] compiles a config into an immutable
//!   runtime, binds new listeners and swaps atomically; nothing else changes what is served.
//!   It never sees [`sync`].
//! - [`runtime`]: compiling a config into that immutable runtime.
//! - [`tls`]: TLS termination material (certificates by SNI).
//! - [`metrics`]: the names of every data-path metric.

pub mod admin;
pub mod agent;
pub mod backoff;
pub mod cache;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod report;
pub mod runtime;
pub mod settings;
pub mod state;
pub mod sync;
pub mod tls;

pub use agent::{run, serve};
