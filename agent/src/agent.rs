//! One whole agent: last-good cache, admin endpoint, config sync and the data path, from start
//! to a drained shutdown. The binary and `portico dev` both run an agent through [`run`].

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use portico_api::pb::Node;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::cache::Cache;
use crate::identity::Credentials;
use crate::settings::Settings;
use crate::state::State;
use crate::sync;
use crate::trust::Trust;
use portico_proxy::runtime::NodeInfo;
use portico_proxy::{Proxy, ProxyConfig};

/// Runs an agent until `shutdown` completes, then drains: stops config sync, lets in-flight
/// requests finish for up to `settings.drain_timeout`, and returns.
///
/// Binds `settings.admin_listen`; see [`serve`] to pass a listener instead.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let admin = TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("binding the admin endpoint {}", settings.admin_listen))?;
    serve(settings, admin, shutdown).await
}

/// [`run`] with the admin endpoint on `admin` (e.g. bound to port 0 by the caller).
pub async fn serve(
    settings: Settings,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Idempotent; an in-process caller may have installed the provider already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    anyhow::ensure!(
        !settings.control_planes.is_empty(),
        "no control plane URL given"
    );
    let node = Node {
        id: settings.node_id()?,
        region: settings.region.clone(),
        zone: settings.zone.clone(),
        labels: settings.labels.iter().cloned().collect(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        services: settings.services.clone(),
        address: settings.advertise_address.clone().unwrap_or_default(),
    };
    portico_api::node::check_services(&node.services)
        .map_err(|e| anyhow::anyhow!("--service: {e}"))?;
    let credentials = credentials(&settings, &node)?.map(Arc::new);
    admin::prometheus();
    portico_proxy::metrics::describe();
    sync::describe_metrics();
    let proxy = Arc::new(Proxy::new(ProxyConfig {
        node: NodeInfo {
            region: node.region.clone(),
            zone: node.zone.clone(),
            labels: settings.labels.iter().cloned().collect(),
        },
        workers: settings.proxy_workers,
        ..ProxyConfig::default()
    }));
    let state = Arc::new(State::default());
    let cache = settings.cache_dir.as_ref().map(Cache::new);
    if let Some(cache) = &cache {
        serve_cached(cache, &proxy, &state).await;
    }
    tracing::info!(
        node = node.id,
        admin = %admin.local_addr().context("admin address")?,
        control_planes = ?settings.control_planes,
        "agent started"
    );

    // Sync stops before the drain; the admin endpoint and the cache writer after it.
    let stop_sync = CancellationToken::new();
    let stop_rest = CancellationToken::new();
    let admin_task = tokio::spawn(admin::run(
        admin,
        Arc::clone(&state),
        stop_rest.clone().cancelled_owned(),
    ));
    let writer_task =
        cache.map(|cache| tokio::spawn(cache.run_writer(state.subscribe(), stop_rest.clone())));
    let sync = sync::Client {
        control_planes: settings.control_planes.clone(),
        node,
        report_interval: settings.report_interval,
        accept_lower_version: settings.accept_lower_version,
        proxy: Arc::clone(&proxy),
        state: Arc::clone(&state),
        credentials,
    };
    let sync_task = tokio::spawn(sync.run(stop_sync.clone()));

    shutdown.await;
    tracing::info!(grace = ?settings.drain_timeout, "shutting down: draining");
    state.start_draining();
    stop_sync.cancel();
    log_join("config sync", sync_task.await);
    proxy.shutdown(settings.drain_timeout).await;
    stop_rest.cancel();
    if let Some(task) = writer_task {
        log_join("cache writer", task.await);
    }
    match admin_task.await {
        Ok(result) => result.context("admin endpoint")?,
        Err(e) => tracing::error!(error = %e, "admin endpoint task failed"),
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// How the agent authenticates to `https://` control planes, from `--ca-file` or
/// `--ca-fingerprint` and `--join-token`; refused when TLS would be unverified or a join token
/// could go out in plaintext.
fn credentials(settings: &Settings, node: &Node) -> anyhow::Result<Option<Credentials>> {
    let https = settings
        .control_planes
        .iter()
        .any(|u| u.starts_with("https://"));
    let plaintext = settings
        .control_planes
        .iter()
        .any(|u| u.starts_with("http://"));
    if settings.join_token.is_some() && plaintext {
        anyhow::bail!(
            "--join-token is sent to control planes over TLS only: use https:// URLs in \
             --control-plane"
        );
    }
    let trust = Trust::from_options(settings.ca_file.as_deref(), settings.ca_fingerprint)?;
    match trust {
        Some(trust) => Ok(Some(Credentials::new(
            trust,
            settings.join_token.clone(),
            node.clone(),
            settings.cache_dir.as_deref(),
        ))),
        None if https || settings.join_token.is_some() => anyhow::bail!(
            "the control plane is served over TLS (https://): say which CA to trust with \
             --ca-file or --ca-fingerprint"
        ),
        None => Ok(None),
    }
}

/// Applies the cached config, if there is a valid one, so the agent serves before any control
/// plane answers. Any problem with the cache is logged and the agent waits for the control
/// plane instead.
async fn serve_cached(cache: &Cache, proxy: &Proxy, state: &State) {
    let loading = cache.clone();
    let loaded = match tokio::task::spawn_blocking(move || loading.load()).await {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::warn!(error = %e, "loading the config cache failed");
            return;
        }
    };
    let config = match loaded {
        Ok(Some(config)) => config,
        Ok(None) => {
            tracing::info!(path = %cache.path().display(), "no cached config");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the config cache");
            return;
        }
    };
    match proxy.apply(&config).await {
        Ok(()) => {
            tracing::info!(version = config.version, "serving the cached config");
            state.publish(Arc::new(config));
        }
        Err(e) => tracing::warn!(
            version = config.version,
            error = %e,
            "the cached config does not apply; waiting for the control plane"
        ),
    }
}

fn log_join(task: &str, result: Result<(), tokio::task::JoinError>) {
    if let Err(e) = result {
        tracing::error!(task, error = %e, "task failed");
    }
}
