//! Compiling a Cluster resource into an [`Upstream`]: its endpoints (static, and those of the
//! service it names), the balancing policy, health checks, outlier detection and limits.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use http::uri::Authority;
use portico_api::Kind;
use portico_api::pb::{self, cluster::LbPolicy, hash_policy};
use rustls_pki_types::ServerName;

use super::{CompileError, NodeInfo, compile_error, duration_or};
use crate::config::Services;
use crate::connector::UpstreamTls;
use crate::upstream::{
    self, CheckKind, Endpoint, HashPolicy, HealthCheck, Locality, OutlierDetection, Policy,
    PoolLimits, SessionCookie, Tiering, Upstream, UpstreamConfig,
};

/// TCP connect timeout when the cluster sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Locality failover threshold when the cluster sets none, in percent.
const DEFAULT_FAILOVER_THRESHOLD: u32 = 70;

/// What compiling any cluster needs besides the cluster itself.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    /// Connection pools per cluster: one per proxy worker.
    pub pools: usize,
    /// Where this agent runs, for locality-aware balancing.
    pub node: &'a NodeInfo,
    /// The endpoints of announced services.
    pub services: &'a Services,
}

/// The Secrets a cluster's TLS settings name: the CA, then the client certificate.
pub fn secret_names(spec: &pb::Cluster) -> [&str; 2] {
    match &spec.tls {
        Some(t) if t.enabled => [&t.ca_secret, &t.client_certificate_secret],
        _ => ["", ""],
    }
}

/// Compiles cluster `name`; `secret` resolves tls Secret names. Endpoints that `previous`
/// (the cluster this one replaces) had at the same address, weight and locality keep their
/// state: health, ejections, requests in flight.
pub fn compile(
    name: &str,
    spec: &pb::Cluster,
    env: Env<'_>,
    previous: Option<&Upstream>,
    secret: impl Fn(&str) -> Option<pb::TlsSecret>,
) -> Result<Upstream, CompileError> {
    let err = |field: String, message: String| compile_error(Kind::Cluster, name, field, message);
    let http2 = spec.protocol() == pb::cluster::UpstreamProtocol::Http2;
    let tls = match &spec.tls {
        Some(t) if t.enabled => Some(upstream_tls(t, http2, &secret).map_err(|(f, m)| err(f, m))?),
        _ => None,
    };
    let pools = env.pools.max(1);
    let service = match spec.service.as_str() {
        "" => &[][..],
        s => env.services.get(s).map_or(&[][..], |e| e.as_slice()),
    };
    let mut endpoints: Vec<Arc<Endpoint>> = Vec::with_capacity(spec.endpoints.len());
    let listed = spec
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("endpoints[{i}]"), e));
    let announced = service.iter().map(|e| ("service".to_string(), e));
    for (field, e) in listed.chain(announced) {
        let authority = authority(e).map_err(|(f, m)| err(format!("{field}.{f}"), m))?;
        if endpoints.iter().any(|known| known.authority == authority) {
            // A node that announces a service it is also listed for is one endpoint.
            continue;
        }
        let weight = e.weight.max(1);
        let locality = Locality {
            region: e.region.clone(),
            zone: e.zone.clone(),
        };
        let kept = previous
            .and_then(|p| p.endpoint(&authority))
            .filter(|p| p.weight == weight && p.locality == locality);
        endpoints.push(match kept {
            Some(e) => e.clone(),
            None => Arc::new(Endpoint::new(authority, weight, locality, pools)),
        });
    }
    let breakers = spec.circuit_breakers.unwrap_or_default();
    let limits = PoolLimits {
        connect_timeout: duration_or(spec.connect_timeout.as_ref(), DEFAULT_CONNECT_TIMEOUT),
        idle_timeout: upstream::IDLE_TIMEOUT,
        max_idle_per_endpoint: upstream::MAX_IDLE_PER_ENDPOINT,
        max_connections: per_pool(breakers.max_connections, pools),
        max_pending: per_pool(breakers.max_pending_requests, pools),
        max_response_head: match spec.max_response_header_bytes {
            0 => upstream::DEFAULT_MAX_RESPONSE_HEAD,
            n => n as usize,
        },
    };
    let config = UpstreamConfig {
        http2,
        tls,
        limits,
        pools,
        policy: policy(spec.lb_policy()),
        tiering: spec
            .locality
            .as_ref()
            .filter(|l| l.prefer_local)
            .map(|l| Tiering {
                local: Locality {
                    region: env.node.region.clone(),
                    zone: env.node.zone.clone(),
                },
                threshold: match l.failover_threshold_percent {
                    0 => DEFAULT_FAILOVER_THRESHOLD,
                    t => t,
                },
            }),
        hash: match &spec.hash_policy {
            Some(h) => hash_policy(h).map_err(|(f, m)| err(format!("hash_policy.{f}"), m))?,
            None => None,
        },
        health_check: spec.health_check.as_ref().map(health_check),
        outlier: spec.outlier_detection.as_ref().map(outlier),
        max_requests: per_pool(breakers.max_requests, pools) as u32,
        max_retries: per_pool(breakers.max_retries, pools) as u32,
    };
    Ok(Upstream::new(name, endpoints, config))
}

/// An endpoint's host:port.
fn authority(e: &pb::Endpoint) -> Result<Authority, (String, String)> {
    let port = u16::try_from(e.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ("port".to_string(), format!("bad port {}", e.port)))?;
    let host = if e.address.contains(':') && !e.address.starts_with('[') {
        format!("[{}]", e.address)
    } else {
        e.address.clone()
    };
    format!("{host}:{port}")
        .parse()
        .map_err(|e| ("address".to_string(), format!("{e}")))
}

