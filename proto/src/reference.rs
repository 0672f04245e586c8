//! What a resource refers to: the edges that scoping follows and validation checks.

use std::collections::{HashSet, VecDeque};

use crate::ResourceSet;
use crate::pb::{Kind, Resource, ResourceKey, policy, resource::Spec, route_action, secret};

/// One reference from a resource to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The resource referred to.
    pub target: ResourceKey,
    /// Path of the referring field, e.g. `virtual_hosts[0].routes[2].action.cluster`.
    pub field: String,
}

/// What the referring field needs from its target beyond existing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing more.
    Exists,
    /// A tls Secret with a private key: a certificate to present.
    KeyPair,
    /// A tls Secret, with or without a key: certificates to trust.
    Chain,
    /// An opaque Secret holding a JSON Web Key Set.
    Jwks,
}

/// Every reference `resource` makes, in field order. Empty names are "unset" and are not
/// references; validation reports them where a name is required.
pub fn references(resource: &Resource) -> Vec<Reference> {
    references_with_needs(resource)
        .into_iter()
        .map(|(r, _)| r)
        .collect()
}

/// Every reference with what it needs from its target.
pub(crate) fn references_with_needs(resource: &Resource) -> Vec<(Reference, Need)> {
    let mut out = Edges(Vec::new());
    match &resource.spec {
        Some(Spec::Listener(l)) => {
            out.add(Kind::RouteTable, &l.route_table, "route_table".into());
            for (i, p) in l.policies.iter().enumerate() {
                out.add(Kind::Policy, p, format!("policies[{i}]"));
            }
            for (i, c) in l.tls.iter().flat_map(|t| &t.certificates).enumerate() {
                let field = format!("tls.certificates[{i}].secret");
                out.need(Kind::Secret, &c.secret, field, Need::KeyPair);
            }
            if let Some(tls) = &l.tls {
                let field = "tls.client_ca_secret".to_string();
                out.need(Kind::Secret, &tls.client_ca_secret, field, Need::Chain);
            }
        }
        Some(Spec::RouteTable(t)) => {
            for (v, host) in t.virtual_hosts.iter().enumerate() {
                for (r, route) in host.routes.iter().enumerate() {
                    let at = format!("virtual_hosts[{v}].routes[{r}]");
                    match route.action.as_ref().and_then(|a| a.action.as_ref()) {
                        Some(route_action::Action::Cluster(c)) => {
                            out.add(Kind::Cluster, c, format!("{at}.action.cluster"));
                        }
                        Some(route_action::Action::WeightedClusters(w)) => {
                            for (i, c) in w.clusters.iter().enumerate() {
                                let field =
                                    format!("{at}.action.weighted_clusters.clusters[{i}].cluster");
                                out.add(Kind::Cluster, &c.cluster, field);
                            }
                        }
                        _ => {}
                    }
                    for (i, p) in route.policies.iter().enumerate() {
                        out.add(Kind::Policy, p, format!("{at}.policies[{i}]"));
                    }
                }
            }
        }
        Some(Spec::Cluster(c)) => {
            if let Some(tls) = &c.tls {
                out.need(
                    Kind::Secret,
                    &tls.ca_secret,
                    "tls.ca_secret".into(),
                    Need::Chain,
                );
                out.need(
                    Kind::Secret,
                    &tls.client_certificate_secret,
                    "tls.client_certificate_secret".into(),
                    Need::KeyPair,
                );
            }
        }
        Some(Spec::Policy(p)) => {
            let (field, consumers) = match &p.policy {
                Some(policy::Policy::ApiKeyAuth(a)) => ("api_key_auth", &a.consumers),
                Some(policy::Policy::JwtAuth(j)) => ("jwt_auth", &j.consumers),
                _ => return Vec::new(),
            };
            for (i, c) in consumers.iter().enumerate() {
                out.add(Kind::Consumer, c, format!("{field}.consumers[{i}]"));
            }
            if let Some(policy::Policy::JwtAuth(j)) = &p.policy {
                let field = "jwt_auth.jwks_secret".to_string();
                out.need(Kind::Secret, &j.jwks_secret, field, Need::Jwks);
            }
        }
        Some(Spec::Consumer(_) | Spec::Secret(_)) | None => {}
    }
    out.0
}

struct Edges(Vec<(Reference, Need)>);

impl Edges {
    fn add(&mut self, kind: Kind, name: &str, field: String) {
        self.need(kind, name, field, Need::Exists);
    }

    fn need(&mut self, kind: Kind, name: &str, field: String, need: Need) {
        if !name.is_empty() {
            let target = ResourceKey::new(kind, name);
            self.0.push((Reference { target, field }, need));
        }
    }
}

/// Whether an agent serving `resource` needs every Consumer: an authentication policy
/// identifies any consumer whose key or subject a request presents (and answers 403, not 401,
/// for one it does not allow), so its agents get the whole consumer directory, not only the
/// consumers it names.
pub fn reads_every_consumer(resource: &Resource) -> bool {
    matches!(
        &resource.spec,
        Some(Spec::Policy(p)) if matches!(
            p.policy,
            Some(policy::Policy::ApiKeyAuth(_) | policy::Policy::JwtAuth(_))
        )
    )
}

/// The placeholder that replaces secret material in [`redacted`].
pub const REDACTED: &str = "<redacted>";

/// A copy of `resource` with secret material (private keys, opaque values) replaced by
/// [`REDACTED`], for display. Certificate chains are public and kept; empty values stay
/// empty so a reader still sees whether a key is present.
pub fn redacted(resource: &Resource) -> Resource {
    let mut copy = resource.clone();
    if let Some(Spec::Secret(s)) = &mut copy.spec {
        match &mut s.secret {
            Some(secret::Secret::Tls(tls)) if !tls.private_key.is_empty() => {
                tls.private_key = REDACTED.into();
            }
            Some(secret::Secret::Opaque(value)) if !value.is_empty() => {
                *value = REDACTED.into();
            }
            _ => {}
        }
    }
    copy
}

/// The resources of `set` reachable from `roots` by following references, roots included.
/// Roots and references to resources missing from `set` are skipped.
pub fn reachable(set: &ResourceSet, roots: impl IntoIterator<Item = ResourceKey>) -> ResourceSet {
    let mut seen = HashSet::new();
    let mut queue: VecDeque<ResourceKey> = roots.into_iter().collect();
    let mut out = ResourceSet::new();
    while let Some(key) = queue.pop_front() {
        if !seen.insert(key.clone()) {
            continue;
        }
        let Some(resource) = set.get(key.kind(), &key.name) else {
            continue;
        };
        queue.extend(references(resource).into_iter().map(|r| r.target));
        if reads_every_consumer(resource) {
            queue.extend(set.of_kind(Kind::Consumer).map(|c| c.key()));
        }
        out.insert(resource.clone());
    }
    out
}
