//! Fleet budgets: what agents and the control plane must agree on about `quota` policies and
//! `rate_limit` policies of scope FLEET — which budget a request spends (its key), how large
//! the budget is (by the consumer's plan) and which window it belongs to.
//!
//! A quota's windows are calendar periods in UTC (minute, hour, day, month); a FLEET rate
//! limit's are `period` long, aligned to the Unix epoch. Both sides compute windows from their
//! own clocks and name them by their start, so a grant is for exactly one window.

use std::time::Duration;

use crate::pb::{Policy, policy, quota, rate_limit};

/// The shortest window of a FLEET rate limit.
pub const MIN_FLEET_PERIOD: Duration = Duration::from_secs(1);

/// What a fleet budget is kept per.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// The consumer an authentication policy identified; requests without one share the
    /// route's budget.
    Consumer,
    /// The route.
    Route,
}

/// The key of a consumer's budget.
pub fn consumer_key(name: &str) -> String {
    format!("consumer:{name}")
}

/// The key of a route's budget (routes are named by their listener and name, as usage names
/// them).
pub fn route_key(listener: &str, route: &str) -> String {
    format!("route:{listener}/{route}")
}

/// The consumer a key names, if it is a consumer's key.
pub fn key_consumer(key: &str) -> Option<&str> {
    key.strip_prefix("consumer:")
}

/// How a budget's windows are cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// Fixed windows of this many milliseconds, aligned to the Unix epoch.
    Fixed(u64),
    /// Calendar minutes (UTC).
    Minute,
    /// Calendar hours (UTC).
    Hour,
    /// Calendar days (UTC).
    Day,
    /// Calendar months (UTC).
    Month,
}

/// One window: `[start_ms, end_ms)`, in milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// The first millisecond.
    pub start_ms: i64,
    /// The first millisecond of the next window.
    pub end_ms: i64,
}

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

impl Period {
    /// The window holding `now_ms`.
    pub fn window(self, now_ms: i64) -> Window {
        let fixed = |len: i64| {
            let start = now_ms.div_euclid(len) * len;
            Window {
                start_ms: start,
                end_ms: start + len,
            }
        };
        match self {
            Period::Fixed(ms) => fixed(i64::try_from(ms.max(1)).unwrap_or(i64::MAX)),
            Period::Minute => fixed(MINUTE_MS),
            Period::Hour => fixed(HOUR_MS),
            Period::Day => fixed(DAY_MS),
            Period::Month => {
                let (y, m, _) = civil_from_days(now_ms.div_euclid(DAY_MS));
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                Window {
                    start_ms: days_from_civil(y, m, 1) * DAY_MS,
                    end_ms: days_from_civil(ny, nm, 1) * DAY_MS,
                }
            }
        }
    }

    /// Whether `start_ms` is the start of one of this period's windows.
    pub fn is_start(self, start_ms: i64) -> bool {
        self.window(start_ms).start_ms == start_ms
    }
}

/// A fleet budget policy: how its budgets are keyed, sized and cut into windows.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// Quota (`true`) or FLEET rate limit.
    pub quota: bool,
    /// What a budget is kept per.
    pub key: KeyKind,
    /// The budget per window and the period, for consumers without a plan override.
    pub base: (u64, Period),
    /// The same by plan.
    pub plans: Vec<(String, (u64, Period))>,
}

impl Spec {
    /// The fleet budget `policy` defines: `None` for any other kind of policy (a rate limit of
    /// scope LOCAL included).
    pub fn of(policy: &Policy) -> Option<Spec> {
        match policy.policy.as_ref()? {
            policy::Policy::Quota(q) => {
                let period = match quota::Period::try_from(q.period).ok()? {
                    quota::Period::Unspecified => return None,
                    quota::Period::Minute => Period::Minute,
                    quota::Period::Hour => Period::Hour,
                    quota::Period::Day => Period::Day,
                    quota::Period::Month => Period::Month,
                };
                Some(Spec {
                    quota: true,
                    key: KeyKind::Consumer,
                    base: (q.limit, period),
                    plans: q
                        .plans
                        .iter()
                        .map(|(plan, limit)| (plan.clone(), (*limit, period)))
                        .collect(),
                })
            }
            policy::Policy::RateLimit(r) if r.scope() == rate_limit::Scope::Fleet => {
                let period = |p: Option<&pbjson_types::Duration>| {
                    let ms = p.map_or(1000, |d| {
                        (d.seconds.max(0) as u64) * 1000 + (d.nanos.max(0) as u64) / 1_000_000
                    });
                    Period::Fixed(ms.max(1))
                };
                let key = match r.key.as_ref().and_then(|k| k.key.as_ref()) {
                    Some(crate::pb::rate_limit_key::Key::Consumer(_)) => KeyKind::Consumer,
                    _ => KeyKind::Route,
                };
                Some(Spec {
                    quota: false,
                    key,
                    base: (u64::from(r.requests), period(r.period.as_ref())),
                    plans: r
                        .plans
                        .iter()
                        .map(|(plan, p)| {
                            (
                                plan.clone(),
                                (u64::from(p.requests), period(p.period.as_ref())),
                            )
                        })
                        .collect(),
                })
            }
            _ => None,
        }
    }

