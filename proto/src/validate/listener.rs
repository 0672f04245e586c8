//! Listener rules: the socket, TLS, limits and selector of one listener, and no two listeners
//! bound to the same socket on agents they may share.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use super::field::{self, MAX_TIMEOUT_SECS};
use super::{Errors, ValidationError, error};
use crate::node::DataPlane;
use crate::pb::{
    AgentSelector, HttpsRedirect, Kind, Listener, ListenerTls, TlsVersion, listener::Protocol,
};
use crate::{Resource, ResourceSet};

const ALPN: &[&str] = &["h2", "http/1.1"];
/// The smallest request head limit agents enforce as written (hyper's smallest read buffer).
const MIN_HEADER_BYTES: u32 = 8192;

pub(crate) fn check(l: &Listener, e: &mut Errors) {
    if l.protocol() == Protocol::Api {
        check_api(l, e);
    } else {
        check_socket(l, e);
    }
    match &l.redirect_to_https {
        Some(redirect) => check_redirect(l, redirect, e),
        None => e.check(
            "route_table",
            field::required(&l.route_table, "route_table"),
        ),
    }
    for (i, p) in l.policies.iter().enumerate() {
        e.check(format!("policies[{i}]"), field::required(p, "policy name"));
    }
    if let Some(s) = &l.selector {
        for (list, values) in [("regions", &s.regions), ("zones", &s.zones)] {
            for (i, v) in values.iter().enumerate() {
                let field = format!("selector.{list}[{i}]");
                match field::required(v, "value") {
                    Ok(()) => e.check(field, field::name(v)),
                    Err(message) => e.add(field, message),
                }
            }
        }
        if s.labels.contains_key("") {
            e.add("selector.labels", "label keys must not be empty");
        }
        field::labels_at(
            e,
            "selector.labels",
            s.labels.iter().filter(|(k, _)| !k.is_empty()),
        );
        check_kinds(l, &s.kinds, e);
    }
}

/// An API listener is a name and a route table: nothing about a socket applies to it.
fn check_api(l: &Listener, e: &mut Errors) {
    let why = "API listeners have no socket: gRPC clients dial them by name";
    let set = [
        ("address", !l.address.is_empty()),
        ("port", l.port != 0),
        ("tls", l.tls.is_some()),
        ("limits", l.limits.is_some()),
        ("merge_slashes", l.merge_slashes),
        ("redirect_to_https", l.redirect_to_https.is_some()),
    ];
    for (field, set) in set {
        if set {
            e.add(field, format!("must be unset: {why}"));
        }
    }
    if !l.policies.is_empty() {
        e.add(
            "policies",
            "must be empty: gRPC clients do not run Portico's gateway policies",
        );
    }
}

/// Which kinds of data plane may run the listener: "portico" and "envoy" for sockets, "grpc"
/// for API listeners; each at most once.
fn check_kinds(l: &Listener, kinds: &[String], e: &mut Errors) {
    let api = l.protocol() == Protocol::Api;
    for (i, k) in kinds.iter().enumerate() {
        let field = format!("selector.kinds[{i}]");
        match DataPlane::parse(k) {
            None => e.add(
                field,
                format!("unknown kind {k:?}: use \"portico\", \"envoy\" or \"grpc\""),
            ),
            Some(DataPlane::Grpc) if !api => {
                e.add(field, "gRPC clients run API listeners only (protocol API)")
            }
            Some(kind @ (DataPlane::Portico | DataPlane::Envoy)) if api => e.add(
                field,
                format!("{kind} runs HTTP and HTTPS listeners, not API listeners"),
            ),
            Some(_) if kinds[..i].contains(k) => e.add(field, format!("{k:?} is listed twice")),
            Some(_) => {}
        }
    }
}

fn check_socket(l: &Listener, e: &mut Errors) {
    if !(1..=65535).contains(&l.port) {
        e.add("port", format!("port {} is not in 1-65535", l.port));
    }
    if !l.address.is_empty() && l.address.parse::<IpAddr>().is_err() {
        e.add(
            "address",
            format!("invalid address {:?}: expected an IP address", l.address),
        );
    }
    match Protocol::try_from(l.protocol) {
        Ok(Protocol::Unspecified) => e.add("protocol", "protocol is required (HTTP, HTTPS or API)"),
        Ok(Protocol::Https) if l.tls.as_ref().is_none_or(|t| t.certificates.is_empty()) => {
            e.add(
                "tls.certificates",
                "HTTPS requires at least one certificate",
            );
        }
        Ok(Protocol::Http) if l.tls.is_some() => e.add("tls", "tls is set but protocol is HTTP"),
        Ok(_) => {}
        Err(_) => e.add("protocol", format!("unknown enum value {}", l.protocol)),
    }
    if let Some(tls) = &l.tls {
        check_tls(tls, e);
    }
    if let Some(limits) = &l.limits {
        field::at_most(
            e,
            "limits.max_request_body_bytes",
            limits.max_request_body_bytes,
            1 << 36,
        );
        field::at_most(
            e,
            "limits.max_request_header_bytes",
            limits.max_request_header_bytes.into(),
            1 << 20,
        );
        if (1..MIN_HEADER_BYTES).contains(&limits.max_request_header_bytes) {
            e.add(
                "limits.max_request_header_bytes",
                format!(
                    "{} is below the minimum of {MIN_HEADER_BYTES}: agents read HTTP/1 heads \
                     into a buffer of at least that size",
                    limits.max_request_header_bytes
                ),
            );
        }
        field::at_most(
            e,
            "limits.max_connections",
            limits.max_connections.into(),
            1_000_000,
        );
        let timeouts = [
            ("limits.header_read_timeout", &limits.header_read_timeout),
            ("limits.idle_timeout", &limits.idle_timeout),
        ];
        for (name, value) in timeouts {
            field::duration(e, name, value.as_ref(), MAX_TIMEOUT_SECS);
        }
    }
}

