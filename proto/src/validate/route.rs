//! RouteTable rules: domains unique across virtual hosts, and each route's match, action,
//! rewrites, header changes, timeout and retries.

use std::collections::HashMap;

use super::Errors;
use super::field::{self, MAX_TIMEOUT_SECS};
use crate::pb::{
    DirectResponse, GrpcMatch, Redirect, Route, RouteMatch, RouteTable, VirtualHost,
    WeightedClusters, header_match, query_param_match, route_action::Action, route_match::Path,
};

const REDIRECT_STATUSES: &[u32] = &[301, 302, 303, 307, 308];
const RETRY_ON: &[&str] = &[
    "connect-failure",
    "refused-stream",
    "reset",
    "5xx",
    "gateway-error",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];
/// The retry conditions on gRPC statuses.
const GRPC_RETRY_ON: &[&str] = &[
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];
const MAX_RETRIES: u32 = 10;
/// The largest request body kept for replaying retries.
const MAX_RETRY_BUFFER_BYTES: u64 = 16 << 20;
const MAX_WEIGHT: u32 = 10_000;
const MAX_BODY_BYTES: usize = 1 << 20;

pub(crate) fn check(t: &RouteTable, e: &mut Errors) {
    let mut domains = HashMap::new();
    for (v, host) in t.virtual_hosts.iter().enumerate() {
        let at = format!("virtual_hosts[{v}]");
        if !host.name.is_empty() {
            e.check(format!("{at}.name"), field::name(&host.name));
        }
        if host.domains.is_empty() {
            e.add(format!("{at}.domains"), "at least one domain is required");
        }
        for (d, domain) in host.domains.iter().enumerate() {
            let field = format!("{at}.domains[{d}]");
            e.check(&field, field::host_pattern(domain, true));
            let owner = ("virtual_hosts", v);
            field::unique(e, &mut domains, owner, (&field, "domain", domain));
        }
        for (r, route) in host.routes.iter().enumerate() {
            check_route(route, &format!("{at}.routes[{r}]"), e);
        }
        regex_paths(host, &at, e);
    }
}

/// Agents match a virtual host's regex paths as one set ([`crate::pattern::anchored_set`]):
/// regexes each small enough can still be too many together.
fn regex_paths(host: &VirtualHost, at: &str, e: &mut Errors) {
    let regexes: Vec<&str> = host
        .routes
        .iter()
        .filter_map(|r| match r.r#match.as_ref()?.path.as_ref()? {
            Path::Regex(re) => Some(re.as_str()),
            _ => None,
        })
        .collect();
    if regexes.len() < 2 {
        return;
    }
    // A bad regex alone fails the set too; it is reported on its route already.
    if let Err(err) = crate::pattern::anchored_set(regexes.iter().copied())
        && regexes.iter().all(|re| field::regex(re).is_ok())
    {
        e.add(
            format!("{at}.routes"),
            format!("the regex paths of this virtual host are too large together: {err}"),
        );
    }
}

