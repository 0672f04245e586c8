//! `quota` and `rate_limit` of scope FLEET: budgets every agent serving the policy shares,
//! granted by the control plane (`budgets` keeps them on this agent). A compiled
//! policy says which budget a request spends (its key, its size by plan, its window); the
//! spending, the waiting for grants and the reports live in `budgets`.

use std::sync::Arc;
use std::time::SystemTime;

use http::StatusCode;
use http::header::HeaderValue;
use portico_api::budget::{Spec, unix_ms};
use portico_api::pb;

use super::rate_limit::RateHeaders;
use super::{Consumer, Rejection};
use crate::budgets::{Budgets, Spent};

/// A compiled `quota`, or `rate_limit` of scope FLEET.
#[derive(Debug)]
pub struct FleetLimit {
    name: Arc<str>,
    spec: Spec,
}

/// Where a request is, for budgets kept per route.
pub struct Place<'a> {
    /// The listener's name.
    pub listener: &'a str,
    /// The route's name.
    pub route: &'a str,
}

impl FleetLimit {
    /// Compiles policy `name`; `None` when it is not a fleet budget.
    pub fn compile(name: &str, spec: &pb::Policy) -> Option<FleetLimit> {
        Some(FleetLimit {
            name: name.into(),
            spec: Spec::of(spec)?,
        })
    }

    /// Whether this is a quota (else a FLEET rate limit).
    pub fn is_quota(&self) -> bool {
        self.spec.quota
    }

    fn reason(&self) -> &'static str {
        if self.spec.quota {
            "quota_exhausted"
        } else {
            "fleet_rate_limited"
        }
    }

    /// Spends one request of the budget of `consumer` (or of the route): the RateLimit-*
    /// values of a FLEET rate limit (`None` for a quota), or the 429 refusal.
    pub(crate) async fn check(
        &self,
        budgets: &Budgets,
        consumer: Option<&Consumer>,
        place: &Place<'_>,
    ) -> Result<Option<RateHeaders>, Rejection> {
        let (limit, period) = self.spec.limit(consumer.and_then(|c| c.plan.as_deref()));
        let key = self
            .spec
            .key(consumer.map(|c| &*c.name), place.listener, place.route);
        let now = unix_ms(SystemTime::now());
        let window = period.window(now);
        let previous = period.window(window.start_ms - 1).start_ms;
        let spent = budgets.spend(&self.name, key, window, previous).await;
        // Whole seconds until the window ends, rounded up.
        let reset_secs = ((window.end_ms - now).max(0) as u64).div_ceil(1000).max(1);
        let headers = |remaining: u64| {
            (!self.spec.quota).then(|| {
                RateHeaders::new(
                    HeaderValue::from(limit),
                    u32::try_from(remaining).unwrap_or(u32::MAX),
                    reset_secs,
                )
            })
        };
        match spent {
            Spent::Admitted { remaining, .. } => Ok(headers(remaining)),
            Spent::Refused { exhausted } => {
                // An exhausted budget comes back when the window ends; one not to be had now
                // (no control plane) may be granted any time.
                let retry = if exhausted { reset_secs } else { 1 };
                let mut r = Rejection::new(StatusCode::TOO_MANY_REQUESTS, self.reason())
                    .with_header(http::header::RETRY_AFTER, HeaderValue::from(retry));
                if let Some(h) = headers(0) {
                    h.write_into(&mut r.headers);
                }
                Err(r)
            }
        }
    }
}
