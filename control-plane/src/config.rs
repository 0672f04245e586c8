//! Static configuration of a control plane: command-line flags, each also read from the
//! environment as `PORTICO_CP_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Which store holds the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// A durable store on local disk (`--data-dir`); a single control plane, no other service.
    Embedded,
    /// An etcd cluster (`--etcd-endpoints`); several control planes may share it.
    Etcd,
}

/// Whether Admin calls need a token and agents a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Always: every Admin call needs `authorization: Bearer TOKEN` with a role that allows it,
    /// every agent a certificate of the control plane's CA.
    On,
    /// Never: anyone who reaches the port may do anything.
    Off,
    /// On whenever `--listen` is not a loopback address.
    Auto,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The flags of `portico-cp`.
#[derive(Clone, Debug, Parser)]
#[command(name = "portico-cp", version, about = "Portico control plane")]
pub struct Config {
    /// Address of the gRPC Admin and Discovery services.
    #[arg(long, env = "PORTICO_CP_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,

    /// Address of the HTTP endpoints /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "PORTICO_CP_METRICS_LISTEN",
        default_value = "127.0.0.1:9100"
    )]
    pub metrics_listen: SocketAddr,

    /// Address of the dashboard (a read-only web UI over the Admin API), or `off`. Served over
    /// TLS with the gRPC API's certificate when that is TLS; plaintext only on loopback
    /// (unless --allow-insecure-remote).
    #[arg(long, env = "PORTICO_CP_WEB_LISTEN", default_value = "127.0.0.1:7080")]
    pub web_listen: WebListen,

    /// The store.
    #[arg(long, env = "PORTICO_CP_STORE", value_enum, default_value = "embedded")]
    pub store: StoreKind,

    /// Directory of the embedded store.
    #[arg(long, env = "PORTICO_CP_DATA_DIR", default_value = "./portico-data")]
    pub data_dir: PathBuf,

    /// Create a new, empty embedded store where the data directory holds none: needed when the
    /// directory is not new but its store file is missing or empty (0 bytes), which the control
    /// plane otherwise refuses, since it would start with an empty config. A store with data
    /// is opened as it is.
    #[arg(long, env = "PORTICO_CP_INIT")]
    pub init: bool,

    /// etcd client URLs, comma-separated.
    #[arg(
        long,
        env = "PORTICO_CP_ETCD_ENDPOINTS",
        value_delimiter = ',',
        required_if_eq("store", "etcd")
    )]
    pub etcd_endpoints: Vec<String>,

    /// Root of every key in etcd, so several installations can share one cluster.
    #[arg(long, env = "PORTICO_CP_ETCD_PREFIX", default_value = crate::keys::DEFAULT_ROOT)]
    pub etcd_prefix: String,

    /// This replica's name in the agent registry; default `<hostname>-<pid>`.
    #[arg(long, env = "PORTICO_CP_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// Certificate chain (PEM) to serve gRPC with, over TLS; with --tls-key. Without it the
    /// control plane serves plaintext, or with --auth on a certificate of its own CA.
    #[arg(long, env = "PORTICO_CP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "PORTICO_CP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Names (host names or IP addresses) agents and the CLI reach this replica at, for the
    /// serving certificate the control plane issues itself (loopback names are always in it);
    /// comma-separated.
    #[arg(long, env = "PORTICO_CP_TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,

    /// Serve plaintext gRPC on an address that is not loopback (refused otherwise).
    #[arg(long, env = "PORTICO_CP_ALLOW_INSECURE_REMOTE")]
    pub allow_insecure_remote: bool,

    /// Authentication of Admin calls (tokens with roles) and agents (certificates): on, off,
    /// or auto (on whenever --listen is not a loopback address).
    #[arg(long, env = "PORTICO_CP_AUTH", value_enum, default_value = "auto")]
    pub auth: AuthMode,

    /// File of the first admin token: read when it exists, else generated and written there
    /// (mode 0600) on the installation's first start.
    #[arg(long, env = "PORTICO_CP_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,

    /// How long the client certificates issued to agents are valid; agents renew them after
    /// two thirds of it.
    #[arg(
        long,
        env = "PORTICO_CP_AGENT_CERT_TTL",
        default_value = "24h",
        value_parser = parse_ttl
    )]
    pub agent_cert_ttl: Duration,

    /// How long the registry keeps an agent with no open stream (shown as `disconnected`)
    /// before forgetting it, e.g. 24h, 30m.
    #[arg(
        long,
        env = "PORTICO_CP_AGENT_EXPIRY",
        default_value = "24h",
        value_parser = parse_expiry
    )]
    pub agent_expiry: Duration,

    /// How many config changes keep their full history record (what diffs and rollbacks
    /// need); older ones keep only their summary. 0 keeps every one. The leader prunes.
    #[arg(
        long,
        env = "PORTICO_CP_HISTORY_RETENTION",
        default_value_t = DEFAULT_HISTORY_RETENTION
    )]
    pub history_retention: u64,

    /// Most new agent streams (Discovery and xDS) this replica admits per second; beyond it,
    /// streams are refused with RESOURCE_EXHAUSTED and a retry-after hint agents honour, so a
    /// replica's failure does not land all its agents on the others in the same second.
    #[arg(
        long,
        env = "PORTICO_CP_MAX_STREAM_ACCEPT_RATE",
        default_value_t = DEFAULT_MAX_STREAM_ACCEPT_RATE,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_stream_accept_rate: u32,

    /// Log format.
    #[arg(
        long,
        env = "PORTICO_CP_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Print the CA fingerprint on stdout at start (the binary does; `portico dev` does not).
    #[arg(skip)]
    pub announce: bool,
}

