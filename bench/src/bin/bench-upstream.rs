//! `bench-upstream`: a fast fixed-response HTTP server for the data-plane benchmarks.

use clap::Parser;

/// Answers every HTTP/1.1 or h2c request with the same small body.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18080")]
    listen: std::net::SocketAddr,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        portico_bench::upstream::run(listener, shutdown).await
    })
}
