//! A real `portico-cp` process on free ports, with an embedded or etcd store, and what tests do
//! with it: apply through the Admin API, read the registry and rollout status, run the CLI
//! against it. With [`CpOptions`] it serves TLS (its own CA's certificate or given files) and
//! authentication; the harness then talks to it over TLS pinned to the CA fingerprint the
//! process prints, with the bootstrap admin token.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use portico_agent::trust::{Fingerprint, Trust};
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
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Identity};

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

/// How to start a control plane beyond its store.
#[derive(Clone, Debug)]
pub struct CpOptions {
    /// Where it keeps its config.
    pub store: StoreSpec,
    /// `--replica-id`.
    pub replica: String,
    /// `--auth` (`on`, `off`, `auto`); the binary's default when `None`.
    pub auth: Option<String>,
    /// `--tls-cert` and `--tls-key`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// A CA file clients trust instead of the printed fingerprint (with `tls` from another CA).
    pub ca_file: Option<PathBuf>,
    /// `--bootstrap-token-file`; with auth on and none given, a file in a temp dir.
    pub bootstrap_token_file: Option<PathBuf>,
    /// `--agent-cert-ttl`.
    pub agent_cert_ttl: Option<Duration>,
    /// Listen on every address (0.0.0.0) instead of 127.0.0.1; clients still use 127.0.0.1.
    pub listen_any: bool,
    /// `RUST_LOG` of the process.
    pub log_filter: String,
    /// More flags, e.g. `["--agent-expiry", "2s"]`; kept for restarts.
    pub args: Vec<String>,
    /// Run inside this network namespace ([`crate::netns`]), listening on this address of it
    /// (clients reach it there).
    pub netns: Option<(String, IpAddr)>,
    /// Run with the wall clock shifted by this much (`faketime` syntax, e.g. `+3m`), to test
    /// clock skew between replicas.
    pub clock_offset: Option<String>,
    /// `--web-listen`: the dashboard on this address (`off` when `None`, so that control
    /// planes started side by side do not all claim the default port).
    pub web: Option<SocketAddr>,
}

impl CpOptions {
    /// `store` as replica `replica`, every other flag the binary's default.
    pub fn new(store: StoreSpec, replica: &str) -> CpOptions {
        CpOptions {
            store,
            replica: replica.to_string(),
            auth: None,
            tls: None,
            ca_file: None,
            bootstrap_token_file: None,
            agent_cert_ttl: None,
            listen_any: false,
            log_filter: "warn".to_string(),
            args: Vec::new(),
            netns: None,
            clock_offset: None,
            web: None,
        }
    }

    /// With the dashboard on a free port of 127.0.0.1 ([`ControlPlane::web_url`]).
    pub fn with_web(mut self) -> CpOptions {
        self.web = Some(free_addr());
        self
    }

    /// Inside the network namespace `netns`, reached at its address `ip`: plaintext, without
    /// authentication (the namespace's network is the test's own).
    pub fn inside(mut self, netns: &crate::netns::Netns, ip: IpAddr) -> CpOptions {
        self.netns = Some((netns.name().to_string(), ip));
        self.auth = Some("off".into());
        self
    }

    /// With `--auth on` (and so TLS with a certificate of the control plane's CA).
    pub fn auth_on(mut self) -> CpOptions {
        self.auth = Some("on".into());
        self
    }

    /// Whether authentication is on with these options: `--auth on`, or the default `auto`
    /// on every address.
    pub fn auth_served(&self) -> bool {
        match self.auth.as_deref() {
            Some("on") => true,
            Some("off") => false,
            _ => self.listen_any || self.netns.is_some(),
        }
    }

    /// Whether the control plane serves TLS with these options: given certificates, or its
    /// own CA's with authentication on.
    pub fn tls_served(&self) -> bool {
        self.tls.is_some() || self.auth_served()
    }
}

