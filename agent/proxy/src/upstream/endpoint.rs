//! One upstream endpoint and what every proxy worker knows of it: its active health, its
//! passive (outlier) state, the requests it has in flight on each worker, and the counts the
//! agent reports.
//!
//! An endpoint is shared by the workers and outlives a config change that keeps it: a cluster
//! compiled again takes the endpoints of the same address from the cluster it replaces, so
//! health and ejections carry over. An endpoint the config removed lives on while requests it
//! has in flight hold it (draining), and is gone with the last of them.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::uri::Authority;
use portico_api::pb::{self, endpoint_health::State};

use crate::workers;

/// An endpoint's place: where it runs, for locality-aware balancing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locality {
    /// The endpoint's region; empty when unknown.
    pub region: String,
    /// The endpoint's zone; empty when unknown.
    pub zone: String,
}

/// A counter alone on its cache line: each worker writes only its own.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(super) struct PerWorker(pub AtomicU32);

/// One endpoint of a cluster.
#[derive(Debug)]
pub struct Endpoint {
    /// host:port.
    pub authority: Authority,
    /// Relative weight, at least 1.
    pub weight: u32,
    /// Where it runs.
    pub locality: Locality,
    /// Whether active health checks pass (true until a check says otherwise).
    healthy: AtomicBool,
    /// Why the last failed check failed, for reports.
    unhealthy_reason: Mutex<String>,
    /// Passive failure tracking and ejection.
    pub(super) outlier: Outlier,
    /// Requests in flight, per worker: the least-request balancer compares these.
    in_flight: Box<[PerWorker]>,
    /// Requests sent and failed since the last report.
    requests: AtomicU64,
    errors: AtomicU64,
}

/// Consecutive failures and the current ejection, shared by every worker.
#[derive(Debug, Default)]
pub(super) struct Outlier {
    /// Consecutive 5xx answers (and gateway failures).
    pub consecutive_5xx: AtomicU32,
    /// Consecutive gateway failures: connect failures, resets, 502, 503, 504.
    pub consecutive_gateway: AtomicU32,
    /// The [`now_ms`] until which the endpoint is ejected; 0 when it is not.
    pub ejected_until_ms: AtomicU64,
    /// Ejections so far; the next one lasts this many times the base ejection time.
    pub ejections: AtomicU32,
    /// Why the endpoint was last ejected.
    pub reason: Mutex<&'static str>,
}

impl Endpoint {
    /// A new endpoint at `authority`, healthy until checked, for `workers` proxy workers.
    pub fn new(authority: Authority, weight: u32, locality: Locality, workers: usize) -> Self {
        Endpoint {
            authority,
            weight: weight.max(1),
            locality,
            healthy: AtomicBool::new(true),
            unhealthy_reason: Mutex::new(String::new()),
            outlier: Outlier::default(),
            in_flight: (0..workers.max(1)).map(|_| PerWorker::default()).collect(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// Whether active health checks pass.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records an active health check's verdict; true when it changed the endpoint's state.
    pub(super) fn set_healthy(&self, healthy: bool, reason: &str) -> bool {
        if !healthy {
            *lock(&self.unhealthy_reason) = reason.to_string();
        }
        self.healthy.swap(healthy, Ordering::AcqRel) != healthy
    }

    /// Whether outlier detection has the endpoint ejected at `now_ms` ([`now_ms`]).
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.outlier.ejected_until_ms.load(Ordering::Acquire) > now_ms
    }

    /// When the current ejection ends ([`now_ms`]), if one is on or just ended.
    pub(super) fn ejected_until(&self) -> Option<u64> {
        match self.outlier.ejected_until_ms.load(Ordering::Acquire) {
            0 => None,
            until => Some(until),
        }
    }

    /// The requests in flight to this endpoint on the current worker.
    pub(super) fn in_flight_here(&self) -> u32 {
        self.in_flight[workers::current() % self.in_flight.len()]
            .0
            .load(Ordering::Relaxed)
    }

    /// All requests in flight to this endpoint.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts a request sent on `worker`; [`Endpoint::end`] counts it done.
    pub(super) fn begin(&self, worker: usize) {
        self.in_flight[worker % self.in_flight.len()]
            .0
            .fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A request begun on `worker` is done.
    pub(super) fn end(&self, worker: usize) {
        self.in_flight[worker % self.in_flight.len()]
            .0
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a failed request, for reports.
    pub(super) fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The endpoint as one report shows it, taking the request counts since the last report.
    pub fn report(&self, now_ms: u64, draining: bool) -> pb::EndpointHealth {
        let (state, reason, until) = if draining {
            (State::Draining, String::new(), 0)
        } else if self.is_ejected(now_ms) {
            let until = self.outlier.ejected_until_ms.load(Ordering::Acquire);
            let wall = unix_ms().saturating_add(until.saturating_sub(now_ms));
            (State::Ejected, lock(&self.outlier.reason).to_string(), wall)
        } else if !self.is_healthy() {
            (State::Unhealthy, lock(&self.unhealthy_reason).clone(), 0)
        } else {
            (State::Healthy, String::new(), 0)
        };
        pb::EndpointHealth {
            address: self.authority.to_string(),
            state: state.into(),
            reason,
            ejected_until_unix_ms: until as i64,
            requests: self.requests.swap(0, Ordering::Relaxed),
            errors: self.errors.swap(0, Ordering::Relaxed),
            region: self.locality.region.clone(),
            zone: self.locality.zone.clone(),
        }
    }
}

/// Milliseconds on the process's monotonic clock: ejections end by it, whatever the wall clock
/// does. Never 0, which means "not ejected".
pub fn now_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64 + 1
}

/// Milliseconds since the Unix epoch, for reports.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A reason string cannot be left half-written, so a poisoned lock is still good.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
