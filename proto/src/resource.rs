//! The kind of a resource, its key, and small helpers on [`Resource`] used everywhere.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::pb::{Kind, Resource, ResourceKey, resource::Spec};

impl Kind {
    /// Every real kind, in apply order (things that are referenced come after their users,
    /// so listing in this order reads top-down).
    pub const ALL: [Kind; 6] = [
        Kind::Listener,
        Kind::RouteTable,
        Kind::Cluster,
        Kind::Policy,
        Kind::Consumer,
        Kind::Secret,
    ];

    /// The name used in files and on the command line, e.g. "RouteTable".
    pub fn display_name(self) -> &'static str {
        match self {
            Kind::Unspecified => "Unspecified",
            Kind::Listener => "Listener",
            Kind::RouteTable => "RouteTable",
            Kind::Cluster => "Cluster",
            Kind::Policy => "Policy",
            Kind::Consumer => "Consumer",
            Kind::Secret => "Secret",
        }
    }

    /// Parses a kind name as written in files or on the command line. Case-insensitive;
    /// accepts "RouteTable", "route_table", "route-table", "routetable" and plural forms.
    pub fn parse(s: &str) -> Option<Kind> {
        let norm: String = s
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect();
        Kind::ALL.into_iter().find(|k| {
            let name = k.display_name().to_ascii_lowercase();
            let plural = match name.strip_suffix('y') {
                Some(stem) => format!("{stem}ies"),
                None => format!("{name}s"),
            };
            norm == name || norm == plural
        })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.display_name())
    }
}

impl Resource {
    /// The kind, from which spec field is set (`Unspecified` when none is).
    pub fn kind(&self) -> Kind {
        match &self.spec {
            None => Kind::Unspecified,
            Some(Spec::Listener(_)) => Kind::Listener,
            Some(Spec::RouteTable(_)) => Kind::RouteTable,
            Some(Spec::Cluster(_)) => Kind::Cluster,
            Some(Spec::Policy(_)) => Kind::Policy,
            Some(Spec::Consumer(_)) => Kind::Consumer,
            Some(Spec::Secret(_)) => Kind::Secret,
        }
    }

    /// The resource's key.
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(self.kind(), &self.name)
    }
}

impl ResourceKey {
    /// A key from a kind and a name.
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        ResourceKey {
            kind: kind as i32,
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind(), self.name)
    }
}

/// A set of resources keyed by kind and name: a whole config, or what one apply brings.
///
/// Ordered, so iteration (and so encoding, diffing and printing) is deterministic. Resources
/// are shared: cloning a set copies pointers, not specs, so a new config version built from
/// the last one costs what changed, and [`ResourceSet::get_shared`] lets a consumer tell an
/// untouched resource from a replaced one with `Arc::ptr_eq`.
#[derive(Clone, Debug, Default)]
pub struct ResourceSet {
    by_key: BTreeMap<(Kind, String), Arc<Resource>>,
}

impl ResourceSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces a resource; returns the one it replaced.
    pub fn insert(&mut self, resource: Resource) -> Option<Arc<Resource>> {
        self.insert_shared(Arc::new(resource))
    }

    /// Inserts or replaces a shared resource; returns the one it replaced.
    pub fn insert_shared(&mut self, resource: Arc<Resource>) -> Option<Arc<Resource>> {
        self.by_key
            .insert((resource.kind(), resource.name.clone()), resource)
    }

    /// Removes a resource; returns it if it was present.
    pub fn remove(&mut self, kind: Kind, name: &str) -> Option<Arc<Resource>> {
        self.by_key.remove(&(kind, name.to_string()))
    }

    /// The resource of this kind and name.
    pub fn get(&self, kind: Kind, name: &str) -> Option<&Resource> {
        self.get_shared(kind, name).map(|r| &**r)
    }

    /// The resource of this kind and name, as shared by every set cloned from this one.
    pub fn get_shared(&self, kind: Kind, name: &str) -> Option<&Arc<Resource>> {
        self.by_key.get(&(kind, name.to_string()))
    }

    /// Whether a resource of this kind and name is present.
    pub fn contains(&self, kind: Kind, name: &str) -> bool {
        self.get(kind, name).is_some()
    }

    /// Every resource, by kind then name.
    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.by_key.values().map(|r| &**r)
    }

    /// The resources of one kind, by name.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Resource> {
        self.of_kind_shared(kind).map(|r| &**r)
    }

    /// The resources of one kind, by name, as shared by every set cloned from this one.
    pub fn of_kind_shared(&self, kind: Kind) -> impl Iterator<Item = &Arc<Resource>> {
        self.by_key
            .range((kind, String::new())..)
            .take_while(move |((k, _), _)| *k == kind)
            .map(|(_, r)| r)
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Equal when the same keys hold equal resources. A resource shared by both sets is equal
/// without looking at it, so comparing a set with one derived from it costs what changed.
impl PartialEq for ResourceSet {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .by_key
                .iter()
                .zip(&other.by_key)
                .all(|((ka, a), (kb, b))| ka == kb && (Arc::ptr_eq(a, b) || a == b))
    }
}

