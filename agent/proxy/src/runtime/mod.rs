//! Compiling a [`ConfigSet`] into an immutable [`Runtime`]: everything the data path needs to
//! serve one config version, resolved and validated up front so a request never meets a
//! dangling name or a bad regex.
//!
//! # Layout
//! - [`router`]: route tables (virtual hosts, route index, matching).
//! - [`action`]: what a route does (forward, weighted split, redirect, fixed answer).
//! - [`cluster`]: clusters into upstream pools.
//! - [`listener`]: listeners into bind addresses, limits and TLS.
//! - [`retry`]: a route's retry policy.

pub mod action;
pub mod cluster;
pub mod listener;
pub mod retry;
pub mod router;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use portico_api::node::DataPlane;
use portico_api::pb::{self, resource::Spec};
use portico_api::{Kind, Resource, ResourceSet};

use crate::config::ConfigSet;
use crate::policy::{self, Consumers, Policies, Policy};
use crate::upstream::Upstream;
pub use listener::{ConnSettings, Limits, ListenerRuntime};
use router::RouteTable;

pub(crate) use crate::compile::compile_error;
pub use crate::compile::{CompileError, duration_or};

/// A field path and what is wrong with it.
pub type FieldError = (String, String);

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
    /// A node `selector` selects: its first region and zone, and its labels (what a compile of
    /// a listener for some node it selects sees).
    pub fn first_selected_by(selector: Option<&pb::AgentSelector>) -> NodeInfo {
        let Some(s) = selector else {
            return NodeInfo::default();
        };
        NodeInfo {
            region: s.regions.first().cloned().unwrap_or_default(),
            zone: s.zones.first().cloned().unwrap_or_default(),
            labels: s.labels.clone(),
        }
    }

    /// Whether a listener with `selector` runs on this node.
    pub fn selected_by(&self, selector: Option<&pb::AgentSelector>) -> bool {
        portico_api::node::selects(selector, &self.region, &self.zone, &self.labels)
    }
}

/// Everything the data path serves at one config version. Never changes once built.
#[derive(Debug, Default)]
pub struct Runtime {
    /// The config version.
    pub version: i64,
    /// Listeners by bind address.
    pub listeners: HashMap<SocketAddr, Arc<ListenerRuntime>>,
    /// What the parts were compiled from, so the next compile can keep every part whose
    /// sources did not change (and with it, for clusters, the warm connection pools).
    built: Arc<Built>,
}

/// The compiled parts of a runtime by resource name, each with what it was compiled from.
#[derive(Debug)]
struct Built {
    /// The whole config, to tell an apply that changes nothing.
    resources: ResourceSet,
    /// The service endpoints it was compiled with.
    services: crate::config::Services,
    clusters: HashMap<String, (Source, Arc<Upstream>)>,
    /// The Consumer resources and the directory compiled from them.
    consumers: (Vec<Arc<Resource>>, Arc<Consumers>),
    policies: HashMap<String, CompiledPolicy>,
    tables: HashMap<String, CompiledTable>,
    /// Only the listeners this node serves.
    listeners: HashMap<String, (Source, Arc<ListenerRuntime>)>,
}

/// A resource as a part was compiled from it, with the Secrets it names and, for a cluster,
/// the endpoints of the service it names.
#[derive(Debug)]
struct Source {
    resource: Arc<Resource>,
    secrets: Vec<Option<Arc<Resource>>>,
    service: Option<Arc<Vec<pb::Endpoint>>>,
}

impl Source {
    fn new<'a>(
        resource: &Arc<Resource>,
        secret_names: impl IntoIterator<Item = &'a str>,
        set: &ResourceSet,
    ) -> Source {
        Source {
            resource: resource.clone(),
            secrets: secret_names
                .into_iter()
                .map(|name| set.get_shared(Kind::Secret, name).cloned())
                .collect(),
            service: None,
        }
    }

    /// Whether a part compiled from `self` is what compiling `other` would give.
    fn same(&self, other: &Source) -> bool {
        same(&self.resource, &other.resource)
            && self.secrets.len() == other.secrets.len()
            && self
                .secrets
                .iter()
                .zip(&other.secrets)
                .all(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => same(a, b),
                    (None, None) => true,
                    _ => false,
                })
            && match (&self.service, &other.service) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                (None, None) => true,
                _ => false,
            }
    }
}

