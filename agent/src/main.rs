//! `portico-agent`: the agent binary. Flags are in [`portico_agent::settings::Settings`].

use std::io::IsTerminal;

use clap::Parser;
use portico_agent::settings::{LogFormat, Settings};
use tracing_subscriber::EnvFilter;

// Every proxied request allocates and frees dozens of small blocks (header maps, buffers,
// futures) on the worker threads; mimalloc's thread-local free lists do that in a fraction of
// glibc malloc's instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Traffic runs on the proxy's own per-core worker threads; this runtime only carries sync,
// reports and the admin endpoint.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    init_logging(settings.log_format);
    // Exactly one rustls provider: ring (see DEPENDENCIES.md).
    let _ = rustls::crypto::ring::default_provider().install_default();
    portico_agent::run(settings, shutdown_signal()).await
}

/// `RUST_LOG` filters (default `info`).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the agent");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