fn policy(p: LbPolicy) -> Policy {
    match p {
        LbPolicy::LeastRequest => Policy::LeastRequest,
        LbPolicy::RingHash => Policy::RingHash,
        LbPolicy::Maglev => Policy::Maglev,
        LbPolicy::Unspecified | LbPolicy::RoundRobin | LbPolicy::WeightedRoundRobin => {
            Policy::RoundRobin
        }
    }
}

fn hash_policy(h: &pb::HashPolicy) -> Result<Option<HashPolicy>, (String, String)> {
    Ok(match &h.key {
        None => None,
        Some(hash_policy::Key::Header(name)) => Some(HashPolicy::Header(
            HeaderName::try_from(name.as_str()).map_err(|e| ("header".into(), e.to_string()))?,
        )),
        Some(hash_policy::Key::Cookie(name)) => Some(HashPolicy::Cookie(name.clone())),
        Some(hash_policy::Key::SourceIp(_)) => Some(HashPolicy::SourceIp),
        Some(hash_policy::Key::QueryParam(name)) => Some(HashPolicy::QueryParam(name.clone())),
        Some(hash_policy::Key::SessionCookie(c)) => Some(HashPolicy::Session(SessionCookie {
            name: c.name.clone(),
            ttl: c
                .ttl
                .as_ref()
                .map(|d| duration_or(Some(d), Duration::ZERO))
                .filter(|d| !d.is_zero()),
            path: if c.path.is_empty() {
                "/".into()
            } else {
                c.path.clone()
            },
        })),
    })
}

fn health_check(h: &pb::HealthCheck) -> HealthCheck {
    let or = |v: u32, default: u32| if v == 0 { default } else { v };
    HealthCheck {
        kind: if let Some(g) = &h.grpc {
            CheckKind::Grpc {
                service: g.service.clone(),
                host: (!h.host.is_empty()).then(|| h.host.clone()),
            }
        } else if h.tcp {
            CheckKind::Tcp
        } else {
            CheckKind::Http {
                path: h.path.clone(),
                host: (!h.host.is_empty()).then(|| h.host.clone()),
                expected: h
                    .expected_statuses
                    .iter()
                    .filter_map(|s| u16::try_from(*s).ok())
                    .collect(),
            }
        },
        interval: duration_or(h.interval.as_ref(), Duration::from_secs(5)),
        timeout: duration_or(h.timeout.as_ref(), Duration::from_secs(1)),
        healthy_threshold: or(h.healthy_threshold, 2),
        unhealthy_threshold: or(h.unhealthy_threshold, 3),
    }
}

fn outlier(o: &pb::OutlierDetection) -> OutlierDetection {
    let d = OutlierDetection::default();
    let or = |v: u32, default: u32| if v == 0 { default } else { v };
    OutlierDetection {
        consecutive_5xx: or(o.consecutive_5xx, d.consecutive_5xx),
        consecutive_gateway: or(o.consecutive_gateway_failures, d.consecutive_gateway),
        base_ejection: duration_or(o.base_ejection_time.as_ref(), d.base_ejection),
        max_ejection_percent: or(o.max_ejection_percent, d.max_ejection_percent),
    }
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
    let lookup = |field: &str, name: &str| {
        secret(name).ok_or_else(|| {
            (
                field.to_string(),
                format!("tls secret {name:?} does not exist"),
            )
        })
    };
    // Without a CA Secret, the system's roots.
    let ca = match t.ca_secret.as_str() {
        "" => None,
        name => Some(lookup("tls.ca_secret", name)?),
    };
    let client = match t.client_certificate_secret.as_str() {
        "" => None,
        name => Some(lookup("tls.client_certificate_secret", name)?),
    };
    let config = crate::tls::client_config(ca.as_ref(), client.as_ref(), http2)
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

    fn env_compile(spec: &pb::Cluster) -> Result<Upstream, CompileError> {
        let node = NodeInfo::default();
        let services = Services::new();
        let env = Env {
            pools: 1,
            node: &node,
            services: &services,
        };
        compile("c", spec, env, None, |_| None)
    }

    #[tokio::test]
    async fn endpoints_become_authorities() {
        let spec = pb::Cluster {
            endpoints: vec![endpoint("127.0.0.1", 8080), endpoint("::1", 9090)],
            ..Default::default()
        };
        let upstream = env_compile(&spec).unwrap();
        let authorities: Vec<String> = upstream
            .endpoints()
            .iter()
            .map(|e| e.authority.to_string())
            .collect();
        assert_eq!(authorities, ["127.0.0.1:8080", "[::1]:9090"]);
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
            let e = env_compile(&cluster).unwrap_err();
            assert_eq!(e.field, field);
        }
    }

    #[tokio::test]
    async fn service_endpoints_join_the_static_ones_and_state_carries_over() {
        let node = NodeInfo::default();
        let mut services = Services::new();
        services.insert(
            "api".into(),
            Arc::new(vec![endpoint("10.0.0.2", 80), endpoint("10.0.0.1", 80)]),
        );
        let env = Env {
            pools: 1,
            node: &node,
            services: &services,
        };
        let spec = pb::Cluster {
            endpoints: vec![endpoint("10.0.0.1", 80)],
            service: "api".into(),
            ..Default::default()
        };
        let first = compile("c", &spec, env, None, |_| None).unwrap();
        assert_eq!(first.endpoints().len(), 2, "the listed node counts once");
        let second = compile("c", &spec, env, Some(&first), |_| None).unwrap();
        for (a, b) in first.endpoints().iter().zip(second.endpoints()) {
            assert!(Arc::ptr_eq(a, b), "{} kept its state", a.authority);
        }
    }
}