/// A running control plane, killed when dropped.
pub struct ControlPlane {
    process: Process,
    options: CpOptions,
    /// The gRPC address (Admin and Discovery).
    pub grpc: SocketAddr,
    /// The HTTP address (/metrics, /healthz, /readyz).
    pub metrics: SocketAddr,
    /// The CA fingerprint the process printed.
    pub fingerprint: String,
    /// The bootstrap admin token, with authentication on.
    pub admin_token: Option<String>,
    // Temp dirs (the embedded store, the bootstrap token); dropped after the process.
    _dirs: Vec<tempfile::TempDir>,
}

impl ControlPlane {
    /// Starts `portico-cp` with `store` and waits until it is ready.
    pub fn start(store: StoreSpec, replica: &str) -> ControlPlane {
        ControlPlane::start_with(CpOptions::new(store, replica))
    }

    /// [`ControlPlane::start`] logging what `log_filter` (`RUST_LOG`) lets through; see
    /// [`ControlPlane::log`].
    pub fn start_logging(store: StoreSpec, replica: &str, log_filter: &str) -> ControlPlane {
        let mut options = CpOptions::new(store, replica);
        options.log_filter = log_filter.to_string();
        ControlPlane::start_with(options)
    }

    /// Starts `portico-cp` with `options` and waits until it is ready.
    pub fn start_with(mut options: CpOptions) -> ControlPlane {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        if options.auth_served() && options.bootstrap_token_file.is_none() {
            options.bootstrap_token_file = Some(dir.path().join("bootstrap-token"));
        }
        let (grpc, metrics) = match &options.netns {
            // A new namespace has every port free.
            Some((_, ip)) => (SocketAddr::new(*ip, 7000), SocketAddr::new(*ip, 9100)),
            None => (free_addr(), free_addr()),
        };
        let process = spawn(&options, grpc, metrics);
        let mut cp = ControlPlane {
            process,
            options,
            grpc,
            metrics,
            fingerprint: String::new(),
            admin_token: None,
            _dirs: vec![dir],
        };
        cp.wait_ready();
        cp
    }

    /// Replica `cp-1` on an embedded store in a temp dir of its own, which outlives restarts.
    pub fn embedded() -> ControlPlane {
        ControlPlane::embedded_with(|o| o)
    }

    /// Like [`ControlPlane::embedded`], with options changed by `change`.
    pub fn embedded_with(change: impl FnOnce(CpOptions) -> CpOptions) -> ControlPlane {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let options = change(CpOptions::new(
            StoreSpec::Embedded(dir.path().join("store")),
            "cp-1",
        ));
        let mut cp = ControlPlane::start_with(options);
        // The store's directory lives as long as the control plane.
        cp._dirs.push(dir);
        cp
    }

    /// An embedded control plane with authentication on, serving TLS with its own CA.
    pub fn secured() -> ControlPlane {
        ControlPlane::embedded_with(CpOptions::auth_on)
    }

