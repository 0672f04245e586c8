//! Waiting for a condition with a deadline, never for a fixed time.
//!
//! A check runs at once, then again after 5 ms, 10 ms, 20 ms, … up to every 50 ms: quick when
//! the condition holds soon, cheap when it takes seconds. One last check runs at the deadline,
//! so a condition that holds by then is never reported as timed out.

use std::future::Future;
use std::time::{Duration, Instant};

/// The pause after the first check.
const FIRST_INTERVAL: Duration = Duration::from_millis(5);

/// The longest pause between two checks.
const MAX_INTERVAL: Duration = Duration::from_millis(50);

/// Runs `check` until it returns `Some`, and returns that value. Panics after `timeout`,
/// naming `what` was waited for.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let mut pauses = Pauses::new(timeout);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        match pauses.next() {
            Some(pause) => tokio::time::sleep(pause).await,
            None => panic!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}

/// [`eventually`] for code that is not async: the thread sleeps between checks.
pub fn eventually_blocking<T>(
    what: &str,
    timeout: Duration,
    check: impl FnMut() -> Option<T>,
) -> T {
    within_blocking(timeout, check)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Runs `check` until it returns `Some` or `timeout` passes, sleeping between checks as
/// [`eventually`] does; `None` after the deadline. For callers that say more than "timed out".
pub fn within_blocking<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let mut pauses = Pauses::new(timeout);
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        std::thread::sleep(pauses.next()?);
    }
}

/// The pauses between checks: doubling up to [`MAX_INTERVAL`], the last one ending at the
/// deadline, then none.
struct Pauses {
    deadline: Instant,
    next: Duration,
}

impl Pauses {
    fn new(timeout: Duration) -> Pauses {
        Pauses {
            deadline: Instant::now() + timeout,
            next: FIRST_INTERVAL,
        }
    }
}

impl Iterator for Pauses {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        let pause = self.next.min(left);
        self.next = (self.next * 2).min(MAX_INTERVAL);
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value_the_check_gives() {
        let mut calls = 0;
        let value = eventually("the third call", Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 50ms waiting for nothing at all")]
    async fn panics_naming_what_it_waited_for() {
        eventually("nothing at all", Duration::from_millis(50), || async {
            None::<()>
        })
        .await;
    }

    #[test]
    fn checks_once_more_at_the_deadline_and_never_pauses_longer_than_the_bound() {
        let timeout = Duration::from_millis(200);
        let started = Instant::now();
        let pauses: Vec<Duration> = Pauses::new(timeout)
            .inspect(|p| std::thread::sleep(*p))
            .collect();
        assert!(started.elapsed() >= timeout);
        assert_eq!(pauses[0], FIRST_INTERVAL);
        assert!(pauses.iter().all(|p| *p <= MAX_INTERVAL), "{pauses:?}");
    }

    #[test]
    fn the_blocking_form_waits_too() {
        let started = Instant::now();
        eventually_blocking("20 ms to pass", Duration::from_secs(5), || {
            (started.elapsed() >= Duration::from_millis(20)).then_some(())
        });
    }
}
