//! Compiling a [`ConfigSet`] into an immutable [`Runtime`]: everything the data path needs to
//! serve one config version, resolved and validated up front so a request never meets a
//! dangling name or a bad regex.
//!
//! # Layout
//! - [`router`]: route tables (virtual hosts, route index, matching).
//! - [`action`]: what a route does (forward, weighted split, redirect, fixed answer).
//! - [`cluster`]: clusters into upstream pools.
//! - [`listener`]: listeners into bind addresses, limits and TLS.

pub mod action;
pub mod cluster;
pub mod listener;
pub mod router;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portico_api::Kind;
use portico_api::pb::{self, resource::Spec};

use crate::config::ConfigSet;
use crate::proxy::upstream::Upstream;
pub use listener::{ConnSettings, Limits, ListenerRuntime};
use router::RouteTable;

/// Why a config does not compile: the resource, the field path and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}/{name}: {field}: {message}")]
pub struct CompileError {
    /// The resource kind, e.g. "RouteTable".
    pub kind: &'static str,
    /// The resource name.
    pub name: String,
    /// Path of the field at fault.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl CompileError {
    /// An error in field `field` of resource `kind/name`.
    pub fn new(kind: &'static str, name: &str, field: String, message: String) -> Self {
        CompileError {
            kind,
            name: name.to_string(),
            field,
            message,
        }
    }
}

/// Where this agent runs, for listener selectors.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// The agent's region.
    pub region: String,
    /// The agent's zone.
    pub zone: String,
    /// The agent's labels.
    pub labels: std::collections::BTreeMap<String, String>,
}

impl NodeInfo {
    /// Whether a listener with `selector` runs on this node.
    pub fn selected_by(&self, selector: Option<&pb::AgentSelector>) -> bool {
        let Some(s) = selector else { return true };
        (s.regions.is_empty() || s.regions.contains(&self.region))
            && (s.zones.is_empty() || s.zones.contains(&self.zone))
            && s.labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// Everything the data path serves at one config version. Never changes once built.
#[derive(Debug, Default)]
pub struct Runtime {
    /// The config version.
    pub version: i64,
    /// Listeners by bind address.
    pub listeners: HashMap<SocketAddr, Arc<ListenerRuntime>>,
    /// Clusters by name, with what they were built from so the next compile can keep their
    /// connection pools when that did not change.
    clusters: HashMap<String, (ClusterSource, Arc<Upstream>)>,
}

/// What a compiled cluster depends on: its spec and the Secrets it names.
#[derive(Debug, PartialEq)]
struct ClusterSource {
    spec: pb::Cluster,
    secrets: Vec<Option<pb::TlsSecret>>,
}

fn tls_secret(set: &portico_api::ResourceSet, name: &str) -> Option<pb::TlsSecret> {
    match set.get(Kind::Secret, name).and_then(|s| s.spec.as_ref()) {
        Some(Spec::Secret(pb::Secret {
            secret: Some(pb::secret::Secret::Tls(tls)),
        })) => Some(tls.clone()),
        _ => None,
    }
}

impl Runtime {
    /// Compiles `config` for `node`. Clusters whose spec equals one in `previous` reuse its
    /// upstream, and with it the warm connection pool.
    pub fn compile(
        config: &ConfigSet,
        node: &NodeInfo,
        previous: &Runtime,
    ) -> Result<Runtime, CompileError> {
        let set = &config.resources;
        let mut clusters = HashMap::new();
        for r in set.of_kind(Kind::Cluster) {
            let Some(Spec::Cluster(spec)) = &r.spec else {
                continue;
            };
            let source = ClusterSource {
                spec: spec.clone(),
                secrets: cluster::secret_names(spec)
                    .iter()
                    .map(|name| tls_secret(set, name))
                    .collect(),
            };
            let upstream = match previous.clusters.get(&r.name) {
                Some((old, upstream)) if *old == source => upstream.clone(),
                _ => Arc::new(cluster::compile(&r.name, spec, |n| tls_secret(set, n))?),
            };
            clusters.insert(r.name.clone(), (source, upstream));
        }
        let upstreams: HashMap<String, Arc<Upstream>> = clusters
            .iter()
            .map(|(name, (_, u))| (name.clone(), u.clone()))
            .collect();

        let mut tables: HashMap<String, Arc<RouteTable>> = HashMap::new();
        let mut listeners = HashMap::new();
        for r in set.of_kind(Kind::Listener) {
            let Some(Spec::Listener(spec)) = &r.spec else {
                continue;
            };
            if !node.selected_by(spec.selector.as_ref()) {
                continue;
            }
            let routes = match tables.get(&spec.route_table) {
                Some(t) => t.clone(),
                None => {
                    let Some(Spec::RouteTable(table)) = set
                        .get(Kind::RouteTable, &spec.route_table)
                        .and_then(|t| t.spec.as_ref())
                    else {
                        return Err(CompileError::new(
                            "Listener",
                            &r.name,
                            "route_table".into(),
                            format!("route table {:?} does not exist", spec.route_table),
                        ));
                    };
                    let table = Arc::new(router::compile(&spec.route_table, table, &upstreams)?);
                    tables.insert(spec.route_table.clone(), table.clone());
                    table
                }
            };
            let compiled = listener::compile(&r.name, spec, routes, |n| tls_secret(set, n))?;
            if let Some(other) = listeners
                .get(&compiled.addr)
                .map(|l: &Arc<ListenerRuntime>| l.conn.name.to_string())
            {
                return Err(CompileError::new(
                    "Listener",
                    &r.name,
                    "port".into(),
                    format!("{} is also bound by listener {other:?}", compiled.addr),
                ));
            }
            listeners.insert(compiled.addr, Arc::new(compiled));
        }
        Ok(Runtime {
            version: config.version,
            listeners,
            clusters,
        })
    }
}

/// A protobuf duration, or `default` when unset or zero.
pub fn duration_or(d: Option<&pbjson_types::Duration>, default: Duration) -> Duration {
    match d {
        Some(d) if d.seconds > 0 || d.nanos > 0 => {
            Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
        }
        _ => default,
    }
}
