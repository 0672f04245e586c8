//! `grpc-echo-server ADDR [THREADS]`: the echo service of the gRPC tests (and
//! `grpc.health.v1.Health`) on ADDR, over h2c, until killed. The gRPC benchmark runs it behind
//! portico-agent and nginx.

use std::net::SocketAddr;

use portico_grpc_tests::{EchoService, serve};
use tokio_util::sync::CancellationToken;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .ok_or("usage: grpc-echo-server ADDR [THREADS]")?
        .parse()?;
    let threads: usize = args.next().map_or(Ok(2), |t| t.parse())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let (_health, served) = serve(
            listener,
            EchoService::new("bench"),
            CancellationToken::new(),
        )
        .await;
        served.await?;
        Ok(())
    })
}
