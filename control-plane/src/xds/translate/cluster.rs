//! Cluster → Cluster (EDS over ADS: balancing, health checks, outlier detection, circuit
//! breakers, HTTP/2) and ClusterLoadAssignment (the static endpoints and the nodes announcing
//! the cluster's service).

use std::collections::{BTreeMap, HashMap};

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster as EnvoyCluster, OutlierDetection, circuit_breakers, cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, HealthCheck, Http2ProtocolOptions, Locality, RoutingPriority, SocketAddress, address,
    health_check, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints, endpoint,
    lb_endpoint,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::v3::{Int64Range, Percent};
use envoy_types::pb::google::protobuf::Any;
use portico_api::pb::{Cluster, Endpoint, cluster as portico_cluster};

use super::{Flavor, ads, any, duration, seconds, uint32};

const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Portico's panic mode starts when no endpoint is healthy; Envoy's when fewer than this
/// percent are (0 would turn it off).
const PANIC_PERCENT: f64 = 1e-6;

/// The xDS Cluster of Portico cluster `name`: its endpoints come by EDS over ADS.
pub fn cluster(name: &str, c: &Cluster, flavor: Flavor) -> Any {
    use portico_cluster::LbPolicy;
    let lb_policy = match c.lb_policy() {
        LbPolicy::LeastRequest => cluster::LbPolicy::LeastRequest,
        LbPolicy::RingHash => cluster::LbPolicy::RingHash,
        LbPolicy::Maglev => cluster::LbPolicy::Maglev,
        _ => cluster::LbPolicy::RoundRobin,
    };
    let mut out = EnvoyCluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds.into(),
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: name.to_string(),
        }),
        lb_policy: lb_policy.into(),
        circuit_breakers: Some(circuit_breakers(c, flavor)),
        ..Default::default()
    };
    if flavor == Flavor::Grpc {
        // Everything else is refused for gRPC clients by validation.
        return any(&out);
    }
    out.connect_timeout = Some(c.connect_timeout.as_ref().map_or(seconds(5), duration));
    out.common_lb_config = Some(cluster::CommonLbConfig {
        healthy_panic_threshold: Some(Percent {
            value: PANIC_PERCENT,
        }),
        ..Default::default()
    });
    if c.protocol() == portico_cluster::UpstreamProtocol::Http2 {
        let options = HttpProtocolOptions {
            upstream_protocol_options: Some(
                http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                    http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(
                            http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                                Http2ProtocolOptions::default(),
                            ),
                        ),
                    },
                ),
            ),
            ..Default::default()
        };
        out.typed_extension_protocol_options =
            HashMap::from([(HTTP_OPTIONS.to_string(), any(&options))]);
    }
    if let Some(h) = &c.health_check {
        out.health_checks = vec![health_check(h)];
    }
    if let Some(o) = &c.outlier_detection {
        out.outlier_detection = Some(outlier_detection(o));
    }
    any(&out)
}

/// Portico's limits, 0 meaning none (Envoy's defaults are 1,024 each).
fn circuit_breakers(c: &Cluster, flavor: Flavor) -> CircuitBreakers {
    let b = c.circuit_breakers.unwrap_or_default();
    let limit = |v: u32| uint32(if v == 0 { u32::MAX } else { v });
    let mut t = circuit_breakers::Thresholds {
        priority: RoutingPriority::Default.into(),
        max_requests: limit(b.max_requests),
        ..Default::default()
    };
    if flavor != Flavor::Grpc {
        t.max_connections = limit(b.max_connections);
        t.max_pending_requests = limit(b.max_pending_requests);
        if b.max_retries == 0 {
            // Portico's retry budget: retries in flight at most 20% of requests in flight,
            // at least 3. Envoy applies a budget instead of max_retries, so a cluster that
            // sets max_retries gets that limit alone.
            t.retry_budget = Some(circuit_breakers::thresholds::RetryBudget {
                budget_percent: Some(Percent { value: 20.0 }),
                min_retry_concurrency: uint32(3),
                ..Default::default()
            });
        } else {
            t.max_retries = uint32(b.max_retries);
        }
    }
    CircuitBreakers {
        thresholds: vec![t],
        ..Default::default()
    }
}

