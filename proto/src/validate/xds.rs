//! What xDS clients cannot be told, refused on the resources they would be sent.
//!
//! The control plane translates listeners, route tables and clusters into Envoy's xDS
//! resources (ARCHITECTURE.md, "xDS"). Some fields have no xDS counterpart, or none that
//! Envoy or gRPC would honour as Portico agents do. Sending the rest without them would be
//! config accepted and ignored on traffic, so validation refuses such a field wherever an xDS
//! client would be sent it: on an API listener and what it reaches (gRPC clients), and on an
//! HTTP or HTTPS listener whose selector's `kinds` names "envoy" and what it reaches (Envoy).
//! Selectors are matched per node at run time, so this looks at the kinds a listener is for,
//! not at which nodes are connected: a listener either may be sent to an xDS client or never
//! is. Portico agents read the same resources without these limits.
//!
//! Each error is reported on the resource that holds the field, with its path, and says which
//! listener brings the resource to which clients.

use std::collections::HashSet;

use super::{ValidationError, error};
use crate::node::DataPlane;
use crate::pb::{
    Cluster, Kind, Listener, RouteTable, cluster, hash_policy, resource::Spec, route_action,
    route_match,
};
use crate::{ResourceKey, ResourceSet};

/// Records every field the xDS clients of each listener cannot be sent.
pub(crate) fn check(set: &ResourceSet, out: &mut Vec<ValidationError>) {
    let mut seen = HashSet::new();
    let mut report = Report {
        out,
        seen: &mut seen,
        via: "",
        kind: DataPlane::Envoy,
    };
    for r in set.of_kind(Kind::Listener) {
        let Some(Spec::Listener(l)) = &r.spec else {
            continue;
        };
        for kind in [DataPlane::Envoy, DataPlane::Grpc] {
            if !kind.runs(l) {
                continue;
            }
            report.via = &r.name;
            report.kind = kind;
            if kind == DataPlane::Envoy {
                envoy_listener(&r.key(), l, &mut report);
            }
            let Some(Some(Spec::RouteTable(table))) =
                set.get(Kind::RouteTable, &l.route_table).map(|t| &t.spec)
            else {
                continue;
            };
            let table_key = ResourceKey::new(Kind::RouteTable, &l.route_table);
            route_table(&table_key, table, &mut report);
            for name in clusters_of(table) {
                if let Some(Some(Spec::Cluster(c))) = set.get(Kind::Cluster, name).map(|c| &c.spec)
                {
                    cluster(&ResourceKey::new(Kind::Cluster, name), c, &mut report);
                }
            }
        }
    }
}

/// Where errors go, once per resource, field and client kind, naming the listener that brings
/// the resource to those clients.
struct Report<'a> {
    out: &'a mut Vec<ValidationError>,
    seen: &'a mut HashSet<(ResourceKey, String, DataPlane)>,
    via: &'a str,
    kind: DataPlane,
}

impl Report<'_> {
    fn add(&mut self, key: &ResourceKey, field: impl Into<String>, why: &str) {
        let field = field.into();
        if !self.seen.insert((key.clone(), field.clone(), self.kind)) {
            return;
        }
        let clients = match self.kind {
            DataPlane::Grpc => "gRPC clients",
            _ => "Envoy proxies",
        };
        let message = format!(
            "cannot be sent over xDS: {why} ({clients} are sent it through Listener/{})",
            self.via
        );
        self.out.push(error(key, &field, message));
    }
}

fn envoy_listener(key: &ResourceKey, l: &Listener, r: &mut Report<'_>) {
    if !l.policies.is_empty() {
        r.add(
            key,
            "policies",
            "Envoy is not sent Portico's gateway policies",
        );
    }
    if l.redirect_to_https.is_some() {
        r.add(
            key,
            "redirect_to_https",
            "the HTTPS redirect listener is not translated to xDS yet",
        );
    }
    if let Some(tls) = &l.tls
        && (!tls.client_ca_secret.is_empty() || tls.require_client_cert)
    {
        let field = if tls.client_ca_secret.is_empty() {
            "tls.require_client_cert"
        } else {
            "tls.client_ca_secret"
        };
        r.add(
            key,
            field,
            "client certificate verification is not translated to xDS yet",
        );
    }
    if let Some(limits) = &l.limits {
        if limits.max_request_body_bytes != 0 {
            r.add(
                key,
                "limits.max_request_body_bytes",
                "Envoy has no limit on streamed request bodies",
            );
        }
        if limits.max_connections != 0 {
            r.add(
                key,
                "limits.max_connections",
                "Envoy's connection limit closes connections instead of making them wait",
            );
        }
        if limits.max_request_header_bytes % 1024 != 0 {
            r.add(
                key,
                "limits.max_request_header_bytes",
                "Envoy counts the request head limit in KiB: use a multiple of 1024",
            );
        }
    }
}