/// Where the dashboard is served: an address, or nowhere (`off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebListen(pub Option<SocketAddr>);

impl std::str::FromStr for WebListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            return Ok(WebListen(None));
        }
        s.parse()
            .map(|addr| WebListen(Some(addr)))
            .map_err(|_| format!("{s:?} is neither an address (127.0.0.1:7080) nor off"))
    }
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".to_string());
    }
    Ok(d)
}

/// How many changes keep their full history record by default.
pub const DEFAULT_HISTORY_RETENTION: u64 = 1000;

/// New agent streams admitted per second by default: a little more than each of three
/// replicas sharing 2 cores with etcd and 100,000 simulated agents admitted in a storm
/// (about 1,700 a second: bench/README.md, "Several replicas"), so on 2 cores a replica is
/// held back by its CPU before the rate; the rate spreads the rest.
pub const DEFAULT_MAX_STREAM_ACCEPT_RATE: u32 = 2000;

/// How long a disconnected agent stays in the registry by default.
pub const DEFAULT_AGENT_EXPIRY: Duration = Duration::from_secs(24 * 3600);

fn parse_expiry(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

impl Config {
    /// The replica id: the flag, or `<hostname>-<pid>`.
    pub fn replica_id(&self) -> String {
        self.replica_id.clone().unwrap_or_else(|| {
            let host = hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "cp".to_string());
            format!("{host}-{}", std::process::id())
        })
    }

    /// The key root: `--etcd-prefix` for etcd; the default for the embedded store, which holds
    /// one installation only.
    pub fn key_root(&self) -> &str {
        match self.store {
            StoreKind::Etcd => &self.etcd_prefix,
            StoreKind::Embedded => crate::keys::DEFAULT_ROOT,
        }
    }

    /// A config for tests and `portico dev`: embedded store in `data_dir`, everything else
    /// default (the gRPC and metrics listen addresses are ignored by [`crate::server::run`],
    /// which takes bound listeners; the dashboard is off).
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            web_listen: WebListen(None),
            store: StoreKind::Embedded,
            data_dir: data_dir.into(),
            init: false,
            etcd_endpoints: Vec::new(),
            etcd_prefix: crate::keys::DEFAULT_ROOT.to_string(),
            replica_id: None,
            tls_cert: None,
            tls_key: None,
            tls_san: Vec::new(),
            allow_insecure_remote: false,
            auth: AuthMode::Auto,
            bootstrap_token_file: None,
            agent_cert_ttl: Duration::from_secs(24 * 3600),
            agent_expiry: DEFAULT_AGENT_EXPIRY,
            history_retention: DEFAULT_HISTORY_RETENTION,
            max_stream_accept_rate: DEFAULT_MAX_STREAM_ACCEPT_RATE,
            log_format: LogFormat::Text,
            announce: false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_etcd_flags_parse() {
        let c = Config::try_parse_from(["portico-cp"]).unwrap();
        assert_eq!(c.store, StoreKind::Embedded);
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.metrics_listen.port(), 9100);
        assert_eq!(
            c.web_listen,
            WebListen(Some("127.0.0.1:7080".parse().unwrap()))
        );
        let off = Config::try_parse_from(["portico-cp", "--web-listen", "off"]).unwrap();
        assert_eq!(off.web_listen, WebListen(None));
        let err = Config::try_parse_from(["portico-cp", "--web-listen", "7080"]).unwrap_err();
        assert!(err.to_string().contains("neither an address"), "{err}");
        let c = Config::try_parse_from([
            "portico-cp",
            "--store",
            "etcd",
            "--etcd-endpoints",
            "http://a:2379,http://b:2379",
        ])
        .unwrap();
        assert_eq!(c.etcd_endpoints, ["http://a:2379", "http://b:2379"]);
        assert!(Config::try_parse_from(["portico-cp", "--store", "etcd"]).is_err());
        assert_eq!(c.agent_expiry, DEFAULT_AGENT_EXPIRY);
        let c = Config::try_parse_from(["portico-cp", "--agent-expiry", "90m"]).unwrap();
        assert_eq!(c.agent_expiry, Duration::from_secs(5400));
        assert!(Config::try_parse_from(["portico-cp", "--agent-expiry", "0s"]).is_err());
    }

    #[test]
    fn security_flags_parse_and_the_tls_files_go_together() {
        let c = Config::try_parse_from(["portico-cp"]).unwrap();
        assert_eq!(c.auth, AuthMode::Auto);
        assert_eq!(c.agent_cert_ttl, Duration::from_secs(24 * 3600));
        assert!(!c.allow_insecure_remote);
        let c = Config::try_parse_from([
            "portico-cp",
            "--auth",
            "on",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-san",
            "cp.internal,10.0.0.7",
            "--agent-cert-ttl",
            "3s",
            "--bootstrap-token-file",
            "t",
        ])
        .unwrap();
        assert_eq!(c.auth, AuthMode::On);
        assert_eq!(c.tls_san, ["cp.internal", "10.0.0.7"]);
        assert_eq!(c.agent_cert_ttl, Duration::from_secs(3));
        for bad in [
            &["portico-cp", "--tls-cert", "c.pem"][..],
            &["portico-cp", "--tls-key", "k.pem"],
            &["portico-cp", "--agent-cert-ttl", "0s"],
            &["portico-cp", "--auth", "maybe"],
        ] {
            assert!(Config::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
