//! A real `portico-agent` process with its admin endpoint on a free port, stopped when dropped.
//!
//! Its log is printed when a test panics while the agent runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use portico_test_support::http::fetch;
use portico_test_support::net::free_addr;
use portico_test_support::process::{Process, SIGTERM};
use portico_test_support::wait::eventually;

use crate::bins;

/// How long an agent may take to become ready or reach a config version.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How to start an agent. Every flag the tests do not set keeps the binary's default, except
/// the admin address (a free port) and the report interval (short, so reports arrive quickly).
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// `--control-plane` URLs, in failover order.
    pub control_planes: Vec<String>,
    /// `--node-id`.
    pub node_id: String,
    /// `--region`.
    pub region: String,
    /// `--zone`.
    pub zone: String,
    /// `--label k=v` each.
    pub labels: Vec<(String, String)>,
    /// `--cache-dir`.
    pub cache_dir: Option<PathBuf>,
    /// `--drain-timeout`.
    pub drain_timeout: Option<Duration>,
    /// Environment variables: settings passed this way instead of as flags, `RUST_LOG` (default
    /// `info,portico_agent=debug`), `SSL_CERT_FILE`.
    pub env: Vec<(String, String)>,
    /// `--service NAME=PORT` each.
    pub services: Vec<(String, u16)>,
    /// `--join-token`.
    pub join_token: Option<String>,
    /// `--ca-fingerprint`.
    pub ca_fingerprint: Option<String>,
    /// `--ca-file`.
    pub ca_file: Option<PathBuf>,
    /// The CPUs it may run on (`taskset -c` syntax, e.g. "0"); all of them when `None`.
    pub cpus: Option<String>,
}

impl AgentOptions {
    /// Node `node_id` in region `eu`, zone `eu-1`, syncing from `control_planes`.
    pub fn new(node_id: &str, control_planes: &[String]) -> Self {
        AgentOptions {
            control_planes: control_planes.to_vec(),
            node_id: node_id.to_string(),
            region: "eu".to_string(),
            zone: "eu-1".to_string(),
            labels: Vec::new(),
            cache_dir: None,
            drain_timeout: None,
            env: Vec::new(),
            services: Vec::new(),
            join_token: None,
            ca_fingerprint: None,
            ca_file: None,
            cpus: None,
        }
    }

    /// Joining with `token`, trusting the CA of fingerprint `fingerprint`.
    pub fn join(mut self, token: &str, fingerprint: &str) -> Self {
        self.join_token = Some(token.to_string());
        self.ca_fingerprint = Some(fingerprint.to_string());
        self
    }

    /// Announcing service `name` on `port`.
    pub fn service(mut self, name: &str, port: u16) -> Self {
        self.services.push((name.to_string(), port));
        self
    }

    /// With the last-good cache in `dir`.
    pub fn cache_dir(mut self, dir: &Path) -> Self {
        self.cache_dir = Some(dir.to_path_buf());
        self
    }

    /// With label `key=value`.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_string(), value.to_string()));
        self
    }
}

/// A running agent.
pub struct Agent {
    process: Process,
    admin: SocketAddr,
}

impl Agent {
    /// Starts `portico-agent` (building it first if needed). Does not wait for readiness.
    pub fn start(options: &AgentOptions) -> Agent {
        let admin = free_addr();
        let mut cmd = match &options.cpus {
            Some(cpus) => {
                let mut taskset = Command::new("taskset");
                taskset.args(["-c", cpus]).arg(bins::path("portico-agent"));
                taskset
            }
            None => Command::new(bins::path("portico-agent")),
        };
        cmd.arg("--control-plane")
            .arg(options.control_planes.join(","))
            .args(["--node-id", &options.node_id])
            .args(["--region", &options.region])
            .args(["--zone", &options.zone])
            .arg("--admin-listen")
            .arg(admin.to_string())
            .args(["--report-interval", "200ms"]);
        for (k, v) in &options.labels {
            cmd.arg("--label").arg(format!("{k}={v}"));
        }
        for (name, port) in &options.services {
            cmd.arg("--service").arg(format!("{name}={port}"));
        }
        if let Some(dir) = &options.cache_dir {
            cmd.arg("--cache-dir").arg(dir);
        }
        if let Some(token) = &options.join_token {
            cmd.args(["--join-token", token]);
        }
        if let Some(fingerprint) = &options.ca_fingerprint {
            cmd.args(["--ca-fingerprint", fingerprint]);
        }
        if let Some(file) = &options.ca_file {
            cmd.arg("--ca-file").arg(file);
        }
        if let Some(grace) = options.drain_timeout {
            cmd.arg("--drain-timeout")
                .arg(format!("{}ms", grace.as_millis()));
        }
        // The options' variables come last, so they may set RUST_LOG too.
        cmd.env("RUST_LOG", "info,portico_agent=debug")
            .envs(options.env.iter().map(|(k, v)| (k, v)));
        Agent {
            process: Process::spawn(&format!("portico-agent {}", options.node_id), cmd),
            admin,
        }
    }

    /// Starts an agent and waits until `/readyz` answers 200.
    pub async fn start_ready(options: &AgentOptions) -> Agent {
        let agent = Agent::start(options);
        agent.wait_ready().await;
        agent
    }

    /// The admin endpoint's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// `GET` on the admin endpoint: the status and body, or `None` when it does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        fetch(format!("http://{}{path}", self.admin)).await
    }

    /// Whether `/readyz` answers 200 now.
    pub async fn is_ready(&self) -> bool {
        matches!(self.get("/readyz").await, Some((200, _)))
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        eventually("the agent to be ready", READY_TIMEOUT, || async {
            self.is_ready().await.then_some(())
        })
        .await;
    }

    /// `/config`: `{"version": N, "resources": [...]}`.
    pub async fn config(&self) -> serde_json::Value {
        let (status, body) = self
            .get("/config")
            .await
            .unwrap_or_else(|| panic!("the agent's admin endpoint does not answer"));
        assert_eq!(status, 200, "GET /config: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/config is not JSON ({e}): {body}"))
    }

    /// The version in `/config`.
    pub async fn version(&self) -> i64 {
        self.config().await["version"].as_i64().unwrap_or(0)
    }

    /// Waits until `/config` is at `version` or newer; returns it. The agent may still be
    /// starting.
    pub async fn wait_for_version(&self, version: i64) -> serde_json::Value {
        eventually(
            &format!("the agent to serve version {version}"),
            READY_TIMEOUT,
            || async {
                self.get("/config").await?;
                let config = self.config().await;
                (config["version"].as_i64().unwrap_or(0) >= version).then_some(config)
            },
        )
        .await
    }

    /// The names of the resources of `kind` (e.g. "cluster") in `/config`.
    pub async fn resource_names(&self, kind: &str) -> Vec<String> {
        let config = self.config().await;
        let resources = config["resources"].as_array().cloned().unwrap_or_default();
        resources
            .iter()
            .filter(|r| r.get(kind).is_some())
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect()
    }

    /// Sends SIGTERM: the agent drains and exits 0.
    pub fn terminate(&self) {
        self.process.signal(SIGTERM);
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.process.wait_timeout(timeout)
    }

    /// Kills the agent (SIGKILL).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// The agent's log so far (it logs to stderr; stdout is empty unless something breaks).
    pub fn log(&self) -> String {
        self.process.stdout() + &self.process.stderr()
    }
}
