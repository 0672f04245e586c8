//! The translations, decoded and read back field by field.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster as EnvoyCluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{Listener as EnvoyListener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, Secret as EnvoySecret,
};
use envoy_types::pb::google::protobuf::Any;
use portico_api::pb::{self, Cluster, Endpoint, resource::Spec};
use portico_test_support::resources::{
    Edit, api_listener, cluster as cluster_resource, https_listener, listener as http_listener,
    prefix, route as portico_route, route_table, sni, to, vhost, weighted,
};
use prost::{Message, Name};

use super::*;

fn decode<M: Message + Name + Default>(any: &Any) -> M {
    assert_eq!(any.type_url, M::type_url());
    M::decode(any.value.as_slice()).expect("decodes")
}

fn spec_listener(r: &pb::Resource) -> &pb::Listener {
    match &r.spec {
        Some(Spec::Listener(l)) => l,
        _ => panic!("not a listener"),
    }
}

fn spec_cluster(r: pb::Resource) -> Cluster {
    match r.spec {
        Some(Spec::Cluster(c)) => c,
        _ => panic!("not a cluster"),
    }
}

fn hcm(any: &Any) -> HttpConnectionManager {
    decode(any)
}

#[test]
fn a_socket_listener_routes_by_rds_over_ads_and_ends_with_the_router() {
    let r = http_listener("web", 8080, "shop");
    let l: EnvoyListener = decode(&listener("web", spec_listener(&r), Flavor::Envoy));
    let Some(address::Address::SocketAddress(socket)) =
        l.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        panic!("no socket address: {l:?}")
    };
    assert_eq!(socket.address, "127.0.0.1");
    assert_eq!(
        socket.port_specifier,
        Some(socket_address::PortSpecifier::PortValue(8080))
    );
    let chain = &l.filter_chains[0];
    let Some(filter::ConfigType::TypedConfig(config)) = &chain.filters[0].config_type else {
        panic!("no typed config")
    };
    let manager = hcm(config);
    let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = &manager.route_specifier else {
        panic!("not RDS: {manager:?}")
    };
    assert_eq!(rds.route_config_name, "shop");
    assert!(
        rds.config_source
            .as_ref()
            .is_some_and(|c| c.config_source_specifier.is_some())
    );
    let last = manager.http_filters.last().expect("filters");
    assert_eq!(last.name, "envoy.filters.http.router");
    assert_eq!(manager.normalize_path.map(|b| b.value), Some(true));
}

#[test]
fn an_https_listener_has_a_chain_per_server_name_and_its_certificates_by_sds() {
    let r = https_listener(
        "secure",
        8443,
        "shop",
        vec![
            sni("main", &["shop.example.com"]),
            sni("other", &["*.example.org"]),
        ],
    );
    let l: EnvoyListener = decode(&listener("secure", spec_listener(&r), Flavor::Envoy));
    assert_eq!(
        l.listener_filters[0].name,
        "envoy.filters.listener.tls_inspector"
    );
    let names: Vec<Vec<String>> = l
        .filter_chains
        .iter()
        .map(|c| {
            c.filter_chain_match
                .clone()
                .unwrap_or_default()
                .server_names
        })
        .collect();
    assert_eq!(
        names,
        [
            vec!["shop.example.com".to_string()],
            vec!["*.example.org".to_string()]
        ]
    );
    let secret_of = |chain: &envoy_types::pb::envoy::config::listener::v3::FilterChain| {
        let socket = chain.transport_socket.as_ref().expect("tls");
        let Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                any,
            ),
        ) = &socket.config_type
        else {
            panic!("no tls context")
        };
        let context: DownstreamTlsContext = decode(any);
        let common = context.common_tls_context.expect("common");
        assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
        common.tls_certificate_sds_secret_configs[0].name.clone()
    };
    assert_eq!(secret_of(&l.filter_chains[1]), "other");
    // Clients whose SNI matches nothing (or who send none) get the first certificate.
    assert_eq!(
        secret_of(l.default_filter_chain.as_ref().expect("default")),
        "main"
    );
}

#[test]
fn an_api_listener_is_a_connection_manager_without_a_socket() {
    let r = api_listener("greeter.example.internal", "greeter");
    for flavor in [Flavor::Grpc, Flavor::Envoy] {
        let l: EnvoyListener = decode(&listener(&r.name, spec_listener(&r), flavor));
        assert_eq!(l.name, "greeter.example.internal");
        assert!(l.address.is_none() && l.filter_chains.is_empty());
        let api = l
            .api_listener
            .and_then(|a| a.api_listener)
            .expect("api_listener");
        let manager = hcm(&api);
        let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = manager.route_specifier
        else {
            panic!("not RDS")
        };
        assert_eq!(rds.route_config_name, "greeter");
        assert_eq!(manager.http_filters.len(), 1, "the router alone");
    }
}

