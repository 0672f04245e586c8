//! `bench-apply`: applies the data-plane bench config (one listener, N prefix routes, one
//! cluster: one endpoint, or three with a balancing policy) to a control plane through its
//! Admin API.

use std::time::Duration;

use clap::Parser;
use portico_bench::{admin, config, gateway};

#[derive(Parser)]
struct Args {
    /// The control plane's Admin API.
    #[arg(long, default_value = "http://127.0.0.1:7000")]
    admin: String,
    /// Bearer token for the Admin API, if it needs one.
    #[arg(long, env = "PORTICO_TOKEN")]
    token: Option<String>,
    /// Port the agent listens on.
    #[arg(long)]
    listen_port: u16,
    /// Port of the bench upstream.
    #[arg(long)]
    upstream_port: u16,
    /// Prefix routes; requests to the last one's prefix are the ones measured.
    #[arg(long, default_value_t = 1)]
    routes: usize,
    /// The cluster's endpoints and policy.
    #[arg(long, value_enum, default_value = "single")]
    balancing: config::Balancing,
    /// The policies on the routes.
    #[arg(long, value_enum, default_value = "none")]
    gateway: gateway::Gateway,
    /// Where to write the header a client must send ("name: value"), for gateway cells that
    /// need one.
    #[arg(long)]
    header_out: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut client = admin::connect(&args.admin, Duration::from_secs(30)).await?;
    let mut resources = config::dataplane_balanced(
        args.listen_port,
        args.upstream_port,
        args.routes,
        args.balancing,
    );
    let header = gateway::apply(&mut resources, args.gateway)?;
    if let Some(path) = &args.header_out {
        let line = header.map(|(n, v)| format!("{n}: {v}")).unwrap_or_default();
        std::fs::write(path, line)?;
    }
    let revision = admin::apply(
        &mut client,
        args.token.as_deref(),
        resources,
        "data-plane bench",
    )
    .await?;
    println!("{revision}");
    Ok(())
}
