//! A route's retry policy, compiled: which failures are retried, how often, how long each try
//! may take and how long to wait between tries.

use std::time::Duration;

use http::Method;
use portico_api::pb;

use crate::grpc::Code;

use super::{FieldError, duration_or};

/// Default first delay between tries.
const DEFAULT_BASE_INTERVAL: Duration = Duration::from_millis(25);
/// Default request body bytes kept for replay.
const DEFAULT_BUFFER_BYTES: usize = 64 * 1024;

/// Why an attempt failed, as retry conditions name failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be opened.
    Connect,
    /// An HTTP/2 upstream refused the stream before processing it.
    RefusedStream,
    /// The connection failed before a response head arrived.
    Reset,
    /// The try took longer than its per-try timeout.
    Timeout,
    /// A response head with this status.
    Status(u16),
    /// A trailers-only gRPC answer with this status.
    Grpc(Code),
}

/// A compiled retry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first.
    pub attempts: u32,
    on_connect: bool,
    on_refused: bool,
    on_reset: bool,
    on_5xx: bool,
    on_gateway: bool,
    statuses: Vec<u16>,
    /// gRPC statuses retried.
    grpc: Vec<Code>,
    /// Time allowed per try; `None`: the rest of the route timeout.
    pub per_try_timeout: Option<Duration>,
    base: Duration,
    max: Duration,
    non_idempotent: bool,
    /// Request body bytes kept for replay.
    pub buffer_bytes: usize,
}

impl RetryPolicy {
    /// Compiles a route's `retry`; `None` when it retries nothing.
    pub fn compile(spec: &pb::RetryPolicy) -> Result<Option<RetryPolicy>, FieldError> {
        if spec.attempts == 0 {
            return Ok(None);
        }
        let mut p = RetryPolicy {
            attempts: spec.attempts,
            on_connect: false,
            on_refused: false,
            on_reset: false,
            on_5xx: false,
            on_gateway: false,
            statuses: Vec::new(),
            grpc: Vec::new(),
            per_try_timeout: spec
                .per_try_timeout
                .as_ref()
                .map(|d| duration_or(Some(d), Duration::ZERO))
                .filter(|d| !d.is_zero()),
            base: duration_or(spec.base_interval.as_ref(), DEFAULT_BASE_INTERVAL),
            max: Duration::ZERO,
            non_idempotent: spec.retry_non_idempotent,
            buffer_bytes: match spec.buffer_bytes {
                0 => DEFAULT_BUFFER_BYTES,
                n => n as usize,
            },
        };
        p.max = duration_or(spec.max_interval.as_ref(), p.base * 10);
        for (i, on) in spec.retry_on.iter().enumerate() {
            match on.as_str() {
                "connect-failure" => p.on_connect = true,
                "refused-stream" => p.on_refused = true,
                "reset" => p.on_reset = true,
                "5xx" => p.on_5xx = true,
                "gateway-error" => p.on_gateway = true,
                "retriable-status-codes" => {
                    p.statuses = spec
                        .retriable_status_codes
                        .iter()
                        .filter_map(|s| u16::try_from(*s).ok())
                        .collect();
                }
                "cancelled" => p.grpc.push(Code::Cancelled),
                "deadline-exceeded" => p.grpc.push(Code::DeadlineExceeded),
                "internal" => p.grpc.push(Code::Internal),
                "resource-exhausted" => p.grpc.push(Code::ResourceExhausted),
                "unavailable" => p.grpc.push(Code::Unavailable),
                other => {
                    return Err((
                        format!("retry.retry_on[{i}]"),
                        format!("unknown retry condition {other:?}"),
                    ));
                }
            }
        }
        Ok(Some(p))
    }

