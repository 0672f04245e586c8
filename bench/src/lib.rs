//! `portico-bench`: benchmarks of Portico against nginx and HAProxy, and of the control plane
//! under a simulated fleet.
//!
//! # Layout
//! - [`upstream`]: the fixed-response upstream server behind every proxy.
//! - [`config`]: the generated bench configs (listeners, route tables, clusters).
//! - [`gateway`]: the policies of the gateway cells.
//! - [`admin`]: applying configs through the control plane's Admin API.
//! - [`fleet`]: quantiles of the fan-out benchmark (its simulated agents are
//!   `portico_integration_tests::fleet`).
//!
//! CPU time and RSS of the measured processes come from `portico_integration_tests::footprint`.
//!
//! The binaries in `src/bin/` are thin wrappers; `dataplane/` holds the load scripts and
//! `run.sh` runs everything.

pub mod admin;
pub mod config;
pub mod fleet;
pub mod gateway;
pub mod upstream;
