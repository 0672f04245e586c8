//! Shared by the `cli_*` tests: a real `portico-cp` and `portico-agent` started as processes,
//! the `portico` binary run against them, and config files written to a temp dir.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portico_integration_tests::bins;
use portico_integration_tests::cp::{self, StoreSpec};

/// How long one `portico` command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A control plane, killed when dropped.
pub struct ControlPlane {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _cp: cp::ControlPlane,
    _dir: Option<tempfile::TempDir>,
}

impl ControlPlane {
    /// Starts `portico-cp` on the embedded store in a temp dir and waits until it is ready.
    pub fn start() -> ControlPlane {
        let dir = tempfile::tempdir().unwrap();
        let cp = cp::ControlPlane::start(StoreSpec::Embedded(dir.path().to_path_buf()), "cp-test");
        ControlPlane {
            url: cp.endpoint(),
            _cp: cp,
            _dir: Some(dir),
        }
    }

    /// Starts `portico-cp` replica `replica` on the etcd at `endpoint`, under key prefix
    /// `/cli-test`, and waits until it is ready.
    pub fn on_etcd(endpoint: &str, replica: &str) -> ControlPlane {
        let store = StoreSpec::Etcd {
            endpoint: endpoint.to_string(),
            prefix: "/cli-test".to_string(),
        };
        let cp = cp::ControlPlane::start(store, replica);
        ControlPlane {
            url: cp.endpoint(),
            _cp: cp,
            _dir: None,
        }
    }

    /// Runs `portico` against this control plane.
    pub fn portico(&self, args: &[&str]) -> Run {
        portico(&self.url, args)
    }

    /// The control plane's `/metrics` text; panics when it does not answer 200.
    pub fn metrics(&self) -> String {
        match self._cp.http_get("/metrics") {
            Some((200, body)) => body,
            other => panic!("GET /metrics on the control plane: {other:?}"),
        }
    }
}

/// Calls `check` every 50 ms until it returns `Some`, or fails after `timeout` with `what`.
pub fn poll<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
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

/// A listener on `port`, a route table with a route to cluster `app` and a direct response
/// of `body`, and that cluster pointing at `upstream_port`: the smallest complete config.
pub fn small_config(port: u16, body: &str, upstream_port: u16) -> String {
    format!(
        "{}---\n{}",
        listener("web", port, None),
        routes(body, upstream_port)
    )
}

/// A listener named `name` on 127.0.0.1:`port` for the route table `main`, selecting the
/// agents of `region` (all when `None`).
pub fn listener(name: &str, port: u16, region: Option<&str>) -> String {
    let selector = region.map_or(String::new(), |r| {
        format!("  selector: {{regions: [{r}]}}\n")
    });
    format!(
        "kind: Listener\nname: {name}\nspec:\n  address: 127.0.0.1\n  port: {port}\n  protocol: HTTP\n  route_table: main\n{selector}"
    )
}

/// The route table `main` (a route to cluster `app`, then a direct response of `body`) and
/// the cluster `app` pointing at `upstream_port`.
pub fn routes(body: &str, upstream_port: u16) -> String {
    format!(
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: [\"*\"]\n      routes:\n\
         \x20       - match: {{prefix: /app}}\n          action: {{cluster: app}}\n\
         \x20       - action:\n            direct_response: {{status: 200, body: \"{body}\"}}\n\
         ---\n\
         kind: Cluster\nname: app\nspec:\n  endpoints:\n    - {{address: 127.0.0.1, port: {upstream_port}}}\n"
    )
}
