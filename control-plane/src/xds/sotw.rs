//! The state-of-the-world stream (`StreamAggregatedResources`).
//!
//! Per type, the client's subscription (wildcard and names, from the latest request) and the
//! response it was last sent. A response holds every subscribed resource of its type that
//! exists in the client's scope, so an omitted listener or cluster is one the client deletes.
//! A type gets a response when its initial request or a change of subscription asks for one,
//! or when the resources it would hold changed; never while its last response is
//! unacknowledged (versions published meanwhile are coalesced), and never again unchanged
//! after the client rejected it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::catalog::{ByName, Catalog};
use super::session::{self, Flavour};
use super::{Stream, Subscription, Sync, TypeUrl, must_wait};
use crate::store::Revision;

type Tx = session::Tx<Session>;

/// One type's state on a stream.
#[derive(Debug, Default)]
struct TypeState {
    subscription: Subscription,
    /// Whether the client named resources in a request of this type (after which an empty
    /// list means none, not the legacy wildcard).
    named: bool,
    /// A request asked for an answer.
    answer: bool,
    /// The last response: its version, nonce, and each resource's version.
    sent: Option<Sent>,
    /// Whether the last response is unacknowledged.
    pending: bool,
    /// The client's message when it rejected the last response.
    rejected: Option<String>,
}

#[derive(Debug)]
struct Sent {
    version: Revision,
    nonce: String,
    resources: BTreeMap<String, String>,
}

/// One state-of-the-world stream.
pub struct Session {
    stream: Stream,
    types: BTreeMap<TypeUrl, TypeState>,
}

impl Flavour for Session {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    fn new(stream: Stream) -> Self {
        Session {
            stream,
            types: BTreeMap::new(),
        }
    }

    fn node(request: &DiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// Takes in one request: an ACK or NACK of the type's last response when it carries that
    /// response's nonce, and the type's subscription. Stale requests change nothing.
    fn receive(&mut self, request: DiscoveryRequest) {
        let Some(type_url) = TypeUrl::parse(&request.type_url) else {
            tracing::debug!(node = %self.stream.node.id, type_url = %request.type_url, "ignoring a request for a type not served");
            return;
        };
        let state = self.types.entry(type_url).or_default();
        if request.response_nonce.is_empty() {
            // A first request of this type (or the first after a reconnection) is answered
            // even when nothing changed.
            state.answer = true;
        } else {
            let Some(version) = state
                .sent
                .as_ref()
                .filter(|s| s.nonce == request.response_nonce)
                .map(|s| s.version)
            else {
                tracing::debug!(node = %self.stream.node.id, r#type = type_url.name(), nonce = %request.response_nonce, "ignoring a request with a stale nonce");
                return;
            };
            if state.pending {
                state.pending = false;
                match &request.error_detail {
                    Some(error) => {
                        state.rejected = Some(error.message.clone());
                        self.stream.rejected(type_url, version, &error.message);
                    }
                    None => state.rejected = None,
                }
            }
        }
        let state = self.types.entry(type_url).or_default();
        let names: BTreeSet<String> = request
            .resource_names
            .iter()
            .filter(|n| n.as_str() != "*")
            .cloned()
            .collect();
        let wildcard = request.resource_names.iter().any(|n| n == "*")
            || (type_url.wildcard_when_unnamed() && !state.named && names.is_empty());
        state.named |= !names.is_empty();
        let subscription = Subscription { wildcard, names };
        if subscription != state.subscription {
            state.subscription = subscription;
            state.answer = true;
        }
    }

    /// Sends what each type needs, in sending order; where the client stands, or None when
    /// the stream is gone.
    async fn step(&mut self, catalog: &Arc<Catalog>, tx: &Tx) -> Option<Sync> {
        let mut settled = true;
        let mut needed_pending = false;
        let mut rejected = None;
        for type_url in TypeUrl::ALL {
            if !type_url.needed_first()
                && must_wait(
                    needed_pending,
                    self.clusters_sent().as_ref(),
                    self.types.get(&TypeUrl::Endpoint).map(|s| &s.subscription),
                )
            {
                if self.types.contains_key(&type_url) {
                    settled = false;
                }
                continue;
            }
            let nonce_if_sent = {
                let Some(state) = self.types.get(&type_url) else {
                    continue;
                };
                if state.pending {
                    None
                } else {
                    let resources = subscribed(catalog.of(type_url), &state.subscription);
                    let versions: BTreeMap<String, String> = resources
                        .iter()
                        .map(|r| (r.name.clone(), r.version.clone()))
                        .collect();
                    let unchanged = state.sent.as_ref().is_some_and(|s| s.resources == versions);
                    if state.answer || !unchanged {
                        Some((resources, versions))
                    } else {
                        None
                    }
                }
            };
            if let Some((resources, versions)) = nonce_if_sent {
                let nonce = self.stream.nonce();
                let response = DiscoveryResponse {
                    version_info: catalog.version.to_string(),
                    resources: resources.iter().map(|r| r.any.clone()).collect(),
                    type_url: type_url.as_str().to_string(),
                    nonce: nonce.clone(),
                    ..Default::default()
                };
                if tx.send(Ok(response)).await.is_err() {
                    return None;
                }
                self.stream.sent(type_url);
                let state = self.types.entry(type_url).or_default();
                state.sent = Some(Sent {
                    version: catalog.version,
                    nonce,
                    resources: versions,
                });
                state.pending = true;
                state.answer = false;
            }
            let Some(state) = self.types.get(&type_url) else {
                continue;
            };
            if state.pending {
                settled = false;
                needed_pending |= type_url.needed_first();
            } else if let Some(message) = &state.rejected {
                rejected = Some(message.clone());
            }
        }
        Some(match (settled, rejected) {
            (false, _) => Sync::Pending,
            (true, Some(message)) => Sync::Rejected(message),
            (true, None) => Sync::Current,
        })
    }
}

impl Session {
    /// The clusters of the last cluster response.
    fn clusters_sent(&self) -> Option<BTreeSet<String>> {
        let sent = self.types.get(&TypeUrl::Cluster)?.sent.as_ref()?;
        Some(sent.resources.keys().cloned().collect())
    }
}

/// The resources of `all` that `subscription` covers.
fn subscribed(all: &ByName, subscription: &Subscription) -> Vec<Arc<super::catalog::XdsResource>> {
    if subscription.wildcard {
        return all.values().cloned().collect();
    }
    subscription
        .names
        .iter()
        .filter_map(|n| all.get(n).cloned())
        .collect()
}
