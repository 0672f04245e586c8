//! Listener → Listener. A socket listener becomes an Envoy listener whose filter chains hold an
//! HttpConnectionManager routing by RDS over ADS (one chain per SNI certificate for HTTPS);
//! an API listener becomes an `api_listener` with the same connection manager, which is what
//! a gRPC client dialing `xds:///NAME` looks for.

use envoy_types::pb::envoy::config::core::v3::{
    Address, HttpProtocolOptions, SocketAddress, TransportSocket, address, socket_address,
    transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    ApiListener, Filter, FilterChain, FilterChainMatch, Listener as EnvoyListener, ListenerFilter,
    filter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, TlsParameters, tls_parameters,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use portico_api::pb::{Listener, ListenerTls, TlsVersion, listener::Protocol};

use super::{Flavor, ads, any, duration, uint32};

const HCM: &str = "envoy.filters.network.http_connection_manager";
const ROUTER: &str = "envoy.filters.http.router";
const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// The xDS Listener of Portico listener `name`.
pub fn listener(name: &str, l: &Listener, flavor: Flavor) -> Any {
    if l.protocol() == Protocol::Api || flavor == Flavor::Grpc {
        return any(&EnvoyListener {
            name: name.to_string(),
            api_listener: Some(ApiListener {
                api_listener: Some(any(&connection_manager(name, l, Flavor::Grpc))),
            }),
            ..Default::default()
        });
    }
    let hcm = Filter {
        name: HCM.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&connection_manager(
            name,
            l,
            Flavor::Envoy,
        )))),
    };
    let address = Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: if l.address.is_empty() {
                "0.0.0.0".to_string()
            } else {
                l.address.clone()
            },
            port_specifier: Some(socket_address::PortSpecifier::PortValue(l.port)),
            ..Default::default()
        })),
    };
    let mut out = EnvoyListener {
        name: name.to_string(),
        address: Some(address),
        stat_prefix: name.to_string(),
        ..Default::default()
    };
    match l.tls.as_ref().filter(|_| l.protocol() == Protocol::Https) {
        None => {
            out.filter_chains = vec![FilterChain {
                filters: vec![hcm],
                ..Default::default()
            }]
        }
        Some(tls) => {
            // One chain per certificate, chosen by SNI (which the TLS inspector reads); the
            // first certificate also serves clients whose SNI matches none, or who send none.
            out.listener_filters = vec![ListenerFilter {
                name: TLS_INSPECTOR.to_string(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                    &TlsInspector::default(),
                ))),
                ..Default::default()
            }];
            for c in &tls.certificates {
                out.filter_chains.push(FilterChain {
                    filter_chain_match: (!c.server_names.is_empty()).then(|| FilterChainMatch {
                        server_names: c.server_names.clone(),
                        ..Default::default()
                    }),
                    filters: vec![hcm.clone()],
                    transport_socket: Some(tls_socket(tls, &c.secret)),
                    ..Default::default()
                });
            }
            out.default_filter_chain = tls.certificates.first().map(|c| FilterChain {
                filters: vec![hcm.clone()],
                transport_socket: Some(tls_socket(tls, &c.secret)),
                ..Default::default()
            });
            // Chains without server names would all match everything; the default chain
            // covers that case.
            out.filter_chains.retain(|c| c.filter_chain_match.is_some());
        }
    }
    any(&out)
}

/// The connection manager of listener `name`: its route table by RDS, then the router.
fn connection_manager(name: &str, l: &Listener, flavor: Flavor) -> HttpConnectionManager {
    let mut hcm = HttpConnectionManager {
        stat_prefix: name.to_string(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: l.route_table.clone(),
        })),
        http_filters: vec![HttpFilter {
            name: ROUTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                any(&Router::default()),
            )),
            ..Default::default()
        }],
        ..Default::default()
    };
    if flavor == Flavor::Grpc {
        return hcm;
    }
    // What Portico agents do on every listener: route by the normalised path, append the
    // client to X-Forwarded-For, and pass WebSocket upgrades through.
    hcm.normalize_path = Some(BoolValue { value: true });
    hcm.merge_slashes = l.merge_slashes;
    hcm.use_remote_address = Some(BoolValue { value: true });
    hcm.upgrade_configs = vec![http_connection_manager::UpgradeConfig {
        upgrade_type: "websocket".to_string(),
        ..Default::default()
    }];
    if let Some(limits) = &l.limits {
        hcm.request_headers_timeout = limits.header_read_timeout.as_ref().map(duration);
        if let Some(idle) = &limits.idle_timeout {
            hcm.common_http_protocol_options = Some(HttpProtocolOptions {
                idle_timeout: Some(duration(idle)),
                ..Default::default()
            });
        }
        if limits.max_request_header_bytes != 0 {
            hcm.max_request_headers_kb = uint32(limits.max_request_header_bytes / 1024);
        }
    }
    hcm
}

/// The TLS transport socket presenting Secret `secret` (by SDS over ADS).
fn tls_socket(tls: &ListenerTls, secret: &str) -> TransportSocket {
    let min = match tls.min_version() {
        TlsVersion::Tls13 => tls_parameters::TlsProtocol::TlSv13,
        _ => tls_parameters::TlsProtocol::TlSv12,
    };
    let alpn = if tls.alpn.is_empty() {
        vec!["h2".to_string(), "http/1.1".to_string()]
    } else {
        tls.alpn.clone()
    };
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(TlsParameters {
                tls_minimum_protocol_version: min.into(),
                ..Default::default()
            }),
            tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                name: secret.to_string(),
                sds_config: Some(ads()),
            }],
            alpn_protocols: alpn,
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&context))),
    }
}
