//! Per-scope views of the config, the diffs between them, and the encoded-update cache.
//!
//! An agent's scope at a version is the set of listeners whose selector matches its node
//! ([`crate::scope`]); its view is those listeners and everything they reach, as pointers to the
//! snapshot's resources. Agents with the same scope share one view (cached per scope id and
//! version) and one encoded `ControlMessage` per (from, to) pair, so a change is encoded once
//! per scope however many agents receive it.
//!
//! A diff compares store revisions, not contents: a resource whose key has the same mod
//! revision in both views is the same resource, so a diff costs a walk over the two views'
//! keys plus the encoding of what changed.
//!
//! The last [`RETAINED_VERSIONS`] snapshots are kept so an agent that resumes from a recent
//! version gets a diff; anything older gets a full update.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use portico_api::pb::{self, ResourceKey, Update, resource::Spec};
use portico_api::{Kind, Resource, reference};
use prost::Message;
use prost::encoding::{self, WireType};
use tokio::sync::watch;

use crate::scope::{Scope, ScopeMemo};
use crate::snapshot::{Snapshot, Stored};
use crate::store::Revision;

/// How many recent versions are kept for resuming agents.
pub const RETAINED_VERSIONS: usize = 32;

/// Field numbers of `ControlMessage.update`, `Update.upserts`, `Update.removals` and
/// `Update.base_version`, for encoding resources straight from the snapshot without copying
/// them into an `Update`. prost writes fields in field-number order, so the head (fields 1–3)
/// comes first, then the resources, then the base version.
const CONTROL_UPDATE_FIELD: u32 = 1;
const UPSERTS_FIELD: u32 = 4;
const REMOVALS_FIELD: u32 = 5;
const BASE_VERSION_FIELD: u32 = 6;

/// One scope's resources at one version.
#[derive(Debug)]
pub struct ScopeView {
    /// The config version.
    pub version: Revision,
    /// The scope.
    pub scope: Arc<Scope>,
    /// The resources the scope reaches, by kind then name.
    pub resources: Vec<Arc<Stored>>,
    /// The services its clusters name, sorted: the ones whose endpoints its agents get.
    pub services: Arc<[String]>,
}

/// An encoded update, shared by every agent of one scope moving between the same versions.
#[derive(Clone, Debug)]
pub struct EncodedUpdate {
    /// The version it brings the agent to.
    pub version: Revision,
    /// The version it applies on (0: a full update).
    pub base_version: Revision,
    /// Its nonce.
    pub nonce: Arc<str>,
    /// Whether it is a full update.
    pub full: bool,
    /// The encoded `ControlMessage`.
    pub bytes: Bytes,
}

/// (from version, from scope id, to version, to scope id); 0, 0 for a full update.
type UpdateKey = (Revision, u64, Revision, u64);

/// The published snapshots and everything derived from them.
pub struct Views {
    current: watch::Sender<Arc<Snapshot>>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    recent: VecDeque<Arc<Snapshot>>,
    views: HashMap<(Revision, u64), Arc<ScopeView>>,
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
                inner.views.clear();
                inner.updates.clear();
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

