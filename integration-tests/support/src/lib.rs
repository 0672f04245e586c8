//! `portico-test-support`: what the tests of every Portico crate share, so that each helper is
//! written once and every crate is tested against the same configs.
//!
//! It depends on no Portico crate but `portico-api`, so any crate can take it as a
//! dev-dependency, the API crate included. What needs the binaries or the control plane (the
//! processes of a deployment, a scripted agent) is the harness in `portico-integration-tests`.
//!
//! # Layout
//! - [`wait`]: `eventually`, polling with a deadline instead of sleeping.
//! - [`net`]: free ports, and addresses that refuse connections.
//! - [`process`]: a child process killed and reaped on drop, its output kept for failures.
//! - [`upstream`]: real HTTP upstream servers (echo, name, slow, held, streamed, TLS).
//! - [`http`]: clients: whole answers, `GET`s that may find nothing, raw bytes.
//! - [`resources`]: builders of listeners, route tables, clusters and secrets, and YAML
//!   rendered through the file format.
//! - [`tls`]: certificates generated at test time.
//! - [`fixtures`]: the valid configuration that uses every supported field, and edge cases
//!   validation accepts.
//! - [`examples`]: the example config files shipped under `deploy/`.
//! - [`fuzz`]: inputs for property tests: the fixtures with random edits, as values or bytes.

pub mod examples;
pub mod fixtures;
pub mod fuzz;
pub mod http;
pub mod net;
pub mod process;
pub mod resources;
pub mod tls;
pub mod upstream;
pub mod wait;
