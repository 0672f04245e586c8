//! `portico-test-support`: what the tests of every Portico crate share, so that each crate's
//! tests build their configs from one place and every crate is tested against the same ones.
//!
//! It depends only on `portico-api`, so any crate can take it as a dev-dependency, the API
//! crate included.
//!
//! # Layout
//! - [`fixtures`]: certificates generated once per test run, the valid configuration that uses
//!   every supported field, edge cases validation accepts, and YAML helpers.
//! - [`examples`]: the example config files shipped under `deploy/`.

pub mod examples;
pub mod fixtures;