    /// Keeps `snapshot`, older than the current one, among the retained versions (the revision
    /// before a canary rollout, rebuilt for the agents it does not pick) unless that version is
    /// retained already.
    pub fn keep(&self, snapshot: Arc<Snapshot>) {
        let mut inner = self.lock();
        if inner.recent.iter().any(|s| s.version == snapshot.version) {
            return;
        }
        let at = inner
            .recent
            .partition_point(|s| s.version < snapshot.version);
        inner.recent.insert(at, snapshot);
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

    /// The update bringing the agent of `memo` from `from` (0 or a forgotten version: a full
    /// update) to the snapshot `to`.
    pub fn update(
        &self,
        memo: &mut ScopeMemo,
        from: Revision,
        to: &Arc<Snapshot>,
    ) -> EncodedUpdate {
        let base = if from == 0 { None } else { self.at(from) };
        // The base first: it was the memo's last snapshot, so this is usually no lookup.
        let base = base.map(|b| {
            let scope = memo.scope(b.selectors());
            (b, scope)
        });
        let scope = memo.scope(to.selectors());
        let key: UpdateKey = match &base {
            Some((b, s)) => (b.version, s.id, to.version, scope.id),
            None => (0, 0, to.version, scope.id),
        };
        if let Some(hit) = self.lock().updates.get(&key) {
            return hit.clone();
        }
        let from_view = base.map(|(b, s)| self.view(&s, &b));
        let to_view = self.view(&scope, to);
        let encoded = encode(from_view.as_deref(), &to_view);
        self.lock().updates.insert(key, encoded.clone());
        encoded
    }

    /// The view of `scope` in `snapshot`.
    pub fn view(&self, scope: &Arc<Scope>, snapshot: &Snapshot) -> Arc<ScopeView> {
        let key = (snapshot.version, scope.id);
        if let Some(hit) = self.lock().views.get(&key) {
            return hit.clone();
        }
        let resources = reachable(snapshot, &scope.listeners);
        let view = Arc::new(ScopeView {
            version: snapshot.version,
            services: named_services(&resources),
            resources,
            scope: scope.clone(),
        });
        self.lock().views.insert(key, view.clone());
        view
    }

    /// The services the clusters in the view of `memo`'s node at `snapshot` name.
    pub fn named_services(&self, memo: &mut ScopeMemo, snapshot: &Snapshot) -> Arc<[String]> {
        let scope = memo.scope(snapshot.selectors());
        self.view(&scope, snapshot).services.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves only caches behind; keep using them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The resources of `snapshot` reachable from the listeners `roots`, roots included, by kind
/// then name, and every Consumer when an authentication policy is among them
/// ([`reference::reads_every_consumer`]). Missing roots and dangling references are skipped.
///
/// A Consumer's API key hashes go only where an `api_key_auth` policy is among them (it
/// identifies every key, to answer 403 rather than 401 for a consumer it does not allow);
/// elsewhere (a `jwt_auth` policy needs subjects and plans) the agent gets a copy without them.
fn reachable(snapshot: &Snapshot, roots: &[Arc<str>]) -> Vec<Arc<Stored>> {
    let mut seen: BTreeMap<(Kind, &str), &Arc<Stored>> = BTreeMap::new();
    let mut queue: VecDeque<(Kind, &str)> =
        roots.iter().map(|name| (Kind::Listener, &**name)).collect();
    let mut consumers = false;
    while let Some((kind, name)) = queue.pop_front() {
        if seen.contains_key(&(kind, name)) {
            continue;
        }
        let Some(stored) = snapshot.get(kind, name) else {
            continue;
        };
        seen.insert((kind, stored.resource.name.as_str()), stored);
        queue.extend(stored.refs.iter().map(|r| (r.kind(), r.name.as_str())));
        if !consumers && reference::reads_every_consumer(&stored.resource) {
            consumers = true;
            queue.extend(
                snapshot
                    .iter()
                    .filter(|s| s.resource.key().kind() == Kind::Consumer)
                    .map(|s| (Kind::Consumer, s.resource.name.as_str())),
            );
        }
    }
    let keys = seen.values().any(|s| {
        matches!(
            &s.resource.spec,
            Some(Spec::Policy(pb::Policy {
                policy: Some(pb::policy::Policy::ApiKeyAuth(_))
            }))
        )
    });
    seen.into_values()
        .map(|stored| match &stored.resource.spec {
            Some(Spec::Consumer(c)) if !c.api_keys.is_empty() && !keys => {
                Arc::new(without_keys(stored))
            }
            _ => stored.clone(),
        })
        .collect()
}

/// A copy of a Consumer without its API key hashes. Its revision is the negated store
/// revision: the same Consumer with and without keys are different resources to a diff, and
/// two copies of one stored Consumer are the same.
fn without_keys(stored: &Stored) -> Stored {
    let mut resource = stored.resource.clone();
    if let Some(Spec::Consumer(c)) = &mut resource.spec {
        c.api_keys.clear();
    }
    Stored {
        resource,
        revision: -stored.revision,
        version: stored.version,
        refs: stored.refs.clone(),
    }
}

/// The services the clusters among `resources` name, sorted and without repeats.
fn named_services(resources: &[Arc<Stored>]) -> Arc<[String]> {
    let names: std::collections::BTreeSet<&str> = resources
        .iter()
        .filter_map(|s| match &s.resource.spec {
            Some(Spec::Cluster(c)) if !c.service.is_empty() => Some(c.service.as_str()),
            _ => None,
        })
        .collect();
    names.into_iter().map(str::to_string).collect()
}

/// The order of [`ScopeView::resources`].
fn order(a: &Stored, b: &Stored) -> Ordering {
    (a.resource.kind(), &a.resource.name).cmp(&(b.resource.kind(), &b.resource.name))
}

/// What changed from `from` to `to`: the resources new or at another revision, and the keys
/// gone. Both lists are in view order.
fn diff<'a>(
    from: &'a [Arc<Stored>],
    to: &'a [Arc<Stored>],
) -> (Vec<&'a Resource>, Vec<ResourceKey>) {
    let mut upserts = Vec::new();
    let mut removals = Vec::new();
    let (mut old, mut new) = (from.iter().peekable(), to.iter().peekable());
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(o), None) => {
                removals.push(o.resource.key());
                old.next();
            }
            (None, Some(n)) => {
                upserts.push(&n.resource);
                new.next();
            }
            (Some(o), Some(n)) => match order(o, n) {
                Ordering::Less => {
                    removals.push(o.resource.key());
                    old.next();
                }
                Ordering::Greater => {
                    upserts.push(&n.resource);
                    new.next();
                }
                Ordering::Equal => {
                    if o.revision != n.revision {
                        upserts.push(&n.resource);
                    }
                    old.next();
                    new.next();
                }
            },
        }
    }
    (upserts, removals)
}

