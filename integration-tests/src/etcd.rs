//! A real single-node etcd on free ports with a temp data dir, stopped when dropped.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::{free_addr, is_listening};
use crate::process::Process;

/// What to tell whoever runs the tests when etcd is missing.
pub const INSTALL_HINT: &str = "install etcd-server (apt-get install -y etcd-server)";

/// A running etcd.
pub struct Etcd {
    client: SocketAddr,
    process: Process,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it accepts clients. Panics with [`INSTALL_HINT`] when the
    /// `etcd` binary is not on PATH.
    pub fn start() -> Etcd {
        if Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            panic!("the etcd binary is not on PATH: {INSTALL_HINT}");
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let client = free_addr();
        let peer = free_addr();
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "n1", "--logger", "zap", "--log-level", "error"])
            .arg("--data-dir")
            .arg(dir.path())
            .arg(format!("--listen-client-urls=http://{client}"))
            .arg(format!("--advertise-client-urls=http://{client}"))
            .arg(format!("--listen-peer-urls=http://{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
            .arg(format!("--initial-cluster=n1=http://{peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut process = Process::spawn("etcd", cmd);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_listening(client) {
            if let Some(status) = process.try_wait() {
                panic!("etcd exited at start: {status}");
            }
            if Instant::now() > deadline {
                panic!("etcd did not accept clients at {client} within 20s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Etcd {
            client,
            process,
            _dir: dir,
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:23791`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Kills etcd (SIGKILL), e.g. to test a store that goes away.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}
