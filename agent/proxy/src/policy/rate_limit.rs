//! `rate_limit` (scope LOCAL): token buckets (GCRA, `governor`) per key, with limits by plan.
//!
//! Where the buckets live: one keyed limiter per limit (the policy's, and one per plan),
//! shared by every proxy worker. A worker checks a bucket by reading one `DashMap` shard
//! under its read lock and updating the key's state with one compare-and-swap; a limit
//! without a key is a map of one bucket per route. Splitting each limit over the workers
//! instead would give a client whose connections all landed on one worker a fraction of its
//! limit.
//!
//! Keys are 64-bit hashes (xxHash with a seed drawn at start) of the key's value, so a
//! request allocates nothing and a bucket costs the same whatever the key's length. Memory
//! stays bounded under any number of distinct keys: every [`SWEEP_EVERY`] checks a worker
//! looks at the limiter's size, and past a threshold ([`SOFT_KEYS`] at first) drops the
//! buckets that are full again (a full bucket is what a new key gets, so dropping it changes
//! no answer); the next threshold is twice what remained (at most [`HARD_KEYS`]), so the
//! sweeps cost a constant amount per new key however many buckets are in use. If more than [`HARD_KEYS`] remain (keys
//! active faster than their buckets refill), the limiter starts over empty, forgetting every
//! bucket, and says so in the log.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use portico_api::pb::{self, rate_limit_key};

use super::{Consumer, Rejection, header_name};
use crate::compile::duration_or;

/// Checks per worker between two looks at a limiter's size.
pub const SWEEP_EVERY: u32 = 4096;
/// Buckets a limiter keeps before it drops those that are full again.
pub const SOFT_KEYS: usize = 100_000;
/// Buckets a limiter keeps at most after dropping the full ones; past this it starts over.
pub const HARD_KEYS: usize = 1_000_000;

type Limiter = RateLimiter<
    u64,
    DashMapStateStore<u64, BuildHasherDefault<KeyHasher>>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// The keys are hashes already: the map uses them as they are.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What a bucket is kept per.
#[derive(Debug)]
enum KeyKind {
    Route,
    Consumer,
    ClientIp,
    Header(HeaderName),
}

/// One limit: its quota and its buckets.
pub struct Limit {
    quota: Quota,
    limiter: ArcSwap<Limiter>,
    /// The size past which the next sweep runs.
    sweep_at: AtomicUsize,
    /// RateLimit-Limit: the bucket size.
    limit_header: HeaderValue,
}

impl std::fmt::Debug for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limit")
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl Limit {
    fn new(
        requests: u32,
        period: Option<&pbjson_types::Duration>,
        burst: u32,
        field: &str,
    ) -> Result<Limit, (String, String)> {
        let period = duration_or(period, Duration::from_secs(1));
        let requests = NonZeroU32::new(requests).ok_or_else(|| {
            (
                format!("{field}.requests"),
                "must be above zero".to_string(),
            )
        })?;
        let burst = NonZeroU32::new(burst).unwrap_or(requests);
        let interval = period / requests.get();
        let quota = Quota::with_period(interval.max(Duration::from_nanos(1)))
            .ok_or_else(|| (format!("{field}.period"), "too short".to_string()))?
            .allow_burst(burst);
        Ok(Limit {
            quota,
            limiter: ArcSwap::from_pointee(limiter(quota)),
            sweep_at: AtomicUsize::new(SOFT_KEYS),
            limit_header: HeaderValue::from(burst.get()),
        })
    }

    /// Takes a token from the bucket of `key`.
    fn check(&self, key: u64) -> Result<RateHeaders, Rejection> {
        let limiter = self.limiter.load();
        let answer = limiter.check_key(&key);
        let remaining;
        let reset;
        let refused = match answer {
            Ok(snapshot) => {
                remaining = snapshot.remaining_burst_capacity();
                let used = self.quota.burst_size().get().saturating_sub(remaining);
                reset = self.quota.replenish_interval() * used;
                None
            }
            Err(not_until) => {
                remaining = 0;
                reset = not_until.wait_time_from(limiter.clock().now());
                Some(reset)
            }
        };
        self.sweep(&limiter);
        let headers = RateHeaders {
            limit: self.limit_header.clone(),
            remaining,
            reset_secs: ceil_secs(reset),
        };
        match refused {
            None => Ok(headers),
            Some(wait) => {
                let mut r = Rejection::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited")
                    .with_header(
                        http::header::RETRY_AFTER,
                        HeaderValue::from(ceil_secs(wait).max(1)),
                    );
                headers.write_into(&mut r.headers);
                Err(r)
            }
        }
    }

    /// Every [`SWEEP_EVERY`] checks on this worker: drops full buckets past [`SOFT_KEYS`],
    /// starts over past [`HARD_KEYS`].
    fn sweep(&self, limiter: &Limiter) {
        thread_local! {
            static CHECKS: Cell<u32> = const { Cell::new(0) };
        }
        let due = CHECKS.with(|c| {
            let n = c.get().wrapping_add(1);
            c.set(n);
            n % SWEEP_EVERY == 0
        });
        if !due || limiter.len() <= self.sweep_at.load(Ordering::Relaxed) {
            return;
        }
        limiter.retain_recent();
        limiter.shrink_to_fit();
        let left = limiter.len();
        self.sweep_at
            .store((2 * left).clamp(SOFT_KEYS, HARD_KEYS), Ordering::Relaxed);
        if left > HARD_KEYS {
            self.sweep_at.store(SOFT_KEYS, Ordering::Relaxed);
            tracing::warn!(
                buckets = left,
                limit = HARD_KEYS,
                "too many rate-limit buckets are in use; starting over with none"
            );
            self.limiter.store(Arc::new(self::limiter(self.quota)));
        }
    }

    /// Buckets held now.
    pub fn buckets(&self) -> usize {
        self.limiter.load().len()
    }
}