fn check_route(route: &Route, at: &str, e: &mut Errors) {
    if !route.name.is_empty() {
        e.check(format!("{at}.name"), field::name(&route.name));
    }
    let forwards = matches!(
        route.action.as_ref().and_then(|a| a.action.as_ref()),
        Some(Action::Cluster(_) | Action::WeightedClusters(_))
    );
    if route.grpc_web && !forwards {
        e.add(
            format!("{at}.grpc_web"),
            "needs a forwarding action (cluster or weighted_clusters)",
        );
    }
    let is_prefix = if let Some(m) = &route.r#match {
        check_match(m, &format!("{at}.match"), e);
        matches!(m.path, Some(Path::Prefix(_)))
    } else {
        false
    };
    match route.action.as_ref().and_then(|a| a.action.as_ref()) {
        None => e.add(format!("{at}.action"), "an action is required"),
        Some(Action::Cluster(c)) => {
            e.check(
                format!("{at}.action.cluster"),
                field::required(c, "cluster"),
            );
        }
        Some(Action::WeightedClusters(w)) => {
            weighted(w, &format!("{at}.action.weighted_clusters"), e);
        }
        Some(Action::Redirect(r)) => redirect(r, &format!("{at}.action.redirect"), e),
        Some(Action::DirectResponse(d)) => {
            direct_response(d, &format!("{at}.action.direct_response"), e);
        }
    }
    if !route.prefix_rewrite.is_empty() {
        let field = format!("{at}.prefix_rewrite");
        if !is_prefix {
            e.add(&field, "prefix_rewrite needs a prefix match");
        } else {
            e.check(&field, field::uri_path(&route.prefix_rewrite));
        }
    }
    field::header_transform(
        e,
        &format!("{at}.request_headers"),
        route.request_headers.as_ref(),
    );
    field::header_transform(
        e,
        &format!("{at}.response_headers"),
        route.response_headers.as_ref(),
    );
    field::duration(
        e,
        &format!("{at}.timeout"),
        route.timeout.as_ref(),
        MAX_TIMEOUT_SECS,
    );
    if let Some(retry) = &route.retry {
        if retry.attempts > MAX_RETRIES {
            e.add(
                format!("{at}.retry.attempts"),
                format!(
                    "{} retries is above the limit of {MAX_RETRIES}",
                    retry.attempts
                ),
            );
        }
        for (i, cond) in retry.retry_on.iter().enumerate() {
            e.check(
                format!("{at}.retry.retry_on[{i}]"),
                field::one_of(cond, RETRY_ON),
            );
            if GRPC_RETRY_ON.contains(&cond.as_str()) && !retry.retry_non_idempotent {
                e.add(
                    format!("{at}.retry.retry_on[{i}]"),
                    format!(
                        "{cond:?} retries gRPC calls, which are POST requests: \
                         it needs retry_non_idempotent: true"
                    ),
                );
            }
        }
        for (name, value) in [
            ("per_try_timeout", &retry.per_try_timeout),
            ("base_interval", &retry.base_interval),
            ("max_interval", &retry.max_interval),
        ] {
            field::duration(
                e,
                &format!("{at}.retry.{name}"),
                value.as_ref(),
                MAX_TIMEOUT_SECS,
            );
        }
        for (i, status) in retry.retriable_status_codes.iter().enumerate() {
            if !(100..=599).contains(status) {
                e.add(
                    format!("{at}.retry.retriable_status_codes[{i}]"),
                    format!("status {status} is not in 100-599"),
                );
            }
        }
        let retries_statuses = retry.retry_on.iter().any(|c| c == "retriable-status-codes");
        if retries_statuses && retry.retriable_status_codes.is_empty() {
            e.add(
                format!("{at}.retry.retriable_status_codes"),
                "required by retry_on \"retriable-status-codes\"",
            );
        }
        field::at_most(
            e,
            &format!("{at}.retry.buffer_bytes"),
            retry.buffer_bytes.into(),
            MAX_RETRY_BUFFER_BYTES,
        );
    }
    for (i, p) in route.policies.iter().enumerate() {
        e.check(
            format!("{at}.policies[{i}]"),
            field::required(p, "policy name"),
        );
    }
}

fn check_match(m: &RouteMatch, at: &str, e: &mut Errors) {
    if let Some(g) = &m.grpc {
        grpc_match(g, m.path.is_some(), &format!("{at}.grpc"), e);
    }
    match &m.path {
        Some(Path::Exact(p)) if !p.starts_with('/') => {
            e.add(format!("{at}.exact"), "must start with '/'");
        }
        Some(Path::Prefix(p)) if !p.starts_with('/') => {
            e.add(format!("{at}.prefix"), "must start with '/'");
        }
        Some(Path::Regex(r)) => e.check(format!("{at}.regex"), field::regex(r)),
        _ => {}
    }
    for (i, method) in m.methods.iter().enumerate() {
        e.check(format!("{at}.methods[{i}]"), field::method(method));
    }
    for (i, h) in m.headers.iter().enumerate() {
        e.check(
            format!("{at}.headers[{i}].name"),
            field::header_name(&h.name),
        );
        match &h.value {
            Some(header_match::Value::Regex(r)) => {
                e.check(format!("{at}.headers[{i}].regex"), field::regex(r));
            }
            Some(header_match::Value::Present(false)) => e.add(
                format!("{at}.headers[{i}].present"),
                "must be true (to match requests without the header, add invert: true)",
            ),
            _ => {}
        }
    }
    for (i, q) in m.query_params.iter().enumerate() {
        e.check(
            format!("{at}.query_params[{i}].name"),
            field::required(&q.name, "name"),
        );
        match &q.value {
            Some(query_param_match::Value::Regex(r)) => {
                e.check(format!("{at}.query_params[{i}].regex"), field::regex(r));
            }
            Some(query_param_match::Value::Present(false)) => {
                e.add(format!("{at}.query_params[{i}].present"), "must be true");
            }
            _ => {}
        }
    }
}

