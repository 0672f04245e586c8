//! A real single-node etcd on free ports with a temp data dir, stopped when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use portico_test_support::net::{free_addr, is_listening};
use portico_test_support::process::Process;
use portico_test_support::wait::within_blocking;

/// How long etcd may take to accept clients.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What to tell whoever runs the tests when etcd is missing.
pub const INSTALL_HINT: &str = "install etcd-server (apt-get install -y etcd-server)";

/// PEM files for TLS on etcd's client port.
pub struct EtcdTlsFiles {
    /// etcd's server certificate (valid for 127.0.0.1).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA whose client certificates etcd requires (`--client-cert-auth`).
    pub client_ca: PathBuf,
}

/// Panics with [`INSTALL_HINT`] when the `etcd` binary is not on PATH.
fn check_installed() {
    if Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        panic!("the etcd binary is not on PATH: {INSTALL_HINT}");
    }
}

/// A running etcd.
pub struct Etcd {
    client: SocketAddr,
    scheme: &'static str,
    process: Process,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it accepts clients. Panics with [`INSTALL_HINT`] when the
    /// `etcd` binary is not on PATH.
    pub fn start() -> Etcd {
        Etcd::start_with(None)
    }

    /// Starts etcd serving clients over TLS only, requiring client certificates.
    pub fn start_tls(tls: &EtcdTlsFiles) -> Etcd {
        Etcd::start_with(Some(tls))
    }

    /// Starts etcd inside the network namespace `netns`, serving clients on port 2379 of every
    /// address there; [`Etcd::endpoint`] is the one at `ip`, which the test reaches.
    pub fn start_in(netns: &crate::netns::Netns, ip: std::net::IpAddr) -> Etcd {
        check_installed();
        Etcd::try_start(None, Some((netns, ip)))
            .unwrap_or_else(|e| panic!("etcd did not start in {}: {e}", netns.name()))
    }

    fn start_with(tls: Option<&EtcdTlsFiles>) -> Etcd {
        check_installed();
        // A port that was free a moment ago can be taken by someone else before etcd binds it
        // (tests run in parallel); etcd then exits at once, and a new pair of ports fixes it.
        let mut failures = Vec::new();
        for _ in 0..5 {
            match Etcd::try_start(tls, None) {
                Ok(etcd) => return etcd,
                Err(e) => failures.push(e),
            }
        }
        panic!("etcd did not start:\n{}", failures.join("\n"));
    }

    fn try_start(
        tls: Option<&EtcdTlsFiles>,
        netns: Option<(&crate::netns::Netns, std::net::IpAddr)>,
    ) -> Result<Etcd, String> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let (client, peer, listen) = match netns {
            Some((_, ip)) => (
                SocketAddr::new(ip, 2379),
                SocketAddr::from(([127, 0, 0, 1], 2380)),
                SocketAddr::from(([0, 0, 0, 0], 2379)),
            ),
            None => {
                let (client, peer) = (free_addr(), free_addr());
                (client, peer, client)
            }
        };
        if peer == client {
            return Err(format!("got port {} twice", client.port()));
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "n1", "--logger", "zap", "--log-level", "error"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg(format!("--listen-client-urls={scheme}://{listen}"))
            .arg(format!("--advertise-client-urls={scheme}://{client}"))
            .arg(format!("--listen-peer-urls=http://{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
            .arg(format!("--initial-cluster=n1=http://{peer}"));
        if let Some(tls) = tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.client_ca)
                .arg("--client-cert-auth");
        }
        if let Some((netns, _)) = netns {
            cmd = netns.command(&cmd);
        }
        let mut process = Process::spawn("etcd", cmd);
        let started = within_blocking(START_TIMEOUT, || {
            if let Some(status) = process.try_wait() {
                return Some(Err(status));
            }
            is_listening(client).then_some(Ok(()))
        });
        match started {
            Some(Ok(())) => {}
            Some(Err(status)) => {
                return Err(format!(
                    "etcd exited at start ({status}): {}",
                    process.stderr()
                ));
            }
            None => panic!("etcd did not accept clients at {client} within {START_TIMEOUT:?}"),
        }
        Ok(Etcd {
            client,
            scheme,
            process,
            _dir: dir,
        })
    }

    /// The client URL, e.g. `http://127.0.0.1:23791` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        format!("{}://{}", self.scheme, self.client)
    }

    /// Kills etcd (SIGKILL), e.g. to test a store that goes away.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts an etcd cluster of `members` members on free ports and waits until each one
    /// accepts clients.
    pub fn start_cluster(members: usize) -> Vec<Etcd> {
        check_installed();
        let addrs: Vec<(SocketAddr, SocketAddr)> =
            (0..members).map(|_| (free_addr(), free_addr())).collect();
        let initial = addrs
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut started: Vec<Etcd> = addrs
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
                let mut cmd = Command::new("etcd");
                cmd.args([
                    "--name",
                    &format!("m{i}"),
                    "--logger",
                    "zap",
                    "--log-level",
                    "error",
                ])
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .arg(format!("--listen-client-urls=http://{client}"))
                .arg(format!("--advertise-client-urls=http://{client}"))
                .arg(format!("--listen-peer-urls=http://{peer}"))
                .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
                .arg(format!("--initial-cluster={initial}"))
                .arg("--initial-cluster-state=new");
                Etcd {
                    client: *client,
                    scheme: "http",
                    process: Process::spawn(&format!("etcd m{i}"), cmd),
                    _dir: dir,
                }
            })
            .collect();
        for member in &mut started {
            let up = within_blocking(START_TIMEOUT, || {
                if let Some(status) = member.process.try_wait() {
                    panic!(
                        "etcd member exited at start ({status}): {}",
                        member.process.stderr()
                    );
                }
                is_listening(member.client).then_some(())
            });
            if up.is_none() {
                panic!("etcd member at {} did not accept clients", member.client);
            }
        }
        started
    }

    /// Whether this member leads its cluster (from its maintenance status), `None` when it
    /// does not answer.
    pub async fn is_leader(&self) -> Option<bool> {
        let body = "{}";
        let request = format!(
            "POST /v3/maintenance/status HTTP/1.1\r\nHost: {}\r\nContent-Type: \
             application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.client,
            body.len()
        );
        let answer = portico_test_support::http::raw(
            self.client.port(),
            request.as_bytes(),
            Duration::from_secs(2),
        )
        .await;
        // The JSON object of the body, whether or not it came chunked.
        let body = answer.get(answer.find('{')?..=answer.rfind('}')?)?;
        let json: serde_json::Value = serde_json::from_str(body).ok()?;
        let member = json["header"]["member_id"].as_str()?;
        Some(json["leader"].as_str()? == member)
    }
}
