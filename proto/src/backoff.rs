//! Capped exponential backoff with jitter: agents reconnecting to the control plane, the
//! control plane re-watching its store, and test and bench clients retrying all wait by it.
//! And the retry-after hint ("pushback") a control plane gives the streams it refuses while
//! too many arrive at once, which agents wait out instead.
//!
//! Full jitter spreads the reconnects of a whole fleet after a control-plane restart evenly
//! over the current step, so the surviving replicas are not hit by every agent in the same
//! second (Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015).

use std::time::Duration;

use rand::Rng;

/// The metadata key of a refusal's retry-after hint, in milliseconds, as gRPC's retry design
/// names it (gRFC A6).
pub const PUSHBACK_KEY: &str = "grpc-retry-pushback-ms";

/// The longest retry-after hint a client honours; a longer one is cut to this.
pub const MAX_PUSHBACK: Duration = Duration::from_secs(300);

/// `status` with a retry-after hint of `after`.
pub fn with_pushback(mut status: tonic::Status, after: Duration) -> tonic::Status {
    let ms = after.as_millis().min(u64::MAX as u128) as u64;
    if let Ok(value) = ms.to_string().parse() {
        status.metadata_mut().insert(PUSHBACK_KEY, value);
    }
    status
}

/// The retry-after hint `status` carries, if any (at most [`MAX_PUSHBACK`]).
pub fn pushback(status: &tonic::Status) -> Option<Duration> {
    let ms: u64 = status
        .metadata()
        .get(PUSHBACK_KEY)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_millis(ms).min(MAX_PUSHBACK))
}

/// Delays that double from `initial` up to `max`; each one is drawn uniformly between zero
/// and the current step ("full jitter").
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            step: initial,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(self.max);
        rand::rng().random_range(Duration::ZERO..=step)
    }

    /// Starts over from `initial`, after a connection that worked.
    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

impl Default for Backoff {
    /// 100 ms doubling up to 10 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_a_doubling_step_up_to_the_cap() {
        let mut b = Backoff::default();
        let mut step = Duration::from_millis(100);
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= step, "{d:?} above {step:?}");
            step = (step * 2).min(Duration::from_secs(10));
        }
        assert_eq!(step, Duration::from_secs(10));
    }

    #[test]
    fn full_jitter_spreads_delays_over_the_whole_step() {
        let mut low = 0;
        for _ in 0..1000 {
            let d = Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay();
            if d < Duration::from_millis(250) {
                low += 1;
            }
        }
        // About a quarter of the draws; equal jitter would give none.
        assert!(
            (150..350).contains(&low),
            "{low} of 1000 below a quarter step"
        );
    }

    #[test]
    fn pushback_round_trips_and_is_capped() {
        let status = with_pushback(
            tonic::Status::resource_exhausted("busy"),
            Duration::from_millis(1500),
        );
        assert_eq!(pushback(&status), Some(Duration::from_millis(1500)));
        let long = with_pushback(
            tonic::Status::resource_exhausted("busy"),
            Duration::from_secs(3600),
        );
        assert_eq!(pushback(&long), Some(MAX_PUSHBACK));
        assert_eq!(pushback(&tonic::Status::unavailable("down")), None);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::default();
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn delays_are_jittered() {
        let mut delays: Vec<Duration> = (0..50)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay())
            .collect();
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 1, "50 draws gave one value: {delays:?}");
    }
}
