//! Leader election and the replicas' presence in the store.
//!
//! Every replica holds one lease ([`LEASE_TTL`], refreshed every [`KEEP_ALIVE_EVERY`]) and
//! writes its [`ReplicaRecord`] on it every [`HEARTBEAT_EVERY`] (`replicas/<id>`, what
//! `portico status` lists). With the same lease it campaigns for `meta/leader`: a transaction
//! that creates the key only where it is absent. The replica that creates it leads until its
//! lease ends; the others watch the key and campaign again when it goes (the leader resigned,
//! or its lease expired). On the embedded store there is one replica (its directory is
//! locked), which leads at once.
//!
//! The leader does the fleet's singleton work (`registry` expiry, history pruning, usage
//! rollups and deletions, ended budget windows), each step holding a [`Term`]. Two fences keep
//! a deposed leader from overlapping its successor:
//! - in time: a leader that has not had a keep-alive answered for [`STEP_DOWN_AFTER`] (less
//!   than the TTL, counted from when the keep-alive was *sent*, so before the store can expire
//!   the lease) ends its term and cancels the work in flight; the successor can only be
//!   elected once the store expired the lease;
//! - in the store: every singleton write compares the leader key's mod revision with the one
//!   its term was elected at ([`Term::fence`]), so a write that arrives late (a stalled
//!   process, a slow network) is refused by the store.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use portico_api::pb::{ReplicaRecord, StatusResponse};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::keys::{self, Keys};
use crate::metered::MeteredStore;
use crate::metrics::LEADER;
use crate::registry::{Registry, timestamp};
use crate::store::{
    Change, Compare, LeaseId, Op, Revision, Store, StoreError, Txn, TxnOutcome, WatchEvent,
};
use crate::views::Views;

/// The election lease's time to live: leadership moves within this long of the leader's death.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the lease is refreshed.
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(2);
/// How long a leader keeps its term without an answered keep-alive: the TTL less a margin for
/// the keep-alive's travel and the two clocks' drift.
pub const STEP_DOWN_AFTER: Duration = Duration::from_secs(7);
/// How often a replica rewrites its record.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How long a store call of the election may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// One leader's term: held by singleton work while it runs.
#[derive(Clone, Debug)]
pub struct Term {
    key: String,
    /// The store revision the leader key was created at.
    pub revision: Revision,
    /// Cancelled when the term ends.
    pub ended: CancellationToken,
}

impl Term {
    /// Runs `work` within this term: `None` when the term ended first (the work is dropped).
    pub async fn run<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.ended.cancelled() => None,
            done = work => Some(done),
        }
    }

    /// The compare that makes a write happen only while this term lasts.
    pub fn fence(&self) -> Compare {
        Compare::ModRevision {
            key: self.key.clone(),
            revision: self.revision,
        }
    }
}

/// This replica's view of the election.
pub struct Leadership {
    term: watch::Sender<Option<Term>>,
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership {
            term: watch::channel(None).0,
        }
    }
}

impl Leadership {
    /// The current term, while this replica leads.
    pub fn term(&self) -> Option<Term> {
        self.term.borrow().clone()
    }

    /// Whether this replica leads.
    pub fn is_leader(&self) -> bool {
        self.term.borrow().is_some()
    }

    /// Runs `step` every `every` while this replica leads, until `cancel`: the first step at
    /// once when a term begins; a step is cut short when the term ends.
    pub async fn while_leading<F, Fut>(
        &self,
        every: Duration,
        cancel: CancellationToken,
        mut step: F,
    ) where
        F: FnMut(Term) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut terms = self.term.subscribe();
        loop {
            let Some(term) = terms.borrow_and_update().clone() else {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = terms.changed() => match changed {
                        Ok(()) => continue,
                        Err(_) => return,
                    },
                }
            };
            term.run(step(term.clone())).await;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = term.ended.cancelled() => {}
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    fn begin(&self, term: Term) {
        tracing::info!(revision = term.revision, "elected leader");
        metrics::gauge!(LEADER).set(1.0);
        self.term.send_replace(Some(term));
    }

    fn end(&self, why: &str) {
        if let Some(term) = self.term.send_replace(None) {
            term.ended.cancel();
            metrics::gauge!(LEADER).set(0.0);
            tracing::warn!(reason = why, "leadership ended");
        }
    }
}

/// One replica's part in the election, and its record.
pub struct Election {
    store: MeteredStore,
    keys: Keys,
    /// This replica's id.
    pub replica: String,
    address: String,
    /// The embedded store: this replica is the only one, and leads without a contest.
    exclusive: bool,
    registry: Arc<Registry>,
    views: Arc<Views>,
    leadership: Arc<Leadership>,
    started: SystemTime,
    /// How long the last record write took, in milliseconds.
    latency_ms: AtomicU64,
}

/// Who a replica is, for its record.
pub struct Replica {
    /// `--replica-id`.
    pub id: String,
    /// The gRPC address.
    pub address: String,
    /// Whether its store is the embedded one (it is then the only replica).
    pub exclusive: bool,
}

