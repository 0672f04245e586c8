//! Passive outlier detection: an endpoint that fails requests in a row is ejected for a while
//! (the base ejection time times its number of ejections, at most five minutes), as long as
//! not too many of the cluster's endpoints are ejected already.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::endpoint::{Endpoint, now_ms};

/// The longest ejection.
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// A cluster's outlier detection settings, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Consecutive 5xx answers (gateway failures included) that eject.
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures that eject.
    pub consecutive_gateway: u32,
    /// The first ejection's length.
    pub base_ejection: Duration,
    /// Most endpoints ejected at once, in percent.
    pub max_ejection_percent: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            consecutive_5xx: 5,
            consecutive_gateway: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: 50,
        }
    }
}

/// How one attempt on an endpoint went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer below 500.
    Success,
    /// A 5xx answer other than 502, 503 and 504.
    ServerError,
    /// No answer (connect failure, reset, timeout), or 502, 503 or 504.
    GatewayFailure,
}

impl Outcome {
    /// The outcome of an answer with `status`.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            502..=504 => Outcome::GatewayFailure,
            500..=599 => Outcome::ServerError,
            _ => Outcome::Success,
        }
    }
}

impl Settings {
    /// Counts `outcome` against endpoint `i`; true when that ejected it.
    pub fn record(&self, endpoints: &[Arc<Endpoint>], i: usize, outcome: Outcome) -> bool {
        let Some(e) = endpoints.get(i) else {
            return false;
        };
        let o = &e.outlier;
        let (fives, gateway) = match outcome {
            Outcome::Success => {
                // Stores only when there is something to reset: most answers succeed.
                if o.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                    o.consecutive_5xx.store(0, Ordering::Relaxed);
                }
                if o.consecutive_gateway.load(Ordering::Relaxed) != 0 {
                    o.consecutive_gateway.store(0, Ordering::Relaxed);
                }
                return false;
            }
            Outcome::ServerError => (o.consecutive_5xx.fetch_add(1, Ordering::AcqRel) + 1, 0),
            Outcome::GatewayFailure => (
                o.consecutive_5xx.fetch_add(1, Ordering::AcqRel) + 1,
                o.consecutive_gateway.fetch_add(1, Ordering::AcqRel) + 1,
            ),
        };
        let reason = if gateway >= self.consecutive_gateway {
            "consecutive gateway failures"
        } else if fives >= self.consecutive_5xx {
            "consecutive 5xx"
        } else {
            return false;
        };
        let now = now_ms();
        if e.is_ejected(now) {
            return false;
        }
        let ejected = endpoints.iter().filter(|e| e.is_ejected(now)).count();
        let allowed = endpoints.len() * self.max_ejection_percent as usize / 100;
        if ejected >= allowed {
            return false;
        }
        let count = o.ejections.fetch_add(1, Ordering::AcqRel) + 1;
        let length = (self.base_ejection * count).min(MAX_EJECTION);
        o.ejected_until_ms
            .store(now + length.as_millis() as u64, Ordering::Release);
        o.consecutive_5xx.store(0, Ordering::Relaxed);
        o.consecutive_gateway.store(0, Ordering::Relaxed);
        if let Ok(mut r) = o.reason.lock() {
            *r = reason;
        }
        tracing::warn!(
            endpoint = %e.authority,
            reason,
            seconds = length.as_secs_f64(),
            ejections = count,
            "endpoint ejected"
        );
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::upstream::endpoint::Locality;

    fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                let a = format!("10.0.0.{i}:80").parse().unwrap();
                Arc::new(Endpoint::new(a, 1, Locality::default(), 1))
            })
            .collect()
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let s = Settings {
            consecutive_5xx: 3,
            consecutive_gateway: 2,
            ..Settings::default()
        };
        let e = endpoints(4);
        assert!(!s.record(&e, 0, Outcome::ServerError));
        assert!(!s.record(&e, 0, Outcome::ServerError));
        assert!(!s.record(&e, 0, Outcome::Success));
        assert!(!s.record(&e, 0, Outcome::ServerError));
        assert!(!s.record(&e, 0, Outcome::ServerError));
        assert!(s.record(&e, 0, Outcome::ServerError), "third 5xx in a row");
        assert!(e[0].is_ejected(now_ms()));
        assert!(!s.record(&e, 1, Outcome::GatewayFailure));
        assert!(
            s.record(&e, 1, Outcome::GatewayFailure),
            "second gateway failure"
        );
        // Half of four are out: the third stays in whatever it does.
        for _ in 0..5 {
            assert!(!s.record(&e, 2, Outcome::GatewayFailure));
        }
        assert!(!e[2].is_ejected(now_ms()));
    }

    #[test]
    fn each_ejection_lasts_longer_up_to_the_cap() {
        let s = Settings {
            consecutive_5xx: 1,
            base_ejection: Duration::from_secs(200),
            ..Settings::default()
        };
        let e = endpoints(2);
        assert!(s.record(&e, 0, Outcome::ServerError));
        let first = e[0].ejected_until().unwrap() - now_ms();
        assert!((199_000..=200_000).contains(&first), "{first}");
        e[0].outlier.ejected_until_ms.store(1, Ordering::Release);
        assert!(s.record(&e, 0, Outcome::ServerError));
        let second = e[0].ejected_until().unwrap() - now_ms();
        assert!((299_000..=300_000).contains(&second), "capped: {second}");
        assert_eq!(Outcome::of_status(503), Outcome::GatewayFailure);
        assert_eq!(Outcome::of_status(500), Outcome::ServerError);
        assert_eq!(Outcome::of_status(404), Outcome::Success);
    }
}
