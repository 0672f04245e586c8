//! RouteTable → RouteConfiguration: virtual hosts, route matches and actions, header rules,
//! timeouts and retries; the hash key of a consistent-hashing cluster goes on every route that
//! forwards to it, where Envoy and gRPC read it.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, header_matcher,
    query_parameter_matcher, redirect_action, retry_policy, route, route_action, route_match,
    weighted_cluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{Any, UInt64Value};
use portico_api::pb::{
    self, Cluster, HeaderTransform, RouteTable, hash_policy, header_match, query_param_match,
    route_action as portico_action, route_match as portico_match,
};

use super::{Flavor, any, duration, inline, uint32};

/// Methods Portico agents retry unless a route's retry says `retry_non_idempotent`.
const IDEMPOTENT: &str = "GET|HEAD|OPTIONS|TRACE|PUT|DELETE";
/// The request body kept for retries when the route says nothing (Portico's default).
const DEFAULT_RETRY_BUFFER: u32 = 64 * 1024;

/// The RouteConfiguration of route table `name`. `clusters` holds the clusters its routes
/// forward to, for their hash keys.
pub fn route_configuration(
    name: &str,
    table: &RouteTable,
    clusters: &BTreeMap<&str, &Cluster>,
    flavor: Flavor,
) -> Any {
    let mut seen = std::collections::HashSet::new();
    let virtual_hosts = table
        .virtual_hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            // Envoy wants every virtual host named, once.
            let name = if !host.name.is_empty() && seen.insert(host.name.as_str()) {
                host.name.clone()
            } else {
                format!("virtual-host-{i}")
            };
            VirtualHost {
                name,
                domains: host.domains.clone(),
                routes: host
                    .routes
                    .iter()
                    .enumerate()
                    .map(|(j, r)| self::route(j, r, clusters, flavor))
                    .collect(),
                ..Default::default()
            }
        })
        .collect();
    any(&RouteConfiguration {
        name: name.to_string(),
        virtual_hosts,
        // Portico matches domains without the request's port.
        ignore_port_in_host_matching: true,
        ..Default::default()
    })
}

