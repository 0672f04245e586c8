//! The incremental stream (`DeltaAggregatedResources`).
//!
//! Per type, the client's subscription (changed by each request's subscribe and unsubscribe
//! lists, whatever its nonce) and the version of each resource the client has (from its
//! `initial_resource_versions`, then from what it was sent and accepted). A response carries
//! the subscribed resources whose version the client does not have, and removes the ones it
//! has that left its scope or the config; a name subscribed that does not exist is removed
//! once, so the client does not wait for it. The first request of a type is always answered,
//! even with nothing. A rejected response is not sent again unchanged; the client keeps what
//! it had.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

use super::catalog::Catalog;
use super::session::{self, Flavour};
use super::{Stream, Subscription, Sync, TypeUrl, must_wait};
use crate::store::Revision;

type Tx = session::Tx<Session>;

/// Resource versions by name.
type Versions = BTreeMap<String, String>;

/// One type's state on a stream.
#[derive(Debug, Default)]
struct TypeState {
    subscription: Subscription,
    /// The version of each resource the client has.
    known: Versions,
    /// Names subscribed that do not exist, and that the client was told so.
    told_absent: BTreeSet<String>,
    /// The first request of the type, not answered yet.
    answer: bool,
    /// The unacknowledged response.
    pending: Option<Pending>,
    /// The client's message and what it was offered, when it rejected the last response.
    rejected: Option<(String, Versions)>,
}

#[derive(Debug)]
struct Pending {
    nonce: String,
    version: Revision,
    /// What the client had before it.
    before: Versions,
    /// The resources it offered, by version.
    offered: Versions,
}

/// One incremental stream.
pub struct Session {
    stream: Stream,
    types: BTreeMap<TypeUrl, TypeState>,
}

impl Flavour for Session {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn new(stream: Stream) -> Self {
        Session {
            stream,
            types: BTreeMap::new(),
        }
    }

    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    fn receive(&mut self, request: DeltaDiscoveryRequest) {
        let Some(type_url) = TypeUrl::parse(&request.type_url) else {
            tracing::debug!(node = %self.stream.node.id, type_url = %request.type_url, "ignoring a request for a type not served");
            return;
        };
        let first = !self.types.contains_key(&type_url);
        let state = self.types.entry(type_url).or_default();
        if first {
            state.answer = true;
            state.known = request
                .initial_resource_versions
                .clone()
                .into_iter()
                .collect();
            state.subscription.wildcard =
                type_url.wildcard_when_unnamed() && request.resource_names_subscribe.is_empty();
        }
        if !request.response_nonce.is_empty() {
            match state.pending.take() {
                Some(pending) if pending.nonce == request.response_nonce => {
                    match &request.error_detail {
                        Some(error) => {
                            state.known = pending.before;
                            let message = error.message.clone();
                            state.rejected = Some((message.clone(), pending.offered));
                            self.stream.rejected(type_url, pending.version, &message);
                        }
                        None => state.rejected = None,
                    }
                }
                other => {
                    state.pending = other;
                    tracing::debug!(node = %self.stream.node.id, r#type = type_url.name(), nonce = %request.response_nonce, "ignoring an answer with a stale nonce");
                }
            }
        }
        let state = self.types.entry(type_url).or_default();
        for name in &request.resource_names_subscribe {
            if name == "*" {
                state.subscription.wildcard = true;
            } else {
                state.subscription.names.insert(name.clone());
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                state.subscription.wildcard = false;
            } else {
                state.subscription.names.remove(name);
            }
            state.told_absent.remove(name);
        }
        // The client forgets what it no longer subscribes to.
        let subscription = state.subscription.clone();
        state.known.retain(|name, _| subscription.covers(name));
    }

    async fn step(&mut self, catalog: &Arc<Catalog>, tx: &Tx) -> Option<Sync> {
        let mut settled = true;
        let mut needed_pending = false;
        let mut rejected = None;
        for type_url in TypeUrl::ALL {
            let clusters = self
                .types
                .get(&TypeUrl::Cluster)
                .map(|s| s.known.keys().cloned().collect::<BTreeSet<String>>());
            if !type_url.needed_first()
                && must_wait(
                    needed_pending,
                    clusters.as_ref(),
                    self.types.get(&TypeUrl::Endpoint).map(|s| &s.subscription),
                )
            {
                if self.types.contains_key(&type_url) {
                    settled = false;
                }
                continue;
            }
            let Some(state) = self.types.get_mut(&type_url) else {
                continue;
            };
            if state.pending.is_none() {
                let all = catalog.of(type_url);
                let offered: Versions = all
                    .iter()
                    .filter(|(name, _)| state.subscription.covers(name))
                    .map(|(name, r)| (name.clone(), r.version.clone()))
                    .collect();
                let repeat = state.rejected.as_ref().is_some_and(|(_, o)| *o == offered);
                let upserts: Vec<Resource> = offered
                    .iter()
                    .filter(|(name, version)| state.known.get(*name) != Some(*version))
                    .filter_map(|(name, version)| {
                        Some(Resource {
                            name: name.clone(),
                            version: version.clone(),
                            resource: Some(all.get(name)?.any.clone()),
                            ..Default::default()
                        })
                    })
                    .collect();
                let mut removed: Vec<String> = state
                    .known
                    .keys()
                    .filter(|name| !offered.contains_key(*name))
                    .cloned()
                    .collect();
                for name in &state.subscription.names {
                    if !offered.contains_key(name)
                        && !state.known.contains_key(name)
                        && state.told_absent.insert(name.clone())
                    {
                        removed.push(name.clone());
                    }
                }
                state.told_absent.retain(|name| !offered.contains_key(name));
                if !repeat && (state.answer || !upserts.is_empty() || !removed.is_empty()) {
                    self.stream.nonces += 1;
                    let nonce = self.stream.nonces.to_string();
                    let response = DeltaDiscoveryResponse {
                        system_version_info: catalog.version.to_string(),
                        resources: upserts,
                        type_url: type_url.as_str().to_string(),
                        removed_resources: removed,
                        nonce: nonce.clone(),
                        ..Default::default()
                    };
                    if tx.send(Ok(response)).await.is_err() {
                        return None;
                    }
                    state.pending = Some(Pending {
                        nonce,
                        version: catalog.version,
                        before: std::mem::replace(&mut state.known, offered.clone()),
                        offered,
                    });
                    state.answer = false;
                    self.stream.sent(type_url);
                }
            }
            let Some(state) = self.types.get(&type_url) else {
                continue;
            };
            if state.pending.is_some() {
                settled = false;
                needed_pending |= type_url.needed_first();
            } else if let Some((message, _)) = &state.rejected {
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