    /// The gRPC endpoint URL.
    pub fn endpoint(&self) -> String {
        let scheme = if self.options.tls_served() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.grpc)
    }

    /// How clients verify this control plane: the CA file given, or the printed fingerprint.
    pub fn trust(&self) -> Trust {
        match &self.options.ca_file {
            Some(file) => Trust::from_options(Some(file), None)
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("the CA file {} is unusable", file.display())),
            None => Trust::Pinned(self.fingerprint()),
        }
    }

    /// The CA fingerprint the process printed, parsed.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
            .parse()
            .unwrap_or_else(|e| panic!("the printed CA fingerprint: {e}"))
    }

    /// A channel to the gRPC API, over TLS when served, presenting `identity` (a client
    /// certificate and key, PEM) when given.
    pub async fn channel(&self, identity: Option<(String, String)>) -> Result<Channel, String> {
        let mut endpoint = Endpoint::from_shared(self.endpoint()).map_err(|e| e.to_string())?;
        if self.options.tls_served() {
            let identity = identity.map(|(cert, key)| Identity::from_pem(cert, key));
            endpoint = self
                .trust()
                .apply(endpoint, identity)
                .map_err(|e| e.to_string())?;
        }
        endpoint
            .connect()
            .await
            .map_err(|e| portico_api::error::Chain(&e).to_string())
    }

    /// An Admin client with the admin token (when authentication is on).
    pub async fn admin(&self) -> Admin {
        self.admin_as(self.admin_token.as_deref()).await
    }

    /// An Admin client sending `token`.
    pub async fn admin_as(&self, token: Option<&str>) -> Admin {
        let channel = self
            .channel(None)
            .await
            .unwrap_or_else(|e| panic!("connecting to the admin API at {}: {e}", self.grpc));
        AdminClient::with_interceptor(channel, Bearer::new(token))
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

    /// Runs `portico` against this control plane (with the admin token, when authentication
    /// is on).
    pub fn portico(&self, args: &[&str]) -> Run {
        self.portico_as(self.admin_token.as_deref(), args)
    }

    /// `portico -o json apply -f FILE ARGS…` of `text` (written to a new file of `files`);
    /// the revision it wrote.
    pub fn apply_text(&self, files: &cli::Files, text: &str, args: &[&str]) -> i64 {
        let path = files.write(&format!("config-{}.yaml", free_addr().port()), text);
        let mut all = vec!["-o", "json", "apply", "-f", &path];
        all.extend_from_slice(args);
        let out = self.portico(&all).ok().json();
        out["revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("no revision in {out}"))
    }

    /// `portico -o json token create --role ROLE --name NAME`; the token (checked to be the
    /// one asked for).
    pub fn create_token(&self, role: &str, name: &str) -> String {
        let created = self
            .portico(&[
                "-o", "json", "token", "create", "--role", role, "--name", name,
            ])
            .ok()
            .json();
        assert_eq!(created["name"], name, "{created}");
        assert_eq!(created["role"], role, "{created}");
        let token = created["token"].as_str().unwrap_or_default().to_string();
        assert!(token.starts_with("pt_"), "{created}");
        token
    }

    /// Runs `portico --token TOKEN` (none: no token) against this control plane.
    pub fn portico_as(&self, token: Option<&str>, args: &[&str]) -> Run {
        let mut all: Vec<String> = Vec::new();
        if self.options.tls_served() {
            match &self.options.ca_file {
                Some(file) => all.extend(["--ca-file".into(), file.display().to_string()]),
                None => all.extend(["--ca-fingerprint".into(), self.fingerprint.clone()]),
            }
        }
        if let Some(token) = token {
            all.extend(["--token".into(), token.to_string()]);
        }
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        cli::portico(&self.endpoint(), &all)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the process again on the same ports and store, and waits until it is ready.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = spawn(&self.options, self.grpc, self.metrics);
        self.wait_ready();
    }

    /// The process's output so far: its log (stderr) and whatever it printed.
    pub fn log(&self) -> String {
        self.process.stdout() + &self.process.stderr()
    }

    /// The dashboard's address (`http://` or `https://` as the control plane serves TLS);
    /// panics unless started [`CpOptions::with_web`].
    pub fn web_url(&self) -> String {
        let addr = self
            .options
            .web
            .unwrap_or_else(|| panic!("this control plane was started without the dashboard"));
        let scheme = if self.options.tls_served() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}")
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
        // Printed before it serves, so it is there once it is ready.
        let stdout = self.process.stdout();
        self.fingerprint = stdout
            .lines()
            .find_map(|l| l.strip_prefix("CA fingerprint (SHA-256): "))
            .map(|f| f.trim().to_string())
            .unwrap_or_else(|| panic!("portico-cp printed no CA fingerprint: {stdout:?}"));
        if let Some(path) = &self.options.bootstrap_token_file
            && let Ok(token) = std::fs::read_to_string(path)
        {
            self.admin_token = Some(token.trim().to_string());
        }
    }
}