impl Election {
    /// The election of `replica`, reporting through `leadership`.
    pub fn new(
        store: MeteredStore,
        keys: Keys,
        replica: Replica,
        registry: Arc<Registry>,
        views: Arc<Views>,
        leadership: Arc<Leadership>,
    ) -> Self {
        Election {
            store,
            keys,
            replica: replica.id,
            address: replica.address,
            exclusive: replica.exclusive,
            registry,
            views,
            leadership,
            started: SystemTime::now(),
            latency_ms: AtomicU64::new(0),
        }
    }

    /// This replica's record as of now.
    pub fn record(&self) -> ReplicaRecord {
        ReplicaRecord {
            id: self.replica.clone(),
            address: self.address.clone(),
            started: Some(timestamp(self.started)),
            heartbeat: Some(timestamp(SystemTime::now())),
            agents: self.registry.connected() as u64,
            config_revision: self.views.current().version,
            store_reachable: self.store.is_reachable(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            store_latency_ms: self.latency_ms.load(Ordering::Relaxed).min(u32::MAX as u64) as u32,
        }
    }

    /// What `portico status` shows: every replica's record (this one's from memory), and the
    /// leader; this replica alone when the store does not answer.
    pub async fn status(&self) -> StatusResponse {
        let own = self.record();
        let listed = timed(self.store.list(&self.keys.replicas_prefix())).await;
        let leader = timed(self.store.get(&self.keys.leader())).await;
        let (mut replicas, leader, reachable) = match (listed, leader) {
            (Ok((kvs, _)), Ok(leader)) => {
                let replicas = kvs
                    .iter()
                    .filter_map(|kv| keys::decode::<ReplicaRecord>(&kv.key, &kv.value).ok())
                    .filter(|r| r.id != own.id)
                    .collect();
                let leader = leader.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                (replicas, leader.unwrap_or_default(), true)
            }
            _ => (Vec::new(), String::new(), false),
        };
        replicas.push(own);
        replicas.sort_by(|a, b| a.id.cmp(&b.id));
        StatusResponse {
            replicas,
            leader,
            answered_by: self.replica.clone(),
            store_reachable: reachable && self.store.is_reachable(),
            config_revision: self.views.current().version,
        }
    }

    /// Runs until `cancel`: keeps the lease and the record, campaigns, leads. On the way out
    /// the lease is revoked, so the leadership moves at once.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        metrics::gauge!(LEADER).set(0.0);
        let mut backoff =
            portico_api::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        while !cancel.is_cancelled() {
            let lease = match timed(self.store.lease_grant(LEASE_TTL)).await {
                Ok(lease) => lease,
                Err(e) => {
                    tracing::warn!(error = %e, "granting the election lease failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(backoff.next_delay()) => continue,
                    }
                }
            };
            backoff.reset();
            let why = self.hold(lease, &cancel).await;
            self.leadership.end(why);
            // Best effort: a lease we gave up on may still live in the store.
            let _ = timed(self.store.lease_revoke(lease)).await;
        }
        self.leadership.end("shutting down");
    }

