//! `portico-agent`: receives config from the control plane and serves HTTP traffic with it.
//!
//! # Layout
//! - [`config`]: [`config::ConfigSet`], the agent's whole config at one version, and how an
//!   update changes it.
//! - [`proxy`]: the data path. [`proxy::Proxy::apply`] compiles a config into an immutable
//!   runtime, binds new listeners and swaps atomically; nothing else changes what is served.
//! - [`runtime`]: compiling a config into that immutable runtime.
//! - [`tls`]: TLS termination material (certificates by SNI).
//! - [`metrics`]: the names of every data-path metric.

pub mod config;
pub mod metrics;
pub mod proxy;
pub mod runtime;
pub mod tls;