/// The route configuration of `table`, with `clusters` named by its routes.
fn routes(table: &pb::Resource, clusters: &[pb::Resource], flavor: Flavor) -> RouteConfiguration {
    let Some(Spec::RouteTable(t)) = &table.spec else {
        panic!("not a table")
    };
    let specs: Vec<(String, Cluster)> = clusters
        .iter()
        .map(|c| (c.name.clone(), spec_cluster(c.clone())))
        .collect();
    let by_name: BTreeMap<&str, &Cluster> = specs.iter().map(|(n, c)| (n.as_str(), c)).collect();
    decode(&route_configuration(&table.name, t, &by_name, flavor))
}

#[test]
fn prefixes_end_at_a_segment_boundary_for_each_kind_of_client() {
    let table = route_table(
        "t",
        vec![vhost(
            "",
            &["*"],
            vec![
                portico_route("root", prefix("/"), to("c")),
                portico_route("dir", prefix("/api/"), to("c")),
                portico_route("svc", prefix("/greeter.Greeter"), to("c")),
            ],
        )],
    );
    let paths = |flavor| -> Vec<route_match::PathSpecifier> {
        routes(&table, &[], flavor).virtual_hosts[0]
            .routes
            .iter()
            .map(|r| {
                r.r#match
                    .clone()
                    .and_then(|m| m.path_specifier)
                    .expect("path")
            })
            .collect()
    };
    use route_match::PathSpecifier::{PathSeparatedPrefix, Prefix, SafeRegex};
    let envoy = paths(Flavor::Envoy);
    assert_eq!(envoy[0], Prefix("/".into()));
    assert_eq!(envoy[1], Prefix("/api/".into()));
    assert_eq!(envoy[2], PathSeparatedPrefix("/greeter.Greeter".into()));
    let grpc = paths(Flavor::Grpc);
    let SafeRegex(re) = &grpc[2] else {
        panic!("gRPC clients get a regex: {grpc:?}")
    };
    let re = regex::Regex::new(&format!("^(?:{})$", re.regex)).expect("regex");
    for (path, matches) in [
        ("/greeter.Greeter", true),
        ("/greeter.Greeter/SayHello", true),
        ("/greeter.GreeterX/SayHello", false),
    ] {
        assert_eq!(re.is_match(path), matches, "{path}");
    }
}

#[test]
fn weights_timeouts_and_hash_keys_go_on_the_route() {
    let ring = cluster_resource("ring", &[]).with(|c: &mut Cluster| {
        c.lb_policy = pb::cluster::LbPolicy::RingHash.into();
        c.hash_policy = Some(pb::HashPolicy {
            key: Some(pb::hash_policy::Key::Header("x-user".into())),
        });
    });
    let table = route_table(
        "t",
        vec![vhost(
            "main",
            &["greeter.example.internal"],
            vec![
                portico_route(
                    "split",
                    prefix("/"),
                    weighted(&[("ring", 80), ("plain", 20)]),
                )
                .with_timeout(3),
            ],
        )],
    );
    for flavor in [Flavor::Envoy, Flavor::Grpc] {
        let config = routes(
            &table,
            &[ring.clone(), cluster_resource("plain", &[])],
            flavor,
        );
        assert_eq!(config.virtual_hosts[0].name, "main");
        assert_eq!(
            config.virtual_hosts[0].domains,
            ["greeter.example.internal"]
        );
        let Some(route::Action::Route(action)) = &config.virtual_hosts[0].routes[0].action else {
            panic!("not forwarded")
        };
        let Some(route_action::ClusterSpecifier::WeightedClusters(split)) =
            &action.cluster_specifier
        else {
            panic!("not weighted")
        };
        let weights: Vec<(&str, u32)> = split
            .clusters
            .iter()
            .map(|c| (c.name.as_str(), c.weight.map(|w| w.value).unwrap_or(0)))
            .collect();
        assert_eq!(weights, [("ring", 80), ("plain", 20)]);
        assert_eq!(action.hash_policy.len(), 1, "{flavor}");
        match flavor {
            Flavor::Grpc => {
                let max = action
                    .max_stream_duration
                    .and_then(|m| m.max_stream_duration);
                assert_eq!(max.map(|d| d.seconds), Some(3));
                assert!(action.timeout.is_none());
            }
            _ => assert_eq!(action.timeout.map(|d| d.seconds), Some(3)),
        }
    }
}

