//! Wiring: opens the store, loads the config, and serves gRPC (Admin, Discovery, and xDS's
//! aggregated discovery), the HTTP probes and the dashboard until shutdown. `main`, the tests and
//! `portico dev` all start a control plane here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use portico_api::pb::Role;
use portico_api::pb::admin_server::AdminServer;
use portico_api::pb::identity_server::IdentityServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::admin::AdminService;
use crate::auth::Auth;
use crate::auth::ca::{Authority, CaError};
use crate::auth::identity::IdentityService;
use crate::auth::table::AuthState;
use crate::auth::tokens::{self, BootstrapError};
use crate::budgets::Budgets;
use crate::canary::Rollouts;
use crate::config::{Config, StoreKind};
use crate::discovery::{Discovery, DiscoveryServer, Fleet};
use crate::election::{Election, Leadership, Replica};
use crate::keys::Keys;
use crate::metered::MeteredStore;
use crate::registry::Registry;
use crate::services::Services;
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::store::etcd::{EtcdConfig, EtcdStore};
use crate::store::{Store, StoreError};
use crate::throttle::StreamThrottle;
use crate::tls::{self, TlsError};
use crate::usage::UsageRollups;
use crate::views::Views;
use crate::watcher;

/// How long connecting to etcd at start may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on every connection: a peer that does not answer one within the timeout is
/// gone, so a vanished agent's stream ends within 20 s.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the control plane could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened or reached.
    #[error("opening the {kind} store: {source}")]
    Open {
        kind: &'static str,
        #[source]
        source: StoreError,
    },
    /// The embedded store's data is gone: refused rather than started empty.
    #[error(
        "opening the embedded store: {source}; nothing was started. If the config should be \
         empty, start once with --init to create a new, empty store on purpose (agents keep \
         serving the config they have and refuse an empty or older one; see ARCHITECTURE.md, \
         \"Fleet safety\")"
    )]
    Uninitialized {
        #[source]
        source: StoreError,
    },
    /// The config could not be read.
    #[error("loading the config from the store: {0}")]
    Load(#[source] StoreError),
    /// The gRPC server failed.
    #[error("serving gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// TLS is misconfigured, or plaintext is refused on this address.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The certificate authority could not be loaded or created.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The listener's address is unknown.
    #[error("reading the listener's address: {0}")]
    Address(#[source] std::io::Error),
    /// The dashboard's address could not be bound.
    #[error("binding the dashboard on {addr} (--web-listen): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The first admin token could not be read, made or stored.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
}

/// Opens the store named by `config` and checks that it answers.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServerError> {
    let (kind, opened): (&'static str, Result<Arc<dyn Store>, StoreError>) = match config.store {
        StoreKind::Embedded => {
            let options = EmbeddedOptions {
                init: config.init,
                ..EmbeddedOptions::default()
            };
            let opened = EmbeddedStore::open_with(&config.data_dir, options);
            if let Err(source @ StoreError::Uninitialized { .. }) = opened {
                return Err(ServerError::Uninitialized { source });
            }
            ("embedded", opened.map(|s| Arc::new(s) as Arc<dyn Store>))
        }
        StoreKind::Etcd => (
            "etcd",
            EtcdStore::connect(&EtcdConfig::new(config.etcd_endpoints.clone()))
                .await
                .map(|s| Arc::new(s) as Arc<dyn Store>),
        ),
    };
    let store = opened.map_err(|source| ServerError::Open { kind, source })?;
    // A store that connects lazily fails here instead of on the first agent.
    let probe = tokio::time::timeout(CONNECT_TIMEOUT, store.get("/portico-probe")).await;
    match probe {
        Ok(Ok(_)) => Ok(store),
        Ok(Err(source)) => Err(ServerError::Open { kind, source }),
        Err(_) => Err(ServerError::Open {
            kind,
            source: StoreError::Unavailable(format!("no answer within {CONNECT_TIMEOUT:?}")),
        }),
    }
}

/// Runs a control plane on `listener` (gRPC) and `metrics_listener` (HTTP) with the store
/// named by `config`, until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    metrics_listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let store = open_store(&config).await?;
    run_with_store(listener, metrics_listener, config, store, shutdown).await
}

