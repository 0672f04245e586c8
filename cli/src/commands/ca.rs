//! `portico ca show`: the control plane's certificate authority, whose fingerprint agents
//! (`portico-agent --ca-fingerprint`) and the CLI (`--ca-fingerprint`) pin.

use portico_api::pb::GetCaRequest;
use serde::Serialize;

use crate::commands::Context;
use crate::error::CliResult;
use crate::output;

/// `portico ca …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the CA's SHA-256 fingerprint (and, with -o json|yaml, its certificate).
    Show,
}

/// What `ca show` prints. JSON fields are stable.
#[derive(Debug, Serialize)]
pub struct Ca {
    /// Lowercase hex SHA-256 of the CA certificate (DER).
    pub fingerprint: String,
    /// The CA certificate, PEM: what `--ca-file` takes.
    pub certificate: String,
    /// When the CA expires, RFC 3339 UTC.
    pub not_after: String,
}

/// Runs `ca show`.
pub async fn run(ctx: &Context, command: Command) -> CliResult {
    let Command::Show = command;
    let mut admin = ctx.connect().await?;
    let resp = admin
        .get_ca(GetCaRequest {})
        .await
        .map_err(|s| ctx.status(s))?
        .into_inner();
    let out = Ca {
        fingerprint: resp.fingerprint,
        certificate: resp.certificate_pem,
        not_after: output::rfc3339(resp.not_after.as_ref()),
    };
    output::print(ctx.format, &out, || {
        format!(
            "CA fingerprint (SHA-256): {}\nexpires: {}\n",
            out.fingerprint, out.not_after
        )
    })
}
