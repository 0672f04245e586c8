//! Portico resources as Envoy's xDS v3 resources (the mapping table is in ARCHITECTURE.md,
//! "xDS").
//!
//! Translation is pure: a resource (and, for a route table, the clusters it forwards to; for
//! endpoints, the announced service's nodes) in, one xDS resource out, already encoded as the
//! `Any` a response carries. It never fails: validation refuses what xDS clients cannot be
//! sent (`portico_api::validate`, the `xds` rules), so a field left out here is one those
//! rules refuse for that kind of client.
//!
//! # Layout
//! - `listener`: Listener → Listener (HttpConnectionManager with RDS over ADS, or an API
//!   listener for gRPC clients), and the SNI filter chains of HTTPS listeners.
//! - `route`: RouteTable → RouteConfiguration.
//! - `cluster`: Cluster → Cluster (EDS over ADS) and ClusterLoadAssignment.
//! - here: Secret → Secret (SDS), and what the others share.

mod cluster;
mod listener;
mod route;

use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, config_source, data_source,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    Secret as EnvoySecret, TlsCertificate, secret,
};
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};
use portico_api::node::DataPlane;
use portico_api::pb::{self, Secret};
use prost::{Message, Name};

pub use cluster::{cluster, load_assignment};
pub use listener::listener;
pub use route::route_configuration;

/// `Any` of `message`.
fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// The config source of every resource a client is told about: this same ADS stream.
fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3.into(),
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn duration(d: &pbjson_types::Duration) -> Duration {
    Duration {
        seconds: d.seconds,
        nanos: d.nanos,
    }
}

fn seconds(s: i64) -> Duration {
    Duration {
        seconds: s,
        nanos: 0,
    }
}

fn uint32(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

fn inline(s: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineString(s.to_string())),
        ..Default::default()
    })
}

/// Who a translation is for: Envoy proxies and gRPC clients are told the same thing in
/// different ways (route timeouts, the path prefixes gRPC understands).
pub type Flavor = DataPlane;

/// A tls Secret with a private key as an SDS Secret (certificate and key). Others (CA bundles,
/// opaque values) are never named by what xDS clients are sent: None.
pub fn secret(name: &str, s: &Secret) -> Option<Any> {
    match &s.secret {
        Some(pb::secret::Secret::Tls(tls)) if !tls.private_key.is_empty() => {
            Some(any(&EnvoySecret {
                name: name.to_string(),
                r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: inline(&tls.certificate_chain),
                    private_key: inline(&tls.private_key),
                    ..Default::default()
                })),
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
