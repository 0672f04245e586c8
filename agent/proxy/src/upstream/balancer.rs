//! Choosing an endpoint for a request: which endpoints are available (health, ejections), how
//! traffic splits over locality tiers, and each policy's pick within a tier.
//!
//! What is available is an immutable [`Availability`], shared by the workers and rebuilt only
//! when an endpoint's state changes (a health check flips, an ejection starts or ends). The
//! pick itself uses state each worker keeps for itself (round-robin cursors, weighted
//! schedules, in-flight counts), so a request touches no cache line another core writes.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;

use super::endpoint::{Endpoint, Locality, now_ms};
use super::hash::{Maglev, Ring};
use crate::workers;

/// How an endpoint is chosen within a tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Smooth weighted round robin: each endpoint's turns spaced evenly, in proportion to its
    /// weight (plain round robin when the weights are equal).
    RoundRobin,
    /// Power of two choices: of two endpoints drawn at random by weight, the one with fewer
    /// requests in flight on this worker.
    LeastRequest,
    /// Ketama-style consistent hashing of the request's key.
    RingHash,
    /// Maglev consistent hashing of the request's key.
    Maglev,
}

impl Policy {
    fn hashes(self) -> bool {
        matches!(self, Policy::RingHash | Policy::Maglev)
    }
}

/// Locality-aware balancing: the agent's own place and the share of healthy endpoints below
/// which a tier spills traffic to the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tiering {
    /// Where the agent runs.
    pub local: Locality,
    /// Failover threshold in percent, 1–100.
    pub threshold: u32,
}

/// The endpoints that can take requests now, by locality tier.
#[derive(Debug)]
pub struct Availability {
    tiers: Vec<Tier>,
    /// Cumulative share of requests per tier, out of [`SHARES`]; the last is `SHARES`.
    cumulative: Vec<u32>,
    /// No endpoint is available, so every endpoint takes requests.
    pub panic: bool,
    /// Whether each endpoint (by index) is available.
    usable: Vec<bool>,
    /// The [`now_ms`] at which an ejection ends and this must be rebuilt; `u64::MAX` if none.
    expires_at: u64,
}

/// Request shares are counted out of this.
const SHARES: u32 = 10_000;

#[derive(Debug)]
struct Tier {
    /// Endpoint indices.
    members: Vec<u32>,
    /// Their weights.
    weights: Vec<u32>,
    /// Running sums of `weights`, for weighted random draws.
    cumulative: Vec<u64>,
    equal: bool,
    table: Table,
}

#[derive(Debug)]
enum Table {
    None,
    Ring(Ring),
    Maglev(Maglev),
}

impl Availability {
    /// What `endpoints` can take now, for `policy`, tiered by locality when `tiering` is set.
    pub fn build(endpoints: &[Arc<Endpoint>], policy: Policy, tiering: Option<&Tiering>) -> Self {
        let now = now_ms();
        let usable: Vec<bool> = endpoints
            .iter()
            .map(|e| e.is_healthy() && !e.is_ejected(now))
            .collect();
        let expires_at = endpoints
            .iter()
            .filter_map(|e| e.ejected_until())
            .filter(|until| *until > now)
            .min()
            .unwrap_or(u64::MAX);
        let panic = !endpoints.is_empty() && !usable.iter().any(|u| *u);
        // Tier of each endpoint: 0 same zone, 1 same region, 2 elsewhere (or unknown). In panic
        // every endpoint takes requests, wherever it is.
        let rank = |e: &Endpoint| match tiering {
            Some(t) if !panic => {
                let l = &e.locality;
                if !l.region.is_empty() && l.region == t.local.region {
                    if !l.zone.is_empty() && l.zone == t.local.zone {
                        0
                    } else {
                        1
                    }
                } else {
                    2
                }
            }
            _ => 0,
        };
        let threshold = tiering.map_or(100, |t| t.threshold.clamp(1, 100));
        let mut tiers = Vec::new();
        let mut health = Vec::new();
        for r in 0..3 {
            let all: Vec<usize> = (0..endpoints.len())
                .filter(|i| rank(&endpoints[*i]) == r)
                .collect();
            if all.is_empty() {
                continue;
            }
            let members: Vec<usize> = if panic {
                all.clone()
            } else {
                all.iter().copied().filter(|i| usable[*i]).collect()
            };
            // A tier at the threshold or above takes all it is offered (Envoy's
            // overprovisioning: health × 100 / threshold, at most 100).
            let percent = (members.len() * 100 * 100 / (all.len() * threshold as usize)).min(100);
            health.push(percent as u32);
            tiers.push(Tier::new(endpoints, &members, policy));
        }
        let cumulative = shares(&health);
        Availability {
            tiers,
            cumulative,
            panic,
            usable,
            expires_at,
        }
    }

