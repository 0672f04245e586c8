//! A real `portico-cp` process on free ports, with an embedded or etcd store, and what tests do
//! with it: apply through the Admin API, read the registry and rollout status, run the CLI
//! against it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use portico_api::Resource;
use portico_api::pb::admin_client::AdminClient;
use portico_api::pb::{
    AgentRecord, AgentsRequest, ApplyRequest, ApplyResponse, ListRequest, ListResponse,
    RolloutStatusRequest, RolloutStatusResponse,
};
use portico_test_support::http::fetch_blocking;
use portico_test_support::net::{free_addr, localhost};
use portico_test_support::process::Process;
use portico_test_support::resources::{cluster, listener, prefix, route, route_table, to, vhost};
use portico_test_support::wait::{eventually, within_blocking};
use tonic::transport::Channel;

use crate::cli::{self, Run};

/// How long a control plane may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the control plane may take to register an agent or collect its answer.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// Where a control plane keeps its config.
#[derive(Clone, Debug)]
pub enum StoreSpec {
    /// The embedded store in this directory (kept by the test, so restarts see the same data).
    Embedded(PathBuf),
    /// etcd at this endpoint, under this key prefix.
    Etcd { endpoint: String, prefix: String },
}

/// A running control plane, killed when dropped.
pub struct ControlPlane {
    process: Process,
    store: StoreSpec,
    replica: String,
    /// `RUST_LOG` of the process.
    log_filter: String,
    /// The gRPC address (Admin and Discovery).
    pub grpc: SocketAddr,
    /// The HTTP address (/metrics, /healthz, /readyz).
    pub metrics: SocketAddr,
    // The embedded store's directory when this value owns it; dropped after the process.
    _dir: Option<tempfile::TempDir>,
}

impl ControlPlane {
    /// Starts `portico-cp` with `store` and waits until it is ready.
    pub fn start(store: StoreSpec, replica: &str) -> ControlPlane {
        ControlPlane::start_logging(store, replica, "warn")
    }

    /// [`ControlPlane::start`] logging what `log_filter` (`RUST_LOG`) lets through; see
    /// [`ControlPlane::log`].
    pub fn start_logging(store: StoreSpec, replica: &str, log_filter: &str) -> ControlPlane {
        let (grpc, metrics) = (free_addr(), free_addr());
        let process = spawn(&store, replica, grpc, metrics, log_filter);
        let mut cp = ControlPlane {
            process,
            store,
            replica: replica.to_string(),
            log_filter: log_filter.to_string(),
            grpc,
            metrics,
            _dir: None,
        };
        cp.wait_ready();
        cp
    }

    /// Replica `cp-1` on an embedded store in a temp dir of its own, which outlives restarts.
    pub fn embedded() -> ControlPlane {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let mut cp = ControlPlane::start(StoreSpec::Embedded(dir.path().join("store")), "cp-1");
        cp._dir = Some(dir);
        cp
    }

