//! Cluster rules: endpoints, load balancing, health checking, outlier detection, limits, TLS.

use super::Errors;
use super::field::{self, MAX_PERIOD_SECS, MAX_TIMEOUT_SECS};
use crate::pb::{
    Cluster, HashPolicy, HealthCheck,
    cluster::{LbPolicy, UpstreamProtocol},
    hash_policy::Key,
};

const MAX_WEIGHT: u32 = 10_000;
const MAX_THRESHOLD: u32 = 1_000;
/// The longest service name a gRPC health check asks about.
const MAX_GRPC_SERVICE_BYTES: usize = 1024;
const MAX_CONCURRENCY: u32 = 1_000_000;
/// Bounds of a response head from an endpoint (hyper reads no less than 8 KiB).
const MIN_RESPONSE_HEAD: u32 = 8 * 1024;
const MAX_RESPONSE_HEAD: u32 = 1024 * 1024;
/// A year.
const MAX_COOKIE_TTL_SECS: i64 = 365 * 24 * 3600;

pub(crate) fn check(c: &Cluster, e: &mut Errors) {
    for (i, ep) in c.endpoints.iter().enumerate() {
        let at = format!("endpoints[{i}]");
        if ep.address.is_empty() {
            e.add(format!("{at}.address"), "address is required");
        } else {
            e.check(format!("{at}.address"), field::host(&ep.address));
        }
        if !(1..=65535).contains(&ep.port) {
            e.add(
                format!("{at}.port"),
                format!("port {} is not in 1-65535", ep.port),
            );
        }
        if ep.weight > MAX_WEIGHT {
            e.add(
                format!("{at}.weight"),
                format!("weight {} is above the limit of {MAX_WEIGHT}", ep.weight),
            );
        }
    }
    match LbPolicy::try_from(c.lb_policy) {
        Ok(LbPolicy::RingHash | LbPolicy::Maglev) if c.hash_policy.is_none() => {
            e.add("hash_policy", "RING_HASH and MAGLEV need a hash_policy");
        }
        Ok(LbPolicy::RingHash | LbPolicy::Maglev) => {}
        Ok(_) if c.hash_policy.is_some() => e.add(
            "hash_policy",
            "would be ignored: only RING_HASH and MAGLEV hash requests",
        ),
        Ok(_) => {}
        Err(_) => e.add("lb_policy", format!("unknown enum value {}", c.lb_policy)),
    }
    if let Some(h) = &c.hash_policy {
        hash_policy(h, e);
    }
    if let Some(h) = &c.health_check {
        health_check(h, c.protocol() == UpstreamProtocol::Http2, e);
    }
    if let Some(o) = &c.outlier_detection {
        let base_ejection = o.base_ejection_time.as_ref();
        field::duration(
            e,
            "outlier_detection.base_ejection_time",
            base_ejection,
            MAX_PERIOD_SECS,
        );
        limits(
            e,
            "outlier_detection",
            &[
                ("consecutive_5xx", o.consecutive_5xx, MAX_THRESHOLD),
                (
                    "consecutive_gateway_failures",
                    o.consecutive_gateway_failures,
                    MAX_THRESHOLD,
                ),
                ("max_ejection_percent", o.max_ejection_percent, 100),
            ],
        );
    }
    if let Some(b) = &c.circuit_breakers {
        if b.max_pending_requests > 0 && b.max_connections == 0 {
            e.add(
                "circuit_breakers.max_pending_requests",
                "needs max_connections: requests wait only while that many connections are open",
            );
        }
        limits(
            e,
            "circuit_breakers",
            &[
                ("max_connections", b.max_connections, MAX_CONCURRENCY),
                (
                    "max_pending_requests",
                    b.max_pending_requests,
                    MAX_CONCURRENCY,
                ),
                ("max_requests", b.max_requests, MAX_CONCURRENCY),
                ("max_retries", b.max_retries, MAX_CONCURRENCY),
            ],
        );
    }
    field::duration(
        e,
        "connect_timeout",
        c.connect_timeout.as_ref(),
        MAX_TIMEOUT_SECS,
    );
    if let Some(tls) = &c.tls {
        if !tls.server_name.is_empty() {
            e.check("tls.server_name", field::server_name(&tls.server_name));
        }
        let settings = [
            ("server_name", &tls.server_name),
            ("ca_secret", &tls.ca_secret),
            ("client_certificate_secret", &tls.client_certificate_secret),
        ];
        if !tls.enabled {
            for (name, value) in settings.iter().filter(|(_, v)| !v.is_empty()) {
                e.add(
                    format!("tls.{name}"),
                    format!("{value:?} would be ignored: tls.enabled is false"),
                );
            }
        }
    }
    field::known_enum::<UpstreamProtocol>(e, "protocol", c.protocol);
    let head = c.max_response_header_bytes;
    if head != 0 && !(MIN_RESPONSE_HEAD..=MAX_RESPONSE_HEAD).contains(&head) {
        e.add(
            "max_response_header_bytes",
            format!("{head} is not in {MIN_RESPONSE_HEAD}-{MAX_RESPONSE_HEAD}"),
        );
    }
    if let Some(l) = &c.locality {
        field::at_most(
            e,
            "locality.failover_threshold_percent",
            l.failover_threshold_percent.into(),
            100,
        );
    }
    if !c.service.is_empty() {
        e.check("service", crate::node::check_service_name(&c.service));
    }
}

