//! The `portico` binary run as a user runs it, config files written to a temp dir for it, and
//! the small configs the CLI tests apply.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use portico_api::Resource;
use portico_api::pb;
use portico_test_support::net::localhost;
use portico_test_support::process::Process;
use portico_test_support::resources::{
    Edit, cluster, direct, listener, prefix, regions, route, route_table, to, vhost, yaml,
};

use crate::bins;

/// How long one `portico` command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

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
        .env("NO_COLOR", "1");
    let mut process = Process::spawn(&format!("portico {}", args.join(" ")), cmd);
    let status = process.wait_timeout(COMMAND_TIMEOUT);
    Run {
        code: status.code().unwrap_or(-1),
        stdout: process.stdout(),
        stderr: process.stderr(),
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
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}")),
        }
    }

    /// Writes `name` and returns its path as a string.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path.display().to_string()
    }

    /// Writes `resources` as the YAML file `name` and returns its path as a string.
    pub fn write_yaml(&self, name: &str, resources: &[Resource]) -> String {
        self.write(name, &yaml(resources))
    }

    /// The dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for Files {
    fn default() -> Files {
        Files::new()
    }
}

/// One YAML listener per agent: `edge-<n>` on 127.0.0.1:`ports[n-1]`, for the route table
/// `main`, selecting the agent labelled `node: a<n>`.
pub fn agent_listeners_yaml(ports: &[u16]) -> Vec<String> {
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            format!(
                "kind: Listener\nname: edge-{n}\nspec:\n  address: 127.0.0.1\n  port: {port}\n  protocol: HTTP\n  route_table: main\n  selector: {{labels: {{node: a{n}}}}}\n",
                n = i + 1
            )
        })
        .collect()
}

/// A listener on `port`, a route table with a route to cluster `app` and a direct response
/// of `body`, and that cluster pointing at `upstream_port`: the smallest complete config.
pub fn small_config(port: u16, body: &str, upstream_port: u16) -> Vec<Resource> {
    let mut config = vec![web_listener("web", port, None)];
    config.extend(routes(body, upstream_port));
    config
}

/// A listener named `name` on 127.0.0.1:`port` for the route table `main`, selecting the
/// agents of `region` (all when `None`).
pub fn web_listener(name: &str, port: u16, region: Option<&str>) -> Resource {
    listener(name, port, "main")
        .with(|l: &mut pb::Listener| l.selector = region.map(|r| regions(&[r])))
}

/// The route table `main` (a route to cluster `app`, then a direct response of `body`) and
/// the cluster `app` pointing at `upstream_port`.
pub fn routes(body: &str, upstream_port: u16) -> Vec<Resource> {
    vec![
        main_table("app", body),
        cluster("app", &[localhost(upstream_port)]),
    ]
}

/// The route table `main`: `/app` to `cluster`, everything else a direct 200 of `body`.
pub fn main_table(cluster: &str, body: &str) -> Resource {
    route_table(
        "main",
        vec![vhost(
            "",
            &["*"],
            vec![
                route("", prefix("/app"), to(cluster)),
                route("", None, direct(200, body)),
            ],
        )],
    )
}