    /// The gRPC endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// An Admin client.
    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::connect(self.endpoint())
            .await
            .unwrap_or_else(|e| panic!("connecting to the admin API at {}: {e}", self.grpc))
    }

    /// Applies `resources` through the Admin API; panics when the apply fails or is invalid.
    pub async fn apply(&self, resources: Vec<Resource>) -> ApplyResponse {
        apply(&mut self.admin().await, resources).await
    }

    /// The registry's record of `node_id`.
    pub async fn agent_record(&self, node_id: &str) -> Option<AgentRecord> {
        let agents = self
            .admin()
            .await
            .agents(AgentsRequest::default())
            .await
            .ok()?;
        agents
            .into_inner()
            .agents
            .into_iter()
            .find(|a| a.node.as_ref().is_some_and(|n| n.id == node_id))
    }

    /// Waits until the registry's record of `node_id` satisfies `check`; returns it.
    pub async fn wait_for_record(
        &self,
        node_id: &str,
        what: &str,
        check: impl Fn(&AgentRecord) -> bool,
    ) -> AgentRecord {
        eventually(what, SYNC_TIMEOUT, || async {
            self.agent_record(node_id).await.filter(&check)
        })
        .await
    }

    /// Waits until the rollout status of `revision` satisfies `check`; returns it.
    pub async fn wait_for_rollout(
        &self,
        revision: i64,
        what: &str,
        check: impl Fn(&RolloutStatusResponse) -> bool,
    ) -> RolloutStatusResponse {
        eventually(what, SYNC_TIMEOUT, || async {
            let status = self
                .admin()
                .await
                .rollout_status(RolloutStatusRequest { revision })
                .await
                .ok()?
                .into_inner();
            check(&status).then_some(status)
        })
        .await
    }

    /// Runs `portico` against this control plane.
    pub fn portico(&self, args: &[&str]) -> Run {
        cli::portico(&self.endpoint(), args)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the process again on the same ports and store, and waits until it is ready.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = spawn(
            &self.store,
            &self.replica,
            self.grpc,
            self.metrics,
            &self.log_filter,
        );
        self.wait_ready();
    }

    /// The process's output so far: its log (stderr) and whatever it printed.
    pub fn log(&self) -> String {
        self.process.stdout() + &self.process.stderr()
    }

    /// The HTTP status and body of `GET path` on the metrics address.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        fetch_blocking(self.metrics, path)
    }

    /// The `/metrics` text; panics when it does not answer 200.
    pub fn metrics_text(&self) -> String {
        match self.http_get("/metrics") {
            Some((200, body)) => body,
            other => panic!("GET /metrics on the control plane: {other:?}"),
        }
    }

    fn wait_ready(&mut self) {
        let ready = within_blocking(READY_TIMEOUT, || {
            if let Some(status) = self.process.try_wait() {
                panic!("portico-cp exited at start: {status}");
            }
            matches!(self.http_get("/readyz"), Some((200, _))).then_some(())
        });
        if ready.is_none() {
            panic!(
                "portico-cp was not ready at {} within {READY_TIMEOUT:?}",
                self.metrics
            );
        }
    }
}

/// The command line of a control plane (without starting it), for tests of start-up errors.
pub fn command(store: &StoreSpec, replica: &str, grpc: SocketAddr, metrics: SocketAddr) -> Command {
    let mut cmd = Command::new(crate::bins::path("portico-cp"));
    cmd.arg("--listen")
        .arg(grpc.to_string())
        .arg("--metrics-listen")
        .arg(metrics.to_string())
        .arg("--replica-id")
        .arg(replica)
        .env("RUST_LOG", "warn");
    match store {
        StoreSpec::Embedded(dir) => {
            cmd.args(["--store", "embedded", "--data-dir"]).arg(dir);
        }
        StoreSpec::Etcd { endpoint, prefix } => {
            cmd.args(["--store", "etcd", "--etcd-endpoints", endpoint])
                .args(["--etcd-prefix", prefix]);
        }
    }
    cmd
}

fn spawn(
    store: &StoreSpec,
    replica: &str,
    grpc: SocketAddr,
    metrics: SocketAddr,
    log_filter: &str,
) -> Process {
    let mut cmd = command(store, replica, grpc, metrics);
    cmd.env("RUST_LOG", log_filter);
    Process::spawn(&format!("portico-cp {replica}"), cmd)
}

/// A small valid config: Listener `web` on port 8080 → RouteTable `shop` → Cluster `backend`
/// at port 9001.
pub fn base_config() -> Vec<Resource> {
    vec![
        listener("web", 8080, "shop"),
        catch_all("shop", "backend"),
        cluster("backend", &[localhost(9001)]),
    ]
}

/// A RouteTable `name` sending everything to `cluster`.
pub fn catch_all(name: &str, cluster: &str) -> Resource {
    route_table(
        name,
        vec![vhost("", &["*"], vec![route("", prefix("/"), to(cluster))])],
    )
}

/// Applies `resources`; panics when the apply fails or is invalid.
pub async fn apply(admin: &mut AdminClient<Channel>, resources: Vec<Resource>) -> ApplyResponse {
    let response = admin
        .apply(ApplyRequest {
            resources,
            message: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"))
        .into_inner();
    assert!(response.errors.is_empty(), "apply: {:?}", response.errors);
    response
}

/// Lists every resource; panics when the call fails.
pub async fn list(admin: &mut AdminClient<Channel>) -> ListResponse {
    admin
        .list(ListRequest::default())
        .await
        .unwrap_or_else(|e| panic!("list: {e}"))
        .into_inner()
}