fn route(
    index: usize,
    r: &pb::Route,
    clusters: &BTreeMap<&str, &Cluster>,
    flavor: Flavor,
) -> Route {
    let mut out = Route {
        name: if r.name.is_empty() {
            index.to_string()
        } else {
            r.name.clone()
        },
        r#match: Some(route_match(r.r#match.as_ref(), flavor)),
        ..Default::default()
    };
    if let Some(t) = &r.request_headers {
        (out.request_headers_to_add, out.request_headers_to_remove) = headers(t);
    }
    if let Some(t) = &r.response_headers {
        (out.response_headers_to_add, out.response_headers_to_remove) = headers(t);
    }
    out.action = match r.action.as_ref().and_then(|a| a.action.as_ref()) {
        Some(portico_action::Action::Redirect(redirect)) => {
            Some(route::Action::Redirect(self::redirect(redirect)))
        }
        Some(portico_action::Action::DirectResponse(d)) => {
            if !d.content_type.is_empty() || d.body.is_empty() {
                let content_type = if d.content_type.is_empty() {
                    "text/plain"
                } else {
                    &d.content_type
                };
                out.response_headers_to_add.push(header(
                    "content-type",
                    content_type,
                    header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd,
                ));
            }
            Some(route::Action::DirectResponse(DirectResponseAction {
                status: d.status,
                body: inline(&d.body),
                ..Default::default()
            }))
        }
        Some(portico_action::Action::Cluster(c)) => Some(route::Action::Route(forward(
            r,
            route_action::ClusterSpecifier::Cluster(c.clone()),
            &[c.as_str()],
            clusters,
            flavor,
        ))),
        Some(portico_action::Action::WeightedClusters(w)) => {
            let names: Vec<&str> = w.clusters.iter().map(|c| c.cluster.as_str()).collect();
            let split = WeightedCluster {
                clusters: w
                    .clusters
                    .iter()
                    .map(|c| weighted_cluster::ClusterWeight {
                        name: c.cluster.clone(),
                        weight: uint32(c.weight),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            Some(route::Action::Route(forward(
                r,
                route_action::ClusterSpecifier::WeightedClusters(split),
                &names,
                clusters,
                flavor,
            )))
        }
        None => None,
    };
    if let (Some(retry), Flavor::Envoy) = (&r.retry, flavor) {
        // Envoy keeps the body for replay up to this; a longer one is not retried.
        out.request_body_buffer_limit = Some(UInt64Value {
            value: u64::from(if retry.buffer_bytes == 0 {
                DEFAULT_RETRY_BUFFER
            } else {
                retry.buffer_bytes
            }),
        });
    }
    out
}

/// The forwarding action of route `r` to `target`, which names `names`.
fn forward(
    r: &pb::Route,
    target: route_action::ClusterSpecifier,
    names: &[&str],
    clusters: &BTreeMap<&str, &Cluster>,
    flavor: Flavor,
) -> RouteAction {
    let mut action = RouteAction {
        cluster_specifier: Some(target),
        prefix_rewrite: r.prefix_rewrite.clone(),
        ..Default::default()
    };
    match flavor {
        // gRPC clients take the route's deadline from max_stream_duration.
        Flavor::Grpc => {
            action.max_stream_duration =
                r.timeout.as_ref().map(|t| route_action::MaxStreamDuration {
                    max_stream_duration: Some(duration(t)),
                    ..Default::default()
                })
        }
        _ => action.timeout = r.timeout.as_ref().map(duration),
    }
    if let Some(retry) = &r.retry {
        action.retry_policy = Some(envoy_types::pb::envoy::config::route::v3::RetryPolicy {
            retry_on: retry.retry_on.join(","),
            num_retries: uint32(retry.attempts),
            per_try_timeout: retry.per_try_timeout.as_ref().map(duration),
            retriable_status_codes: retry.retriable_status_codes.clone(),
            retry_back_off: retry
                .base_interval
                .as_ref()
                .map(|base| retry_policy::RetryBackOff {
                    base_interval: Some(duration(base)),
                    max_interval: retry.max_interval.as_ref().map(duration),
                }),
            retriable_request_headers: if retry.retry_non_idempotent {
                Vec::new()
            } else {
                vec![HeaderMatcher {
                    name: ":method".to_string(),
                    header_match_specifier: Some(
                        header_matcher::HeaderMatchSpecifier::StringMatch(regex(IDEMPOTENT)),
                    ),
                    ..Default::default()
                }]
            },
            ..Default::default()
        });
    }
    let mut keys = Vec::new();
    for name in names {
        if let Some(key) = clusters
            .get(name)
            .and_then(|c| c.hash_policy.as_ref())
            .and_then(|h| h.key.as_ref())
            .and_then(hash_key)
            && !keys.contains(&key)
        {
            keys.push(key);
        }
    }
    action.hash_policy = keys;
    action
}

fn hash_key(key: &hash_policy::Key) -> Option<route_action::HashPolicy> {
    use route_action::hash_policy::{
        ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter,
    };
    let policy = match key {
        hash_policy::Key::Header(h) => PolicySpecifier::Header(Header {
            header_name: h.clone(),
            ..Default::default()
        }),
        hash_policy::Key::Cookie(c) => PolicySpecifier::Cookie(Cookie {
            name: c.clone(),
            ..Default::default()
        }),
        hash_policy::Key::SourceIp(_) => {
            PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
        }
        hash_policy::Key::QueryParam(q) => {
            PolicySpecifier::QueryParameter(QueryParameter { name: q.clone() })
        }
        // Refused by validation for xDS clients.
        hash_policy::Key::SessionCookie(_) => return None,
    };
    Some(route_action::HashPolicy {
        policy_specifier: Some(policy),
        terminal: false,
    })
}

fn route_match(m: Option<&pb::RouteMatch>, flavor: Flavor) -> RouteMatch {
    use route_match::PathSpecifier;
    let default = pb::RouteMatch::default();
    let m = m.unwrap_or(&default);
    let path = match &m.path {
        None => PathSpecifier::Prefix("/".to_string()),
        Some(portico_match::Path::Exact(p)) => PathSpecifier::Path(p.clone()),
        Some(portico_match::Path::Regex(r)) => PathSpecifier::SafeRegex(RegexMatcher {
            regex: r.clone(),
            ..Default::default()
        }),
        // Portico's prefixes end at a segment boundary: "/api" takes "/api" and "/api/x",
        // not "/apix". A prefix ending in '/' already does.
        Some(portico_match::Path::Prefix(p)) if p.ends_with('/') => {
            PathSpecifier::Prefix(p.clone())
        }
        Some(portico_match::Path::Prefix(p)) => match flavor {
            // gRPC clients do not know path_separated_prefix.
            Flavor::Grpc => PathSpecifier::SafeRegex(RegexMatcher {
                regex: format!("{}(/.*)?", regex::escape(p)),
                ..Default::default()
            }),
            _ => PathSpecifier::PathSeparatedPrefix(p.clone()),
        },
    };
    let mut headers: Vec<HeaderMatcher> = m.headers.iter().map(header_match).collect();
    if !m.methods.is_empty() {
        let methods: Vec<String> = m.methods.iter().map(|x| regex::escape(x)).collect();
        headers.push(HeaderMatcher {
            name: ":method".to_string(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(regex(
                &format!("(?i){}", methods.join("|")),
            ))),
            ..Default::default()
        });
    }
    RouteMatch {
        path_specifier: Some(path),
        headers,
        query_parameters: m.query_params.iter().map(query_match).collect(),
        ..Default::default()
    }
}

fn header_match(h: &pb::HeaderMatch) -> HeaderMatcher {
    use header_matcher::HeaderMatchSpecifier;
    let specifier = match &h.value {
        Some(header_match::Value::Exact(v)) => HeaderMatchSpecifier::StringMatch(exact(v)),
        Some(header_match::Value::Regex(r)) => HeaderMatchSpecifier::StringMatch(regex(r)),
        Some(header_match::Value::Present(_)) | None => HeaderMatchSpecifier::PresentMatch(true),
    };
    HeaderMatcher {
        name: h.name.to_ascii_lowercase(),
        invert_match: h.invert,
        header_match_specifier: Some(specifier),
        ..Default::default()
    }
}

fn query_match(q: &pb::QueryParamMatch) -> QueryParameterMatcher {
    use query_parameter_matcher::QueryParameterMatchSpecifier;
    let specifier = match &q.value {
        Some(query_param_match::Value::Exact(v)) => {
            QueryParameterMatchSpecifier::StringMatch(exact(v))
        }
        Some(query_param_match::Value::Regex(r)) => {
            QueryParameterMatchSpecifier::StringMatch(regex(r))
        }
        Some(query_param_match::Value::Present(_)) | None => {
            QueryParameterMatchSpecifier::PresentMatch(true)
        }
    };
    QueryParameterMatcher {
        name: q.name.clone(),
        query_parameter_match_specifier: Some(specifier),
    }
}

fn exact(v: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(v.to_string())),
        ..Default::default()
    }
}

fn regex(r: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: r.to_string(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn redirect(r: &pb::Redirect) -> RedirectAction {
    use redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier};
    let code = match r.status {
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::MovedPermanently,
    };
    RedirectAction {
        host_redirect: r.host.clone(),
        port_redirect: r.port,
        response_code: code.into(),
        // Portico's `path` replaces the path and the query.
        strip_query: !r.path.is_empty(),
        scheme_rewrite_specifier: (!r.scheme.is_empty())
            .then(|| SchemeRewriteSpecifier::SchemeRedirect(r.scheme.clone())),
        path_rewrite_specifier: (!r.path.is_empty())
            .then(|| PathRewriteSpecifier::PathRedirect(r.path.clone())),
    }
}

/// Header rules as Envoy's: `set` overwrites, `add` appends, `remove` (which Envoy applies
/// first, as Portico does) removes.
fn headers(t: &HeaderTransform) -> (Vec<HeaderValueOption>, Vec<String>) {
    use header_value_option::HeaderAppendAction;
    let set = t.set.iter().map(|h| {
        header(
            &h.name,
            &h.value,
            HeaderAppendAction::OverwriteIfExistsOrAdd,
        )
    });
    let add = t
        .add
        .iter()
        .map(|h| header(&h.name, &h.value, HeaderAppendAction::AppendIfExistsOrAdd));
    (set.chain(add).collect(), t.remove.clone())
}

fn header(
    name: &str,
    value: &str,
    action: header_value_option::HeaderAppendAction,
) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_ascii_lowercase(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action: action.into(),
        ..Default::default()
    }
}