fn route_table(key: &ResourceKey, t: &RouteTable, r: &mut Report<'_>) {
    let grpc = r.kind == DataPlane::Grpc;
    for (v, host) in t.virtual_hosts.iter().enumerate() {
        for (i, route) in host.routes.iter().enumerate() {
            let at = format!("virtual_hosts[{v}].routes[{i}]");
            if !route.policies.is_empty() {
                let why = if grpc {
                    "gRPC clients do not run Portico's gateway policies"
                } else {
                    "Envoy is not sent Portico's gateway policies"
                };
                r.add(key, format!("{at}.policies"), why);
            }
            if !grpc {
                continue;
            }
            if let Some(m) = &route.r#match {
                if !m.methods.is_empty() {
                    r.add(
                        key,
                        format!("{at}.match.methods"),
                        "gRPC clients send every call as POST and do not match on methods",
                    );
                }
                if !m.query_params.is_empty() {
                    r.add(
                        key,
                        format!("{at}.match.query_params"),
                        "gRPC calls have no query string",
                    );
                }
                if let Some(route_match::Path::Exact(p)) = &m.path
                    && !is_grpc_method(p)
                {
                    r.add(
                        key,
                        format!("{at}.match.exact"),
                        "gRPC clients match exact paths of the form /service/method only",
                    );
                }
            }
            match route.action.as_ref().and_then(|a| a.action.as_ref()) {
                Some(route_action::Action::Redirect(_)) => r.add(
                    key,
                    format!("{at}.action.redirect"),
                    "gRPC clients only send calls to clusters",
                ),
                Some(route_action::Action::DirectResponse(_)) => r.add(
                    key,
                    format!("{at}.action.direct_response"),
                    "gRPC clients only send calls to clusters",
                ),
                _ => {}
            }
            let unmapped = [
                ("prefix_rewrite", !route.prefix_rewrite.is_empty()),
                ("request_headers", route.request_headers.is_some()),
                ("response_headers", route.response_headers.is_some()),
            ];
            for (field, set) in unmapped {
                if set {
                    r.add(
                        key,
                        format!("{at}.{field}"),
                        "gRPC clients do not rewrite paths or headers",
                    );
                }
            }
            if route.retry.is_some() {
                r.add(
                    key,
                    format!("{at}.retry"),
                    "gRPC clients retry on gRPC status codes, not on these conditions",
                );
            }
        }
    }
}

fn cluster(key: &ResourceKey, c: &Cluster, r: &mut Report<'_>) {
    for (i, e) in c.endpoints.iter().enumerate() {
        if !is_ip(&e.address) {
            r.add(
                key,
                format!("endpoints[{i}].address"),
                "xDS endpoints are IP addresses; xDS clients do not resolve host names",
            );
        }
    }
    if c.tls.is_some() {
        r.add(key, "tls", "upstream TLS is not translated to xDS yet");
    }
    if c.locality.is_some() {
        r.add(
            key,
            "locality",
            "locality tiers are not translated to xDS priorities yet",
        );
    }
    if c.max_response_header_bytes != 0 {
        r.add(
            key,
            "max_response_header_bytes",
            "xDS clients are not sent a response head limit",
        );
    }
    if let Some(hash_policy::Key::SessionCookie(_)) =
        c.hash_policy.as_ref().and_then(|h| h.key.as_ref())
    {
        r.add(
            key,
            "hash_policy.session_cookie",
            "xDS clients do not keep session cookies naming an endpoint",
        );
    }
    if r.kind != DataPlane::Grpc {
        return;
    }
    if c.protocol() != cluster::UpstreamProtocol::Http2 {
        r.add(
            key,
            "protocol",
            "gRPC clients speak HTTP/2: set protocol HTTP2",
        );
    }
    match c.lb_policy() {
        cluster::LbPolicy::LeastRequest | cluster::LbPolicy::Maglev => r.add(
            key,
            "lb_policy",
            "gRPC clients balance with ROUND_ROBIN or RING_HASH",
        ),
        _ => {}
    }
    match c.hash_policy.as_ref().and_then(|h| h.key.as_ref()) {
        Some(hash_policy::Key::Cookie(_)) => {
            r.add(key, "hash_policy.cookie", "gRPC clients hash headers only")
        }
        Some(hash_policy::Key::SourceIp(_)) => r.add(
            key,
            "hash_policy.source_ip",
            "gRPC clients hash headers only",
        ),
        Some(hash_policy::Key::QueryParam(_)) => r.add(
            key,
            "hash_policy.query_param",
            "gRPC clients hash headers only",
        ),
        _ => {}
    }
    let unmapped = [
        (
            "health_check",
            c.health_check.is_some(),
            "gRPC clients do not run active health checks",
        ),
        (
            "outlier_detection",
            c.outlier_detection.is_some(),
            "gRPC clients eject by success rate, not by consecutive failures",
        ),
        (
            "connect_timeout",
            c.connect_timeout.is_some(),
            "gRPC clients take no connect timeout from xDS",
        ),
    ];
    for (field, set, why) in unmapped {
        if set {
            r.add(key, field, why);
        }
    }
    if let Some(b) = &c.circuit_breakers {
        let unmapped = [
            ("max_connections", b.max_connections),
            ("max_pending_requests", b.max_pending_requests),
            ("max_retries", b.max_retries),
        ];
        for (field, value) in unmapped {
            if value != 0 {
                r.add(
                    key,
                    format!("circuit_breakers.{field}"),
                    "gRPC clients limit requests in flight only (max_requests)",
                );
            }
        }
    }
}

/// The clusters a route table forwards to, in route order.
fn clusters_of(t: &RouteTable) -> Vec<&str> {
    let mut out = Vec::new();
    for route in t.virtual_hosts.iter().flat_map(|h| &h.routes) {
        match route.action.as_ref().and_then(|a| a.action.as_ref()) {
            Some(route_action::Action::Cluster(c)) => out.push(c.as_str()),
            Some(route_action::Action::WeightedClusters(w)) => {
                out.extend(w.clusters.iter().map(|c| c.cluster.as_str()))
            }
            _ => {}
        }
    }
    out
}

/// Whether `address` is an IP address (IPv6 with or without brackets).
pub(crate) fn is_ip(address: &str) -> bool {
    let bare = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    bare.parse::<std::net::IpAddr>().is_ok()
}

/// Whether `path` is "/service/method", the only exact path gRPC clients match.
fn is_grpc_method(path: &str) -> bool {
    let mut parts = path.strip_prefix('/').unwrap_or("").split('/');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(s), Some(m), None) if !s.is_empty() && !m.is_empty()
    )
}
