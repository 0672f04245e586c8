//! Fleet budgets on this agent: the allowance the control plane granted for each quota and
//! FLEET rate-limit key in each window, spent by requests, and the counts the agent reports.
//!
//! A request spends one unit of its key's allowance. When the allowance is spent the request
//! waits (at most [`WAIT`]) while the agent asks the control plane for more
//! ([`Budgets::take_requests`], sent at once by the agent); a grant wakes it. A key whose
//! budget the control plane says is exhausted refuses at once until its window ends. An agent
//! asks before its allowance runs out (when less than half a second of its recent traffic is
//! left), so steady traffic does not wait; the first request of a key in a new window does, for
//! one round trip to the control plane.
//!
//! Without a control plane (the stream is down, or no grant came within [`WAIT`]), a key may
//! still admit, in each window, as many requests as the control plane granted this agent for
//! it in the previous window, less what it granted in this one: the agent keeps the pace the
//! fleet gave it, and a key it never had budget for is refused.
//!
//! State is per (policy, key, window), created by the first request and dropped once the window
//! after it has ended; the number of keys is bounded by the consumers and routes of the config.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use portico_api::budget::{Window, unix_ms};
use portico_api::pb;
use tokio::sync::Notify;

/// The longest a request waits for a grant.
pub const WAIT: Duration = Duration::from_secs(1);
/// How long an unanswered request for budget is left before it is asked again.
const ASK_AGAIN: Duration = Duration::from_millis(500);
/// How much of its recent traffic an agent asks for at once.
const ASK_FOR: Duration = Duration::from_secs(1);
/// The most budget entries one report carries.
pub const MAX_REPORTED: usize = 1024;

/// Which budget: a policy, a key, a window (by its start).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Id {
    policy: Arc<str>,
    key: String,
    window_start: i64,
}

/// One key's budget in one window.
struct Budget {
    id: Id,
    window_end: i64,
    state: Mutex<State>,
    granted: Notify,
}

#[derive(Default)]
struct State {
    /// Granted and not spent.
    allowance: u64,
    /// Granted in this window.
    granted: u64,
    /// What may be admitted without grants (see the module doc): the previous window's grants.
    fallback: u64,
    /// Admitted without grants.
    fallback_used: u64,
    /// Every request of the window's budget is granted.
    exhausted: bool,
    /// The window's budget, and what no agent was granted yet, as of the last grant.
    limit: u64,
    remaining: u64,
    /// Counts since the last report or request.
    admitted: u64,
    refused: u64,
    /// Admitted since the last ask, and when that was, to size the next one.
    since_ask: u64,
    last_ask: Option<Instant>,
    /// An ask is out, since then.
    asking: Option<Instant>,
    /// Requests waiting for a grant.
    waiting: u64,
    /// Queued for the next budget request.
    queued: bool,
}

impl State {
    /// Requests per second since the last ask.
    fn rate(&self, now: Instant) -> f64 {
        let elapsed = self
            .last_ask
            .map_or(1.0, |t| now.duration_since(t).as_secs_f64().max(0.1));
        self.since_ask as f64 / elapsed
    }

    /// How much to ask for: a second of recent traffic, and one per waiting request.
    fn wanted(&self, now: Instant) -> u64 {
        let recent = (self.rate(now) * ASK_FOR.as_secs_f64()).ceil() as u64;
        recent.max(self.waiting).max(1)
    }

    /// Whether to ask now: nothing is out, and the allowance is below half a second of traffic.
    fn low(&self, now: Instant) -> bool {
        !self.exhausted
            && self
                .asking
                .is_none_or(|t| now.duration_since(t) >= ASK_AGAIN)
            && (self.allowance as f64) < self.rate(now) * ASK_FOR.as_secs_f64() / 2.0
    }
}

/// What spending from a budget answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Spent {
    /// Admitted; the window's budget and what the fleet had left at the last grant.
    Admitted { limit: u64, remaining: u64 },
    /// Refused: the budget is exhausted, or no budget could be had.
    Refused { exhausted: bool },
}