/// Encodes the update from `from` (None: full) to `to`. The bytes are exactly prost's encoding
/// of the `ControlMessage`; only the resources are written from where they are stored instead
/// of being copied into an `Update` first.
fn encode(from: Option<&ScopeView>, to: &ScopeView) -> EncodedUpdate {
    let (upserts, removals) = match from {
        None => (
            to.resources.iter().map(|s| &s.resource).collect(),
            Vec::new(),
        ),
        Some(from) => diff(&from.resources, &to.resources),
    };
    // One stream never gets two updates to the same version (it only moves to newer ones, or
    // once to an older full update when it claimed a version this replica does not have), so
    // the version alone is a nonce unique on the stream, and the same for every agent sharing
    // these bytes.
    let head = Update {
        version: to.version,
        nonce: to.version.to_string(),
        full: from.is_none(),
        ..Default::default()
    };
    let base_version = from.map(|f| f.version).unwrap_or(0);
    // proto3 leaves a zero scalar out.
    let tail_len = if base_version == 0 {
        0
    } else {
        encoding::int64::encoded_len(BASE_VERSION_FIELD, &base_version)
    };
    let len = head.encoded_len()
        + tail_len
        + upserts
            .iter()
            .map(|r| encoding::message::encoded_len(UPSERTS_FIELD, *r))
            .sum::<usize>()
        + removals
            .iter()
            .map(|k| encoding::message::encoded_len(REMOVALS_FIELD, k))
            .sum::<usize>();
    let mut buf = Vec::with_capacity(len + encoding::key_len(CONTROL_UPDATE_FIELD) + 10);
    encoding::encode_key(CONTROL_UPDATE_FIELD, WireType::LengthDelimited, &mut buf);
    encoding::encode_varint(len as u64, &mut buf);
    head.encode_raw(&mut buf);
    for resource in upserts {
        encoding::message::encode(UPSERTS_FIELD, resource, &mut buf);
    }
    for key in &removals {
        encoding::message::encode(REMOVALS_FIELD, key, &mut buf);
    }
    if base_version != 0 {
        encoding::int64::encode(BASE_VERSION_FIELD, &base_version, &mut buf);
    }
    EncodedUpdate {
        version: to.version,
        base_version,
        nonce: Arc::from(head.nonce.as_str()),
        full: head.full,
        bytes: Bytes::from(buf),
    }
}

