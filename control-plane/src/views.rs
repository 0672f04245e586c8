//! Per-scope views of the config, the diffs between them, and the encoded-update cache.
//!
//! An agent's scope at a version is the set of listeners whose selector matches its node; its
//! view is those listeners and everything they reach. Agents with the same scope share one view
//! (cached per scope key and version) and one encoded `ControlMessage` per (from, to) pair, so a
//! change is encoded once per scope however many agents receive it.
//!
//! The last [`RETAINED_VERSIONS`] snapshots are kept so an agent that resumes from a recent
//! version gets a diff; anything older gets a full update.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use portico_api::pb::{AgentSelector, ControlMessage, Node, Update, control_message, resource};
use portico_api::{Kind, ResourceKey, ResourceSet, reference};
use prost::Message;
use tokio::sync::watch;

use crate::snapshot::Snapshot;
use crate::store::Revision;

/// How many recent versions are kept for resuming agents.
pub const RETAINED_VERSIONS: usize = 32;

/// One scope's resources at one version.
#[derive(Debug)]
pub struct ScopeView {
    /// The config version.
    pub version: Revision,
    /// The scope key: the matching listener names, sorted, joined by ','.
    pub scope: Arc<str>,
    /// The resources the scope reaches.
    pub resources: ResourceSet,
}

/// An encoded update, shared by every agent of one scope moving between the same versions.
#[derive(Clone, Debug)]
pub struct EncodedUpdate {
    /// The version it brings the agent to.
    pub version: Revision,
    /// Its nonce.
    pub nonce: Arc<str>,
    /// Whether it is a full update.
    pub full: bool,
    /// The encoded `ControlMessage`.
    pub bytes: Bytes,
}

type UpdateKey = (Revision, Arc<str>, Revision, Arc<str>);

/// The published snapshots and everything derived from them.
pub struct Views {
    current: watch::Sender<Arc<Snapshot>>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    recent: VecDeque<Arc<Snapshot>>,
    views: HashMap<(Revision, Arc<str>), Arc<ScopeView>>,
    updates: HashMap<UpdateKey, EncodedUpdate>,
}

impl Views {
    /// Views starting from `initial`.
    pub fn new(initial: Arc<Snapshot>) -> Self {
        let mut inner = Inner::default();
        inner.recent.push_back(initial.clone());
        Views {
            current: watch::Sender::new(initial),
            inner: Mutex::new(inner),
        }
    }