fn limiter(quota: Quota) -> Limiter {
    RateLimiter::dashmap_with_clock_and_hasher(quota, DefaultClock::default(), Default::default())
        .with_middleware::<StateInformationMiddleware>()
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The RateLimit-* values of one check.
#[derive(Clone, Debug)]
pub struct RateHeaders {
    limit: HeaderValue,
    /// Tokens left.
    pub remaining: u32,
    reset_secs: u64,
}

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

impl RateHeaders {
    /// The values of a limit of `limit` with `remaining` left, full again in `reset_secs`.
    pub fn new(limit: HeaderValue, remaining: u32, reset_secs: u64) -> RateHeaders {
        RateHeaders {
            limit,
            remaining,
            reset_secs,
        }
    }

    /// Appends the three headers to `out`.
    pub fn write_into(&self, out: &mut Vec<(HeaderName, HeaderValue)>) {
        out.push((RATELIMIT_LIMIT.clone(), self.limit.clone()));
        out.push((
            RATELIMIT_REMAINING.clone(),
            HeaderValue::from(self.remaining),
        ));
        out.push((RATELIMIT_RESET.clone(), HeaderValue::from(self.reset_secs)));
    }

    /// Sets the three headers on a response.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT.clone(), self.limit.clone());
        headers.insert(
            RATELIMIT_REMAINING.clone(),
            HeaderValue::from(self.remaining),
        );
        headers.insert(RATELIMIT_RESET.clone(), HeaderValue::from(self.reset_secs));
    }
}

/// A compiled `rate_limit` policy.
#[derive(Debug)]
pub struct RateLimit {
    key: KeyKind,
    base: Limit,
    plans: HashMap<String, Limit>,
}

/// What identifies a request to the limiter.
pub struct Subject<'a> {
    /// The route, for limits without a key and requests without one.
    pub route: usize,
    /// The consumer an authentication policy identified.
    pub consumer: Option<&'a Consumer>,
    /// The client address.
    pub client: IpAddr,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(rand::random)
}

fn hash(tag: u8, bytes: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(seed());
    h.update(&[tag]);
    h.update(bytes);
    h.digest()
}