/// [`run`] with a store opened by the caller.
pub async fn run_with_store(
    listener: TcpListener,
    metrics_listener: TcpListener,
    config: Config,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    // Install the recorder before anything records.
    crate::metrics::handle();
    // Exactly one rustls provider (ring); idempotent, an in-process caller may have done it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = listener.local_addr().map_err(ServerError::Address)?;
    let serving = tls::serving(&config, addr)?;
    let store = MeteredStore::new(store);
    let keys = Keys::new(config.key_root());
    let authority = Arc::new(Authority::load_or_create(&store, &keys).await?);
    let pem = tls::identity(serving, &config, &authority, addr)?;
    let web_tls = pem.as_ref().map(tls::web_config).transpose()?;
    let tls = pem.as_ref().map(|pem| tls::grpc_config(pem, &authority));
    let web_listener = match config.web_listen.0 {
        Some(web) => {
            tls::check_web(&config, web, web_tls.is_some())?;
            let bound = TcpListener::bind(web)
                .await
                .map_err(|source| ServerError::Bind { addr: web, source })?;
            if config.announce {
                let scheme = if web_tls.is_some() { "https" } else { "http" };
                let at = bound.local_addr().map_err(ServerError::Address)?;
                println!("dashboard: {scheme}://{at}/");
            }
            Some(bound)
        }
        None => None,
    };
    let auth_on = tls::auth_on(&config, addr);
    tracing::info!(
        fingerprint = authority.fingerprint(),
        ?serving,
        auth = auth_on,
        "certificate authority"
    );
    if config.announce {
        println!("CA fingerprint (SHA-256): {}", authority.fingerprint());
    }
    let (auth_state, auth_listed) = AuthState::load(&store, &keys)
        .await
        .map_err(ServerError::Load)?;
    let auth_state = Arc::new(auth_state);
    let auth = Arc::new(Auth::new(
        auth_on,
        authority.clone(),
        config.agent_cert_ttl,
        auth_state.clone(),
        store.clone(),
        keys.clone(),
    ));
    let (initial, listed_at) = watcher::load(&store, &keys)
        .await
        .map_err(ServerError::Load)?;
    tracing::info!(
        revision = initial.version,
        resources = initial.len(),
        "config loaded"
    );
    let initial = Arc::new(initial);
    let views = Arc::new(Views::new(initial.clone()));
    // With a canary rollout active, the revision before it too.
    watcher::publish(&store, &keys, &views, initial).await;
    let replica = config.replica_id();
    let registry = Arc::new(Registry::new(
        store.clone(),
        keys.clone(),
        replica.clone(),
        config.agent_expiry,
    ));
    let cancel = CancellationToken::new();
    let auth_follower = tokio::spawn(auth_state.follow(
        store.clone(),
        keys.clone(),
        auth_listed + 1,
        cancel.clone(),
    ));
    match &config.bootstrap_token_file {
        Some(path) => {
            if let Err(e) = tokens::bootstrap(&auth, path).await {
                cancel.cancel();
                return Err(e.into());
            }
        }
        None if auth_on && !auth.table().tokens().any(|t| t.value.role() == Role::Admin) => {
            tracing::warn!(
                "authentication is on and no admin token exists: start with \
                 --bootstrap-token-file PATH to make the first one"
            );
        }
        None => {}
    }

    let watcher = tokio::spawn(watcher::follow(
        store.clone(),
        keys.clone(),
        views.clone(),
        listed_at,
        cancel.clone(),
    ));
    let flusher = tokio::spawn(registry.clone().run_flusher(cancel.clone()));
    let leadership = Arc::new(Leadership::default());
    let election = Arc::new(Election::new(
        store.clone(),
        keys.clone(),
        Replica {
            id: replica.clone(),
            address: addr.to_string(),
            exclusive: config.store == StoreKind::Embedded,
        },
        registry.clone(),
        views.clone(),
        leadership.clone(),
    ));
    let elector = tokio::spawn(election.clone().run(cancel.clone()));
    let singletons = tokio::spawn(singletons(
        leadership.clone(),
        registry.clone(),
        store.clone(),
        keys.clone(),
        config.history_retention,
        cancel.clone(),
    ));
    let services = Arc::new(Services::default());
    let service_nodes = tokio::spawn(crate::services::follow(
        store.clone(),
        keys.clone(),
        services.clone(),
        registry.clone(),
        cancel.clone(),
    ));
    let budgets = Arc::new(Budgets::new(store.clone(), keys.clone(), views.clone()));
    let granter = tokio::spawn(budgets.clone().run(leadership.clone(), cancel.clone()));
    let usage = Arc::new(UsageRollups::new(
        store.clone(),
        keys.clone(),
        replica.clone(),
    ));
    let rollups = tokio::spawn({
        let (usage, leadership, cancel) = (usage.clone(), leadership.clone(), cancel.clone());
        async move { usage.run(&leadership, cancel).await }
    });
    let probes = tokio::spawn(crate::probes::run(
        metrics_listener,
        store.clone(),
        cancel.clone(),
    ));

    let rollouts = Arc::new(Rollouts::new(
        store.clone(),
        keys.clone(),
        views.clone(),
        registry.clone(),
        replica.clone(),
    ));
    let admin_service = Arc::new(AdminService::new(
        store.clone(),
        keys,
        views.clone(),
        registry.clone(),
        usage.clone(),
        election,
        auth.clone(),
    ));
    let web = tokio::spawn({
        let (admin, cancel) = (admin_service.clone(), cancel.clone());
        async move {
            if let Some(listener) = web_listener {
                crate::web::run(listener, web_tls, admin, cancel).await;
            }
        }
    });
    let rollout_flusher = tokio::spawn(rollouts.clone().run_flusher(cancel.clone()));
    let rollout_driver = tokio::spawn(rollouts.clone().drive(
        admin_service.clone(),
        leadership.clone(),
        cancel.clone(),
    ));
    let admin = AdminServer::from_arc(admin_service)
        .max_decoding_message_size(portico_api::limits::MAX_REQUEST_BYTES)
        .max_encoding_message_size(portico_api::limits::MAX_RESPONSE_BYTES);
    let identity = IdentityServer::new(IdentityService::new(auth.clone()));
    let throttle = Arc::new(StreamThrottle::new(config.max_stream_accept_rate));
    let xds = crate::xds::Xds::new(
        views.clone(),
        registry.clone(),
        services.clone(),
        auth.clone(),
        throttle.clone(),
        cancel.clone(),
    )
    .server();
    let fleet = Fleet {
        registry,
        services,
        budgets,
        usage,
        throttle,
        rollouts,
    };
    let discovery = DiscoveryServer(Discovery::new(views, fleet, auth, cancel.clone()));
    tracing::info!(%replica, addr = ?listener.local_addr().ok(), "control plane serving");
    let stop = cancel.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let served = builder
        // An agent whose peer vanished without closing the connection stops answering these
        // pings: its stream closes, and with it the agent's service endpoints.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(admin)
        .add_service(identity)
        .add_service(discovery)
        .add_service(xds)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.await;
            // Ending the discovery streams first lets the server's graceful drain finish.
            stop.cancel();
        })
        .await;
    cancel.cancel();
    let _ = tokio::join!(
        watcher,
        flusher,
        elector,
        singletons,
        probes,
        web,
        service_nodes,
        auth_follower,
        granter,
        rollout_flusher,
        rollout_driver,
        rollups
    );
    served.map_err(ServerError::from)
}