fn health_check(h: &portico_api::pb::HealthCheck) -> HealthCheck {
    let checker = if h.tcp {
        health_check::HealthChecker::TcpHealthCheck(health_check::TcpHealthCheck::default())
    } else {
        let statuses: Vec<Int64Range> = if h.expected_statuses.is_empty() {
            vec![Int64Range {
                start: 200,
                end: 400,
            }]
        } else {
            h.expected_statuses
                .iter()
                .map(|s| Int64Range {
                    start: i64::from(*s),
                    end: i64::from(*s) + 1,
                })
                .collect()
        };
        health_check::HealthChecker::HttpHealthCheck(health_check::HttpHealthCheck {
            host: h.host.clone(),
            path: h.path.clone(),
            expected_statuses: statuses,
            ..Default::default()
        })
    };
    let or = |v: u32, default: u32| uint32(if v == 0 { default } else { v });
    HealthCheck {
        interval: Some(h.interval.as_ref().map_or(seconds(5), duration)),
        timeout: Some(h.timeout.as_ref().map_or(seconds(1), duration)),
        interval_jitter_percent: 10,
        healthy_threshold: or(h.healthy_threshold, 2),
        unhealthy_threshold: or(h.unhealthy_threshold, 3),
        health_checker: Some(checker),
        ..Default::default()
    }
}

fn outlier_detection(o: &portico_api::pb::OutlierDetection) -> OutlierDetection {
    let or = |v: u32, default: u32| uint32(if v == 0 { default } else { v });
    OutlierDetection {
        consecutive_5xx: or(o.consecutive_5xx, 5),
        consecutive_gateway_failure: or(o.consecutive_gateway_failures, 5),
        // Envoy counts gateway failures but ejects on them only when told to, and ejects by
        // success rate unless told not to; Portico does the first and not the second.
        enforcing_consecutive_5xx: uint32(100),
        enforcing_consecutive_gateway_failure: uint32(100),
        enforcing_success_rate: uint32(0),
        base_ejection_time: Some(o.base_ejection_time.as_ref().map_or(seconds(30), duration)),
        max_ejection_time: Some(seconds(300)),
        max_ejection_percent: or(o.max_ejection_percent, 50),
        ..Default::default()
    }
}

/// The endpoints of cluster `name`: its static ones and `announced` (the nodes announcing its
/// service, weight 1), an announced one at the address and port of a static one being that
/// one. Endpoints are grouped in localities by region, zone and weight, each locality weighted
/// by the sum of its endpoints' weights, so that clients that pick a locality first by weight
/// and then balance evenly within it (gRPC) split traffic as the weights say.
pub fn load_assignment(name: &str, c: &Cluster, announced: &[Endpoint]) -> Any {
    let mut all: Vec<&Endpoint> = c.endpoints.iter().collect();
    for e in announced {
        if !all
            .iter()
            .any(|s| s.address == e.address && s.port == e.port)
        {
            all.push(e);
        }
    }
    // The Host header of HTTP health checks is the endpoint's address unless the check says.
    let check_host = c
        .health_check
        .as_ref()
        .is_some_and(|h| !h.tcp && h.host.is_empty());
    let mut groups: BTreeMap<(&str, &str, u32), Vec<&Endpoint>> = BTreeMap::new();
    for e in all {
        let weight = e.weight.max(1);
        groups
            .entry((&e.region, &e.zone, weight))
            .or_default()
            .push(e);
    }
    let mut weights_per_zone: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (region, zone, _) in groups.keys() {
        *weights_per_zone.entry((region, zone)).or_default() += 1;
    }
    let endpoints = groups
        .iter()
        .map(|((region, zone, weight), members)| LocalityLbEndpoints {
            locality: Some(Locality {
                region: region.to_string(),
                zone: zone.to_string(),
                sub_zone: if weights_per_zone[&(*region, *zone)] > 1 {
                    format!("weight-{weight}")
                } else {
                    String::new()
                },
            }),
            load_balancing_weight: uint32(weight.saturating_mul(members.len() as u32)),
            lb_endpoints: members
                .iter()
                .map(|e| LbEndpoint {
                    load_balancing_weight: uint32(*weight),
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(EnvoyEndpoint {
                        address: Some(socket(e)),
                        health_check_config: check_host.then(|| endpoint::HealthCheckConfig {
                            hostname: e.address.clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    any(&ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints,
        ..Default::default()
    })
}

fn socket(e: &Endpoint) -> Address {
    let bare = e
        .address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(&e.address);
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: bare.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(e.port)),
            ..Default::default()
        })),
    }
}
