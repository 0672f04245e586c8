//! `portico dev`: a control plane on the embedded store, one agent and a demo upstream in one
//! process, with `deploy/examples/quickstart.yaml` applied.

use crate::error::{CliError, CliResult};

/// `portico dev`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `dev`.
pub async fn run(_args: Args) -> CliResult {
    Err(CliError::Server("not yet".into()))
}