fn hash_policy(h: &HashPolicy, e: &mut Errors) {
    match &h.key {
        None => e.add(
            "hash_policy",
            "a key (header, cookie, source_ip, query_param or session_cookie) is required",
        ),
        Some(Key::Header(name)) => e.check("hash_policy.header", field::header_name(name)),
        Some(Key::Cookie(name)) => {
            e.check("hash_policy.cookie", field::required(name, "cookie name"));
        }
        Some(Key::SourceIp(_)) => {}
        Some(Key::QueryParam(name)) => {
            e.check(
                "hash_policy.query_param",
                field::required(name, "query parameter name"),
            );
        }
        Some(Key::SessionCookie(c)) => {
            e.check(
                "hash_policy.session_cookie.name",
                field::cookie_name(&c.name),
            );
            if !c.path.is_empty() && !c.path.starts_with('/') {
                e.add("hash_policy.session_cookie.path", "must start with '/'");
            }
            field::duration(
                e,
                "hash_policy.session_cookie.ttl",
                c.ttl.as_ref(),
                MAX_COOKIE_TTL_SECS,
            );
        }
    }
}

fn health_check(h: &HealthCheck, http2: bool, e: &mut Errors) {
    if let Some(g) = &h.grpc {
        let http_only = [
            ("path", !h.path.is_empty()),
            ("expected_statuses", !h.expected_statuses.is_empty()),
            ("tcp", h.tcp),
        ];
        for (name, _) in http_only.iter().filter(|(_, set)| *set) {
            e.add(
                format!("health_check.{name}"),
                "would be ignored: a grpc check asks grpc.health.v1.Health/Check",
            );
        }
        if !http2 {
            e.add(
                "health_check.grpc",
                "gRPC speaks HTTP/2: the cluster needs protocol HTTP2",
            );
        }
        if g.service.len() > MAX_GRPC_SERVICE_BYTES {
            e.add(
                "health_check.grpc.service",
                format!("longer than {MAX_GRPC_SERVICE_BYTES} bytes"),
            );
        }
    } else if h.tcp {
        let http_only = [
            ("path", !h.path.is_empty()),
            ("host", !h.host.is_empty()),
            ("expected_statuses", !h.expected_statuses.is_empty()),
        ];
        for (name, _) in http_only.iter().filter(|(_, set)| *set) {
            e.add(
                format!("health_check.{name}"),
                "would be ignored: a tcp check only opens a connection",
            );
        }
    } else if !h.path.starts_with('/') {
        e.add("health_check.path", "must start with '/'");
    }
    if !h.host.is_empty() {
        e.check("health_check.host", field::host(&h.host));
    }
    field::duration(
        e,
        "health_check.interval",
        h.interval.as_ref(),
        MAX_PERIOD_SECS,
    );
    field::duration(
        e,
        "health_check.timeout",
        h.timeout.as_ref(),
        MAX_TIMEOUT_SECS,
    );
    limits(
        e,
        "health_check",
        &[
            ("healthy_threshold", h.healthy_threshold, MAX_THRESHOLD),
            ("unhealthy_threshold", h.unhealthy_threshold, MAX_THRESHOLD),
        ],
    );
    for (i, s) in h.expected_statuses.iter().enumerate() {
        if !(100..=599).contains(s) {
            e.add(
                format!("health_check.expected_statuses[{i}]"),
                format!("status {s} is not in 100-599"),
            );
        }
    }
}

/// Upper bounds of counts under `at`, as (field, value, max).
fn limits(e: &mut Errors, at: &str, limits: &[(&str, u32, u32)]) {
    for (name, value, max) in limits {
        field::at_most(e, &format!("{at}.{name}"), (*value).into(), (*max).into());
    }
}
