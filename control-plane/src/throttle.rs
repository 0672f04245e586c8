//! How fast a replica admits new agent streams (`--max-stream-accept-rate`).
//!
//! When a replica dies, its agents reconnect to the others. Each of those admits at most N new
//! streams (Discovery and xDS) per second, with a burst of one second's worth; it refuses the
//! rest with `RESOURCE_EXHAUSTED` and a retry-after hint (`grpc-retry-pushback-ms`). The hints
//! are slots: each refused stream gets the next free one, 1/N s after the one before, so the
//! refused agents come back spread at the rate the replica admits rather than all at once
//! after the same delay. A refusal costs no store access, no Hello read and no snapshot.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use portico_api::backoff::{MAX_PUSHBACK, with_pushback};
use tonic::Status;

use crate::metrics::STREAMS_REFUSED;

/// The admission rate of one replica.
pub struct StreamThrottle {
    /// Streams per second.
    rate: f64,
    state: Mutex<Bucket>,
}

struct Bucket {
    /// Streams admissible now (at most one second's worth).
    tokens: f64,
    refilled: Instant,
    /// The next free slot for a refused stream to come back at.
    next_slot: Instant,
}

impl StreamThrottle {
    /// Admits `per_second` new streams per second (at least 1).
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        let now = Instant::now();
        StreamThrottle {
            rate,
            state: Mutex::new(Bucket {
                tokens: rate,
                refilled: now,
                next_slot: now,
            }),
        }
    }

    /// Admits one stream, or says when to come back.
    pub fn admit_at(&self, now: Instant) -> Result<(), Duration> {
        let Ok(mut b) = self.state.lock() else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.rate);
        b.refilled = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let gap = Duration::from_secs_f64(1.0 / self.rate);
        let slot = b.next_slot.max(now + gap);
        let after = (slot - now).min(MAX_PUSHBACK);
        b.next_slot = now + after + gap;
        Err(after)
    }

    /// [`StreamThrottle::admit_at`] now, as the status a refused stream is answered with.
    pub fn admit(&self) -> Result<(), Status> {
        self.admit_at(Instant::now()).map_err(|after| {
            metrics::counter!(STREAMS_REFUSED).increment(1);
            with_pushback(
                Status::resource_exhausted(format!(
                    "this control plane admits {} new agent streams per second; retry in {} ms",
                    self.rate,
                    after.as_millis()
                )),
                after,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_a_seconds_burst_then_spreads_the_rest_one_slot_each() {
        let throttle = StreamThrottle::new(100);
        let now = Instant::now();
        for _ in 0..100 {
            assert!(throttle.admit_at(now).is_ok());
        }
        let hints: Vec<Duration> = (0..300)
            .map(|_| throttle.admit_at(now).expect_err("over the burst"))
            .collect();
        // Each refused stream gets its own slot, 10 ms after the one before.
        for pair in hints.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(10));
        }
        assert_eq!(hints[0], Duration::from_millis(10));
        assert_eq!(hints[299], Duration::from_millis(3000));
    }

    #[test]
    fn refills_at_the_rate() {
        let throttle = StreamThrottle::new(10);
        let start = Instant::now();
        for _ in 0..10 {
            assert!(throttle.admit_at(start).is_ok());
        }
        assert!(throttle.admit_at(start).is_err());
        let later = start + Duration::from_millis(500);
        let admitted = (0..10).filter(|_| throttle.admit_at(later).is_ok()).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn hints_are_capped() {
        let throttle = StreamThrottle::new(1);
        let now = Instant::now();
        let last = (0..1000)
            .filter_map(|_| throttle.admit_at(now).err())
            .last();
        assert_eq!(last, Some(MAX_PUSHBACK));
    }

    #[test]
    fn refusals_carry_the_hint() {
        let throttle = StreamThrottle::new(1);
        assert!(throttle.admit().is_ok());
        let status = throttle.admit().expect_err("over the rate");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let hint = portico_api::backoff::pushback(&status).expect("a hint");
        assert!(hint > Duration::ZERO && hint <= Duration::from_secs(1));
    }
}