/// Equal resources. A resource the update did not touch is shared, so most answers come from
/// the pointers; a full update that repeats a resource still compares equal.
fn same(a: &Arc<Resource>, b: &Arc<Resource>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// A compiled policy, with the consumer directory it was compiled against (authentication
/// policies only): it is compiled again when its sources or the directory change, and kept
/// otherwise, with its state (rate-limit buckets).
#[derive(Debug)]
struct CompiledPolicy {
    source: Source,
    consumers: Option<Arc<Consumers>>,
    policy: Arc<Policy>,
}

impl Default for Built {
    fn default() -> Self {
        Built {
            resources: ResourceSet::default(),
            services: Default::default(),
            clusters: HashMap::new(),
            consumers: (Vec::new(), Arc::new(Consumers::default())),
            policies: HashMap::new(),
            tables: HashMap::new(),
            listeners: HashMap::new(),
        }
    }
}

/// A compiled route table, with the upstreams and policies its routes hold: a table is
/// rebuilt when one of them is.
#[derive(Debug)]
struct CompiledTable {
    resource: Arc<Resource>,
    upstreams: Arc<Upstreams>,
    policies: Arc<Policies>,
    table: Arc<RouteTable>,
}

impl CompiledTable {
    /// Whether every policy the table's routes hold is still the one `policies` names.
    fn policies_kept(&self, policies: &Policies) -> bool {
        self.policies
            .iter()
            .all(|(name, p)| policies.get(name).is_some_and(|now| Arc::ptr_eq(now, p)))
    }

    /// Whether every upstream the table's routes hold is still the one `upstreams` names.
    fn upstreams_kept(&self, upstreams: &Upstreams) -> bool {
        self.upstreams
            .iter()
            .all(|(name, u)| upstreams.get(name).is_some_and(|now| Arc::ptr_eq(now, u)))
    }

    /// The spec and table a recompile can take unchanged routes from.
    fn previous(&self) -> Option<(&pb::RouteTable, &RouteTable)> {
        match &self.resource.spec {
            Some(Spec::RouteTable(spec)) => Some((spec, &self.table)),
            _ => None,
        }
    }
}

type Upstreams = HashMap<String, Arc<Upstream>>;

fn tls_secret(set: &ResourceSet, name: &str) -> Option<pb::TlsSecret> {
    match set.get(Kind::Secret, name).and_then(|s| s.spec.as_ref()) {
        Some(Spec::Secret(pb::Secret {
            secret: Some(pb::secret::Secret::Tls(tls)),
        })) => Some(tls.clone()),
        _ => None,
    }
}

impl Runtime {
    /// Compiles `config` for `node`, with `pools` connection pools per cluster (one per proxy
    /// worker). Every part whose sources equal those of the same part in `previous` is taken
    /// from it: clusters (with their warm connection pools), route tables whose clusters were
    /// kept, and listeners whose route table was kept.
    pub fn compile(
        config: &ConfigSet,
        node: &NodeInfo,
        previous: &Runtime,
        pools: usize,
    ) -> Result<Runtime, CompileError> {
        let set = &config.resources;
        let old = &previous.built;
        let mut built = Built {
            resources: set.clone(),
            services: config.services.clone(),
            ..Built::default()
        };
        let env = cluster::Env {
            pools,
            node,
            services: &config.services,
        };
        for r in set.of_kind_shared(Kind::Cluster) {
            let Some(Spec::Cluster(spec)) = &r.spec else {
                continue;
            };
            let mut source = Source::new(r, cluster::secret_names(spec), set);
            source.service = config.services.get(&spec.service).cloned();
            let upstream = match old.clusters.get(&r.name) {
                Some((was, upstream)) if was.same(&source) => upstream.clone(),
                was => {
                    let previous = was.map(|(_, u)| u.as_ref());
                    Arc::new(cluster::compile(&r.name, spec, env, previous, |n| {
                        tls_secret(set, n)
                    })?)
                }
            };
            built.clusters.insert(r.name.clone(), (source, upstream));
        }
        let upstreams: Upstreams = built
            .clusters
            .iter()
            .map(|(name, (_, u))| (name.clone(), u.clone()))
            .collect();

        let consumer_resources: Vec<Arc<Resource>> =
            set.of_kind_shared(Kind::Consumer).cloned().collect();
        let (was, directory) = &old.consumers;
        let consumers = if was.len() == consumer_resources.len()
            && was.iter().zip(&consumer_resources).all(|(a, b)| same(a, b))
        {
            directory.clone()
        } else {
            Arc::new(Consumers::compile(set)?)
        };
        built.consumers = (consumer_resources, consumers.clone());
        let env = policy::Env {
            set,
            consumers: &consumers,
        };
        for r in set.of_kind_shared(Kind::Policy) {
            let Some(Spec::Policy(spec)) = &r.spec else {
                continue;
            };
            let source = Source::new(r, policy::secret_names(spec), set);
            let reads = policy::reads_consumers(spec).then(|| consumers.clone());
            let compiled = match old.policies.get(&r.name) {
                Some(was)
                    if was.source.same(&source)
                        && match (&was.consumers, &reads) {
                            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                            (None, None) => true,
                            _ => false,
                        } =>
                {
                    was.policy.clone()
                }
                _ => Arc::new(policy::compile(&r.name, spec, &env)?),
            };
            built.policies.insert(
                r.name.clone(),
                CompiledPolicy {
                    source,
                    consumers: reads,
                    policy: compiled,
                },
            );
        }
        let policies: Policies = built
            .policies
            .iter()
            .map(|(name, p)| (name.clone(), p.policy.clone()))
            .collect();

        let mut listeners = HashMap::new();
        for r in set.of_kind_shared(Kind::Listener) {
            let Some(Spec::Listener(spec)) = &r.spec else {
                continue;
            };
            // API listeners (proxyless gRPC) and listeners for Envoy only are never bound
            // here, whatever a control plane sends.
            if !DataPlane::Portico.runs(spec) || !node.selected_by(spec.selector.as_ref()) {
                continue;
            }
            let parts = (&upstreams, &policies);
            let routes = if spec.redirect_to_https.is_some() {
                RouteTable::none()
            } else {
                route_table(&r.name, &spec.route_table, set, old, &mut built, parts)?
            };
            let source = Source::new(r, listener::secret_names(spec), set);
            let compiled = match old.listeners.get(&r.name) {
                Some((was, l))
                    if was.same(&source)
                        && Arc::ptr_eq(&l.routes, &routes)
                        && policy::Chain::kept(l.policies.as_ref(), &spec.policies, &policies) =>
                {
                    l.clone()
                }
                _ => Arc::new(listener::compile(&r.name, spec, routes, &policies, |n| {
                    tls_secret(set, n)
                })?),
            };
            if let Some(other) = listeners
                .get(&compiled.addr)
                .map(|l: &Arc<ListenerRuntime>| l.conn.name.to_string())
            {
                return Err(compile_error(
                    Kind::Listener,
                    &r.name,
                    "port",
                    format!("{} is also bound by listener {other:?}", compiled.addr),
                ));
            }
            listeners.insert(compiled.addr, compiled.clone());
            built.listeners.insert(r.name.clone(), (source, compiled));
        }
        Ok(Runtime {
            version: config.version,
            listeners,
            built: Arc::new(built),
        })
    }

    /// Whether `config` holds exactly the resources this runtime was compiled from, so that
    /// applying it changes nothing but the version.
    pub fn serves(&self, config: &ConfigSet) -> bool {
        self.built.resources == config.resources && self.built.services == config.services
    }

    /// Whether `other` is this runtime or a relabelled copy of it.
    #[cfg(test)]
    pub(crate) fn same_build(&self, other: &Runtime) -> bool {
        Arc::ptr_eq(&self.built, &other.built)
    }

    /// Every cluster's endpoints as this runtime sees them, by cluster name.
    pub fn cluster_health(&self) -> Vec<pb::ClusterHealth> {
        let mut clusters: Vec<_> = self
            .built
            .clusters
            .values()
            .map(|(_, upstream)| upstream.report())
            .collect();
        clusters.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        clusters
    }

    /// Every compiled cluster.
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.built.clusters.values().map(|(_, u)| u)
    }

    /// This runtime, labelled with another config version.
    pub fn at_version(&self, version: i64) -> Runtime {
        Runtime {
            version,
            listeners: self.listeners.clone(),
            built: self.built.clone(),
        }
    }
}

