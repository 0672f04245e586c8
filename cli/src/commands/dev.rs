//! `portico dev`: a control plane on the embedded store (in a temp dir), one agent and the
//! demo upstream in one process, with `deploy/examples/quickstart.yaml` applied. Prints the
//! curl commands that show it working; Ctrl-C (or SIGTERM) stops everything.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use metrics_util::MetricKindMask;
use metrics_util::layers::RouterBuilder;
use portico_api::file;
use portico_api::pb::resource::Spec;
use portico_api::pb::{ApplyRequest, Resource, RolloutStatusRequest};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::ClientConfig;
use crate::demo;
use crate::error::{CliError, CliResult};
use crate::files::{FieldError, validation_failed};

/// The config `dev` applies; the same file users read in `deploy/examples`.
const QUICKSTART: &str = include_str!("../../../deploy/examples/quickstart.yaml");

/// How long the agent may take to apply the quickstart config.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long everything may take to stop after Ctrl-C.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// `portico dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of the control plane's gRPC API (what `--server` points the CLI at).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
    /// Port of the proxy listener on 127.0.0.1 (the quickstart listener is moved here).
    #[arg(long, default_value_t = 8080)]
    pub proxy_port: u16,
    /// Address of the demo upstream (the quickstart cluster is pointed here).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub upstream: SocketAddr,
    /// Address of the agent's admin endpoint (/healthz, /readyz, /metrics, /config).
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub agent_admin: SocketAddr,
    /// Address of the control plane's HTTP endpoints (/metrics, /healthz, /readyz).
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub metrics_listen: SocketAddr,
    /// Address of the dashboard.
    #[arg(long, default_value = "127.0.0.1:7080")]
    pub web_listen: SocketAddr,
}

/// A part that runs until shutdown, by name.
type Part = (&'static str, JoinHandle<anyhow::Result<()>>);

/// Runs `dev`.
pub async fn run(args: Args) -> CliResult {
    init_logging();
    // Every port is claimed before anything starts, so a taken one fails cleanly up front.
    let cp_listener = bind(args.listen, "--listen").await?;
    let metrics_listener = bind(args.metrics_listen, "--metrics-listen").await?;
    let upstream_listener = bind(args.upstream, "--upstream").await?;
    let admin_listener = bind(args.agent_admin, "--agent-admin").await?;
    let proxy = SocketAddr::from(([127, 0, 0, 1], args.proxy_port));
    // The agent binds the proxy port itself when the config arrives; check it is free now
    // rather than have the agent NACK later.
    drop(bind(proxy, "--proxy-port").await?);
    // The control plane binds the dashboard itself.
    drop(bind(args.web_listen, "--web-listen").await?);

    let data = tempfile::Builder::new()
        .prefix("portico-dev-")
        .tempdir()
        .context("creating a temp dir for the embedded store")?;
    let stop = CancellationToken::new();
    let server = format!("http://{}", args.listen);

    let mut parts: Vec<Part> = Vec::new();
    metrics_per_part();
    let mut config = portico_control_plane::config::Config::embedded(data.path().join("store"));
    config.web_listen = portico_control_plane::config::WebListen(Some(args.web_listen));
    parts.push((
        "control plane",
        tokio::spawn(wrap(portico_control_plane::server::run(
            cp_listener,
            metrics_listener,
            config,
            stop.clone().cancelled_owned(),
        ))),
    ));
    parts.push((
        "demo upstream",
        tokio::spawn(wrap(demo::run(
            upstream_listener,
            stop.clone().cancelled_owned(),
        ))),
    ));

    let started = async {
        apply_quickstart(&server, proxy.port(), args.upstream).await?;
        parts.push((
            "agent",
            tokio::spawn(portico_agent::serve(
                agent_settings(&server, args.agent_admin),
                admin_listener,
                stop.clone().cancelled_owned(),
            )),
        ));
        wait_until_applied(&server).await
    };
    let outcome = tokio::select! {
        r = started => r.map(|()| true),
        () = interrupted() => Ok(false),
    };
    let result = match outcome {
        Ok(true) => {
            print_banner(&args, &server, proxy);
            tokio::select! {
                () = interrupted() => Ok(()),
                (name, r) = first_exit(&mut parts) => Err(CliError::Other(anyhow!("{name} stopped: {r}"))),
            }
        }
        Ok(false) => Ok(()),
        Err(e) => Err(e),
    };
    eprintln!("stopping");
    stop.cancel();
    let stopped = tokio::time::timeout(STOP_TIMEOUT, async {
        for (name, handle) in parts {
            if let Ok(Err(e)) = handle.await {
                eprintln!("{name}: {e:#}");
            }
        }
    })
    .await;
    if stopped.is_err() {
        eprintln!("some parts did not stop within {STOP_TIMEOUT:?}");
    }
    result
}

async fn wrap<E: Into<anyhow::Error>>(
    f: impl Future<Output = Result<(), E>>,
) -> anyhow::Result<()> {
    f.await.map_err(Into::into)
}

/// Binds `addr`, or fails with a line naming the port and the flag that moves it.
async fn bind(addr: SocketAddr, flag: &str) -> CliResult<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        CliError::Other(anyhow!(
            "cannot listen on {addr} ({e}); choose another address with {flag}"
        ))
    })
}

