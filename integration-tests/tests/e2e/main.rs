//! End to end: the real binaries, real etcd, real upstreams, started as processes by the
//! harness (`portico_integration_tests`) and `portico-test-support`.
//!
//! One test binary with a module per area: every test binary links the whole workspace, so
//! one binary builds in a fraction of the time of one per area. `cargo nextest` (what
//! `test.sh` runs) still runs each test in a process of its own.
#![allow(clippy::unwrap_used)]

mod agent_cache;
mod agent_shutdown;
mod agent_sync;
mod agent_tls;
mod agent_workers;
mod apply_refusals;
mod browser;
mod canary;
mod cli_commands;
mod cli_fleet;
mod cli_health;
mod cli_messages;
mod cli_secrets;
mod control_plane;
mod control_plane_etcd;
mod control_plane_latency;
mod control_plane_start;
mod dashboard;
mod deploy_examples;
mod fleet_safety;
mod gateway_fleet;
mod high_availability;
mod large_changes;
mod registry_expiry;
mod secret_hygiene;
mod security_agents;
mod security_auth;
mod security_scope;
mod security_tls;
mod security_xds;
mod service_endpoints;
mod store_conformance;
mod store_crash;
mod store_etcd;
mod xds;
