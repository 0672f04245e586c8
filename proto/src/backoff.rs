//! Capped exponential backoff with jitter: agents reconnecting to the control plane, the
//! control plane re-watching its store, and test and bench clients retrying all wait by it.
//!
//! Jitter spreads the reconnects of a whole fleet after a control-plane restart, so the new
//! replica is not hit by every agent in the same millisecond.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `initial` up to `max`; each one is drawn from the upper half of the
/// current step ("equal jitter"), so it is never shorter than half the step.
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
        let half = step / 2;
        half + rand::rng().random_range(Duration::ZERO..=step - half)
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
    fn delays_double_within_jitter_and_stop_at_the_cap() {
        let mut b = Backoff::default();
        let mut step = Duration::from_millis(100);
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
            step = (step * 2).min(Duration::from_secs(10));
        }
        assert_eq!(step, Duration::from_secs(10));
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
