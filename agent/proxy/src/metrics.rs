//! Every metric the agent's data path records, named once (prefix `portico_agent_`), and the
//! per-request recording.
//!
//! The admin endpoint renders them with the Prometheus exporter; [`describe`] registers their
//! help texts and should run once after the recorder is installed.
//!
//! Looking a labelled metric up in the recorder builds its key and hashes every label; the
//! per-request metrics are looked up once per listener, route and cluster by each proxy
//! worker instead ([`request_handles`]), and a cluster's counters once when it is compiled.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};

use metrics::{Counter, Histogram, SharedString};

use crate::grpc::Code;

/// Counter: requests answered, by `listener`, `route`, `cluster`, `status_class` ("2xx"...) and
/// `grpc_status` (the gRPC status number a gRPC call ended with, "0"–"16"; empty for requests
/// that are not gRPC). Requests the agent answered itself carry an empty `cluster`.
pub const REQUESTS_TOTAL: &str = "portico_agent_requests_total";
/// Histogram: seconds from request head to the end of the response body, by `listener` and
/// `route`.
pub const REQUEST_DURATION_SECONDS: &str = "portico_agent_request_duration_seconds";
/// Counter: failed attempts to connect to an upstream endpoint, by `cluster`.
pub const UPSTREAM_CONNECT_ERRORS_TOTAL: &str = "portico_agent_upstream_connect_errors_total";
/// Counter: requests refused because a cluster limit was reached, by `cluster` and `limit`
/// (`max_requests`, `max_retries`, `retry_budget`, `max_pending_requests`).
pub const OVERFLOW_TOTAL: &str = "portico_agent_overflow_total";
/// Counter: upstream attempts after the first, by `cluster`.
pub const UPSTREAM_RETRIES_TOTAL: &str = "portico_agent_upstream_retries_total";
/// Gauge: 1 when an endpoint takes requests (healthy and not ejected), else 0, by `cluster`
/// and `endpoint`.
pub const ENDPOINT_HEALTHY: &str = "portico_agent_endpoint_healthy";
/// Counter: endpoints ejected by outlier detection, by `cluster`.
pub const OUTLIER_EJECTIONS_TOTAL: &str = "portico_agent_outlier_ejections_total";
/// Counter: times a cluster had no healthy endpoint and balanced over all (panic mode), by
/// `cluster`.
pub const LB_PANIC_TOTAL: &str = "portico_agent_lb_panic_total";
/// Counter: requests refused by a gateway policy, by `listener`, `route` and `reason`
/// (`ip_denied`, `auth_missing`, `rate_limited`, ...).
pub const REJECTIONS_TOTAL: &str = "portico_agent_rejections_total";
/// Gauge: open client connections, by `listener`.
pub const ACTIVE_CONNECTIONS: &str = "portico_agent_active_connections";
/// Gauge: the config version being served.
pub const CONFIG_VERSION: &str = "portico_agent_config_version";
/// Gauge: the worker threads serving traffic.
pub const PROXY_WORKERS: &str = "portico_agent_proxy_workers";
/// Counter: configs applied successfully.
pub const APPLIES_TOTAL: &str = "portico_agent_applies_total";
/// Counter: configs rejected by apply, by `reason` ("compile" or "bind").
pub const APPLY_FAILURES_TOTAL: &str = "portico_agent_apply_failures_total";

/// Label: the listener's name.
pub const LABEL_LISTENER: &str = "listener";
/// Label: the route's name.
pub const LABEL_ROUTE: &str = "route";
/// Label: the cluster's name.
pub const LABEL_CLUSTER: &str = "cluster";
/// Label: the response status class.
pub const LABEL_STATUS_CLASS: &str = "status_class";
/// Label: the gRPC status of a gRPC call ("" for other requests).
pub const LABEL_GRPC_STATUS: &str = "grpc_status";
/// Label: an endpoint's host:port.
pub const LABEL_ENDPOINT: &str = "endpoint";
/// Label: the cluster limit a request overflowed.
pub const LABEL_LIMIT: &str = "limit";
/// Label: why an apply failed.
pub const LABEL_REASON: &str = "reason";

/// Registers the help text of every metric above with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS_TOTAL, "Requests answered by the data path.");
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from request head to the end of the response body."
    );
    describe_counter!(
        UPSTREAM_CONNECT_ERRORS_TOTAL,
        "Failed connection attempts to upstream endpoints."
    );
    describe_gauge!(ACTIVE_CONNECTIONS, "Open client connections.");
    describe_counter!(REJECTIONS_TOTAL, "Requests refused by a gateway policy.");
    describe_counter!(OVERFLOW_TOTAL, "Requests refused at a cluster limit.");
    describe_counter!(UPSTREAM_RETRIES_TOTAL, "Upstream attempts after the first.");
    describe_gauge!(ENDPOINT_HEALTHY, "Whether an endpoint takes requests.");
    describe_counter!(
        OUTLIER_EJECTIONS_TOTAL,
        "Endpoints ejected by outlier detection."
    );
    describe_counter!(
        LB_PANIC_TOTAL,
        "Times a cluster had no healthy endpoint and used all of them."
    );
    describe_gauge!(CONFIG_VERSION, "Config version being served.");
    describe_gauge!(PROXY_WORKERS, "Worker threads serving traffic.");
    describe_counter!(APPLIES_TOTAL, "Configs applied.");
    describe_counter!(APPLY_FAILURES_TOTAL, "Configs rejected by apply.");
}