/// Logs warnings and errors only, unless `RUST_LOG` says otherwise: the banner is the output.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The quickstart resources, with the listener on `proxy_port` and the demo cluster pointing
/// at `upstream`.
pub fn quickstart(proxy_port: u16, upstream: SocketAddr) -> CliResult<Vec<Resource>> {
    let loaded = file::parse(Path::new("deploy/examples/quickstart.yaml"), QUICKSTART).map_err(
        |errors| {
            let errors: Vec<FieldError> = errors.into_iter().map(FieldError::from).collect();
            validation_failed(&errors)
        },
    )?;
    let mut resources: Vec<Resource> = loaded.into_iter().map(|l| l.resource).collect();
    for r in &mut resources {
        match &mut r.spec {
            Some(Spec::Listener(l)) => l.port = u32::from(proxy_port),
            Some(Spec::Cluster(c)) => {
                for e in &mut c.endpoints {
                    e.address = upstream.ip().to_string();
                    e.port = u32::from(upstream.port());
                }
            }
            _ => {}
        }
    }
    Ok(resources)
}

fn client(server: &str) -> ClientConfig {
    ClientConfig::local(server)
}

async fn apply_quickstart(server: &str, proxy_port: u16, upstream: SocketAddr) -> CliResult {
    let client = client(server);
    let mut admin = client.connect().await?;
    let resp = admin
        .apply(ApplyRequest {
            resources: quickstart(proxy_port, upstream)?,
            message: "portico dev: quickstart".into(),
            ..Default::default()
        })
        .await
        .map_err(|s| client.status(s))?
        .into_inner();
    if resp.errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Validation(
            resp.errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect(),
        ))
    }
}

/// One process, one global metrics recorder: it routes each part's metrics, by name, to that
/// part's own Prometheus recorder, which that part's `/metrics` renders.
fn metrics_per_part() {
    let cp = portico_control_plane::metrics::recorder();
    let agent = portico_agent::admin::recorder();
    portico_control_plane::metrics::use_recorder(cp.handle());
    portico_agent::admin::share_recorder(agent.handle());
    let mut router = RouterBuilder::from_recorder(metrics::NoopRecorder);
    router
        .add_route(MetricKindMask::ALL, "portico_cp_", cp)
        .add_route(MetricKindMask::ALL, "portico_agent_", agent);
    let router = router.build();
    if metrics::set_global_recorder(router).is_err() {
        tracing::warn!("another metrics recorder is installed; /metrics will be empty");
    }
}

fn agent_settings(server: &str, admin: SocketAddr) -> portico_agent::settings::Settings {
    portico_agent::settings::Settings {
        control_planes: vec![server.to_string()],
        node_id: Some("dev-agent".into()),
        region: "local".into(),
        zone: "local-1".into(),
        labels: Vec::new(),
        services: Vec::new(),
        advertise_address: None,
        join_token: None,
        ca_fingerprint: None,
        ca_file: None,
        admin_listen: admin,
        cache_dir: None,
        log_format: portico_agent::settings::LogFormat::Text,
        report_interval: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(5),
        proxy_workers: 0,
        accept_lower_version: false,
    }
}

/// Waits until the agent applied the current revision; a NACK is an error with its reason.
async fn wait_until_applied(server: &str) -> CliResult {
    let client = client(server);
    let mut admin = client.connect().await?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let s = admin
            .rollout_status(RolloutStatusRequest { revision: 0 })
            .await
            .map_err(|s| client.status(s))?
            .into_inner();
        if let Some(n) = s.nacks.first() {
            return Err(CliError::Rollout(format!(
                "the agent rejected the quickstart config: {}",
                n.error
            )));
        }
        if s.applied > 0 && s.pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CliError::Rollout(format!(
                "the agent did not apply the quickstart config within {READY_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_banner(args: &Args, server: &str, proxy: SocketAddr) {
    let cli_env = if server == crate::client::DEFAULT_SERVER {
        String::new()
    } else {
        format!("  export PORTICO_SERVER={server}\n")
    };
    println!(
        "portico dev is running; press Ctrl-C to stop.\n\
         \n\
         \x20 control plane   {server}\n\
         \x20 dashboard       http://{web}/\n\
         \x20 proxy           http://{proxy}\n\
         \x20 demo upstream   http://{upstream}\n\
         \x20 agent admin     http://{admin}/config\n\
         \n\
         Try:\n\
         \x20 curl -i http://{proxy}/api/hello\n\
         \x20 curl -i http://{proxy}/healthz\n\
         \x20 curl -i http://{proxy}/nothing-here\n\
         \n\
         And from another terminal:\n\
         {cli_env}\
         \x20 portico get all\n\
         \x20 portico agents\n\
         \x20 portico history",
        upstream = args.upstream,
        admin = args.agent_admin,
        web = args.web_listen,
    );
}

/// Completes on Ctrl-C or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// The first part to exit and how (before shutdown, any exit is a failure).
async fn first_exit(parts: &mut [Part]) -> (&'static str, String) {
    let (name, result) = std::future::poll_fn(|cx| {
        for (name, handle) in parts.iter_mut() {
            if let std::task::Poll::Ready(r) = std::pin::Pin::new(handle).poll(cx) {
                return std::task::Poll::Ready((*name, r));
            }
        }
        std::task::Poll::Pending
    })
    .await;
    let text = match result {
        Ok(Ok(())) => "exited".to_string(),
        Ok(Err(e)) => format!("{e:#}"),
        Err(e) => e.to_string(),
    };
    (name, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quickstart_moves_the_listener_and_the_upstream() {
        let upstream: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let resources = quickstart(18080, upstream).unwrap();
        let listener = resources
            .iter()
            .find_map(|r| match &r.spec {
                Some(Spec::Listener(l)) => Some(l),
                _ => None,
            })
            .unwrap();
        assert_eq!(listener.port, 18080);
        let cluster = resources
            .iter()
            .find_map(|r| match &r.spec {
                Some(Spec::Cluster(c)) => Some(c),
                _ => None,
            })
            .unwrap();
        assert_eq!(cluster.endpoints[0].address, "127.0.0.1");
        assert_eq!(cluster.endpoints[0].port, 4000);
    }
}