    /// Whether endpoint `i` can take requests now (panic mode aside).
    pub fn is_usable(&self, i: usize) -> bool {
        self.usable.get(i).copied().unwrap_or(false)
    }

    /// Whether an ejection has ended since this was built.
    pub fn stale(&self) -> bool {
        self.expires_at != u64::MAX && now_ms() >= self.expires_at
    }

    /// The tier of the next request: drawn by share, without a draw when one tier takes all.
    fn tier(&self) -> Option<(usize, &Tier)> {
        let index = match self.cumulative.iter().position(|c| *c >= SHARES) {
            Some(0) => 0,
            _ => {
                let draw = rand::random_range(0..SHARES);
                self.cumulative.iter().position(|c| draw < *c)?
            }
        };
        self.tiers.get(index).map(|t| (index, t))
    }
}

/// Each tier's cumulative share of requests out of [`SHARES`], from its health in percent: a
/// tier takes its health's worth of what the tiers before it left, and when all together are
/// below 100 the shares are scaled up to sum to 100.
fn shares(health: &[u32]) -> Vec<u32> {
    let total: u32 = health.iter().sum();
    let mut left = 100;
    let mut out = Vec::with_capacity(health.len());
    let mut sum = 0;
    for h in health {
        let share = if total >= 100 {
            let s = (*h).min(left);
            left -= s;
            s * SHARES / 100
        } else {
            (h * SHARES).checked_div(total).unwrap_or(0)
        };
        sum += share;
        out.push(sum);
    }
    // Rounding must not leave requests without a tier.
    if sum > 0
        && let Some(last) = out.last_mut()
    {
        *last = SHARES;
    }
    out
}

impl Tier {
    fn new(endpoints: &[Arc<Endpoint>], members: &[usize], policy: Policy) -> Tier {
        let weights: Vec<u32> = members.iter().map(|i| endpoints[*i].weight).collect();
        let mut running = 0u64;
        let cumulative = weights
            .iter()
            .map(|w| {
                running += u64::from(*w);
                running
            })
            .collect();
        let equal = weights.windows(2).all(|w| w[0] == w[1]);
        let table = if policy.hashes() && !members.is_empty() {
            let names: Vec<String> = members
                .iter()
                .map(|i| endpoints[*i].authority.to_string())
                .collect();
            let keyed: Vec<(&str, u32)> = names
                .iter()
                .zip(&weights)
                .map(|(n, w)| (n.as_str(), *w))
                .collect();
            match policy {
                Policy::Maglev => Table::Maglev(Maglev::new(&keyed)),
                _ => Table::Ring(Ring::new(&keyed)),
            }
        } else {
            Table::None
        };
        Tier {
            members: members.iter().map(|i| *i as u32).collect(),
            weights,
            cumulative,
            equal,
            table,
        }
    }

    /// A position drawn at random, in proportion to the weights.
    fn random(&self) -> usize {
        let n = self.members.len();
        if self.equal {
            return rand::random_range(0..n);
        }
        let total = self.cumulative.last().copied().unwrap_or(0).max(1);
        let draw = rand::random_range(0..total);
        self.cumulative.partition_point(|c| *c <= draw).min(n - 1)
    }
}

/// Per-worker picking state, for the availability it was set up for.
struct WorkerState {
    /// The availability the cursors and schedules belong to.
    built_for: Option<Arc<Availability>>,
    /// Round-robin cursor per tier (equal weights).
    cursors: Vec<usize>,
    /// Weighted schedule per tier (unequal weights).
    schedules: Vec<Schedule>,
}

/// Padded, so that workers' states never share a cache line.
#[repr(align(128))]
struct Padded(Mutex<WorkerState>);

/// Chooses endpoints for one cluster.
pub struct Balancer {
    policy: Policy,
    tiering: Option<Tiering>,
    available: ArcSwap<Availability>,
    /// Serialises rebuilds; never held by a pick.
    rebuilding: Mutex<()>,
    workers: Box<[Padded]>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("policy", &self.policy)
            .field("tiering", &self.tiering)
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// A balancer over `endpoints` for `workers` proxy workers.
    pub fn new(
        endpoints: &[Arc<Endpoint>],
        policy: Policy,
        tiering: Option<Tiering>,
        workers: usize,
    ) -> Self {
        let available = Availability::build(endpoints, policy, tiering.as_ref());
        Balancer {
            policy,
            tiering,
            available: ArcSwap::from_pointee(available),
            rebuilding: Mutex::new(()),
            workers: (0..workers.max(1))
                .map(|_| {
                    Padded(Mutex::new(WorkerState {
                        built_for: None,
                        cursors: Vec::new(),
                        schedules: Vec::new(),
                    }))
                })
                .collect(),
        }
    }