/// An HTTP→HTTPS redirect listener answers every request itself: what would route or filter
/// its requests would never run.
fn check_redirect(l: &Listener, redirect: &HttpsRedirect, e: &mut Errors) {
    if l.protocol == Protocol::Https as i32 {
        e.add(
            "redirect_to_https",
            "only HTTP listeners redirect to HTTPS; this listener is HTTPS already",
        );
    }
    if !l.route_table.is_empty() {
        e.add(
            "route_table",
            format!(
                "{:?} would be ignored: a listener with redirect_to_https routes nothing",
                l.route_table
            ),
        );
    }
    if !l.policies.is_empty() {
        e.add(
            "policies",
            "would be ignored: a listener with redirect_to_https runs no policies",
        );
    }
    if redirect.port > 65535 {
        e.add(
            "redirect_to_https.port",
            format!("port {} is not in 1-65535", redirect.port),
        );
    }
    if !matches!(redirect.status, 0 | 301 | 302 | 303 | 307 | 308) {
        e.add(
            "redirect_to_https.status",
            format!(
                "status {} is not a redirect: use 301, 302, 303, 307 or 308",
                redirect.status
            ),
        );
    }
}

fn check_tls(tls: &ListenerTls, e: &mut Errors) {
    if tls.require_client_cert && tls.client_ca_secret.is_empty() {
        e.add(
            "tls.require_client_cert",
            "needs tls.client_ca_secret: the CAs client certificates are verified against",
        );
    }
    let mut names = HashMap::new();
    for (i, c) in tls.certificates.iter().enumerate() {
        let at = format!("tls.certificates[{i}]");
        e.check(format!("{at}.secret"), field::required(&c.secret, "secret"));
        for (j, name) in c.server_names.iter().enumerate() {
            let field = format!("{at}.server_names[{j}]");
            e.check(&field, field::host_pattern(name, false));
            let owner = ("tls.certificates", i);
            field::unique(e, &mut names, owner, (&field, "server name", name));
        }
    }
    field::known_enum::<TlsVersion>(e, "tls.min_version", tls.min_version);
    for (i, p) in tls.alpn.iter().enumerate() {
        e.check(format!("tls.alpn[{i}]"), field::one_of(p, ALPN));
    }
}

/// Reports a listener whose socket another listener (earlier by name) also binds on agents
/// both may run on.
pub(crate) fn check_sockets(set: &ResourceSet, out: &mut Vec<ValidationError>) {
    let mut by_port: BTreeMap<u16, Vec<(&Resource, &Listener, IpAddr)>> = BTreeMap::new();
    for r in set.of_kind(Kind::Listener) {
        let Some(crate::pb::resource::Spec::Listener(l)) = &r.spec else {
            continue;
        };
        let address = if l.address.is_empty() {
            Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        } else {
            l.address.parse()
        };
        // A bad address or port is already reported; it cannot be compared.
        if let (Ok(address), Ok(port @ 1..)) = (address, u16::try_from(l.port)) {
            by_port.entry(port).or_default().push((r, l, address));
        }
    }
    for (port, listeners) in by_port {
        for (j, (r, l, address)) in listeners.iter().enumerate() {
            let clash = listeners[..j].iter().find(|(_, other, other_address)| {
                addresses_overlap(*address, *other_address)
                    && selectors_overlap(l.selector.as_ref(), other.selector.as_ref())
                    && DataPlane::ALL
                        .into_iter()
                        .any(|kind| kind.runs(l) && kind.runs(other))
            });
            if let Some((other, _, _)) = clash {
                out.push(error(
                    &r.key(),
                    "port",
                    format!(
                        "{} is also bound by {} on agents both select",
                        std::net::SocketAddr::new(*address, port),
                        other.key()
                    ),
                ));
            }
        }
    }
}

/// Equal addresses overlap, and an unspecified address overlaps every address of its family.
fn addresses_overlap(a: IpAddr, b: IpAddr) -> bool {
    a == b || (a.is_ipv4() == b.is_ipv4() && (a.is_unspecified() || b.is_unspecified()))
}

/// Two selectors overlap unless they provably select disjoint agents.
pub(crate) fn selectors_overlap(a: Option<&AgentSelector>, b: Option<&AgentSelector>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return true;
    };
    let disjoint = |x: &[String], y: &[String]| {
        let x: HashSet<&String> = x.iter().collect();
        !x.is_empty() && !y.is_empty() && !y.iter().any(|v| x.contains(v))
    };
    let label_conflict = a
        .labels
        .iter()
        .any(|(k, v)| b.labels.get(k).is_some_and(|w| w != v));
    !(disjoint(&a.regions, &b.regions) || disjoint(&a.zones, &b.zones) || label_conflict)
}
