//! `portico-agent`: receives config from the control plane and serves HTTP traffic with it.
//!
//! [`run`] runs a whole agent (the binary and `portico dev` both use it).
//!
//! # Layout
//! - [`agent`]: one whole agent from start to a drained shutdown ([`run`], [`serve`]).
//! - [`settings`]: flags and environment ([`settings::Settings`]).
//! - [`sync`]: the discovery stream to the control plane: apply, ACK/NACK, fail over, resume.
//! - [`trust`]: which control planes to trust over TLS (a CA file or a pinned fingerprint).
//! - [`cache`]: the last-good config on disk.
//! - [`identity`]: the agent's client certificate: join, keep, renew.
//! - [`state`]: what the agent serves now, shared by sync, cache, reports and admin.
//! - [`report`]: the agent's periodic health report.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `/config`.
//!
//! The data path is the `portico-proxy` crate: `Proxy::apply` compiles a config into an
//! immutable runtime, binds new listeners and swaps atomically; nothing else changes what is
//! served, and the crate boundary keeps it from ever seeing [`sync`].

pub mod admin;
pub mod agent;
pub mod cache;
pub mod identity;
pub mod report;
pub mod settings;
pub mod state;
pub mod sync;
pub mod trust;

pub use agent::{run, serve};
