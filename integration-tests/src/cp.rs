//! A real `portico-cp` process on free ports, with an embedded or etcd store.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portico_api::pb::admin_client::AdminClient;
use tonic::transport::Channel;

use crate::net::free_addr;
use crate::process::Process;

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
    /// The gRPC address (Admin and Discovery).
    pub grpc: SocketAddr,
    /// The HTTP address (/metrics, /healthz, /readyz).
    pub metrics: SocketAddr,
}

impl ControlPlane {
    /// Starts `portico-cp` with `store` and waits until it is ready.
    pub fn start(store: StoreSpec, replica: &str) -> ControlPlane {
        let (grpc, metrics) = (free_addr(), free_addr());
        let process = spawn(&store, replica, grpc, metrics);
        let mut cp = ControlPlane {
            process,
            store,
            replica: replica.to_string(),
            grpc,
            metrics,
        };
        cp.wait_ready();
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

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the process again on the same ports and store, and waits until it is ready.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = spawn(&self.store, &self.replica, self.grpc, self.metrics);
        self.wait_ready();
    }

    /// The HTTP status and body of `GET path` on the metrics address.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics, path)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = self.http_get("/readyz") {
                return;
            }
            if let Some(status) = self.process.try_wait() {
                panic!("portico-cp exited at start: {status}");
            }
            if Instant::now() > deadline {
                panic!("portico-cp was not ready at {} within 30s", self.metrics);
            }
            std::thread::sleep(Duration::from_millis(20));
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

fn spawn(store: &StoreSpec, replica: &str, grpc: SocketAddr, metrics: SocketAddr) -> Process {
    let mut cmd = command(store, replica, grpc, metrics);
    cmd.stdout(Stdio::null());
    Process::spawn("portico-cp", cmd)
}

/// A minimal HTTP/1.0 GET: the status code and body, or None when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Resources from YAML documents; panics with every error (test fixtures are meant to parse).
pub fn resources(yaml: &str) -> Vec<portico_api::Resource> {
    match portico_api::file::parse("fixture.yaml".as_ref(), yaml) {
        Ok(loaded) => loaded.into_iter().map(|l| l.resource).collect(),
        Err(errors) => panic!(
            "fixture does not parse:\n{}",
            errors
                .iter()
                .map(|e| format!("  {e}\n"))
                .collect::<String>()
        ),
    }
}

/// A Listener on `port` routing through `table`, selected for `regions` (empty: every agent).
pub fn listener(name: &str, port: u16, table: &str, regions: &[&str]) -> String {
    format!(
        "kind: Listener\nname: {name}\nspec:\n  port: {port}\n  protocol: HTTP\n  route_table: {table}\n  selector: {{regions: [{}]}}\n",
        regions.join(", ")
    )
}

/// A RouteTable sending everything to `cluster`.
pub fn route_table(name: &str, cluster: &str) -> String {
    format!(
        "kind: RouteTable\nname: {name}\nspec:\n  virtual_hosts:\n    - domains: [\"*\"]\n      routes:\n        - match: {{prefix: /}}\n          action: {{cluster: {cluster}}}\n"
    )
}

/// A Cluster with one endpoint on `port`.
pub fn cluster(name: &str, port: u16) -> String {
    format!(
        "kind: Cluster\nname: {name}\nspec:\n  endpoints: [{{address: 127.0.0.1, port: {port}}}]\n"
    )
}

/// An HTTPS Listener on `port` whose certificate is the tls Secret `secret`.
pub fn https_listener(
    name: &str,
    port: u16,
    table: &str,
    secret: &str,
    regions: &[&str],
) -> String {
    format!(
        "kind: Listener\nname: {name}\nspec:\n  port: {port}\n  protocol: HTTPS\n  tls: {{certificates: [{{secret: {secret}}}]}}\n  route_table: {table}\n  selector: {{regions: [{}]}}\n",
        regions.join(", ")
    )
}

/// A tls Secret with a freshly generated self-signed certificate for `host`.
pub fn tls_secret(name: &str, host: &str) -> String {
    let cert = rcgen::generate_simple_self_signed(vec![host.to_string()])
        .unwrap_or_else(|e| panic!("generating a certificate: {e}"));
    let indent = |pem: String| -> String { pem.lines().map(|l| format!("      {l}\n")).collect() };
    format!(
        "kind: Secret\nname: {name}\nspec:\n  tls:\n    certificate_chain: |\n{}    private_key: |\n{}",
        indent(cert.cert.pem()),
        indent(cert.signing_key.serialize_pem())
    )
}

/// Joins YAML documents.
pub fn docs(documents: &[String]) -> String {
    documents.join("---\n")
}

/// A small valid config: Listener `web` → RouteTable `shop` → Cluster `backend`.
pub fn base_config() -> String {
    docs(&[
        listener("web", 8080, "shop", &[]),
        route_table("shop", "backend"),
        cluster("backend", 9001),
    ])
}

/// Applies the resources of `yaml`; panics when the apply fails or is invalid.
pub async fn apply(admin: &mut AdminClient<Channel>, yaml: &str) -> portico_api::pb::ApplyResponse {
    let response = admin
        .apply(portico_api::pb::ApplyRequest {
            resources: resources(yaml),
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
pub async fn list(admin: &mut AdminClient<Channel>) -> portico_api::pb::ListResponse {
    admin
        .list(portico_api::pb::ListRequest::default())
        .await
        .unwrap_or_else(|e| panic!("list: {e}"))
        .into_inner()
}