    /// What is available now.
    pub fn availability(&self) -> Arc<Availability> {
        self.available.load_full()
    }

    /// Rebuilds the availability after an endpoint's state changed; returns it.
    pub fn rebuild(&self, endpoints: &[Arc<Endpoint>]) -> Arc<Availability> {
        let _one = self
            .rebuilding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let fresh = Arc::new(Availability::build(
            endpoints,
            self.policy,
            self.tiering.as_ref(),
        ));
        self.available.store(fresh.clone());
        fresh
    }

    /// Picks an endpoint (its index) for a request hashed to `key` (hash policies; `None`
    /// draws at random), avoiding `avoid` (the endpoint an earlier attempt failed on) when
    /// another is available.
    pub fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        key: Option<u64>,
        avoid: Option<usize>,
    ) -> Option<usize> {
        let guard = self.available.load();
        let available = if guard.stale() {
            self.rebuild(endpoints)
        } else {
            arc_swap::Guard::into_inner(guard)
        };
        let (t, tier) = available.tier()?;
        let n = tier.members.len();
        if n == 0 {
            return None;
        }
        let pos = match self.policy {
            Policy::RingHash | Policy::Maglev => {
                let found = key.and_then(|k| match &tier.table {
                    Table::Ring(r) => r.get(k),
                    Table::Maglev(m) => m.get(k),
                    Table::None => None,
                });
                found.unwrap_or_else(|| tier.random())
            }
            Policy::LeastRequest => {
                // Both draws follow the weights, so when loads tie (an idle cluster) the
                // picks follow them too; otherwise the less loaded draw wins.
                let (a, b) = (tier.random(), tier.random());
                let load = |p: usize| endpoints[tier.members[p] as usize].in_flight_here();
                if load(a) <= load(b) { a } else { b }
            }
            Policy::RoundRobin => self.next_turn(&available, t, tier),
        };
        let mut index = tier.members[pos] as usize;
        if avoid == Some(index) && n > 1 {
            index = tier.members[(pos + 1) % n] as usize;
        }
        Some(index)
    }

    /// The next turn in tier `t` by the current worker's schedule.
    fn next_turn(&self, available: &Arc<Availability>, t: usize, tier: &Tier) -> usize {
        let slot = &self.workers[workers::current() % self.workers.len()];
        let mut state = lock(&slot.0);
        if !state
            .built_for
            .as_ref()
            .is_some_and(|b| Arc::ptr_eq(b, available))
        {
            state.cursors = vec![0; available.tiers.len()];
            state.schedules = available
                .tiers
                .iter()
                .map(|tier| Schedule::new(&tier.weights))
                .collect();
            state.built_for = Some(available.clone());
        }
        if tier.equal {
            let cursor = &mut state.cursors[t];
            let pos = *cursor % tier.members.len();
            *cursor = cursor.wrapping_add(1);
            pos
        } else {
            state.schedules[t].next()
        }
    }
}

fn lock(m: &Mutex<WorkerState>) -> MutexGuard<'_, WorkerState> {
    // Only the worker's own thread takes it; nothing is left half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Smooth weighted round robin (nginx's): every turn each member's credit grows by its weight,
/// the member with the most credit goes and pays back the total weight. A heavy member's turns
/// are spread among the others' rather than bunched. Costs one pass over the tier per pick;
/// tiers whose weights are all equal take the round-robin cursor instead.
struct Schedule {
    weights: Vec<i64>,
    credit: Vec<i64>,
    total: i64,
}

impl Schedule {
    fn new(weights: &[u32]) -> Schedule {
        Schedule {
            weights: weights.iter().map(|w| i64::from(*w)).collect(),
            credit: vec![0; weights.len()],
            total: weights.iter().map(|w| i64::from(*w)).sum(),
        }
    }

    fn next(&mut self) -> usize {
        let mut best = 0;
        for i in 0..self.credit.len() {
            self.credit[i] += self.weights[i];
            if self.credit[i] > self.credit[best] {
                best = i;
            }
        }
        if let Some(c) = self.credit.get_mut(best) {
            *c -= self.total;
        }
        best
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "balancer_tests.rs"]
mod tests;
