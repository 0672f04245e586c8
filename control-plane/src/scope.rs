//! Which listeners an agent gets: its scope, computed once per node identity and selector set.
//!
//! An agent's scope is the set of listeners whose selector matches its node. It depends only on
//! the node's region, zone and labels (fixed for the life of a stream) and on the listeners'
//! names and selectors, which change far less often than config versions. So a snapshot carries
//! a [`Selectors`] that successive snapshots share until a listener is added, removed or
//! re-targeted; it caches the scope of every node identity it has seen, and each stream keeps
//! its scope in a [`ScopeMemo`]. A push that leaves the selectors alone costs a stream one
//! pointer comparison; a selector change costs one computation per distinct identity, not one
//! per agent.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use portico_api::Resource;
use portico_api::node::DataPlane;
use portico_api::pb::{AgentSelector, Listener, Node, resource};

/// Identities cached per selector set before the cache starts over: agents that keep
/// reconnecting with new labels must not grow it without bound.
const MAX_CACHED_IDENTITIES: usize = 65_536;

/// Scope ids, unique for the life of the process (0 means "no scope").
static NEXT_SCOPE_ID: AtomicU64 = AtomicU64::new(1);

/// What a listener selector looks at in a node, and the kind of data plane it is (which
/// decides whether it runs API listeners, and those for Envoy).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Identity {
    region: String,
    zone: String,
    labels: BTreeMap<String, String>,
    kind: DataPlane,
}

impl Identity {
    /// The identity of `node`, a Portico agent.
    pub fn of(node: &Node) -> Self {
        Identity::of_kind(node, DataPlane::Portico)
    }

    /// The identity of `node`, a data plane of this kind.
    pub fn of_kind(node: &Node, kind: DataPlane) -> Self {
        Identity {
            region: node.region.clone(),
            zone: node.zone.clone(),
            labels: node.labels.clone(),
            kind,
        }
    }
}

/// One scope: the names of the listeners an agent gets, sorted.
#[derive(Debug)]
pub struct Scope {
    /// Unique per distinct listener set of one [`Selectors`]; caches of views and encoded
    /// updates are keyed by it.
    pub id: u64,
    /// The matching listeners' names, sorted.
    pub listeners: Arc<[Arc<str>]>,
}

/// The listeners' names and selectors at one snapshot, and the scopes computed from them.
#[derive(Debug, Default)]
pub struct Selectors {
    /// Each listener's name, and its selector and protocol (the rest left out).
    listeners: Vec<(Arc<str>, Listener)>,
    cache: Mutex<Cache>,
    computed: AtomicU64,
}

#[derive(Debug, Default)]
struct Cache {
    by_identity: HashMap<Identity, Arc<Scope>>,
    by_listeners: HashMap<Arc<[Arc<str>]>, Arc<Scope>>,
}

impl Selectors {
    /// The selectors of `listeners` (resources of other kinds are ignored), sorted by name.
    pub fn new<'a>(listeners: impl IntoIterator<Item = (&'a Arc<str>, &'a Resource)>) -> Self {
        let mut listeners: Vec<_> = listeners
            .into_iter()
            .filter_map(|(name, r)| match &r.spec {
                Some(resource::Spec::Listener(l)) => Some((
                    name.clone(),
                    Listener {
                        selector: l.selector.clone(),
                        protocol: l.protocol,
                        ..Default::default()
                    },
                )),
                _ => None,
            })
            .collect();
        listeners.sort_by(|a, b| a.0.cmp(&b.0));
        Selectors {
            listeners,
            ..Default::default()
        }
    }

    /// The scope of a node with this identity; computed on the first call per identity.
    pub fn scope_of(&self, identity: &Identity) -> Arc<Scope> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = cache.by_identity.get(identity) {
            return hit.clone();
        }
        self.computed.fetch_add(1, Ordering::Relaxed);
        let names: Arc<[Arc<str>]> = self
            .listeners
            .iter()
            .filter(|(_, l)| identity.kind.runs(l) && selects(l.selector.as_ref(), identity))
            .map(|(name, _)| name.clone())
            .collect();
        if cache.by_identity.len() >= MAX_CACHED_IDENTITIES {
            // Dropping the interned scopes too only costs duplicate views until the next change.
            *cache = Cache::default();
        }
        let scope = cache
            .by_listeners
            .entry(names.clone())
            .or_insert_with(|| {
                Arc::new(Scope {
                    id: NEXT_SCOPE_ID.fetch_add(1, Ordering::Relaxed),
                    listeners: names,
                })
            })
            .clone();
        cache.by_identity.insert(identity.clone(), scope.clone());
        scope
    }

    /// How many scopes were computed (cache misses), for tests and benchmarks.
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }
}

