//! The test harness: starts real processes on free ports and stops them when dropped.
//!
//! Every helper binds port 0 or asks the OS for a free port, polls readiness with a deadline
//! (never sleeps to synchronise), and kills what it started in `Drop`.
//!
//! # Layout
//! - [`agent`]: a real `portico-agent` process and its admin endpoint (`/readyz`, `/config`).
//! - [`bins`]: builds and locates the workspace binaries (`portico-cp`, `portico-agent`,
//!   `portico`) so `cargo test` alone is enough.
//! - [`cp`]: a real `portico-cp` process with an embedded or etcd store, and its admin client.
//! - [`etcd`]: a real single-node etcd in a temp dir.
//! - [`net`]: free ports and polling helpers.
//! - [`process`]: a child process killed on drop.
//! - [`scripted_agent`]: a raw-gRPC agent that ACKs or NACKs on command.
//! - [`upstream`]: a real HTTP upstream and the resources that route a listener to it.

pub mod agent;
pub mod bins;
pub mod cp;
pub mod etcd;
pub mod net;
pub mod process;
pub mod scripted_agent;
pub mod upstream;
