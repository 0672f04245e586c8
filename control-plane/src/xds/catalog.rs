//! What one xDS client can be sent at one snapshot: every resource its scope reaches, by type
//! and name, translated and versioned.
//!
//! The view of the client's scope ([`crate::views`]) names the Portico resources; each becomes
//! one xDS resource ([`super::translate`]) whose version is a hash of its encoding, so a
//! resource is "changed" for a client exactly when what the client would receive changed, on
//! every replica alike. A stream keeps its catalog's translations and translates again only the
//! resources whose sources changed (by store revision, and by the announced endpoints of a
//! cluster's service), so a push costs a stream what changed in its scope.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use portico_api::Kind;
use portico_api::pb::{Cluster, resource::Spec};
use xxhash_rust::xxh64::xxh64;

use super::TypeUrl;
use super::translate::{self, Flavor};
use crate::services::{ServiceSet, ServiceTable};
use crate::snapshot::Stored;
use crate::store::Revision;
use crate::views::ScopeView;

/// One translated resource.
#[derive(Debug, PartialEq)]
pub struct XdsResource {
    /// Its name.
    pub name: String,
    /// Its encoding.
    pub any: Any,
    /// A hash of its encoding: its version in delta responses, and how changes are found.
    pub version: String,
}

impl XdsResource {
    fn new(name: &str, any: Any) -> Self {
        XdsResource {
            name: name.to_string(),
            version: format!("{:016x}", xxh64(&any.value, 0)),
            any,
        }
    }
}

/// Resources of one type by name.
pub type ByName = BTreeMap<String, Arc<XdsResource>>;

/// Every resource a client can be sent at one snapshot, by type.
#[derive(Debug, Default)]
pub struct Catalog {
    /// The config version.
    pub version: Revision,
    types: BTreeMap<TypeUrl, ByName>,
}

impl Catalog {
    /// The resources of `type_url`.
    pub fn of(&self, type_url: TypeUrl) -> &ByName {
        static EMPTY: ByName = BTreeMap::new();
        self.types.get(&type_url).unwrap_or(&EMPTY)
    }
}

/// What a translation was made from: when these are the same, so is the translation.
#[derive(Debug, Default)]
struct Sources {
    revisions: Vec<Revision>,
    service: Option<Arc<ServiceSet>>,
}

impl PartialEq for Sources {
    fn eq(&self, other: &Self) -> bool {
        self.revisions == other.revisions
            && match (&self.service, &other.service) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

/// One stream's translations, kept between snapshots.
#[derive(Debug)]
pub struct Translator {
    flavor: Flavor,
    kept: HashMap<(TypeUrl, String), (Sources, Arc<XdsResource>)>,
}

impl Translator {
    /// Translations for clients of `flavor`.
    pub fn new(flavor: Flavor) -> Self {
        Translator {
            flavor,
            kept: HashMap::new(),
        }
    }

    /// The catalog of `view`, with the announced endpoints of `services`.
    pub fn catalog(&mut self, view: &ScopeView, services: &ServiceTable) -> Catalog {
        let clusters: BTreeMap<&str, (&Arc<Stored>, &Cluster)> = view
            .resources
            .iter()
            .filter_map(|s| match &s.resource.spec {
                Some(Spec::Cluster(c)) => Some((s.resource.name.as_str(), (s, c))),
                _ => None,
            })
            .collect();
        let mut kept = HashMap::with_capacity(self.kept.len());
        let mut types: BTreeMap<TypeUrl, ByName> = BTreeMap::new();
        let flavor = self.flavor;
        let mut put = |type_url: TypeUrl,
                       name: &str,
                       sources: Sources,
                       translate: &dyn Fn() -> Option<Any>| {
            let key = (type_url, name.to_string());
            let resource = match self.kept.remove(&key) {
                Some((was, resource)) if was == sources => Some(resource),
                _ => translate().map(|any| Arc::new(XdsResource::new(name, any))),
            };
            if let Some(resource) = resource {
                types
                    .entry(type_url)
                    .or_default()
                    .insert(name.to_string(), resource.clone());
                kept.insert(key, (sources, resource));
            }
        };
        for stored in &view.resources {
            let name = stored.resource.name.as_str();
            let own = || Sources {
                revisions: vec![stored.revision],
                service: None,
            };
            match &stored.resource.spec {
                Some(Spec::Listener(l)) => put(TypeUrl::Listener, name, own(), &|| {
                    Some(translate::listener(name, l, flavor))
                }),
                Some(Spec::RouteTable(t)) => {
                    let reached: BTreeMap<&str, &Cluster> = stored
                        .refs
                        .iter()
                        .filter(|r| r.kind() == Kind::Cluster)
                        .filter_map(|r| clusters.get(r.name.as_str()))
                        .map(|(s, c)| (s.resource.name.as_str(), *c))
                        .collect();
                    let mut revisions = vec![stored.revision];
                    revisions.extend(
                        reached
                            .keys()
                            .filter_map(|n| clusters.get(n))
                            .map(|(s, _)| s.revision),
                    );
                    let sources = Sources {
                        revisions,
                        service: None,
                    };
                    put(TypeUrl::Route, name, sources, &|| {
                        Some(translate::route_configuration(name, t, &reached, flavor))
                    })
                }
                Some(Spec::Cluster(c)) => {
                    put(TypeUrl::Cluster, name, own(), &|| {
                        Some(translate::cluster(name, c, flavor))
                    });
                    let set = (!c.service.is_empty())
                        .then(|| services.get(&c.service).cloned())
                        .flatten();
                    let announced = set
                        .as_ref()
                        .map(|s| s.endpoints.clone())
                        .unwrap_or_default();
                    let sources = Sources {
                        revisions: vec![stored.revision],
                        service: set,
                    };
                    put(TypeUrl::Endpoint, name, sources, &|| {
                        Some(translate::load_assignment(name, c, &announced))
                    })
                }
                Some(Spec::Secret(s)) if flavor == Flavor::Envoy => {
                    put(TypeUrl::Secret, name, own(), &|| translate::secret(name, s))
                }
                _ => {}
            }
        }
        self.kept = kept;
        Catalog {
            version: view.version,
            types,
        }
    }
}
