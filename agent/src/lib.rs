//! `portico-agent`: receives config from the control plane and serves HTTP traffic with it.
//!
//! # Layout
//! - [`config`]: [`config::ConfigSet`], the agent's whole config at one version, and how an
//!   update changes it.
//! - [`proxy`]: the data path. [`proxy::Proxy::apply`] compiles a config into an immutable
//!   runtime, binds new listeners and swaps atomically; nothing else changes what is served.

pub mod config;
pub mod proxy;