/// Every fleet budget of this agent.
#[derive(Default)]
pub(crate) struct Budgets {
    budgets: Mutex<HashMap<Id, Arc<Budget>>>,
    /// Budgets to ask for in the next budget request.
    queue: Mutex<Vec<Arc<Budget>>>,
    /// Wakes the agent to send a budget request.
    wake: Notify,
    /// Whether a stream to a control plane is open.
    connected: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every field is whole at every step.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Budgets {
    /// The budget of `key` of `policy` in `window`, made on first use; `previous` is the start
    /// of the window before, whose grants bound what this one admits without a control plane.
    fn budget(&self, policy: &Arc<str>, key: String, window: Window, previous: i64) -> Arc<Budget> {
        let id = Id {
            policy: policy.clone(),
            key,
            window_start: window.start_ms,
        };
        let mut budgets = lock(&self.budgets);
        if let Some(b) = budgets.get(&id) {
            return b.clone();
        }
        let before = Id {
            window_start: previous,
            ..id.clone()
        };
        let fallback = budgets.get(&before).map_or(0, |b| lock(&b.state).granted);
        let budget = Arc::new(Budget {
            id: id.clone(),
            window_end: window.end_ms,
            state: Mutex::new(State {
                fallback,
                ..State::default()
            }),
            granted: Notify::new(),
        });
        budgets.insert(id, budget.clone());
        budget
    }

    /// Spends one request from `key`'s budget of `policy` in `window` (see the module doc).
    pub async fn spend(
        &self,
        policy: &Arc<str>,
        key: String,
        window: Window,
        previous: i64,
    ) -> Spent {
        let budget = self.budget(policy, key, window, previous);
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut waited_out = false;
        loop {
            let granted = budget.granted.notified();
            tokio::pin!(granted);
            granted.as_mut().enable();
            let now = Instant::now();
            let ask = {
                let mut s = lock(&budget.state);
                if s.allowance > 0 {
                    s.allowance -= 1;
                    s.admitted += 1;
                    s.since_ask += 1;
                    let ask = self.connected() && s.low(now);
                    let spent = Spent::Admitted {
                        limit: s.limit,
                        remaining: s.remaining,
                    };
                    if ask {
                        s.asking = Some(now);
                    }
                    let queue = ask && !std::mem::replace(&mut s.queued, true);
                    drop(s);
                    if queue {
                        self.enqueue(&budget);
                    }
                    return spent;
                }
                if s.exhausted {
                    s.refused += 1;
                    return Spent::Refused { exhausted: true };
                }
                if waited_out || !self.connected() {
                    if s.fallback > s.granted + s.fallback_used {
                        s.fallback_used += 1;
                        s.admitted += 1;
                        return Spent::Admitted {
                            limit: s.limit,
                            remaining: s.remaining,
                        };
                    }
                    s.refused += 1;
                    return Spent::Refused { exhausted: false };
                }
                s.waiting += 1;
                let ask = s.asking.is_none_or(|t| now.duration_since(t) >= ASK_AGAIN);
                if ask {
                    s.asking = Some(now);
                }
                ask && !std::mem::replace(&mut s.queued, true)
            };
            if ask {
                self.enqueue(&budget);
            }
            let outcome = tokio::time::timeout_at(deadline, granted).await;
            lock(&budget.state).waiting -= 1;
            waited_out = outcome.is_err();
        }
    }

    fn enqueue(&self, budget: &Arc<Budget>) {
        lock(&self.queue).push(budget.clone());
        self.wake.notify_one();
    }

    /// Resolves when budgets wait to be asked for ([`Budgets::take_requests`]).
    pub async fn wanted(&self) {
        self.wake.notified().await;
    }

    /// The budgets to ask for now, with their counts since the last report or request.
    pub fn take_requests(&self) -> Vec<pb::BudgetUse> {
        let queued = std::mem::take(&mut *lock(&self.queue));
        let now = Instant::now();
        let mut out = Vec::with_capacity(queued.len());
        for budget in queued {
            let mut s = lock(&budget.state);
            s.queued = false;
            if s.exhausted {
                continue;
            }
            let wanted = s.wanted(now);
            s.since_ask = 0;
            s.last_ask = Some(now);
            out.push(use_of(&budget.id, &mut s, wanted));
        }
        out
    }

    /// The counts of every budget since the last report or request, at most [`MAX_REPORTED`]
    /// (the most used; the others wait for the next report); drops the budgets whose next
    /// window has ended too.
    pub fn take_use(&self, now: SystemTime) -> Vec<pb::BudgetUse> {
        let now_ms = unix_ms(now);
        let mut budgets = lock(&self.budgets);
        budgets.retain(|id, b| b.window_end + (b.window_end - id.window_start) > now_ms);
        let mut used: Vec<&Arc<Budget>> = budgets
            .values()
            .filter(|b| {
                let s = lock(&b.state);
                s.admitted + s.refused > 0
            })
            .collect();
        used.sort_by_cached_key(|b| {
            let s = lock(&b.state);
            std::cmp::Reverse(s.admitted + s.refused)
        });
        used.truncate(MAX_REPORTED);
        used.into_iter()
            .map(|b| use_of(&b.id, &mut lock(&b.state), 0))
            .collect()
    }

    /// Applies what the control plane granted.
    pub fn grant(&self, grants: Vec<pb::BudgetGrant>) {
        let now = unix_ms(SystemTime::now());
        for g in grants {
            if g.window_end_ms <= now {
                continue;
            }
            let id = Id {
                policy: g.policy.into(),
                key: g.key,
                window_start: g.window_start_ms,
            };
            let budget = lock(&self.budgets).get(&id).cloned();
            let Some(budget) = budget else {
                // Asked for by a budget since dropped: nothing waits for it.
                continue;
            };
            {
                let mut s = lock(&budget.state);
                s.allowance += g.granted;
                s.granted += g.granted;
                s.exhausted |= g.exhausted;
                s.limit = g.limit;
                s.remaining = g.remaining;
                s.asking = None;
            }
            budget.granted.notify_waiters();
        }
    }

    /// Whether a stream to a control plane is open.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// A stream to a control plane opened or closed. When it closes, what was asked for will
    /// not come: waiting requests fall back at once, and the next stream asks again.
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        if connected {
            return;
        }
        let budgets: Vec<Arc<Budget>> = lock(&self.budgets).values().cloned().collect();
        for b in budgets {
            lock(&b.state).asking = None;
            b.granted.notify_waiters();
        }
    }
}

