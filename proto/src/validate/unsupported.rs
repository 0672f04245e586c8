//! What the schema describes but agents do not enforce yet, refused by name.
//!
//! A config that sets one of these would be accepted, acknowledged by every agent and then
//! ignored on traffic. Until an agent enforces it, validation refuses it instead:
//! `Cluster/api: health_check: not supported yet: agents do not run health checks`.
//!
//! Each row of [`REFUSALS`] is one such field (or kind). The change that makes agents enforce
//! it removes its row, and the field's own checks in the kind modules, which run all along,
//! are then what validates it.

use super::{Errors, ValidationError};
use crate::pb::{
    Cluster, Listener, Resource, Route, cluster::UpstreamProtocol, resource::Spec, secret,
};

/// The start of every refusal's message.
const NOT_SUPPORTED: &str = "not supported yet";

/// One thing agents do not enforce yet.
struct Refusal {
    /// Why it is refused: what agents do not do, completing "not supported yet: …".
    reason: &'static str,
    /// The field paths at which a resource sets it ("" for the whole resource).
    find: fn(&Resource) -> Vec<String>,
}

/// Everything refused, each with the work that lifts it.
const REFUSALS: &[Refusal] = &[
    // Lifted by gateway policies, together with Listener.policies and Route.policies.
    Refusal {
        reason: "agents do not apply policies",
        find: |r| whole(matches!(r.spec, Some(Spec::Policy(_)))),
    },
    Refusal {
        reason: "agents do not apply policies",
        find: |r| listener(r, "policies", |l| !l.policies.is_empty()),
    },
    Refusal {
        reason: "agents do not apply policies",
        find: |r| route(r, "policies", |route| !route.policies.is_empty()),
    },
    // Lifted by API key and JWT authentication, which identify consumers.
    Refusal {
        reason: "agents do not identify consumers",
        find: |r| whole(matches!(r.spec, Some(Spec::Consumer(_)))),
    },
    // Lifted by the first feature that reads an opaque secret.
    Refusal {
        reason: "nothing reads opaque secrets",
        find: |r| match &r.spec {
            Some(Spec::Secret(s)) => at(
                matches!(s.secret, Some(secret::Secret::Opaque(_))),
                "opaque",
            ),
            _ => Vec::new(),
        },
    },
    // Lifted by connection limits on HTTP/2 clusters (one multiplexed connection per
    // endpoint and proxy worker today).
    Refusal {
        reason: "agents limit the connections of HTTP1 clusters only",
        find: |r| {
            let mut found = Vec::new();
            if let Some(c) = cluster_spec(r)
                && c.protocol() == UpstreamProtocol::Http2
                && let Some(b) = c.circuit_breakers
            {
                if b.max_connections > 0 {
                    found.push("circuit_breakers.max_connections".to_string());
                }
                if b.max_pending_requests > 0 {
                    found.push("circuit_breakers.max_pending_requests".to_string());
                }
            }
            found
        },
    },
    // Lifted by trusting the system roots for upstream TLS.
    Refusal {
        reason: "agents do not trust the system roots; name a Secret holding the CA certificates",
        find: |r| {
            cluster(r, "tls.ca_secret", |c| {
                c.tls
                    .as_ref()
                    .is_some_and(|t| t.enabled && t.ca_secret.is_empty())
            })
        },
    },
];

/// Everything `resource` sets that agents do not enforce yet, as the errors validation
/// reports for it.
pub fn unsupported(resource: &Resource) -> Vec<ValidationError> {
    let key = resource.key();
    let mut out = Vec::new();
    check(resource, &mut Errors::new(&key, &mut out));
    out
}

/// Records a refusal for everything `resource` sets that agents do not enforce yet.
pub(super) fn check(resource: &Resource, e: &mut Errors) {
    for refusal in REFUSALS {
        for field in (refusal.find)(resource) {
            e.add(field, format!("{NOT_SUPPORTED}: {}", refusal.reason));
        }
    }
}

/// The whole resource, when `set`.
fn whole(set: bool) -> Vec<String> {
    at(set, "")
}

/// `field`, when `set`.
fn at(set: bool, field: &str) -> Vec<String> {
    if set {
        vec![field.to_string()]
    } else {
        Vec::new()
    }
}

fn listener(r: &Resource, field: &str, set: impl Fn(&Listener) -> bool) -> Vec<String> {
    match &r.spec {
        Some(Spec::Listener(l)) => at(set(l), field),
        _ => Vec::new(),
    }
}

fn cluster_spec(r: &Resource) -> Option<&Cluster> {
    match &r.spec {
        Some(Spec::Cluster(c)) => Some(c),
        _ => None,
    }
}

fn cluster(r: &Resource, field: &str, set: impl Fn(&Cluster) -> bool) -> Vec<String> {
    cluster_spec(r).map_or(Vec::new(), |c| at(set(c), field))
}

/// `virtual_hosts[v].routes[i].field` of each route that sets it.
fn route(r: &Resource, field: &str, set: impl Fn(&Route) -> bool) -> Vec<String> {
    let Some(Spec::RouteTable(t)) = &r.spec else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (v, host) in t.virtual_hosts.iter().enumerate() {
        for (i, route) in host.routes.iter().enumerate() {
            if set(route) {
                found.push(format!("virtual_hosts[{v}].routes[{i}].{field}"));
            }
        }
    }
    found
}
