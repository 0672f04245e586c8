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
use crate::pb::{Cluster, Resource, cluster::UpstreamProtocol, resource::Spec};

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

fn cluster_spec(r: &Resource) -> Option<&Cluster> {
    match &r.spec {
        Some(Spec::Cluster(c)) => Some(c),
        _ => None,
    }
}
