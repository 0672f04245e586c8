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
const MAX_CONCURRENCY: u32 = 1_000_000;

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
        Ok(_) => {}
        Err(_) => e.add("lb_policy", format!("unknown enum value {}", c.lb_policy)),
    }
    if let Some(h) = &c.hash_policy {
        hash_policy(h, e);
    }
    if let Some(h) = &c.health_check {
        health_check(h, e);
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
    if let Some(l) = &c.locality {
        field::at_most(
            e,
            "locality.failover_threshold_percent",
            l.failover_threshold_percent.into(),
            100,
        );
    }
    if !c.service.is_empty() {
        e.check("service", field::host(&c.service));
    }
}

fn hash_policy(h: &HashPolicy, e: &mut Errors) {
    match &h.key {
        None => e.add(
            "hash_policy",
            "a key (header, cookie or source_ip) is required",
        ),
        Some(Key::Header(name)) => e.check("hash_policy.header", field::header_name(name)),
        Some(Key::Cookie(name)) => {
            e.check("hash_policy.cookie", field::required(name, "cookie name"));
        }
        Some(Key::SourceIp(_)) => {}
    }
}

fn health_check(h: &HealthCheck, e: &mut Errors) {
    if !h.path.starts_with('/') {
        e.add("health_check.path", "must start with '/'");
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
