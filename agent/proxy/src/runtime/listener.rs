//! Compiling a Listener resource: its bind address, connection limits and TLS.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use portico_api::Kind;
use portico_api::pb;

use super::action::{self, Redirect};
use super::router::RouteTable;
use super::{CompileError, compile_error, duration_or};
use crate::policy::{Chain, Policies};

/// Limits of one listener, defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body; larger get 413.
    pub max_request_body_bytes: u64,
    /// Time to receive a request head; slower get 408.
    pub header_read_timeout: Duration,
    /// Idle keep-alive connections close after this.
    pub idle_timeout: Duration,
    /// Most concurrent connections.
    pub max_connections: u32,
    /// Largest request head; larger get 431.
    pub max_request_header_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_body_bytes: 10 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_request_header_bytes: 64 * 1024,
        }
    }
}

impl Limits {
    fn from_spec(spec: Option<&pb::ListenerLimits>) -> Self {
        let d = Limits::default();
        let Some(s) = spec else { return d };
        let or = |v: u64, default: u64| if v == 0 { default } else { v };
        Limits {
            max_request_body_bytes: or(s.max_request_body_bytes, d.max_request_body_bytes),
            header_read_timeout: duration_or(s.header_read_timeout.as_ref(), d.header_read_timeout),
            idle_timeout: duration_or(s.idle_timeout.as_ref(), d.idle_timeout),
            max_connections: if s.max_connections == 0 {
                d.max_connections
            } else {
                s.max_connections
            },
            max_request_header_bytes: if s.max_request_header_bytes == 0 {
                d.max_request_header_bytes
            } else {
                s.max_request_header_bytes
            },
        }
    }
}

/// What a connection needs when it is accepted: read once per connection.
#[derive(Debug)]
pub struct ConnSettings {
    /// The listener's name.
    pub name: Arc<str>,
    /// TLS termination, for HTTPS listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The limits.
    pub limits: Limits,
}

/// A compiled listener.
#[derive(Debug)]
pub struct ListenerRuntime {
    /// The bind address.
    pub addr: SocketAddr,
    /// Per-connection settings.
    pub conn: Arc<ConnSettings>,
    /// The route table.
    pub routes: Arc<RouteTable>,
    /// Merge runs of '/' before matching.
    pub merge_slashes: bool,
    /// The policies every request on the listener runs; `None` without any.
    pub policies: Option<Arc<Chain>>,
    /// Set on an HTTP→HTTPS redirect listener: every request gets this redirect, unrouted.
    pub redirect_to_https: Option<Redirect>,
}

/// The Secrets a listener's TLS settings name: its certificates, and the CAs of client
/// certificates.
pub fn secret_names(spec: &pb::Listener) -> impl Iterator<Item = &str> {
    spec.tls
        .iter()
        .filter(|_| spec.protocol() == pb::listener::Protocol::Https)
        .flat_map(|t| {
            t.certificates
                .iter()
                .map(|c| c.secret.as_str())
                .chain(Some(t.client_ca_secret.as_str()).filter(|n| !n.is_empty()))
        })
}

/// Compiles listener `name`; `secret` resolves tls Secret names.
pub fn compile(
    name: &str,
    spec: &pb::Listener,
    routes: Arc<RouteTable>,
    policies: &Policies,
    secret: impl Fn(&str) -> Option<pb::TlsSecret>,
) -> Result<ListenerRuntime, CompileError> {
    let err = |field: &str, message: String| compile_error(Kind::Listener, name, field, message);
    let policies = Chain::resolve(&spec.policies, policies, "policies")
        .map_err(|(field, message)| err(&field, message))?;
    let ip: IpAddr = if spec.address.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        spec.address.parse().map_err(|_| {
            err(
                "address",
                format!("{:?} is not an IP address", spec.address),
            )
        })?
    };
    let port = u16::try_from(spec.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| err("port", format!("bad port {}", spec.port)))?;
    let tls = match spec.protocol() {
        pb::listener::Protocol::Https => {
            let tls = spec
                .tls
                .as_ref()
                .ok_or_else(|| err("tls", "required for HTTPS".into()))?;
            Some(crate::tls::server_config(tls, secret).map_err(|e| err("tls", e.to_string()))?)
        }
        _ => None,
    };
    let redirect_to_https = spec
        .redirect_to_https
        .as_ref()
        .map(action::https_redirect)
        .transpose()
        .map_err(|(field, message)| err(&field, message))?;
    Ok(ListenerRuntime {
        addr: SocketAddr::new(ip, port),
        conn: Arc::new(ConnSettings {
            name: name.into(),
            tls,
            limits: Limits::from_spec(spec.limits.as_ref()),
        }),
        routes,
        merge_slashes: spec.merge_slashes,
        policies,
        redirect_to_https,
    })
}
