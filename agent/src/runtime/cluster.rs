//! Compiling a Cluster resource into an [`Upstream`].

use std::time::Duration;

use http::uri::Authority;
use portico_api::pb;

use super::{CompileError, duration_or};
use crate::proxy::upstream::Upstream;

/// TCP connect timeout when the cluster sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Compiles cluster `name`.
pub fn compile(name: &str, spec: &pb::Cluster) -> Result<Upstream, CompileError> {
    let err = |field: String, message: String| CompileError::new("Cluster", name, field, message);
    if spec.tls.as_ref().is_some_and(|t| t.enabled) {
        return Err(err(
            "tls.enabled".into(),
            "TLS to upstream endpoints is not supported yet".into(),
        ));
    }
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
    let http2 = spec.protocol() == pb::cluster::UpstreamProtocol::Http2;
    let connect_timeout = duration_or(spec.connect_timeout.as_ref(), DEFAULT_CONNECT_TIMEOUT);
    Ok(Upstream::new(name, endpoints, http2, connect_timeout))
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
        let upstream = compile("c", &spec).unwrap();
        assert_eq!(upstream.pick().unwrap().as_str(), "127.0.0.1:8080");
        assert_eq!(upstream.pick().unwrap().as_str(), "[::1]:9090");
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
            let e = compile("c", &cluster).unwrap_err();
            assert_eq!(e.field, field);
        }
    }
}
