//! [`Proxy`]: the running data path. It owns the bound listeners and the current runtime, and
//! [`Proxy::apply`] is the only way to change what is served.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use arc_swap::ArcSwap;
use portico_api::pb;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budgets::Budgets;
use crate::config::ConfigSet;
use crate::listener::{self, Bound};
use crate::metrics as m;
use crate::runtime::{CompileError, NodeInfo, Runtime};
use crate::shared::Shared;
use crate::upstream::{self, Endpoint};
use crate::usage::{Usage, UsageSummary};
use crate::workers::{self, Workers};

/// Why a config could not be applied. The previous config keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The config does not compile (bad reference, regex, certificate...).
    #[error(transparent)]
    Compile(CompileError),
    /// A new listener could not be bound.
    #[error("bind {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    /// The proxy is shutting down and takes no more configs.
    #[error("the proxy is shutting down")]
    ShuttingDown,
}

/// Static settings of the data path, built once in `main`.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where this agent runs: listeners whose selector does not match are not served.
    pub node: NodeInfo,
    /// Write one access log line per request (tracing target [`crate::access_log::TARGET`]).
    pub access_log: bool,
    /// Worker threads serving traffic, each with its own single-threaded runtime and upstream
    /// pools; 0 means one per available core.
    pub workers: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            node: NodeInfo::default(),
            access_log: true,
            workers: 0,
        }
    }
}

/// The running data path.
pub struct Proxy {
    shared: Arc<Shared>,
    node: NodeInfo,
    workers: Workers,
    /// Serialises applies and shutdown; held across binds, never by requests.
    bound: tokio::sync::Mutex<HashMap<SocketAddr, Bound>>,
    /// Endpoints a config removed, by cluster, while requests may still hold them.
    retired: Mutex<Vec<(Arc<str>, Weak<Endpoint>)>>,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy::new(ProxyConfig::default())
    }
}