    /// Holds `lease` until it is lost or `cancel`: refreshes it, writes the record, campaigns
    /// and watches the leader key. Returns why it stopped.
    async fn hold(&self, lease: LeaseId, cancel: &CancellationToken) -> &'static str {
        let leader_key = self.keys.leader();
        let mut last_answered = Instant::now();
        let mut tick = tokio::time::interval(KEEP_ALIVE_EVERY.min(HEARTBEAT_EVERY));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The leader key's watch while another replica leads: its deletion calls a campaign.
        let mut watch: Option<crate::store::WatchStream> = None;
        let mut campaign = true;
        loop {
            if campaign {
                campaign = false;
                match self.campaign(lease, &leader_key).await {
                    Ok(Some(term)) => self.leadership.begin(term),
                    Ok(None) => {
                        watch = self.watch_leader(&leader_key).await;
                        if watch.is_none() {
                            campaign = true;
                        }
                    }
                    Err(StoreError::LeaseNotFound(_)) => return "the election lease expired",
                    Err(e) => {
                        tracing::warn!(error = %e, "campaigning failed; retrying");
                        campaign = true;
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return "shutting down",
                _ = tick.tick() => {}
                event = next_event(&mut watch) => {
                    campaign = match event {
                        // The leader key is gone: its lease ended.
                        Some(Ok(WatchEvent::Changes(changes))) => changes
                            .iter()
                            .any(|c| matches!(c, Change::Delete { .. })),
                        // The watch broke or was compacted: look again.
                        _ => true,
                    };
                    if campaign {
                        watch = None;
                    }
                    continue;
                }
            }
            let sent = Instant::now();
            match timed(self.store.lease_keep_alive(lease)).await {
                Ok(()) => last_answered = sent,
                Err(StoreError::LeaseNotFound(_)) => return "the election lease expired",
                Err(e) => {
                    // A call cut short by the timeout never reports itself: readiness hears
                    // of it here.
                    self.store.mark_unreachable();
                    tracing::warn!(error = %e, "refreshing the election lease failed");
                }
            }
            if last_answered.elapsed() >= STEP_DOWN_AFTER {
                return "no keep-alive answered in time (store unreachable)";
            }
            let record = self.record();
            let began = Instant::now();
            let put = Txn {
                compares: Vec::new(),
                ops: vec![Op::Put {
                    key: self.keys.replica(&self.replica),
                    value: keys::encode(&record),
                    lease: Some(lease),
                }],
            };
            match timed(self.store.txn(put)).await {
                Ok(_) => self
                    .latency_ms
                    .store(began.elapsed().as_millis() as u64, Ordering::Relaxed),
                Err(e) => tracing::debug!(error = %e, "writing this replica's record failed"),
            }
        }
    }

    /// One campaign: the term when this replica won, `None` when another leads.
    async fn campaign(&self, lease: LeaseId, key: &str) -> Result<Option<Term>, StoreError> {
        let compares = if self.exclusive {
            Vec::new()
        } else {
            vec![Compare::ModRevision {
                key: key.to_string(),
                revision: 0,
            }]
        };
        let txn = Txn {
            compares,
            ops: vec![Op::Put {
                key: key.to_string(),
                value: self.replica.clone().into_bytes(),
                lease: Some(lease),
            }],
        };
        match timed(self.store.txn(txn)).await? {
            TxnOutcome::Committed(revision) => Ok(Some(Term {
                key: key.to_string(),
                revision,
                ended: CancellationToken::new(),
            })),
            TxnOutcome::Conflict(_) => Ok(None),
        }
    }

    /// Watches the leader key from its current revision; `None` when that failed or the key
    /// is already gone (campaign again).
    async fn watch_leader(&self, key: &str) -> Option<crate::store::WatchStream> {
        let current = timed(self.store.get(key)).await.ok()??;
        timed(self.store.watch(key, current.mod_revision + 1))
            .await
            .ok()
    }
}

async fn next_event(
    watch: &mut Option<crate::store::WatchStream>,
) -> Option<Result<WatchEvent, StoreError>> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// A store call that fails as unavailable after [`CALL_TIMEOUT`].
async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "no answer within {CALL_TIMEOUT:?}"
            )))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;
    use crate::store::embedded::EmbeddedStore;

    /// Two contenders on one store (as replicas on one etcd would be).
    fn contender(store: &MeteredStore, id: &str) -> (Arc<Election>, Arc<Leadership>) {
        let registry = Arc::new(Registry::new(
            store.clone(),
            Keys::default(),
            id.into(),
            crate::config::DEFAULT_AGENT_EXPIRY,
        ));
        let views = Arc::new(Views::new(Arc::new(Snapshot::default())));
        let leadership = Arc::new(Leadership::default());
        let replica = Replica {
            id: id.into(),
            address: "127.0.0.1:7000".into(),
            exclusive: false,
        };
        let election = Election::new(
            store.clone(),
            Keys::default(),
            replica,
            registry,
            views,
            leadership.clone(),
        );
        (Arc::new(election), leadership)
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        for _ in 0..200 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn one_contender_leads_and_a_resigned_leaders_fence_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = MeteredStore::new(Arc::new(EmbeddedStore::open(dir.path()).unwrap()));
        let (a, a_leads) = contender(&store, "cp-a");
        let (b, b_leads) = contender(&store, "cp-b");
        let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
        let running_a = tokio::spawn(a.clone().run(stop_a.clone()));
        until("cp-a to lead", || a_leads.is_leader()).await;
        let running_b = tokio::spawn(b.clone().run(stop_b.clone()));
        let mut status = b.status().await;
        for _ in 0..200 {
            if status.replicas.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            status = b.status().await;
        }
        assert_eq!(status.leader, "cp-a");
        assert!(!b_leads.is_leader());
        let term = a_leads.term().unwrap();
        let ids: Vec<&str> = status.replicas.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["cp-a", "cp-b"]);

        // cp-a shuts down: its term ends, its lease goes, cp-b leads at once.
        stop_a.cancel();
        running_a.await.unwrap();
        assert!(term.ended.is_cancelled());
        until("cp-b to lead", || b_leads.is_leader()).await;
        let late = Txn {
            compares: vec![term.fence()],
            ops: vec![Op::Put {
                key: "/late-singleton-write".into(),
                value: Vec::new(),
                lease: None,
            }],
        };
        assert!(matches!(
            store.txn(late).await.unwrap(),
            TxnOutcome::Conflict(_)
        ));
        let current = b_leads.term().unwrap();
        let fenced = Txn {
            compares: vec![current.fence()],
            ops: vec![Op::Put {
                key: "/singleton-write".into(),
                value: Vec::new(),
                lease: None,
            }],
        };
        assert!(matches!(
            store.txn(fenced).await.unwrap(),
            TxnOutcome::Committed(_)
        ));
        stop_b.cancel();
        running_b.await.unwrap();
    }
}
