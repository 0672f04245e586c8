//! What the CLI's integration tests share: a real control plane (embedded store, in this
//! process) and the real `portico` binary run against it.
#![allow(clippy::unwrap_used, dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use portico_api::pb::admin_client::AdminClient;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What `portico` printed and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", self.stdout, self.stderr))
    }
}

/// Runs `portico --server URL ARGS…` off the async runtime.
pub async fn portico(server: &str, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portico"));
    command.arg("--server").arg(server).args(args);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A control plane on an embedded store in a temp dir, serving on a free port.
pub struct ControlPlane {
    /// Its gRPC URL.
    pub server: String,
    /// Its Admin client, connected.
    pub admin: AdminClient<tonic::transport::Channel>,
    /// A temp dir for the test's files (the store is inside).
    pub dir: tempfile::TempDir,
    stop: CancellationToken,
    task: JoinHandle<Result<(), portico_control_plane::server::ServerError>>,
}

impl ControlPlane {
    /// Starts one and waits (at most 30 s) until its Admin API answers.
    pub async fn start() -> ControlPlane {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let config = portico_control_plane::config::Config::embedded(dir.path().join("store"));
        let task = tokio::spawn(portico_control_plane::server::run(
            listener,
            metrics,
            config,
            stop.clone().cancelled_owned(),
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        let admin = loop {
            match AdminClient::connect(server.clone()).await {
                Ok(c) => break c,
                Err(e) => assert!(Instant::now() < deadline, "control plane not up: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        ControlPlane {
            server,
            admin,
            dir,
            stop,
            task,
        }
    }

    /// Stops it; fails the test if it did not stop cleanly.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}