impl FromIterator<Resource> for ResourceSet {
    fn from_iter<I: IntoIterator<Item = Resource>>(iter: I) -> Self {
        let mut set = ResourceSet::new();
        for r in iter {
            set.insert(r);
        }
        set
    }
}

impl IntoIterator for ResourceSet {
    type Item = Resource;
    type IntoIter = std::iter::Map<
        std::collections::btree_map::IntoValues<(Kind, String), Arc<Resource>>,
        fn(Arc<Resource>) -> Resource,
    >;
    /// The resources, copied out where another set still shares them.
    fn into_iter(self) -> Self::IntoIter {
        self.by_key.into_values().map(Arc::unwrap_or_clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_parse_in_every_spelling() {
        for (s, k) in [
            ("RouteTable", Kind::RouteTable),
            ("route_table", Kind::RouteTable),
            ("route-tables", Kind::RouteTable),
            ("listeners", Kind::Listener),
            ("SECRET", Kind::Secret),
            ("policies", Kind::Policy),
            ("Policy", Kind::Policy),
        ] {
            assert_eq!(Kind::parse(s), Some(k), "{s}");
        }
        assert_eq!(Kind::parse("nope"), None);
        assert_eq!(Kind::parse("unspecified"), None);
        assert_eq!(Kind::parse("policys"), None);
    }

    #[test]
    fn of_kind_returns_only_that_kind() {
        let set: ResourceSet = [
            Resource {
                name: "b".into(),
                spec: Some(Spec::Cluster(Default::default())),
                ..Default::default()
            },
            Resource {
                name: "a".into(),
                spec: Some(Spec::Cluster(Default::default())),
                ..Default::default()
            },
            Resource {
                name: "a".into(),
                spec: Some(Spec::Listener(Default::default())),
                ..Default::default()
            },
            Resource {
                name: "z".into(),
                spec: Some(Spec::Policy(Default::default())),
                ..Default::default()
            },
        ]
        .into_iter()
        .collect();
        let names: Vec<_> = set
            .of_kind(Kind::Cluster)
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(set.len(), 4);
    }

    #[test]
    fn clones_share_resources_and_compare_by_content() {
        let cluster = |name: &str, port| Resource {
            name: name.into(),
            spec: Some(Spec::Cluster(crate::pb::Cluster {
                endpoints: vec![crate::pb::Endpoint {
                    port,
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        };
        let set: ResourceSet = [cluster("a", 1), cluster("b", 1)].into_iter().collect();
        let mut copy = set.clone();
        let shared = |s: &ResourceSet| s.get_shared(Kind::Cluster, "a").cloned();
        assert!(Arc::ptr_eq(&shared(&set).unwrap(), &shared(&copy).unwrap()));
        assert_eq!(copy, set);

        copy.insert(cluster("a", 1));
        assert!(!Arc::ptr_eq(
            &shared(&set).unwrap(),
            &shared(&copy).unwrap()
        ));
        assert_eq!(copy, set, "equal content, not the same allocation");
        copy.insert(cluster("a", 2));
        assert_ne!(copy, set);
        copy.insert(cluster("a", 1));
        copy.remove(Kind::Cluster, "b");
        assert_ne!(copy, set);
        assert_eq!(
            set.into_iter().map(|r| r.name).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
}