trait WithTimeout {
    fn with_timeout(self, seconds: i64) -> Self;
}

impl WithTimeout for pb::Route {
    fn with_timeout(mut self, seconds: i64) -> Self {
        self.timeout = Some(pbjson_types::Duration { seconds, nanos: 0 });
        self
    }
}

#[test]
fn a_cluster_takes_its_endpoints_by_eds_and_portico_limits() {
    let c = spec_cluster(cluster_resource("api", &[]).with(|c: &mut Cluster| {
        c.protocol = pb::cluster::UpstreamProtocol::Http2.into();
        c.lb_policy = pb::cluster::LbPolicy::LeastRequest.into();
        c.health_check = Some(pb::HealthCheck {
            path: "/healthz".into(),
            ..Default::default()
        });
        c.circuit_breakers = Some(pb::CircuitBreakers {
            max_requests: 100,
            ..Default::default()
        });
    }));
    let out: EnvoyCluster = decode(&super::cluster("api", &c, Flavor::Envoy));
    assert_eq!(
        out.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds.into()
        ))
    );
    assert_eq!(out.eds_cluster_config.expect("eds").service_name, "api");
    assert_eq!(out.lb_policy, i32::from(cluster::LbPolicy::LeastRequest));
    let limits = &out.circuit_breakers.expect("limits").thresholds[0];
    assert_eq!(limits.max_requests.map(|v| v.value), Some(100));
    // 0 in Portico is no limit; Envoy's default would be 1024.
    assert_eq!(limits.max_connections.map(|v| v.value), Some(u32::MAX));
    let check = &out.health_checks[0];
    assert_eq!(check.interval.map(|d| d.seconds), Some(5));
    assert!(
        out.typed_extension_protocol_options
            .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    );
}

#[test]
fn endpoints_are_grouped_in_weighted_localities() {
    let endpoint = |address: &str, weight, zone: &str| Endpoint {
        address: address.into(),
        port: 50051,
        weight,
        region: "eu".into(),
        zone: zone.into(),
    };
    let c = Cluster {
        endpoints: vec![
            endpoint("10.0.0.1", 80, "eu-1"),
            endpoint("10.0.0.2", 20, "eu-1"),
            endpoint("10.0.0.3", 0, "eu-2"),
        ],
        ..Default::default()
    };
    // An announced node at a static endpoint's address is that endpoint.
    let announced = [
        endpoint("10.0.0.3", 0, "eu-2"),
        endpoint("10.0.0.4", 0, "eu-2"),
    ];
    let cla: ClusterLoadAssignment = decode(&load_assignment("api", &c, &announced));
    assert_eq!(cla.cluster_name, "api");
    let localities: Vec<(String, String, u32, Vec<String>)> = cla
        .endpoints
        .iter()
        .map(|l| {
            let locality = l.locality.clone().expect("locality");
            let addresses = l
                .lb_endpoints
                .iter()
                .map(|e| match &e.host_identifier {
                    Some(lb_endpoint::HostIdentifier::Endpoint(e)) => {
                        match e.address.as_ref().and_then(|a| a.address.as_ref()) {
                            Some(address::Address::SocketAddress(s)) => s.address.clone(),
                            _ => panic!("no address"),
                        }
                    }
                    _ => panic!("no endpoint"),
                })
                .collect();
            (
                locality.zone,
                locality.sub_zone,
                l.load_balancing_weight
                    .expect("every locality is weighted")
                    .value,
                addresses,
            )
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    assert_eq!(
        localities,
        [
            ("eu-1".into(), "weight-20".into(), 20, s(&["10.0.0.2"])),
            ("eu-1".into(), "weight-80".into(), 80, s(&["10.0.0.1"])),
            (
                "eu-2".into(),
                String::new(),
                2,
                s(&["10.0.0.3", "10.0.0.4"])
            ),
        ]
    );
}

#[test]
fn only_certificates_with_keys_are_sds_secrets() {
    let tls = pb::TlsSecret {
        certificate_chain: "CHAIN".into(),
        private_key: "KEY".into(),
    };
    let out: EnvoySecret = decode(
        &secret(
            "main",
            &pb::Secret {
                secret: Some(pb::secret::Secret::Tls(tls.clone())),
            },
        )
        .expect("a certificate"),
    );
    assert_eq!(out.name, "main");
    let bundle = pb::Secret {
        secret: Some(pb::secret::Secret::Tls(pb::TlsSecret {
            private_key: String::new(),
            ..tls
        })),
    };
    assert!(secret("ca", &bundle).is_none());
}