impl RateLimit {
    /// Compiles the policy.
    pub fn compile(spec: &pb::RateLimit) -> Result<RateLimit, (String, String)> {
        let key = match spec.key.as_ref().and_then(|k| k.key.as_ref()) {
            None => KeyKind::Route,
            Some(rate_limit_key::Key::Consumer(_)) => KeyKind::Consumer,
            Some(rate_limit_key::Key::ClientIp(_)) => KeyKind::ClientIp,
            Some(rate_limit_key::Key::Header(h)) => {
                KeyKind::Header(header_name(h, "rate_limit.key.header")?)
            }
        };
        let mut plans = HashMap::new();
        for (name, p) in &spec.plans {
            let field = format!("rate_limit.plans[{name:?}]");
            plans.insert(
                name.clone(),
                Limit::new(p.requests, p.period.as_ref(), p.burst, &field)?,
            );
        }
        Ok(RateLimit {
            key,
            base: Limit::new(
                spec.requests,
                spec.period.as_ref(),
                spec.burst,
                "rate_limit",
            )?,
            plans,
        })
    }

    /// Takes a token for `subject`: the RateLimit-* values, or the 429 rejection.
    pub fn check(&self, subject: &Subject<'_>) -> Result<RateHeaders, Rejection> {
        let limit = subject
            .consumer
            .and_then(|c| c.plan.as_deref())
            .and_then(|plan| self.plans.get(plan))
            .unwrap_or(&self.base);
        let route = || hash(0, &subject.route.to_ne_bytes());
        let key = match &self.key {
            KeyKind::Route => route(),
            KeyKind::Consumer => match subject.consumer {
                Some(c) => hash(1, c.name.as_bytes()),
                None => route(),
            },
            KeyKind::ClientIp => match subject.client {
                IpAddr::V4(ip) => hash(2, &ip.octets()),
                IpAddr::V6(ip) => hash(2, &ip.octets()),
            },
            KeyKind::Header(name) => match subject.headers.get(name) {
                Some(v) => hash(3, v.as_bytes()),
                None => route(),
            },
        };
        limit.check(key)
    }

    /// The limit applying to consumers without a plan override.
    pub fn base(&self) -> &Limit {
        &self.base
    }

    /// Checks `key`'s bucket of the base limit directly, for measurements.
    pub fn check_raw(&self, key: u64) -> bool {
        self.base.check(key).is_ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy(requests: u32, burst: u32, plans: &[(&str, u32)]) -> RateLimit {
        RateLimit::compile(&pb::RateLimit {
            requests,
            burst,
            key: Some(pb::RateLimitKey {
                key: Some(rate_limit_key::Key::Consumer(true)),
            }),
            plans: plans
                .iter()
                .map(|(n, r)| {
                    (
                        n.to_string(),
                        pb::RateLimitPlan {
                            requests: *r,
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_retry_after() {
        let p = policy(1, 3, &[]);
        let alice = Consumer {
            name: "alice".into(),
            plan: None,
        };
        let headers = HeaderMap::new();
        let subject = Subject {
            route: 1,
            consumer: Some(&alice),
            client: "127.0.0.1".parse().unwrap(),
            headers: &headers,
        };
        let remaining: Vec<u32> = (0..3)
            .map(|_| p.check(&subject).unwrap().remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = p.check(&subject).unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            refused
                .headers
                .iter()
                .any(|(n, v)| n == "retry-after" && v == "1")
        );
        // Another consumer has its own bucket.
        let bob = Consumer {
            name: "bob".into(),
            plan: None,
        };
        assert!(
            p.check(&Subject {
                consumer: Some(&bob),
                ..subject
            })
            .is_ok()
        );
    }

    #[test]
    fn a_plan_replaces_the_limit() {
        let p = policy(1, 1, &[("gold", 5)]);
        let gold = Consumer {
            name: "g".into(),
            plan: Some("gold".into()),
        };
        let headers = HeaderMap::new();
        let subject = Subject {
            route: 1,
            consumer: Some(&gold),
            client: "127.0.0.1".parse().unwrap(),
            headers: &headers,
        };
        assert_eq!((0..6).filter(|_| p.check(&subject).is_ok()).count(), 5);
    }

    #[test]
    fn idle_buckets_are_dropped_past_the_soft_bound() {
        let p = policy(1_000_000, 1, &[]);
        for key in 0..(SOFT_KEYS as u64 + 2 * u64::from(SWEEP_EVERY)) {
            p.check_raw(key);
        }
        // A bucket of one token refilled in a microsecond is full again at once.
        assert!(p.base().buckets() < SOFT_KEYS, "{}", p.base().buckets());
    }
}