fn use_of(id: &Id, s: &mut State, wanted: u64) -> pb::BudgetUse {
    pb::BudgetUse {
        policy: id.policy.to_string(),
        key: id.key.clone(),
        window_start_ms: id.window_start,
        admitted: std::mem::take(&mut s.admitted),
        refused: std::mem::take(&mut s.refused),
        wanted,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn window() -> Window {
        let start = unix_ms(SystemTime::now()) / 60_000 * 60_000;
        Window {
            start_ms: start,
            end_ms: start + 60_000,
        }
    }

    fn grant(w: Window, granted: u64, exhausted: bool) -> pb::BudgetGrant {
        pb::BudgetGrant {
            policy: "q".into(),
            key: "consumer:ann".into(),
            window_start_ms: w.start_ms,
            window_end_ms: w.end_ms,
            granted,
            exhausted,
            limit: 10,
            remaining: 0,
        }
    }

    #[tokio::test]
    async fn requests_wait_for_a_grant_spend_it_and_stop_when_exhausted() {
        let budgets = Arc::new(Budgets::default());
        budgets.set_connected(true);
        let policy: Arc<str> = "q".into();
        let w = window();
        let spend = {
            let (budgets, policy) = (budgets.clone(), policy.clone());
            tokio::spawn(async move {
                budgets
                    .spend(&policy, "consumer:ann".into(), w, w.start_ms - 60_000)
                    .await
            })
        };
        // The first request asks for budget and waits.
        portico_test_support::wait::eventually("a budget request", Duration::from_secs(5), || {
            let asked = budgets.take_requests();
            async move { (!asked.is_empty()).then_some(asked) }
        })
        .await;
        budgets.grant(vec![grant(w, 2, false)]);
        assert_eq!(
            spend.await.unwrap(),
            Spent::Admitted {
                limit: 10,
                remaining: 0
            }
        );
        let spent = budgets
            .spend(&policy, "consumer:ann".into(), w, w.start_ms - 60_000)
            .await;
        assert!(matches!(spent, Spent::Admitted { .. }));
        // The allowance is spent and the fleet's budget too: refused at once.
        budgets.grant(vec![grant(w, 0, true)]);
        let spent = budgets
            .spend(&policy, "consumer:ann".into(), w, w.start_ms - 60_000)
            .await;
        assert_eq!(spent, Spent::Refused { exhausted: true });
        let used = budgets.take_use(SystemTime::now());
        assert_eq!(used.len(), 1);
        assert_eq!((used[0].admitted, used[0].refused), (2, 1));
        assert!(budgets.take_use(SystemTime::now()).is_empty());
    }

    #[tokio::test]
    async fn without_a_control_plane_a_key_keeps_the_previous_windows_pace() {
        let budgets = Budgets::default();
        let policy: Arc<str> = "q".into();
        let w = window();
        let next = Window {
            start_ms: w.end_ms,
            end_ms: w.end_ms + 60_000,
        };
        // Never granted anything: refused without a control plane.
        let spent = budgets.spend(&policy, "consumer:ann".into(), w, 0).await;
        assert_eq!(spent, Spent::Refused { exhausted: false });
        budgets.grant(vec![grant(w, 3, false)]);
        // The next window may admit what this one was granted.
        let mut admitted = 0;
        for _ in 0..5 {
            if let Spent::Admitted { .. } = budgets
                .spend(&policy, "consumer:ann".into(), next, w.start_ms)
                .await
            {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 3);
    }
}