    /// The newest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.borrow().clone()
    }

    /// A receiver notified on every publish.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.current.subscribe()
    }

    /// Makes `snapshot` current. Versions never go backwards except on a resync that lists
    /// an older state than the one shown, which then replaces every retained version.
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        {
            let mut inner = self.lock();
            if inner
                .recent
                .back()
                .is_some_and(|last| last.version >= snapshot.version)
            {
                if inner
                    .recent
                    .back()
                    .is_some_and(|last| last.version == snapshot.version)
                {
                    return;
                }
                inner.recent.clear();
            }
            inner.recent.push_back(snapshot.clone());
            while inner.recent.len() > RETAINED_VERSIONS {
                inner.recent.pop_front();
            }
            let oldest = inner.recent.front().map(|s| s.version).unwrap_or_default();
            inner.views.retain(|(v, _), _| *v >= oldest);
            inner
                .updates
                .retain(|(from, _, to, _), _| *from >= oldest && *to >= oldest);
        }
        metrics::gauge!(crate::metrics::CONFIG_REVISION).set(snapshot.version as f64);
        self.current.send_replace(snapshot);
    }

    /// A retained snapshot of `version`, if still kept.
    pub fn at(&self, version: Revision) -> Option<Arc<Snapshot>> {
        self.lock()
            .recent
            .iter()
            .find(|s| s.version == version)
            .cloned()
    }

    /// How many retained versions lie strictly between `after` and `before`: the versions an
    /// agent skips when it moves from one to the other.
    pub fn versions_between(&self, after: Revision, before: Revision) -> usize {
        self.lock()
            .recent
            .iter()
            .filter(|s| s.version > after && s.version < before)
            .count()
    }

    /// The update bringing `node` from `from` (0 or a forgotten version: a full update) to the
    /// snapshot `to`.
    pub fn update(&self, node: &Node, from: Revision, to: &Arc<Snapshot>) -> EncodedUpdate {
        let base = if from == 0 { None } else { self.at(from) };
        let to_view = self.view(node, to);
        let from_view = base.map(|b| self.view(node, &b));
        let key: UpdateKey = match &from_view {
            Some(f) => (
                f.version,
                f.scope.clone(),
                to.version,
                to_view.scope.clone(),
            ),
            None => (0, Arc::from(""), to.version, to_view.scope.clone()),
        };
        if let Some(hit) = self.lock().updates.get(&key) {
            return hit.clone();
        }
        let encoded = encode(from_view.as_deref(), &to_view);
        self.lock().updates.insert(key, encoded.clone());
        encoded
    }

    /// The view of `node`'s scope in `snapshot`.
    pub fn view(&self, node: &Node, snapshot: &Snapshot) -> Arc<ScopeView> {
        let scope = scope_key(node, &snapshot.resources);
        let key = (snapshot.version, scope.clone());
        if let Some(hit) = self.lock().views.get(&key) {
            return hit.clone();
        }
        let roots = scope
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|name| ResourceKey::new(Kind::Listener, name));
        let view = Arc::new(ScopeView {
            version: snapshot.version,
            resources: reference::reachable(&snapshot.resources, roots),
            scope,
        });
        self.lock().views.insert(key, view.clone());
        view
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves only caches behind; keep using them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The names of the listeners whose selector matches `node`, sorted, joined by ','.
pub fn scope_key(node: &Node, set: &ResourceSet) -> Arc<str> {
    let names: Vec<&str> = set
        .of_kind(Kind::Listener)
        .filter(|r| match &r.spec {
            Some(resource::Spec::Listener(l)) => selects(l.selector.as_ref(), node),
            _ => false,
        })
        .map(|r| r.name.as_str())
        .collect();
    Arc::from(names.join(","))
}

/// Whether a listener selector matches a node. An absent or empty selector matches every node.
pub fn selects(selector: Option<&AgentSelector>, node: &Node) -> bool {
    let Some(s) = selector else { return true };
    (s.regions.is_empty() || s.regions.contains(&node.region))
        && (s.zones.is_empty() || s.zones.contains(&node.zone))
        && s.labels.iter().all(|(k, v)| node.labels.get(k) == Some(v))
}

/// Encodes the update from `from` (None: full) to `to`.
fn encode(from: Option<&ScopeView>, to: &ScopeView) -> EncodedUpdate {
    let mut update = Update {
        version: to.version,
        nonce: format!("{}:{}", to.version, from.map(|f| f.version).unwrap_or(0)),
        full: from.is_none(),
        ..Default::default()
    };
    match from {
        None => update.upserts = to.resources.iter().cloned().collect(),
        Some(from) => {
            update.upserts = to
                .resources
                .iter()
                .filter(|r| from.resources.get(r.kind(), &r.name) != Some(*r))
                .cloned()
                .collect();
            update.removals = from
                .resources
                .iter()
                .filter(|r| !to.resources.contains(r.kind(), &r.name))
                .map(|r| r.key())
                .collect();
        }
    }
    let nonce = Arc::from(update.nonce.as_str());
    let full = update.full;
    let message = ControlMessage {
        message: Some(control_message::Message::Update(update)),
    };
    EncodedUpdate {
        version: to.version,
        nonce,
        full,
        bytes: Bytes::from(message.encode_to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_every_non_empty_part() {
        let node = Node {
            id: "n".into(),
            region: "eu".into(),
            zone: "eu-1".into(),
            labels: labels(&[("role", "edge"), ("tier", "a")]),
            ..Default::default()
        };
        let selector = |regions: &[&str], zones: &[&str], l: &[(&str, &str)]| AgentSelector {
            regions: regions.iter().map(|s| s.to_string()).collect(),
            zones: zones.iter().map(|s| s.to_string()).collect(),
            labels: labels(l),
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
}