/// An Admin client that sends a bearer token (when it has one).
pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer TOKEN` to every call.
#[derive(Clone, Debug)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// Sending `token` (none: nothing).
    pub fn new(token: Option<&str>) -> Bearer {
        Bearer(token.map(|t| {
            format!("Bearer {t}")
                .parse()
                .unwrap_or_else(|e| panic!("a token that is not a header value: {e}"))
        }))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The command line of a control plane (without starting it), for tests of start-up errors.
pub fn command(store: &StoreSpec, replica: &str, grpc: SocketAddr, metrics: SocketAddr) -> Command {
    command_with(&CpOptions::new(store.clone(), replica), grpc, metrics)
}

/// The command line of a control plane with `options` (without starting it).
pub fn command_with(options: &CpOptions, grpc: SocketAddr, metrics: SocketAddr) -> Command {
    let mut cmd = Command::new(crate::bins::path("portico-cp"));
    // In a namespace of its own, on every address there (tools run inside reach 127.0.0.1).
    let listen = if options.listen_any || options.netns.is_some() {
        SocketAddr::from(([0, 0, 0, 0], grpc.port()))
    } else {
        grpc
    };
    cmd.arg("--listen")
        .arg(listen.to_string())
        .arg("--metrics-listen")
        .arg(metrics.to_string())
        .arg("--replica-id")
        .arg(&options.replica)
        .arg("--web-listen")
        .arg(options.web.map_or("off".to_string(), |a| a.to_string()))
        .env("RUST_LOG", "warn");
    for var in [
        "PORTICO_CP_AUTH",
        "PORTICO_CP_TLS_CERT",
        "PORTICO_CP_TLS_KEY",
    ] {
        cmd.env_remove(var);
    }
    if let Some(auth) = &options.auth {
        cmd.args(["--auth", auth]);
    }
    if options.netns.is_some() && !options.tls_served() {
        // Plaintext on the namespace's own addresses: the test's private network.
        cmd.arg("--allow-insecure-remote");
    }
    if let Some((cert, key)) = &options.tls {
        cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
    }
    if let Some(path) = &options.bootstrap_token_file {
        cmd.arg("--bootstrap-token-file").arg(path);
    }
    if let Some(ttl) = options.agent_cert_ttl {
        cmd.arg("--agent-cert-ttl")
            .arg(format!("{}ms", ttl.as_millis()));
    }
    match &options.store {
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

fn spawn(options: &CpOptions, grpc: SocketAddr, metrics: SocketAddr) -> Process {
    let mut cmd = command_with(options, grpc, metrics);
    cmd.env("RUST_LOG", &options.log_filter).args(&options.args);
    if let Some(offset) = &options.clock_offset {
        skew(offset, &mut cmd);
    }
    if let Some((netns, _)) = &options.netns {
        cmd = crate::netns::inside(netns, &cmd);
    }
    Process::spawn(&format!("portico-cp {}", options.replica), cmd)
}

/// What to tell whoever runs the tests when libfaketime is missing.
pub const FAKETIME_HINT: &str = "install libfaketime (apt-get install -y libfaketime)";

/// `cmd` under libfaketime: its wall clock shifted by `offset`, its monotonic clock not. The
/// library is preloaded into the process itself (the `faketime` command would fork, and
/// killing it would leave the control plane running).
fn skew(offset: &str, cmd: &mut Command) {
    let installed = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .any(|dir| dir.path().join("faketime/libfaketime.so.1").exists());
    if !installed {
        panic!("libfaketime is not installed: {FAKETIME_HINT}");
    }
    // The dynamic loader expands $LIB to the library directory of the platform.
    cmd.env("LD_PRELOAD", "/usr/$LIB/faketime/libfaketime.so.1")
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
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
pub async fn apply(admin: &mut Admin, resources: Vec<Resource>) -> ApplyResponse {
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
pub async fn list(admin: &mut Admin) -> ListResponse {
    admin
        .list(ListRequest::default())
        .await
        .unwrap_or_else(|e| panic!("list: {e}"))
        .into_inner()
}