/// The failed-connect counter of `cluster`.
pub fn upstream_connect_errors(cluster: &Arc<str>) -> Counter {
    metrics::counter!(UPSTREAM_CONNECT_ERRORS_TOTAL, LABEL_CLUSTER => cluster.clone())
}

/// Counts a request refused at `cluster`'s `limit`.
pub fn overflow(cluster: &Arc<str>, limit: &'static str) {
    metrics::counter!(OVERFLOW_TOTAL, LABEL_CLUSTER => cluster.clone(), LABEL_LIMIT => limit)
        .increment(1);
}

/// Counts a retry to `cluster`.
pub fn upstream_retry(cluster: &Arc<str>) {
    metrics::counter!(UPSTREAM_RETRIES_TOTAL, LABEL_CLUSTER => cluster.clone()).increment(1);
}

/// Sets whether `endpoint` of `cluster` takes requests.
pub fn endpoint_healthy(cluster: &Arc<str>, endpoint: &http::uri::Authority, healthy: bool) {
    metrics::gauge!(
        ENDPOINT_HEALTHY,
        LABEL_CLUSTER => cluster.clone(),
        LABEL_ENDPOINT => endpoint.to_string(),
    )
    .set(if healthy { 1.0 } else { 0.0 });
}

/// Counts an ejection from `cluster`.
pub fn outlier_ejection(cluster: &Arc<str>) {
    metrics::counter!(OUTLIER_EJECTIONS_TOTAL, LABEL_CLUSTER => cluster.clone()).increment(1);
}

/// Counts `cluster` entering panic mode.
pub fn lb_panic(cluster: &Arc<str>) {
    metrics::counter!(LB_PANIC_TOTAL, LABEL_CLUSTER => cluster.clone()).increment(1);
}

/// The request metrics of `listener`, `route` and `cluster`, from the calling worker's cache.
///
/// Each worker has its own handle sets, so the reference counting of a request's handles stays
/// on the worker's core.
pub fn request_handles(
    listener: &Arc<str>,
    route: Option<&Arc<str>>,
    cluster: Option<&Arc<str>>,
) -> Arc<RequestHandles> {
    HANDLES.with_borrow_mut(|cache| {
        let key = (address(Some(listener)), address(route), address(cluster));
        if cache.len() >= MAX_CACHED && !cache.contains_key(&key) {
            // Keeps entries of configs long gone from piling up.
            cache.clear();
        }
        cache
            .entry(key)
            .or_insert_with(|| Arc::new(RequestHandles::new(listener, route, cluster)))
            .clone()
    })
}

/// Counts a request refused by a policy with `reason` on `listener`'s `route`.
pub fn rejection(listener: &Arc<str>, route: &Arc<str>, reason: &'static str) {
    REJECTIONS.with_borrow_mut(|cache| {
        let key = (
            address(Some(listener)),
            address(Some(route)),
            reason.as_ptr() as usize,
        );
        if cache.len() >= MAX_CACHED && !cache.contains_key(&key) {
            cache.clear();
        }
        cache
            .entry(key)
            .or_insert_with(|| {
                let counter = metrics::counter!(
                    REJECTIONS_TOTAL,
                    LABEL_LISTENER => listener.clone(),
                    LABEL_ROUTE => route.clone(),
                    LABEL_REASON => reason,
                );
                (counter, [listener.clone(), route.clone()])
            })
            .0
            .increment(1);
    });
}

/// Cached (listener, route, cluster) handle sets per worker, at most.
const MAX_CACHED: usize = 8192;

thread_local! {
    /// Keyed by the addresses of the label strings, which each entry keeps alive so that no
    /// other string can take an address while it is cached.
    static HANDLES: RefCell<HandleCache> = RefCell::new(HashMap::default());
    /// Rejection counters by the addresses of their (listener, route, reason) labels; the
    /// names are kept alive with them.
    static REJECTIONS: RefCell<RejectionCache> = RefCell::new(HashMap::default());
}

type RejectionCache = HashMap<(usize, usize, usize), (Counter, [Arc<str>; 2]), AddressHash>;

/// Handle sets by the addresses of their (listener, route, cluster) names.
type HandleCache = HashMap<(usize, usize, usize), Arc<RequestHandles>, AddressHash>;

/// Multiply-rotate hashing of addresses (as in rustc's FxHash): a fraction of SipHash's cost,
/// and the keys are addresses of the agent's own strings, not chosen by any client.
type AddressHash = BuildHasherDefault<AddressHasher>;