    /// Whether requests with `method` may be retried.
    pub fn allows(&self, method: &Method) -> bool {
        self.non_idempotent
            || matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            )
    }

    /// Whether `failure` is retried.
    pub fn retries(&self, failure: Failure) -> bool {
        match failure {
            Failure::Connect => self.on_connect || self.on_5xx || self.on_gateway,
            Failure::RefusedStream => self.on_refused || self.on_5xx || self.on_reset,
            Failure::Reset | Failure::Timeout => self.on_reset || self.on_5xx || self.on_gateway,
            Failure::Status(s) => {
                (self.on_5xx && (500..600).contains(&s))
                    || (self.on_gateway && (502..=504).contains(&s))
                    || self.statuses.contains(&s)
            }
            Failure::Grpc(code) => self.grpc.contains(&code),
        }
    }

    /// The wait before retry number `retry` (1 for the first): drawn uniformly up to the base
    /// interval doubled for each retry before it, at most the max interval ("full jitter").
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1 << retry.saturating_sub(1).min(16))
            .min(self.max);
        ceiling.mul_f64(rand::random_range(0.0..=1.0))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy(on: &[&str], statuses: &[u32]) -> RetryPolicy {
        RetryPolicy::compile(&pb::RetryPolicy {
            attempts: 2,
            retry_on: on.iter().map(|s| s.to_string()).collect(),
            retriable_status_codes: statuses.to_vec(),
            ..Default::default()
        })
        .unwrap()
        .unwrap()
    }

    /// Retry conditions, statuses, failures retried, failures not retried.
    type Case<'a> = (&'a [&'a str], &'a [u32], &'a [Failure], &'a [Failure]);

    #[test]
    fn each_condition_retries_its_failures() {
        use Failure::*;
        let cases: &[Case] = &[
            (
                &["connect-failure"],
                &[],
                &[Connect],
                &[Reset, Timeout, Status(503)],
            ),
            (
                &["refused-stream"],
                &[],
                &[RefusedStream],
                &[Connect, Reset, Status(503)],
            ),
            (
                &["reset"],
                &[],
                &[Reset, Timeout, RefusedStream],
                &[Connect, Status(502)],
            ),
            (
                &["5xx"],
                &[],
                &[Connect, Reset, Timeout, Status(500), Status(503)],
                &[Status(404), Status(499)],
            ),
            (
                &["gateway-error"],
                &[],
                &[Connect, Reset, Status(502), Status(504)],
                &[Status(500), Status(429)],
            ),
            (
                &["retriable-status-codes"],
                &[429, 409],
                &[Status(429), Status(409)],
                &[Status(503), Connect],
            ),
            (
                &["unavailable", "resource-exhausted"],
                &[],
                &[Grpc(Code::Unavailable), Grpc(Code::ResourceExhausted)],
                &[Grpc(Code::Internal), Grpc(Code::Ok), Status(503), Connect],
            ),
            (
                &["cancelled", "deadline-exceeded", "internal"],
                &[],
                &[
                    Grpc(Code::Cancelled),
                    Grpc(Code::DeadlineExceeded),
                    Grpc(Code::Internal),
                ],
                &[Grpc(Code::Unavailable), Grpc(Code::Unknown)],
            ),
        ];
        for (on, statuses, retried, not) in cases {
            let p = policy(on, statuses);
            for f in *retried {
                assert!(p.retries(*f), "{on:?} retries {f:?}");
            }
            for f in *not {
                assert!(!p.retries(*f), "{on:?} does not retry {f:?}");
            }
        }
    }

    #[test]
    fn only_idempotent_methods_unless_the_route_says_otherwise() {
        let p = policy(&["5xx"], &[]);
        assert!(p.allows(&Method::GET) && p.allows(&Method::PUT));
        assert!(!p.allows(&Method::POST) && !p.allows(&Method::PATCH));
        let mut any = p.clone();
        any.non_idempotent = true;
        assert!(any.allows(&Method::POST));
    }

    #[test]
    fn backoff_grows_with_full_jitter_up_to_the_max() {
        let p = policy(&["5xx"], &[]);
        for retry in 1..10 {
            let ceiling = (Duration::from_millis(25) * (1 << (retry - 1))).min(p.max);
            for _ in 0..50 {
                assert!(p.backoff(retry) <= ceiling, "retry {retry}");
            }
        }
        assert_eq!(p.max, Duration::from_millis(250));
        let none = RetryPolicy::compile(&pb::RetryPolicy::default()).unwrap();
        assert!(none.is_none(), "zero attempts retry nothing");
    }
}
