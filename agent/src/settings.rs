//! The agent's static settings: command-line flags, each also read from `PORTICO_AGENT_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use portico_api::pb::ServicePort;

use crate::trust::Fingerprint;

/// How the agent is started. Built once in `main` (or by `portico dev`) and never changed.
#[derive(Clone, Debug, Parser)]
#[command(name = "portico-agent", version, about = "Portico proxy agent")]
pub struct Settings {
    /// Control plane URLs, e.g. http://cp1:7001,http://cp2:7001; the agent fails over between
    /// them in order.
    #[arg(
        long = "control-plane",
        env = "PORTICO_AGENT_CONTROL_PLANE",
        value_delimiter = ',',
        required = true,
        value_parser = parse_url
    )]
    pub control_planes: Vec<String>,

    /// This node's unique id (default: the hostname).
    #[arg(long, env = "PORTICO_AGENT_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// This node's region, matched by listener selectors.
    #[arg(long, env = "PORTICO_AGENT_REGION")]
    pub region: String,

    /// This node's zone, matched by listener selectors.
    #[arg(long, env = "PORTICO_AGENT_ZONE")]
    pub zone: String,

    /// A node label `key=value` matched by listener selectors; repeatable (comma-separated in
    /// the environment).
    #[arg(
        long = "label",
        env = "PORTICO_AGENT_LABEL",
        value_delimiter = ',',
        value_parser = parse_label
    )]
    pub labels: Vec<(String, String)>,

    /// A service this node offers, `NAME=PORT` (NAME: 1-63 lowercase letters, digits and '-';
    /// PORT: 1-65535); repeatable (comma-separated in the environment). Clusters whose
    /// `service` is NAME reach this node at PORT while this agent is healthy.
    #[arg(
        long = "service",
        env = "PORTICO_AGENT_SERVICE",
        value_name = "NAME=PORT",
        value_delimiter = ',',
        value_parser = parse_service
    )]
    pub services: Vec<ServicePort>,

    /// The address other nodes reach this node's services at (an IP address or a host name);
    /// default: the address the control plane sees this agent connect from.
    #[arg(long, env = "PORTICO_AGENT_ADVERTISE_ADDRESS", value_parser = parse_address)]
    pub advertise_address: Option<String>,

    /// A join token (`portico token create --join`): with it the agent asks the control plane
    /// for its client certificate when it has no valid one. Sent only over TLS, to a control
    /// plane verified with --ca-file or --ca-fingerprint.
    #[arg(long, env = "PORTICO_AGENT_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,

    /// SHA-256 fingerprint of the control plane's CA (what `portico-cp` prints at start and
    /// `portico ca show` prints): `https://` control planes must present a chain holding it.
    #[arg(long, env = "PORTICO_AGENT_CA_FINGERPRINT", conflicts_with = "ca_file")]
    pub ca_fingerprint: Option<Fingerprint>,

    /// CA certificate (PEM) that `https://` control planes' certificates must chain to.
    #[arg(long, env = "PORTICO_AGENT_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Address of the admin endpoint (/healthz, /readyz, /metrics, /config).
    #[arg(
        long,
        env = "PORTICO_AGENT_ADMIN_LISTEN",
        default_value = "127.0.0.1:9901"
    )]
    pub admin_listen: SocketAddr,

    /// Directory for the last-good config, served at start before any control plane answers.
    #[arg(long, env = "PORTICO_AGENT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Log line format.
    #[arg(long, env = "PORTICO_AGENT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How often the agent reports its health to the control plane, e.g. 10s.
    #[arg(long, env = "PORTICO_AGENT_REPORT_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    pub report_interval: Duration,

    /// How long in-flight requests may run after SIGTERM before the agent exits anyway.
    #[arg(long, env = "PORTICO_AGENT_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Threads serving traffic, each with its own runtime, sockets and upstream pools
    /// (0: one per core the process may use, after its CPU affinity and cgroup quota).
    #[arg(long, env = "PORTICO_AGENT_PROXY_WORKERS", default_value_t = 0)]
    pub proxy_workers: usize,

    /// Take the control plane's config even when it is older than the one served (a lower
    /// version, or an empty config at no higher version), which the agent otherwise refuses
    /// and keeps serving its own: for moving agents to a control plane restored from an older
    /// backup, or started anew, on purpose. Start without it again afterwards.
    #[arg(long, env = "PORTICO_AGENT_ACCEPT_LOWER_VERSION")]
    pub accept_lower_version: bool,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why the node id could not be found.
#[derive(Debug, thiserror::Error)]
pub enum NodeIdError {
    /// The hostname could not be read.
    #[error("reading the hostname (pass --node-id): {0}")]
    Hostname(#[source] std::io::Error),
    /// The hostname is not a valid node id.
    #[error("the hostname is not a valid node id (pass --node-id): {0}")]
    Invalid(String),
}

impl Settings {
    /// The node id: `--node-id`, else the hostname.
    pub fn node_id(&self) -> Result<String, NodeIdError> {
        if let Some(id) = &self.node_id {
            return Ok(id.clone());
        }
        let host = hostname::get().map_err(NodeIdError::Hostname)?;
        parse_node_id(&host.to_string_lossy()).map_err(NodeIdError::Invalid)
    }
}

fn parse_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    match s.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not an http:// or https:// URL")),
    }
}