/// A gRPC match: a service and a method name that make a path, and no other path condition.
fn grpc_match(g: &GrpcMatch, has_path: bool, at: &str, e: &mut Errors) {
    if has_path {
        e.add(
            at,
            "is a path condition itself: set it or exact, prefix or regex, not both",
        );
    }
    if g.service.is_empty() && g.method.is_empty() {
        e.add(at, "set service, method or both");
    }
    let name = |s: &str, dots: bool| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || (dots && b == b'.'))
            && !s.starts_with('.')
            && !s.ends_with('.')
            && !s.contains("..")
    };
    if !name(&g.service, true) {
        e.add(
            format!("{at}.service"),
            format!(
                "{:?} is not a gRPC service name (letters, digits, '_', and '.' between parts)",
                g.service
            ),
        );
    }
    if !name(&g.method, false) {
        e.add(
            format!("{at}.method"),
            format!(
                "{:?} is not a gRPC method name (letters, digits and '_')",
                g.method
            ),
        );
    }
}

fn weighted(w: &WeightedClusters, at: &str, e: &mut Errors) {
    if w.clusters.is_empty() {
        e.add(format!("{at}.clusters"), "at least one cluster is required");
        return;
    }
    for (i, c) in w.clusters.iter().enumerate() {
        e.check(
            format!("{at}.clusters[{i}].cluster"),
            field::required(&c.cluster, "cluster"),
        );
        if c.weight > MAX_WEIGHT {
            e.add(
                format!("{at}.clusters[{i}].weight"),
                format!("weight {} is above the limit of {MAX_WEIGHT}", c.weight),
            );
        }
    }
    if w.clusters.iter().all(|c| c.weight == 0) {
        e.add(format!("{at}.clusters"), "weights must sum above zero");
    }
}

fn redirect(r: &Redirect, at: &str, e: &mut Errors) {
    if r.status != 0 && !REDIRECT_STATUSES.contains(&r.status) {
        e.add(
            format!("{at}.status"),
            format!(
                "status {} is not a redirect; use 301, 302, 303, 307 or 308",
                r.status
            ),
        );
    }
    if !r.scheme.is_empty() {
        e.check(
            format!("{at}.scheme"),
            field::one_of(&r.scheme, &["http", "https"]),
        );
    }
    if !r.host.is_empty() {
        e.check(format!("{at}.host"), field::host(&r.host));
    }
    if r.port > 65535 {
        e.add(
            format!("{at}.port"),
            format!("port {} is not in 1-65535", r.port),
        );
    }
    if !r.path.is_empty() {
        e.check(format!("{at}.path"), field::uri_path(&r.path));
    }
}

fn direct_response(d: &DirectResponse, at: &str, e: &mut Errors) {
    if !(200..=599).contains(&d.status) {
        e.add(
            format!("{at}.status"),
            format!("status {} is not in 200-599", d.status),
        );
    }
    if d.body.len() > MAX_BODY_BYTES {
        e.add(
            format!("{at}.body"),
            format!("body is larger than {MAX_BODY_BYTES} bytes"),
        );
    }
    e.check(
        format!("{at}.content_type"),
        field::header_value(&d.content_type),
    );
}
