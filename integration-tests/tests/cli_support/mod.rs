//! Shared by the `cli_*` tests: a real `portico-cp` and `portico-agent` started as processes,
//! the `portico` binary run against them, and config files written to a temp dir.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portico_integration_tests::bins;
use portico_integration_tests::cp::{self, StoreSpec};
use portico_integration_tests::net::{free_addr, is_listening};
use portico_integration_tests::process::Process;

/// How long one `portico` command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A control plane on the embedded store in a temp dir.
pub struct ControlPlane {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _cp: cp::ControlPlane,
    _dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts `portico-cp` on free ports and waits until it is ready.
    pub fn start() -> ControlPlane {
        let dir = tempfile::tempdir().unwrap();
        let cp = cp::ControlPlane::start(StoreSpec::Embedded(dir.path().to_path_buf()), "cp-test");
        ControlPlane {
            url: cp.endpoint(),
            _cp: cp,
            _dir: dir,
        }
    }

    /// Runs `portico` against this control plane.
    pub fn portico(&self, args: &[&str]) -> Run {
        portico(&self.url, args)
    }

    /// Starts an agent connected to this control plane.
    pub fn agent(&self, id: &str, region: &str, labels: &[&str]) -> Agent {
        let admin = free_addr();
        let mut cmd = Command::new(bins::path("portico-agent"));
        cmd.args([
            "--control-plane",
            &self.url,
            "--node-id",
            id,
            "--region",
            region,
        ])
        .args(["--zone", &format!("{region}-1")])
        .arg("--admin-listen")
        .arg(admin.to_string())
        .args(["--report-interval", "1s", "--drain-timeout", "1s"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
        for l in labels {
            cmd.args(["--label", l]);
        }
        let mut process = Process::spawn("portico-agent", cmd);
        wait_listening(&mut process, admin, "portico-agent");
        Agent {
            id: id.to_string(),
            _process: process,
        }
    }
}

/// A running agent.
pub struct Agent {
    /// Its node id.
    pub id: String,
    _process: Process,
}

fn wait_listening(process: &mut Process, addr: SocketAddr, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_listening(addr) {
        if let Some(status) = process.try_wait() {
            panic!("{name} exited at start: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not listen on {addr} within 20s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What one `portico` command did.
#[derive(Debug)]
pub struct Run {
    /// The exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Asserts exit code `code`, showing the output otherwise.
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }

    /// Asserts success.
    pub fn ok(self) -> Run {
        self.expect(0)
    }

    /// Standard output parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs `portico --server <server> <args>` with a clean environment, killing it after a
/// minute.
pub fn portico(server: &str, args: &[&str]) -> Run {
    let mut cmd = Command::new(bins::path("portico"));
    cmd.arg("--server")
        .arg(server)
        .args(args)
        .env_remove("PORTICO_SERVER")
        .env_remove("PORTICO_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("portico {args:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// A temp dir to write config files into.
pub struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    /// An empty temp dir.
    pub fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes `name` and returns its path as a string.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// The dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The example configs shipped in `deploy/`.
pub fn example_files() -> Vec<PathBuf> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut files = Vec::new();
    for dir in [deploy.join("examples"), deploy.join("compose/config")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "yaml" || x == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A listener on `port`, a route table with a direct response and a route to `cluster`, and
/// that cluster pointing at `upstream_port`: the smallest complete config.
pub fn small_config(port: u16, body: &str, upstream_port: u16) -> String {
    format!(
        "kind: Listener\nname: web\nspec:\n  address: 127.0.0.1\n  port: {port}\n  protocol: HTTP\n  route_table: main\n\
         ---\n\
         kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: [\"*\"]\n      routes:\n\
         \x20       - match: {{prefix: /app}}\n          action: {{cluster: app}}\n\
         \x20       - action:\n            direct_response: {{status: 200, body: \"{body}\"}}\n\
         ---\n\
         kind: Cluster\nname: app\nspec:\n  endpoints:\n    - {{address: 127.0.0.1, port: {upstream_port}}}\n"
    )
}