/// The compiled route table `name` that `listener` routes by: compiled once per apply however
/// many listeners share it, and taken from `old` when neither it nor its clusters changed.
fn route_table(
    listener: &str,
    name: &str,
    set: &ResourceSet,
    old: &Built,
    built: &mut Built,
    (upstreams, policies): (&Upstreams, &Policies),
) -> Result<Arc<RouteTable>, CompileError> {
    if let Some(t) = built.tables.get(name) {
        return Ok(t.table.clone());
    }
    let Some((resource, Some(Spec::RouteTable(spec)))) = set
        .get_shared(Kind::RouteTable, name)
        .map(|r| (r, r.spec.as_ref()))
    else {
        return Err(compile_error(
            Kind::Listener,
            listener,
            "route_table",
            format!("route table {name:?} does not exist"),
        ));
    };
    let before = old
        .tables
        .get(name)
        .filter(|t| t.upstreams_kept(upstreams) && t.policies_kept(policies));
    let compiled = match before {
        Some(t) if same(&t.resource, resource) => CompiledTable {
            resource: resource.clone(),
            upstreams: t.upstreams.clone(),
            policies: t.policies.clone(),
            table: t.table.clone(),
        },
        _ => {
            let previous = before.and_then(CompiledTable::previous);
            let table = Arc::new(router::recompile(
                name,
                spec,
                (upstreams, policies),
                previous,
            )?);
            let used_policies: Policies = router::policy_names(spec)
                .filter_map(|p| Some((p.to_string(), policies.get(p)?.clone())))
                .collect();
            let mut used = HashMap::new();
            for c in router::cluster_names(spec) {
                if !used.contains_key(c)
                    && let Some(u) = upstreams.get(c)
                {
                    used.insert(c.to_string(), u.clone());
                }
            }
            CompiledTable {
                resource: resource.clone(),
                upstreams: Arc::new(used),
                policies: Arc::new(used_policies),
                table,
            }
        }
    };
    let table = compiled.table.clone();
    built.tables.insert(name.to_string(), compiled);
    Ok(table)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "runtime_tests.rs"]
pub(crate) mod tests;