/// What decides which nodes a listener resource goes to: its selector and protocol (None for
/// other kinds).
pub fn targeting(resource: &Resource) -> Option<(Option<&AgentSelector>, i32)> {
    match &resource.spec {
        Some(resource::Spec::Listener(l)) => Some((l.selector.as_ref(), l.protocol)),
        _ => None,
    }
}

/// Whether a listener selector matches a node. An absent or empty selector matches every node.
pub fn selects(selector: Option<&AgentSelector>, node: &Identity) -> bool {
    portico_api::node::selects(selector, &node.region, &node.zone, &node.labels)
}

/// One stream's node identity and its scope under the selectors it last resolved against.
#[derive(Debug)]
pub struct ScopeMemo {
    identity: Identity,
    last: Option<(Arc<Selectors>, Arc<Scope>)>,
}

impl ScopeMemo {
    /// A memo for `node`, a Portico agent, empty until the first lookup.
    pub fn new(node: &Node) -> Self {
        ScopeMemo::of(Identity::of(node))
    }

    /// A memo for a node of this identity, empty until the first lookup.
    pub fn of(identity: Identity) -> Self {
        ScopeMemo {
            identity,
            last: None,
        }
    }

    /// The scope under `selectors`: the remembered one when they are the selectors it was
    /// resolved against, else looked up (and remembered).
    pub fn scope(&mut self, selectors: &Arc<Selectors>) -> Arc<Scope> {
        if let Some((seen, scope)) = &self.last
            && Arc::ptr_eq(seen, selectors)
        {
            return scope.clone();
        }
        let scope = selectors.scope_of(&self.identity);
        self.last = Some((selectors.clone(), scope.clone()));
        scope
    }
}

#[cfg(test)]
mod tests {
    use portico_api::pb::Listener;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn node(region: &str, zone: &str) -> Node {
        Node {
            id: "n".into(),
            region: region.into(),
            zone: zone.into(),
            ..Default::default()
        }
    }