impl Proxy {
    /// A proxy serving nothing until the first [`Proxy::apply`].
    pub fn new(config: ProxyConfig) -> Self {
        let workers = Workers::start(match config.workers {
            0 => workers::default_count(),
            n => n,
        });
        let count = workers.handles().len();
        tracing::info!(workers = count, "proxy workers started");
        metrics::gauge!(crate::metrics::PROXY_WORKERS).set(count as f64);
        Proxy {
            shared: Arc::new(Shared {
                runtime: ArcSwap::from_pointee(Runtime::default()),
                access_log: config.access_log,
                shutdown: CancellationToken::new(),
                kill: CancellationToken::new(),
                tracker: TaskTracker::new(),
                active: AtomicU64::new(0),
                usage: Usage::new(workers.handles().len()),
                budgets: Budgets::default(),
            }),
            node: config.node,
            workers,
            bound: tokio::sync::Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// Compiles `config`, binds its new listeners and swaps it in atomically. On error nothing
    /// changes: listeners bound during the attempt are closed again. A config with the same
    /// resources as the one served only moves the served version.
    pub async fn apply(&self, config: &ConfigSet) -> Result<(), ApplyError> {
        let result = self.try_apply(config).await;
        match &result {
            Ok(()) => {
                metrics::counter!(m::APPLIES_TOTAL).increment(1);
                metrics::gauge!(m::CONFIG_VERSION).set(config.version as f64);
            }
            Err(e) => {
                let reason = match e {
                    ApplyError::Compile(_) => "compile",
                    ApplyError::Bind { .. } => "bind",
                    ApplyError::ShuttingDown => "shutting_down",
                };
                metrics::counter!(m::APPLY_FAILURES_TOTAL, m::LABEL_REASON => reason).increment(1);
            }
        }
        result
    }

    async fn try_apply(&self, config: &ConfigSet) -> Result<(), ApplyError> {
        let mut bound = self.bound.lock().await;
        if self.shared.shutdown.is_cancelled() {
            return Err(ApplyError::ShuttingDown);
        }
        let previous = self.shared.runtime.load_full();
        if previous.serves(config) {
            // Every config revision reaches every agent, most of them changing nothing here.
            self.shared
                .runtime
                .store(Arc::new(previous.at_version(config.version)));
            tracing::debug!(version = config.version, "config unchanged");
            return Ok(());
        }
        let workers = self.workers.handles();
        let runtime = Runtime::compile(config, &self.node, &previous, workers.len())
            .map_err(ApplyError::Compile)?;
        let mut fresh = Vec::new();
        for addr in runtime.listeners.keys() {
            if bound.contains_key(addr) {
                continue;
            }
            match listener::bind(*addr, workers) {
                Ok(sockets) => fresh.push((*addr, sockets)),
                // Returning drops the sockets in `fresh`, closing them again.
                Err(source) => {
                    return Err(ApplyError::Bind {
                        address: addr.to_string(),
                        source,
                    });
                }
            }
        }
        let runtime = Arc::new(runtime);
        self.shared.runtime.store(runtime.clone());
        if let Some(checks) = workers.first() {
            // One worker runs every health check: once per agent, not once per worker.
            for upstream in runtime.upstreams() {
                upstream.start_health_checks(checks);
            }
        }
        self.retire(&previous, &runtime);
        for (addr, sockets) in fresh {
            let max = runtime
                .listeners
                .get(&addr)
                .map_or(0, |l| l.conn.limits.max_connections);
            let b = Bound::spawn(self.shared.clone(), addr, sockets, workers, max);
            bound.insert(addr, b);
        }
        let removed: Vec<SocketAddr> = bound
            .keys()
            .filter(|addr| !runtime.listeners.contains_key(addr))
            .copied()
            .collect();
        for addr in removed {
            if let Some(b) = bound.remove(&addr) {
                b.close().await;
            }
        }
        for (addr, b) in bound.iter_mut() {
            if let Some(l) = runtime.listeners.get(addr) {
                b.set_max_connections(l.conn.limits.max_connections);
            }
        }
        tracing::info!(
            version = config.version,
            listeners = runtime.listeners.len(),
            "config applied"
        );
        Ok(())
    }

    /// The config version being served (0 before the first apply).
    pub fn version(&self) -> i64 {
        self.shared.runtime.load().version
    }

    /// Keeps track of the endpoints `previous` had and `next` has not: they drain the
    /// requests they have in flight, and reports show them until they are done.
    fn retire(&self, previous: &Runtime, next: &Runtime) {
        let kept: HashSet<*const Endpoint> = next
            .upstreams()
            .flat_map(|u| u.endpoints())
            .map(Arc::as_ptr)
            .collect();
        let mut retired = lock(&self.retired);
        retired.retain(|(_, e)| e.strong_count() > 0);
        for upstream in previous.upstreams() {
            for e in upstream.endpoints() {
                if !kept.contains(&Arc::as_ptr(e)) {
                    retired.push((upstream.name().clone(), Arc::downgrade(e)));
                }
            }
        }
    }

    /// Every cluster's endpoints as the data path sees them now, for the agent's report:
    /// those of the current config, and those a config removed while they still have
    /// requests in flight (draining).
    pub fn cluster_health(&self) -> Vec<pb::ClusterHealth> {
        let mut clusters = self.shared.runtime.load().cluster_health();
        let now = upstream::now_ms();
        let mut retired = lock(&self.retired);
        retired.retain(|(_, e)| e.strong_count() > 0);
        for (cluster, endpoint) in retired.iter() {
            let Some(e) = endpoint.upgrade().filter(|e| e.in_flight() > 0) else {
                continue;
            };
            let report = e.report(now, true);
            match clusters.iter_mut().find(|c| c.cluster == cluster.as_ref()) {
                Some(c) => c.endpoints.push(report),
                None => clusters.push(pb::ClusterHealth {
                    cluster: cluster.to_string(),
                    endpoints: vec![report],
                    panic: false,
                }),
            }
        }
        clusters
    }

    /// The usage counted since the last call, over every worker: the `top` rows (listener ×
    /// route × cluster × consumer × status class) with the most requests, and the rest summed
    /// in `other`.
    pub fn take_usage(&self, top: usize) -> UsageSummary {
        self.shared.usage.take(top)
    }

    /// Fleet budget counts (quotas, FLEET rate limits) since the last report or budget
    /// request, for the agent's report: at most 1,024 entries (`budgets::MAX_REPORTED`).
    pub fn take_budget_use(&self) -> Vec<pb::BudgetUse> {
        self.shared.budgets.take_use(std::time::SystemTime::now())
    }

    /// Resolves when requests wait for fleet budget the agent should ask for
    /// ([`Proxy::take_budget_requests`]).
    pub async fn budgets_wanted(&self) {
        self.shared.budgets.wanted().await;
    }

    /// The fleet budgets to ask the control plane for now.
    pub fn take_budget_requests(&self) -> Vec<pb::BudgetUse> {
        self.shared.budgets.take_requests()
    }

    /// Applies fleet budget the control plane granted.
    pub fn grant_budgets(&self, grants: Vec<pb::BudgetGrant>) {
        self.shared.budgets.grant(grants);
    }

    /// Tells the data path whether a control plane can grant fleet budget now: without one,
    /// fleet budgets admit at the pace of their previous window's grants.
    pub fn set_control_plane_connected(&self, connected: bool) {
        self.shared.budgets.set_connected(connected);
    }

    /// Client connections open now, over every listener.
    pub fn active_connections(&self) -> u64 {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Stops accepting on every listener and waits up to `grace` for in-flight requests.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        let mut bound = self.bound.lock().await;
        self.shared.shutdown.cancel();
        for (_, b) in bound.drain() {
            b.close().await;
        }
        self.shared.tracker.close();
        if tokio::time::timeout(grace, self.shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = self.active_connections(),
                "shutdown grace period over; dropping remaining connections"
            );
            self.shared.kill.cancel();
            self.shared.tracker.wait().await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A list of weak references is whole at every step.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use portico_api::pb::Update;

    use super::*;
    use crate::runtime::tests::cluster;

    #[tokio::test]
    async fn an_unchanged_config_only_moves_the_served_version() {
        let proxy = Proxy::new(ProxyConfig {
            access_log: false,
            workers: 1,
            ..Default::default()
        });
        let diff = |version, upserts| Update {
            version,
            upserts,
            ..Default::default()
        };
        let v1 = ConfigSet::default().with_update(diff(1, vec![cluster("c", 8001)]));
        proxy.apply(&v1).await.unwrap();
        let served = proxy.shared.runtime.load_full();

        let v2 = v1.with_update(diff(2, vec![]));
        proxy.apply(&v2).await.unwrap();
        assert_eq!(proxy.version(), 2);
        assert!(proxy.shared.runtime.load().same_build(&served));

        let v3 = v2.with_update(diff(3, vec![cluster("c", 8001)]));
        proxy.apply(&v3).await.unwrap();
        assert_eq!(proxy.version(), 3);
        assert!(proxy.shared.runtime.load().same_build(&served));

        let v4 = v3.with_update(diff(4, vec![cluster("c", 8002)]));
        proxy.apply(&v4).await.unwrap();
        assert_eq!(proxy.version(), 4);
        assert!(!proxy.shared.runtime.load().same_build(&served));
        proxy.shutdown(std::time::Duration::ZERO).await;
    }
}
