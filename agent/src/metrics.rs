//! Every metric the agent's data path records, named once (prefix `portico_agent_`).
//!
//! The admin endpoint renders them with the Prometheus exporter; [`describe`] registers their
//! help texts and should run once after the recorder is installed.

/// Counter: requests answered, by `listener`, `route`, `cluster` and `status_class` ("2xx"...).
/// Requests the agent answered itself carry an empty `cluster`.
pub const REQUESTS_TOTAL: &str = "portico_agent_requests_total";
/// Histogram: seconds from request head to the end of the response body, by `listener` and
/// `route`.
pub const REQUEST_DURATION_SECONDS: &str = "portico_agent_request_duration_seconds";
/// Counter: failed attempts to connect to an upstream endpoint, by `cluster`.
pub const UPSTREAM_CONNECT_ERRORS_TOTAL: &str = "portico_agent_upstream_connect_errors_total";
/// Gauge: open client connections, by `listener`.
pub const ACTIVE_CONNECTIONS: &str = "portico_agent_active_connections";
/// Gauge: the config version being served.
pub const CONFIG_VERSION: &str = "portico_agent_config_version";
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
    describe_gauge!(CONFIG_VERSION, "Config version being served.");
    describe_counter!(APPLIES_TOTAL, "Configs applied.");
    describe_counter!(APPLY_FAILURES_TOTAL, "Configs rejected by apply.");
}

/// "2xx", "4xx"... for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}