    fn listener(regions: &[&str]) -> Resource {
        Resource {
            spec: Some(resource::Spec::Listener(Listener {
                selector: Some(AgentSelector {
                    regions: regions.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn selectors_match_every_non_empty_part() {
        let node = Identity::of(&Node {
            labels: labels(&[("role", "edge"), ("tier", "a")]),
            ..node("eu", "eu-1")
        });
        let selector = |regions: &[&str], zones: &[&str], l: &[(&str, &str)]| AgentSelector {
            regions: regions.iter().map(|s| s.to_string()).collect(),
            zones: zones.iter().map(|s| s.to_string()).collect(),
            labels: labels(l),
            ..Default::default()
        };
        let cases = [
            (None, true),
            (Some(selector(&[], &[], &[])), true),
            (Some(selector(&["us", "eu"], &[], &[])), true),
            (Some(selector(&["us"], &[], &[])), false),
            (Some(selector(&["eu"], &["eu-2"], &[])), false),
            (
                Some(selector(&["eu"], &["eu-1"], &[("role", "edge")])),
                true,
            ),
            (Some(selector(&[], &[], &[("role", "core")])), false),
            (Some(selector(&[], &[], &[("missing", "x")])), false),
        ];
        for (i, (s, want)) in cases.into_iter().enumerate() {
            assert_eq!(selects(s.as_ref(), &node), want, "case {i}");
        }
    }

    #[test]
    fn each_identity_is_computed_once_and_equal_listener_sets_share_a_scope() {
        let listeners: Vec<(Arc<str>, Resource)> = vec![
            (Arc::from("all"), listener(&[])),
            (Arc::from("eu-only"), listener(&["eu"])),
            (Arc::from("us-only"), listener(&["us"])),
        ];
        let selectors = Selectors::new(listeners.iter().map(|(n, r)| (n, r)));
        let mut scopes = Vec::new();
        for i in 0..300 {
            let region = ["eu", "us", "ap"][i % 3];
            let zone = format!("{region}-{}", i % 2);
            scopes.push((
                region,
                selectors.scope_of(&Identity::of(&node(region, &zone))),
            ));
        }
        // 3 regions × 2 zones are 6 identities, whatever the number of agents.
        assert_eq!(selectors.computed(), 6);
        let names = |region: &str| -> Vec<String> {
            let (_, scope) = scopes.iter().find(|(r, _)| *r == region).expect("scope");
            scope.listeners.iter().map(|n| n.to_string()).collect()
        };
        assert_eq!(names("eu"), ["all", "eu-only"]);
        assert_eq!(names("us"), ["all", "us-only"]);
        assert_eq!(names("ap"), ["all"]);
        // Both zones of a region select the same listeners: one scope, one id.
        for (region, scope) in &scopes {
            let first = &scopes.iter().find(|(r, _)| r == region).expect("scope").1;
            assert!(Arc::ptr_eq(first, scope), "{region}");
        }
    }

    #[test]
    fn a_memo_looks_up_only_when_the_selectors_change() {
        let listeners: Vec<(Arc<str>, Resource)> = vec![(Arc::from("eu-only"), listener(&["eu"]))];
        let first = Arc::new(Selectors::new(listeners.iter().map(|(n, r)| (n, r))));
        let mut memo = ScopeMemo::new(&node("eu", "eu-1"));
        let a = memo.scope(&first);
        let b = memo.scope(&first);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(first.computed(), 1);

        let second = Arc::new(Selectors::new(listeners.iter().map(|(n, r)| (n, r))));
        let c = memo.scope(&second);
        assert_eq!(second.computed(), 1, "new selectors: computed again");
        assert_ne!(a.id, c.id);
        assert_eq!(a.listeners, c.listeners);
    }

    #[test]
    fn each_kind_of_data_plane_gets_its_listeners() {
        use portico_api::pb::listener::Protocol;
        let with = |protocol: Protocol, kinds: &[&str]| Resource {
            spec: Some(resource::Spec::Listener(Listener {
                protocol: protocol.into(),
                selector: Some(AgentSelector {
                    kinds: kinds.iter().map(|k| k.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let listeners: Vec<(Arc<str>, Resource)> = vec![
            (Arc::from("agents"), with(Protocol::Http, &[])),
            (Arc::from("envoy"), with(Protocol::Http, &["envoy"])),
            (
                Arc::from("shared"),
                with(Protocol::Https, &["envoy", "portico"]),
            ),
            (
                Arc::from("greeter.example.internal"),
                with(Protocol::Api, &[]),
            ),
        ];
        let selectors = Selectors::new(listeners.iter().map(|(n, r)| (n, r)));
        let names = |kind| -> Vec<String> {
            let scope = selectors.scope_of(&Identity::of_kind(&node("eu", "eu-1"), kind));
            scope.listeners.iter().map(|n| n.to_string()).collect()
        };
        assert_eq!(names(DataPlane::Portico), ["agents", "shared"]);
        assert_eq!(names(DataPlane::Envoy), ["envoy", "shared"]);
        assert_eq!(names(DataPlane::Grpc), ["greeter.example.internal"]);
    }
}