#[derive(Default)]
pub(crate) struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The metrics of requests to one (listener, route, cluster).
pub struct RequestHandles {
    labels: [Option<Arc<str>>; 3],
    /// By status class, 1xx to 5xx, each looked up on first use.
    requests: [OnceLock<Counter>; 5],
    /// gRPC calls by status class and gRPC status (class × 17 + code), made for routes that
    /// see gRPC.
    grpc: OnceLock<Box<[OnceLock<Counter>; 5 * GRPC_CODES]>>,
    duration: Histogram,
}

/// The number of gRPC status codes.
const GRPC_CODES: usize = 17;

impl RequestHandles {
    fn new(listener: &Arc<str>, route: Option<&Arc<str>>, cluster: Option<&Arc<str>>) -> Self {
        RequestHandles {
            labels: [Some(listener.clone()), route.cloned(), cluster.cloned()],
            requests: Default::default(),
            grpc: OnceLock::new(),
            duration: metrics::histogram!(
                REQUEST_DURATION_SECONDS,
                LABEL_LISTENER => listener.clone(),
                LABEL_ROUTE => label(route),
            ),
        }
    }

    /// Counts a request answered with `status` (and, for a gRPC call, `grpc`) after `seconds`,
    /// and records its duration.
    pub fn record(&self, status: u16, grpc: Option<Code>, seconds: f64) {
        let class = class_index(status);
        let [listener, route, cluster] = &self.labels;
        let slot = match grpc {
            None => &self.requests[class],
            Some(code) => {
                let slots = self
                    .grpc
                    .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
                &slots[class * GRPC_CODES + code as usize]
            }
        };
        slot.get_or_init(|| {
            metrics::counter!(
                REQUESTS_TOTAL,
                LABEL_LISTENER => label(listener.as_ref()),
                LABEL_ROUTE => label(route.as_ref()),
                LABEL_CLUSTER => label(cluster.as_ref()),
                LABEL_STATUS_CLASS => STATUS_CLASSES[class],
                LABEL_GRPC_STATUS => grpc.map_or("", Code::number),
            )
        })
        .increment(1);
        self.duration.record(seconds);
    }

    /// The route's and the cluster's names, as the labels hold them.
    pub fn names(&self) -> (Option<&Arc<str>>, Option<&Arc<str>>) {
        (self.labels[1].as_ref(), self.labels[2].as_ref())
    }

    /// The route's name, "" when the request matched none.
    pub fn route(&self) -> &str {
        self.labels[1].as_deref().unwrap_or("")
    }

    /// The cluster's name, "" when the request was not forwarded.
    pub fn cluster(&self) -> &str {
        self.labels[2].as_deref().unwrap_or("")
    }
}

fn address(s: Option<&Arc<str>>) -> usize {
    s.map_or(0, |s| Arc::as_ptr(s).cast::<u8>() as usize)
}

fn label(value: Option<&Arc<str>>) -> SharedString {
    value.map_or(SharedString::const_str(""), |v| {
        SharedString::from(v.clone())
    })
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(status: u16) -> usize {
    match status / 100 {
        1 => 0,
        2 => 1,
        3 => 2,
        4 => 3,
        _ => 4,
    }
}

/// "2xx", "4xx"... for a status code; anything outside 100-499 counts as "5xx".
pub fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[class_index(status)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_their_own_labels_and_class() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let (web, api, shop, up) = (
            Arc::from("web"),
            Arc::from("api"),
            Arc::from("shop"),
            Arc::from("up"),
        );
        metrics::with_local_recorder(&recorder, || {
            for status in [200, 204, 503, 0, 404] {
                request_handles(&web, Some(&api), Some(&up)).record(status, None, 0.001);
            }
            request_handles(&web, Some(&shop), None).record(200, None, 0.001);
            request_handles(&web, None, None).record(400, None, 0.001);
            for code in [Code::Ok, Code::Ok, Code::Unavailable] {
                request_handles(&web, Some(&api), Some(&up)).record(200, Some(code), 0.001);
            }
        });
        let text = handle.render();
        for (labels, count) in [
            (
                r#"route="api",cluster="up",status_class="2xx",grpc_status="""#,
                2,
            ),
            (
                r#"route="api",cluster="up",status_class="5xx",grpc_status="""#,
                2,
            ),
            (
                r#"route="api",cluster="up",status_class="4xx",grpc_status="""#,
                1,
            ),
            (
                r#"route="shop",cluster="",status_class="2xx",grpc_status="""#,
                1,
            ),
            (
                r#"route="",cluster="",status_class="4xx",grpc_status="""#,
                1,
            ),
            (
                r#"route="api",cluster="up",status_class="2xx",grpc_status="0""#,
                2,
            ),
            (
                r#"route="api",cluster="up",status_class="2xx",grpc_status="14""#,
                1,
            ),
        ] {
            let line = format!("{REQUESTS_TOTAL}{{listener=\"web\",{labels}}} {count}\n");
            assert!(text.contains(&line), "{line} in\n{text}");
        }
    }
}