/// Node ids follow [`portico_api::node::check_id`], as the control plane checks them.
fn parse_node_id(s: &str) -> Result<String, String> {
    portico_api::node::check_id(s).map(|()| s.to_string())
}

/// Services follow [`portico_api::node::parse_service`], as the control plane checks them.
fn parse_service(s: &str) -> Result<ServicePort, String> {
    portico_api::node::parse_service(s)
}

fn parse_address(s: &str) -> Result<String, String> {
    portico_api::node::check_address(s).map(|()| s.to_string())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be more than zero".to_string());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        let base = ["portico-agent", "--region", "eu", "--zone", "eu-1"];
        Settings::try_parse_from(base.iter().chain(args))
    }

    #[test]
    fn defaults_apply_when_only_required_flags_are_given() {
        let s = parse(&["--control-plane", "http://cp:7001"]).unwrap();
        assert_eq!(s.control_planes, ["http://cp:7001"]);
        assert_eq!(s.admin_listen, "127.0.0.1:9901".parse().unwrap());
        assert_eq!(s.report_interval, Duration::from_secs(10));
        assert_eq!(s.drain_timeout, Duration::from_secs(30));
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.cache_dir, None);
        assert!(s.labels.is_empty());
        assert!(s.services.is_empty());
        assert_eq!(s.advertise_address, None);
        assert_eq!(s.join_token, None);
        assert_eq!(s.ca_fingerprint, None);
        assert_eq!(s.ca_file, None);
    }

    #[test]
    fn identity_flags_parse_and_one_ca_option_is_allowed() {
        let fp = "ab".repeat(32);
        let s = parse(&[
            "--control-plane",
            "https://cp:7000",
            "--join-token",
            "pt_x",
            "--ca-fingerprint",
            &fp,
        ])
        .unwrap();
        assert_eq!(s.join_token.as_deref(), Some("pt_x"));
        assert_eq!(s.ca_fingerprint.unwrap().to_string(), fp);
        let err = parse(&[
            "--control-plane",
            "https://cp:7000",
            "--ca-fingerprint",
            &fp,
            "--ca-file",
            "ca.pem",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--ca-file"), "{err}");
        let err = parse(&["--control-plane", "https://cp", "--ca-fingerprint", "xyz"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--ca-fingerprint"), "{err}");
    }

    #[test]
    fn services_and_the_advertised_address_parse() {
        let s = parse(&[
            "--control-plane",
            "http://a",
            "--service",
            "api=8080",
            "--service",
            "db=5432",
            "--advertise-address",
            "10.1.2.3",
        ])
        .unwrap();
        let names: Vec<_> = s
            .services
            .iter()
            .map(|p| (p.name.as_str(), p.port))
            .collect();
        assert_eq!(names, [("api", 8080), ("db", 5432)]);
        assert_eq!(s.advertise_address.as_deref(), Some("10.1.2.3"));
    }

    #[test]
    fn lists_and_durations_parse() {
        let s = parse(&[
            "--control-plane",
            "http://a:1,https://b:2",
            "--label",
            "tier=edge",
            "--label",
            "pool=blue",
            "--report-interval",
            "1s 500ms",
            "--drain-timeout",
            "2m",
            "--log-format",
            "json",
            "--node-id",
            "edge-1.eu",
        ])
        .unwrap();
        assert_eq!(s.control_planes, ["http://a:1", "https://b:2"]);
        assert_eq!(
            s.labels,
            [
                ("tier".to_string(), "edge".to_string()),
                ("pool".to_string(), "blue".to_string())
            ]
        );
        assert_eq!(s.report_interval, Duration::from_millis(1500));
        assert_eq!(s.drain_timeout, Duration::from_secs(120));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.node_id().unwrap(), "edge-1.eu");
    }

    #[test]
    fn bad_values_are_rejected_with_the_flag_named() {
        for (args, flag) in [
            (&["--control-plane", "cp:7001"][..], "--control-plane"),
            (
                &["--control-plane", "http://a", "--label", "novalue"],
                "--label",
            ),
            (
                &["--control-plane", "http://a", "--node-id", "bad id"],
                "--node-id",
            ),
            (
                &["--control-plane", "http://a", "--report-interval", "0s"],
                "--report-interval",
            ),
            (
                &["--control-plane", "http://a", "--drain-timeout", "soon"],
                "--drain-timeout",
            ),
            (
                &["--control-plane", "http://a", "--service", "api"],
                "--service",
            ),
            (
                &["--control-plane", "http://a", "--service", "API=80"],
                "--service",
            ),
            (
                &["--control-plane", "http://a", "--service", "api=0"],
                "--service",
            ),
            (
                &["--control-plane", "http://a", "--service", "api=70000"],
                "--service",
            ),
            (
                &[
                    "--control-plane",
                    "http://a",
                    "--advertise-address",
                    "10.0.0.1:80",
                ],
                "--advertise-address",
            ),
            (&[][..], "--control-plane"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn hostname_is_the_default_node_id() {
        let s = parse(&["--control-plane", "http://a"]).unwrap();
        let host = hostname::get().unwrap().to_string_lossy().into_owned();
        assert_eq!(s.node_id().unwrap(), host);
    }
}
