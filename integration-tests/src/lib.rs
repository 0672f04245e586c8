//! The end-to-end harness: the real binaries (`portico-cp`, `portico-agent`, `portico`) and
//! real etcd started as processes on free ports, and what tests do with them.
//!
//! What every crate's tests share (polling, ports, processes, upstreams, clients, resource
//! builders) is `portico-test-support`; this crate adds what needs the binaries or the control
//! plane. Every helper polls readiness with a deadline (never sleeps to synchronise) and kills
//! what it started in `Drop`, printing the process's output when a test fails.
//!
//! The tests themselves are one binary, `tests/e2e`, a module per area.
//!
//! # Layout
//! - [`agent`]: a real `portico-agent` process and its admin endpoint (`/readyz`, `/config`).
//! - [`browser`]: headless chromium driven over the DevTools protocol, for dashboard tests.
//! - [`bins`]: builds and locates the workspace binaries so `cargo test` alone is enough.
//! - [`cli`]: the `portico` binary run against a control plane, config files for it, and the
//!   small configs the CLI tests apply.
//! - [`cp`]: a real `portico-cp` process with an embedded or etcd store, applies through its
//!   Admin API, and waits on its registry and rollout status.
//! - [`etcd`]: a real single-node etcd in a temp dir.
//! - [`footprint`]: CPU time and memory of other processes, read from `/proc`.
//! - [`fleet`]: simulated agents, many streams on few connections, for storms and benchmarks.
//! - [`netns`]: network namespaces and veth links, cut and restored, for network faults.
//! - [`scripted_agent`]: a raw-gRPC agent that ACKs or NACKs on command.
//! - [`xds`]: real xDS clients: grpcio's xDS client and gRPC backends (Python), and Envoy,
//!   from a virtualenv made once under the target directory.

pub mod agent;
pub mod bins;
pub mod browser;
pub mod cli;
pub mod cp;
pub mod etcd;
pub mod fleet;
pub mod footprint;
pub mod netns;
pub mod scripted_agent;
pub mod xds;
