//! Compiling a Cluster resource into an [`Upstream`].

use std::time::Duration;

use http::uri::Authority;
use portico_api::Kind;
use portico_api::pb;
use rustls_pki_types::ServerName;

use super::{CompileError, compile_error, duration_or};
use crate::connector::UpstreamTls;
use crate::upstream::{self, PoolLimits, Upstream, UpstreamConfig};

/// TCP connect timeout when the cluster sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The Secrets a cluster's TLS settings name: the CA, then the client certificate.
pub fn secret_names(spec: &pb::Cluster) -> [&str; 2] {
    match &spec.tls {
        Some(t) if t.enabled => [&t.ca_secret, &t.client_certificate_secret],
        _ => ["", ""],
    }
}

/// Compiles cluster `name` with `pools` connection pools; `secret` resolves tls Secret names.
pub fn compile(
    name: &str,
    spec: &pb::Cluster,
    pools: usize,
    secret: impl Fn(&str) -> Option<pb::TlsSecret>,
) -> Result<Upstream, CompileError> {
    let err = |field: String, message: String| compile_error(Kind::Cluster, name, field, message);
    let http2 = spec.protocol() == pb::cluster::UpstreamProtocol::Http2;
    let tls = match &spec.tls {
        Some(t) if t.enabled => Some(upstream_tls(t, http2, &secret).map_err(|(f, m)| err(f, m))?),
        _ => None,
    };
    let mut endpoints = Vec::with_capacity(spec.endpoints.len());
    for (i, e) in spec.endpoints.iter().enumerate() {
        let port = u16::try_from(e.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                err(
                    format!("endpoints[{i}].port"),
                    format!("bad port {}", e.port),
                )
            })?;
        let host = if e.address.contains(':') && !e.address.starts_with('[') {
            format!("[{}]", e.address)
        } else {
            e.address.clone()
        };
        let authority: Authority = format!("{host}:{port}")
            .parse()
            .map_err(|e| err(format!("endpoints[{i}].address"), format!("{e}")))?;
        endpoints.push(authority);
    }
    let pools = pools.max(1);
    let breakers = spec.circuit_breakers.unwrap_or_default();
    let limits = PoolLimits {
        connect_timeout: duration_or(spec.connect_timeout.as_ref(), DEFAULT_CONNECT_TIMEOUT),
        idle_timeout: upstream::IDLE_TIMEOUT,
        max_idle_per_endpoint: upstream::MAX_IDLE_PER_ENDPOINT,
        max_connections: per_pool(breakers.max_connections, pools),
        max_pending: per_pool(breakers.max_pending_requests, pools),
    };
    let config = UpstreamConfig {
        http2,
        tls,
        limits,
        pools,
    };
    Ok(Upstream::new(name, endpoints, config))
}

/// Each worker's share of a cluster-wide limit (0, no limit, stays 0): rounded up, so every
/// worker can open at least one connection.
fn per_pool(limit: u32, pools: usize) -> usize {
    (limit as usize).div_ceil(pools)
}

fn upstream_tls(
    t: &pb::UpstreamTls,
    http2: bool,
    secret: &impl Fn(&str) -> Option<pb::TlsSecret>,
) -> Result<UpstreamTls, (String, String)> {
    if t.ca_secret.is_empty() {
        return Err((
            "tls.ca_secret".into(),
            "required: system trust roots are not supported yet".into(),
        ));
    }
    let lookup = |field: &str, name: &str| {
        secret(name).ok_or_else(|| {
            (
                field.to_string(),
                format!("tls secret {name:?} does not exist"),
            )
        })
    };
    let ca = lookup("tls.ca_secret", &t.ca_secret)?;
    let client = match t.client_certificate_secret.as_str() {
        "" => None,
        name => Some(lookup("tls.client_certificate_secret", name)?),
    };
    let config = crate::tls::client_config(&ca, client.as_ref(), http2)
        .map_err(|e| ("tls".to_string(), e.to_string()))?;
    let server_name = match t.server_name.as_str() {
        "" => None,
        name => Some(
            ServerName::try_from(name.to_string())
                .map_err(|e| ("tls.server_name".to_string(), e.to_string()))?,
        ),
    };
    Ok(UpstreamTls {
        config,
        server_name,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn endpoint(address: &str, port: u32) -> pb::Endpoint {
        pb::Endpoint {
            address: address.into(),
            port,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn endpoints_become_authorities() {
        let spec = pb::Cluster {
            endpoints: vec![endpoint("127.0.0.1", 8080), endpoint("::1", 9090)],
            ..Default::default()
        };
        let upstream = compile("c", &spec, 1, |_| None).unwrap();
        assert_eq!(upstream.pick().unwrap().1.as_str(), "127.0.0.1:8080");
        assert_eq!(upstream.pick().unwrap().1.as_str(), "[::1]:9090");
    }

    #[tokio::test]
    async fn bad_endpoints_are_rejected_with_their_field() {
        for (spec, field) in [
            (endpoint("127.0.0.1", 0), "endpoints[0].port"),
            (endpoint("127.0.0.1", 70000), "endpoints[0].port"),
            (endpoint("bad host", 80), "endpoints[0].address"),
        ] {
            let cluster = pb::Cluster {
                endpoints: vec![spec],
                ..Default::default()
            };
            let e = compile("c", &cluster, 1, |_| None).unwrap_err();
            assert_eq!(e.field, field);
        }
    }
}