    /// The budget per window and the period for a consumer on `plan`.
    pub fn limit(&self, plan: Option<&str>) -> (u64, Period) {
        plan.and_then(|p| self.plans.iter().find(|(name, _)| name == p))
            .map_or(self.base, |(_, l)| *l)
    }

    /// The budget key of a request: its consumer's when the budget is kept per consumer and
    /// one was identified, else its route's.
    pub fn key(&self, consumer: Option<&str>, listener: &str, route: &str) -> String {
        match (self.key, consumer) {
            (KeyKind::Consumer, Some(c)) => consumer_key(c),
            _ => route_key(listener, route),
        }
    }
}

/// Milliseconds since the Unix epoch of `t`.
pub fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01: (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pb::{Quota, RateLimit, RateLimitKey, rate_limit_key};

    /// Milliseconds of a UTC date and time.
    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
        days_from_civil(y, mo, d) * DAY_MS + h * HOUR_MS + mi * MINUTE_MS + s * 1000
    }

    #[test]
    fn calendar_windows_start_and_end_on_utc_boundaries() {
        let t = at(2024, 2, 29, 23, 59, 30) + 250;
        let cases = [
            (
                Period::Minute,
                at(2024, 2, 29, 23, 59, 0),
                at(2024, 3, 1, 0, 0, 0),
            ),
            (
                Period::Hour,
                at(2024, 2, 29, 23, 0, 0),
                at(2024, 3, 1, 0, 0, 0),
            ),
            (
                Period::Day,
                at(2024, 2, 29, 0, 0, 0),
                at(2024, 3, 1, 0, 0, 0),
            ),
            // A leap February.
            (
                Period::Month,
                at(2024, 2, 1, 0, 0, 0),
                at(2024, 3, 1, 0, 0, 0),
            ),
            (
                Period::Fixed(10_000),
                at(2024, 2, 29, 23, 59, 30),
                at(2024, 2, 29, 23, 59, 40),
            ),
        ];
        for (period, start, end) in cases {
            assert_eq!(
                period.window(t),
                Window {
                    start_ms: start,
                    end_ms: end
                },
                "{period:?}"
            );
            assert!(period.is_start(start), "{period:?}");
            assert!(!period.is_start(start + 1), "{period:?}");
        }
        // December rolls into the next year.
        let dec = Period::Month.window(at(2023, 12, 31, 12, 0, 0));
        assert_eq!(dec.start_ms, at(2023, 12, 1, 0, 0, 0));
        assert_eq!(dec.end_ms, at(2024, 1, 1, 0, 0, 0));
        // The epoch itself, and a known date.
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2000, 3, 1)), (2000, 3, 1));
        assert_eq!(at(2001, 9, 9, 1, 46, 40), 1_000_000_000_000);
    }

    #[test]
    fn specs_size_budgets_by_plan_and_key_them_by_consumer_or_route() {
        let quota = Policy {
            policy: Some(policy::Policy::Quota(Quota {
                limit: 1000,
                period: quota::Period::Day as i32,
                plans: [("gold".to_string(), 5000)].into(),
            })),
        };
        let spec = Spec::of(&quota).unwrap();
        assert_eq!(spec.limit(None), (1000, Period::Day));
        assert_eq!(spec.limit(Some("gold")), (5000, Period::Day));
        assert_eq!(spec.limit(Some("silver")), (1000, Period::Day));
        assert_eq!(spec.key(Some("ann"), "web", "api"), "consumer:ann");
        assert_eq!(spec.key(None, "web", "api"), "route:web/api");
        assert_eq!(key_consumer("consumer:ann"), Some("ann"));

        let fleet = |scope: rate_limit::Scope, key| Policy {
            policy: Some(policy::Policy::RateLimit(RateLimit {
                requests: 100,
                period: Some(pbjson_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                scope: scope as i32,
                key,
                ..Default::default()
            })),
        };
        let spec = Spec::of(&fleet(rate_limit::Scope::Fleet, None)).unwrap();
        assert_eq!(spec.limit(None), (100, Period::Fixed(60_000)));
        assert_eq!(spec.key(Some("ann"), "web", "api"), "route:web/api");
        let by_consumer = Some(RateLimitKey {
            key: Some(rate_limit_key::Key::Consumer(true)),
        });
        let spec = Spec::of(&fleet(rate_limit::Scope::Fleet, by_consumer)).unwrap();
        assert_eq!(spec.key(Some("ann"), "web", "api"), "consumer:ann");
        assert!(Spec::of(&fleet(rate_limit::Scope::Local, None)).is_none());
    }
}