#[cfg(test)]
mod tests {
    use portico_api::pb::{
        AgentSelector, Cluster, ControlMessage, Listener, Node, RouteAction, RouteTable,
        VirtualHost, control_message, resource::Spec, route_action,
    };

    use super::*;

    fn named(name: &str, spec: Spec) -> Resource {
        Resource {
            name: name.into(),
            spec: Some(spec),
            ..Default::default()
        }
    }

    /// A listener for `regions` (all when empty) routed by `table`.
    fn listener(name: &str, table: &str, regions: &[&str]) -> Resource {
        named(
            name,
            Spec::Listener(Listener {
                route_table: table.into(),
                selector: Some(AgentSelector {
                    regions: regions.iter().map(|r| r.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        )
    }

    /// A route table of one route per cluster; `tag` names the first route.
    fn table(name: &str, clusters: &[&str], tag: &str) -> Resource {
        let routes = clusters
            .iter()
            .enumerate()
            .map(|(i, c)| portico_api::pb::Route {
                name: format!("{tag}{i}"),
                action: Some(RouteAction {
                    action: Some(route_action::Action::Cluster(c.to_string())),
                }),
                ..Default::default()
            })
            .collect();
        named(
            name,
            Spec::RouteTable(RouteTable {
                virtual_hosts: vec![VirtualHost {
                    name: "all".into(),
                    domains: vec!["*".into()],
                    routes,
                }],
            }),
        )
    }

    fn cluster(name: &str) -> Resource {
        named(name, Spec::Cluster(Cluster::default()))
    }

    fn node(id: usize, region: &str) -> Node {
        Node {
            id: format!("n{id}"),
            region: region.into(),
            zone: format!("{region}-{}", id % 3),
            ..Default::default()
        }
    }

    /// The base config at revision 10: a listener for every agent and one for "eu".
    fn base() -> Vec<(Resource, Revision)> {
        vec![
            (listener("all", "global", &[]), 10),
            (table("global", &["shared"], "a"), 10),
            (cluster("shared"), 10),
            (listener("eu-only", "eu-table", &["eu"]), 10),
            (table("eu-table", &["eu-cluster"], "a"), 10),
            (cluster("eu-cluster"), 10),
        ]
    }

    /// `base()` at revision 10, then each of `changes` (the resources put at its revision and
    /// the names deleted) published in turn.
    fn history(changes: &[(Revision, Vec<Resource>, &[&str])]) -> (Views, Vec<Arc<Snapshot>>) {
        let mut resources = base();
        let snapshot = |version: Revision, resources: &[(Resource, Revision)]| {
            let stored = resources
                .iter()
                .map(|(r, at)| Stored::new(r.clone(), *at, *at));
            Arc::new(Snapshot::new(version, stored))
        };
        let mut snapshots = vec![snapshot(10, &resources)];
        let views = Views::new(snapshots[0].clone());
        for (version, puts, deletes) in changes {
            resources.retain(|(r, _)| {
                !deletes.contains(&r.name.as_str()) && puts.iter().all(|p| p.key() != r.key())
            });
            resources.extend(puts.iter().map(|r| (r.clone(), *version)));
            let snapshot = snapshot(*version, &resources);
            views.publish(snapshot.clone());
            snapshots.push(snapshot);
        }
        (views, snapshots)
    }

    fn decode(update: &EncodedUpdate) -> Update {
        match ControlMessage::decode(update.bytes.clone()).map(|m| m.message) {
            Ok(Some(control_message::Message::Update(u))) => u,
            other => panic!("not an update: {other:?}"),
        }
    }

    fn names(update: &Update) -> (Vec<String>, Vec<String>) {
        (
            update.upserts.iter().map(|r| r.key().to_string()).collect(),
            update.removals.iter().map(|k| k.to_string()).collect(),
        )
    }

    #[test]
    fn agents_in_one_region_share_one_scope_view_and_encoding() {
        let (views, snapshots) = history(&[]);
        let snapshot = &snapshots[0];
        let mut updates = Vec::new();
        for i in 0..60 {
            let mut memo = ScopeMemo::new(&node(i, ["eu", "us"][i % 2]));
            let scope = memo.scope(snapshot.selectors());
            updates.push((i % 2, scope.clone(), views.update(&mut memo, 0, snapshot)));
        }
        // 2 regions × 3 zones: 6 identities computed, for 60 agents.
        assert_eq!(snapshot.selectors().computed(), 6);
        for region in 0..2 {
            let mut same = updates.iter().filter(|(r, _, _)| *r == region);
            let (_, scope, update) = same.next().expect("agents in region");
            let view = views.view(scope, snapshot);
            for (_, s, u) in same {
                assert!(Arc::ptr_eq(s, scope), "one scope per region");
                assert!(
                    Arc::ptr_eq(&views.view(s, snapshot), &view),
                    "one view per region"
                );
                assert_eq!(
                    u.bytes.as_ptr(),
                    update.bytes.as_ptr(),
                    "one encoding per region"
                );
            }
        }
        let eu = decode(&updates[0].2);
        assert!(eu.full);
        assert_eq!(
            names(&eu).0,
            [
                "Listener/all",
                "Listener/eu-only",
                "RouteTable/eu-table",
                "RouteTable/global",
                "Cluster/eu-cluster",
                "Cluster/shared",
            ]
        );
        let us = decode(&updates[1].2);
        assert_eq!(
            names(&us).0,
            ["Listener/all", "RouteTable/global", "Cluster/shared"]
        );
    }

    #[test]
    fn a_diff_holds_only_the_resources_whose_revision_changed() {
        // At 11 "global" changes, "extra" is added and "eu-cluster" deleted; every other
        // resource is rebuilt (new objects, as after a re-list) at its old revision. At 12 only
        // a resource no agent reaches is added.
        let (views, snapshots) = history(&[
            (
                11,
                vec![table("global", &["shared", "extra"], "b"), cluster("extra")],
                &["eu-cluster"],
            ),
            (12, vec![cluster("unused")], &[]),
        ]);
        let shared = |s: &Snapshot| s.get(Kind::Cluster, "shared").cloned().expect("shared");
        assert!(!Arc::ptr_eq(&shared(&snapshots[0]), &shared(&snapshots[1])));

        let mut eu = ScopeMemo::new(&node(0, "eu"));
        let update = decode(&views.update(&mut eu, 10, &snapshots[1]));
        assert!(!update.full);
        assert_eq!((update.version, update.base_version), (11, 10));
        assert_eq!(
            names(&update),
            (
                vec!["RouteTable/global".to_string(), "Cluster/extra".to_string()],
                vec!["Cluster/eu-cluster".to_string()],
            )
        );

        // Nothing an agent gets changed revision: an empty diff, still to the new version.
        let mut us = ScopeMemo::new(&node(1, "us"));
        let update = decode(&views.update(&mut us, 11, &snapshots[2]));
        assert_eq!(update.version, 12);
        assert_eq!(names(&update), (vec![], vec![]));
    }

    #[test]
    fn a_listener_change_recomputes_scopes_and_each_agent_gets_its_diff() {
        let us_listener = listener("us-only", "us-table", &["us"]);
        let us_table = table("us-table", &["shared"], "a");
        let (views, snapshots) = history(&[(11, vec![us_listener, us_table], &[])]);
        let (before, after) = (&snapshots[0], &snapshots[1]);

        let mut eu = ScopeMemo::new(&node(0, "eu"));
        let mut us = ScopeMemo::new(&node(1, "us"));
        for memo in [&mut eu, &mut us] {
            views.update(memo, 0, before);
        }
        let eu_update = decode(&views.update(&mut eu, 10, after));
        let us_update = decode(&views.update(&mut us, 10, after));
        assert_eq!(
            after.selectors().computed(),
            2,
            "each identity once under the new selectors"
        );
        assert_eq!(names(&eu_update), (vec![], vec![]));
        assert_eq!(
            names(&us_update),
            (
                vec![
                    "Listener/us-only".to_string(),
                    "RouteTable/us-table".to_string()
                ],
                vec![],
            )
        );
        let scope = |memo: &mut ScopeMemo| -> Vec<String> {
            memo.scope(after.selectors())
                .listeners
                .iter()
                .map(|n| n.to_string())
                .collect()
        };
        assert_eq!(scope(&mut us), ["all", "us-only"]);
        assert_eq!(scope(&mut eu), ["all", "eu-only"]);
    }

    #[test]
    fn a_view_names_the_services_of_the_clusters_its_agents_get() {
        let with_service = |name: &str, service: &str| {
            named(
                name,
                Spec::Cluster(Cluster {
                    service: service.into(),
                    ..Default::default()
                }),
            )
        };
        let (views, snapshots) = history(&[(
            11,
            vec![
                with_service("shared", "api"),
                with_service("eu-cluster", "api"),
                table("eu-table", &["eu-cluster", "eu-db"], "a"),
                with_service("eu-db", "db"),
                with_service("unused", "cache"),
            ],
            &[],
        )]);
        let mut eu = ScopeMemo::new(&node(0, "eu"));
        let mut us = ScopeMemo::new(&node(1, "us"));
        assert!(views.named_services(&mut eu, &snapshots[0]).is_empty());
        assert_eq!(*views.named_services(&mut eu, &snapshots[1]), ["api", "db"]);
        assert_eq!(*views.named_services(&mut us, &snapshots[1]), ["api"]);
    }

    fn policy(name: &str, policy: pb::policy::Policy) -> Resource {
        named(
            name,
            Spec::Policy(pb::Policy {
                policy: Some(policy),
            }),
        )
    }

    fn consumer(name: &str) -> Resource {
        named(
            name,
            Spec::Consumer(pb::Consumer {
                api_keys: vec![pb::ApiKey {
                    id: "key-1".into(),
                    sha256: "ab".repeat(32),
                }],
                jwt_subjects: vec![format!("{name}@example.com")],
                ..Default::default()
            }),
        )
    }

    /// The listener `all`, guarded by `policies`, and three consumers.
    fn guarded(policies: Vec<Resource>) -> Vec<Resource> {
        let names: Vec<String> = policies.iter().map(|p| p.name.clone()).collect();
        let mut all = listener("all", "global", &[]);
        if let Some(Spec::Listener(l)) = &mut all.spec {
            l.policies = names;
        }
        let mut out = vec![all, consumer("a"), consumer("b"), consumer("c")];
        out.extend(policies);
        out
    }

    /// The consumers an agent gets at the snapshot, and whether each has its key hashes.
    fn consumers(views: &Views, snapshot: &Arc<Snapshot>) -> Vec<(String, bool)> {
        let mut memo = ScopeMemo::new(&node(1, "us"));
        let update = decode(&views.update(&mut memo, 0, snapshot));
        update
            .upserts
            .iter()
            .filter_map(|r| match &r.spec {
                Some(Spec::Consumer(c)) => Some((r.name.clone(), !c.api_keys.is_empty())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn consumer_key_hashes_go_only_where_an_api_key_policy_needs_them() {
        use pb::policy::Policy;
        let keyed = |consumers: &[&str]| {
            Policy::ApiKeyAuth(pb::ApiKeyAuth {
                consumers: consumers.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            })
        };
        let jwt = |consumers: &[&str]| {
            Policy::JwtAuth(pb::JwtAuth {
                consumers: consumers.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            })
        };
        let (views, snapshots) = history(&[
            // No policy: no consumer.
            (11, guarded(vec![]), &[]),
            // API keys of two named consumers: every consumer's hashes, so that the others
            // get 403, not 401.
            (12, guarded(vec![policy("keys", keyed(&["a", "b"]))]), &[]),
            // Any valid JWT: every consumer, for subjects and plans, without key hashes.
            (13, guarded(vec![policy("keys", jwt(&[]))]), &[]),
            // Any API key: every consumer with its hashes.
            (14, guarded(vec![policy("keys", keyed(&[]))]), &[]),
            // JWTs for any consumer, API keys of one: every consumer with its hashes.
            (
                15,
                guarded(vec![policy("keys", keyed(&["c"])), policy("jwt", jwt(&[]))]),
                &[],
            ),
        ]);
        let owned = |v: &[(&str, bool)]| -> Vec<(String, bool)> {
            v.iter().map(|(n, k)| (n.to_string(), *k)).collect()
        };
        assert_eq!(consumers(&views, &snapshots[1]), owned(&[]));
        assert_eq!(
            consumers(&views, &snapshots[2]),
            owned(&[("a", true), ("b", true), ("c", true)])
        );
        assert_eq!(
            consumers(&views, &snapshots[3]),
            owned(&[("a", false), ("b", false), ("c", false)])
        );
        assert_eq!(
            consumers(&views, &snapshots[4]),
            owned(&[("a", true), ("b", true), ("c", true)])
        );
        assert_eq!(
            consumers(&views, &snapshots[5]),
            owned(&[("a", true), ("b", true), ("c", true)])
        );
        // Hashes coming and going are changes to the agent, though the Consumers are not.
        let (views, snapshots) = history(&[
            (11, guarded(vec![policy("keys", jwt(&[]))]), &[]),
            (12, vec![policy("keys", keyed(&[]))], &[]),
            (13, vec![policy("keys", jwt(&[]))], &[]),
        ]);
        let mut memo = ScopeMemo::new(&node(1, "us"));
        views.update(&mut memo, 0, &snapshots[1]);
        for (from, to) in [(11, 2), (12, 3)] {
            let update = decode(&views.update(&mut memo, from, &snapshots[to]));
            assert_eq!(
                names(&update).0,
                ["Policy/keys", "Consumer/a", "Consumer/b", "Consumer/c"],
                "{from}"
            );
        }
    }

    #[test]
    fn agents_with_an_authentication_policy_get_every_consumer() {
        let consumer =
            |name: &str| named(name, Spec::Consumer(portico_api::pb::Consumer::default()));
        let keys = named(
            "keys",
            Spec::Policy(portico_api::pb::Policy {
                policy: Some(portico_api::pb::policy::Policy::ApiKeyAuth(
                    Default::default(),
                )),
            }),
        );
        let eu_listener = Resource {
            spec: match listener("eu-only", "eu-table", &["eu"]).spec {
                Some(Spec::Listener(l)) => Some(Spec::Listener(Listener {
                    policies: vec!["keys".into()],
                    ..l
                })),
                other => other,
            },
            ..listener("eu-only", "eu-table", &["eu"])
        };
        let (views, snapshots) = history(&[(
            11,
            vec![consumer("ann"), consumer("bob"), keys, eu_listener],
            &[],
        )]);
        let consumers = |region: &str| {
            let scope = ScopeMemo::new(&node(0, region)).scope(snapshots[1].selectors());
            views
                .view(&scope, &snapshots[1])
                .resources
                .iter()
                .filter(|s| s.resource.key().kind() == Kind::Consumer)
                .map(|s| s.resource.name.clone())
                .collect::<Vec<_>>()
        };
        // The policy names no consumer; it still identifies every one.
        assert_eq!(consumers("eu"), ["ann", "bob"]);
        assert!(consumers("us").is_empty());
    }

    #[test]
    fn encodings_are_exactly_prost_encodings() {
        let (views, snapshots) =
            history(&[(11, vec![table("global", &["shared"], "b")], &["eu-cluster"])]);
        let mut memo = ScopeMemo::new(&node(0, "eu"));
        for from in [0, 10] {
            let update = views.update(&mut memo, from, &snapshots[1]);
            let decoded = decode(&update);
            assert_eq!(decoded.base_version, from);
            assert!(!decoded.upserts.is_empty());
            assert_eq!(from == 0, decoded.removals.is_empty());
            let reencoded = ControlMessage {
                message: Some(control_message::Message::Update(decoded)),
            }
            .encode_to_vec();
            assert_eq!(update.bytes.as_ref(), reencoded.as_slice(), "from {from}");
        }
    }
}