/// How often the leader prunes history.
const HISTORY_PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The leader's singleton work beside the rollups and budgets (which run their own loops):
/// expiring disconnected agents and pruning history beyond `retention` changes.
async fn singletons(
    leadership: Arc<Leadership>,
    registry: Arc<Registry>,
    store: MeteredStore,
    keys: Keys,
    retention: u64,
    cancel: CancellationToken,
) {
    let expire = leadership.while_leading(
        crate::registry::expiry::sweep_every(registry.expiry()),
        cancel.clone(),
        |term| {
            let registry = registry.clone();
            async move {
                if let Err(e) = registry.expire(std::time::SystemTime::now(), &term).await {
                    tracing::warn!(error = %e, "expiring disconnected agents failed; retrying");
                }
            }
        },
    );
    // The newest revision pruned, as far as this replica knows (0 after each start).
    let pruned_through = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let prune = leadership.while_leading(HISTORY_PRUNE_EVERY, cancel.clone(), |term| {
        let (store, keys, through) = (store.clone(), keys.clone(), pruned_through.clone());
        async move {
            if retention == 0 {
                return;
            }
            let after = through.load(std::sync::atomic::Ordering::Relaxed);
            match crate::history::prune(&store, &keys, retention, after, &[term.fence()]).await {
                Ok((pruned, newest)) => {
                    through.store(newest, std::sync::atomic::Ordering::Relaxed);
                    if pruned > 0 {
                        metrics::counter!(crate::metrics::HISTORY_PRUNED).increment(pruned as u64);
                        tracing::info!(pruned, through = newest, retention, "pruned history");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "pruning history failed; retrying"),
            }
        }
    });
    tokio::join!(expire, prune);
}
