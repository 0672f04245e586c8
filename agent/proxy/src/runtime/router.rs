//! Compiled route tables: virtual hosts by Host, and per host an index over its routes so that
//! matching cost depends on the path, not on how many routes there are.
//!
//! Candidates come from the host's route index (`index`): an exact-path hash map, a hash map of
//! prefixes looked up at each '/' of the path, one `RegexSet` for regex paths, and the routes
//! without a path condition. The few candidates are then checked in route order for their
//! remaining conditions; the first that holds wins.
//!
//! Compiled routes and route indexes are shared, so [`recompile`] of a table that changed in
//! a few routes takes every other route, and the index when no path changed, from the table
//! compiled before.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Method};
use portico_api::Kind;
use portico_api::pb::{self, header_match, query_param_match, route_action, route_match};
use regex::Regex;

use super::action::{self, Action};
use super::retry::RetryPolicy;
use super::{CompileError, FieldError, compile_error, duration_or};
use crate::headers::HeaderTransform;
use crate::policy::{Chain, Policies};
use crate::upstream::Upstream;

mod index;
use index::RouteIndex;

/// Route timeout when the route sets none.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// The request facts routes are matched on.
pub struct RequestView<'a> {
    /// Host without port, lowercase.
    pub host: &'a str,
    /// The normalised path.
    pub path: &'a str,
    /// The raw query string, without '?'.
    pub query: Option<&'a str>,
    /// The method.
    pub method: &'a Method,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// A compiled route table.
#[derive(Debug, Default)]
pub struct RouteTable {
    hosts: Vec<VirtualHost>,
    exact_hosts: HashMap<String, usize>,
    /// Keyed by the suffix with its leading dot, e.g. ".example.com" for "*.example.com".
    wildcard_hosts: HashMap<String, usize>,
    default_host: Option<usize>,
}

/// A compiled virtual host.
#[derive(Debug)]
pub struct VirtualHost {
    /// The host's name, for logs.
    pub name: String,
    routes: Vec<Arc<Route>>,
    index: Arc<RouteIndex>,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// The route's name (or its index), for logs and metrics.
    pub name: Arc<str>,
    path: PathMatch,
    methods: Vec<Method>,
    headers: Vec<HeaderCondition>,
    query: Vec<QueryCondition>,
    /// What to do with matched requests.
    pub action: Action,
    /// Replaces the matched prefix before forwarding (prefix routes only).
    pub prefix_rewrite: Option<String>,
    /// Changes to the request sent upstream.
    pub request_headers: HeaderTransform,
    /// Changes to the response sent to the client.
    pub response_headers: HeaderTransform,
    /// Upstream timeout until the response head, retries included.
    pub timeout: Duration,
    /// Retries of failed attempts.
    pub retry: Option<RetryPolicy>,
    /// The route's own policies (the listener's run too); `None` without any.
    pub policies: Option<Arc<Chain>>,
    /// Translate gRPC-Web calls to gRPC and their answers back.
    pub grpc_web: bool,
}

#[derive(Debug)]
enum PathMatch {
    Any,
    Exact,
    Prefix(Arc<str>),
    Regex,
}

#[derive(Debug)]
struct HeaderCondition {
    name: HeaderName,
    value: ValueMatch,
    invert: bool,
}

#[derive(Debug)]
struct QueryCondition {
    name: String,
    value: ValueMatch,
}

#[derive(Debug)]
enum ValueMatch {
    Exact(String),
    Regex(Regex),
    Present,
}

impl ValueMatch {
    fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Exact(want) => value == want.as_bytes(),
            ValueMatch::Regex(re) => std::str::from_utf8(value).is_ok_and(|v| re.is_match(v)),
            ValueMatch::Present => true,
        }
    }
}

fn prefix_holds(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (path.len() == prefix.len()
            || prefix.ends_with('/')
            || path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// Decoded query parameters (`application/x-www-form-urlencoded`: percent-escapes and '+').
fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect()
}

impl Route {
    fn matches(&self, req: &RequestView<'_>, query: &mut Option<Vec<(String, String)>>) -> bool {
        if let PathMatch::Prefix(prefix) = &self.path
            && !prefix_holds(prefix, req.path)
        {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.contains(req.method) {
            return false;
        }
        let headers_hold = self.headers.iter().all(|c| {
            let found = req
                .headers
                .get_all(&c.name)
                .iter()
                .any(|v| c.value.matches(v.as_bytes()));
            found != c.invert
        });
        if !headers_hold {
            return false;
        }
        if self.query.is_empty() {
            return true;
        }
        let pairs = query.get_or_insert_with(|| req.query.map(query_pairs).unwrap_or_default());
        self.query.iter().all(|c| {
            pairs
                .iter()
                .any(|(n, v)| *n == c.name && c.value.matches(v.as_bytes()))
        })
    }

    /// The matched prefix, for prefix rewriting.
    pub fn matched_prefix(&self) -> Option<&str> {
        match &self.path {
            PathMatch::Prefix(p) => Some(p),
            _ => None,
        }
    }
}

impl RouteTable {
    /// The table that routes nothing, shared: what a listener that routes nothing holds.
    pub fn none() -> Arc<RouteTable> {
        static NONE: std::sync::LazyLock<Arc<RouteTable>> = std::sync::LazyLock::new(Arc::default);
        NONE.clone()
    }

    /// The virtual host serving `host` (lowercase, without port).
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        let index = self.exact_hosts.get(host).copied().or_else(|| {
            host.match_indices('.')
                .take_while(|_| !self.wildcard_hosts.is_empty())
                .find_map(|(i, _)| self.wildcard_hosts.get(&host[i..]).copied())
                .or(self.default_host)
        })?;
        self.hosts.get(index)
    }

    /// The virtual host and the first route that takes the request.
    pub fn find(&self, req: &RequestView<'_>) -> Option<(&VirtualHost, &Route)> {
        let host = self.virtual_host(req.host)?;
        let mut candidates = Vec::new();
        host.index.candidates(req.path, &mut candidates);
        let mut query = None;
        candidates
            .iter()
            .filter_map(|i| host.routes.get(*i as usize))
            .find(|r| r.matches(req, &mut query))
            .map(|r| (host, &**r))
    }
}

/// The cluster names a route table's actions forward to, in route order, without repeats of
/// the name just before (routes next to each other mostly forward to the same cluster).
pub fn cluster_names(spec: &pb::RouteTable) -> impl Iterator<Item = &str> {
    let mut last = None;
    spec.virtual_hosts
        .iter()
        .flat_map(|vh| &vh.routes)
        .filter_map(|r| r.action.as_ref()?.action.as_ref())
        .flat_map(|a| {
            let (one, weighted) = match a {
                route_action::Action::Cluster(c) => (Some(c.as_str()), None),
                route_action::Action::WeightedClusters(w) => (None, Some(&w.clusters)),
                _ => (None, None),
            };
            one.into_iter()
                .chain(weighted.into_iter().flatten().map(|w| w.cluster.as_str()))
        })
        .filter(move |c| last.replace(*c) != Some(*c))
}

/// Compiles a route table; `clusters` resolves cluster names.
pub fn compile(
    name: &str,
    spec: &pb::RouteTable,
    clusters: &HashMap<String, Arc<Upstream>>,
) -> Result<RouteTable, CompileError> {
    recompile(name, spec, (clusters, &Policies::new()), None)
}

/// The policy names a route table's routes attach, without repeats.
pub fn policy_names(spec: &pb::RouteTable) -> impl Iterator<Item = &str> {
    let mut seen = std::collections::HashSet::new();
    spec.virtual_hosts
        .iter()
        .flat_map(|vh| &vh.routes)
        .flat_map(|r| &r.policies)
        .map(String::as_str)
        .filter(move |p| seen.insert(*p))
}

/// Compiles a route table like [`compile`], taking from `previous` (a table compiled from
/// the given spec with the same clusters) every route whose spec is unchanged at the same
/// place, and a virtual host's whole index when none of its route paths changed.
pub fn recompile(
    name: &str,
    spec: &pb::RouteTable,
    (clusters, policies): (&HashMap<String, Arc<Upstream>>, &Policies),
    previous: Option<(&pb::RouteTable, &RouteTable)>,
) -> Result<RouteTable, CompileError> {
    let err =
        |field: String, message: String| compile_error(Kind::RouteTable, name, field, message);
    let mut table = RouteTable {
        hosts: Vec::with_capacity(spec.virtual_hosts.len()),
        exact_hosts: HashMap::new(),
        wildcard_hosts: HashMap::new(),
        default_host: None,
    };
    for (h, vh) in spec.virtual_hosts.iter().enumerate() {
        for domain in &vh.domains {
            let domain = domain.to_ascii_lowercase();
            let domain = strip_port(&domain);
            if domain == "*" {
                table.default_host.get_or_insert(h);
            } else if let Some(suffix) = domain.strip_prefix('*') {
                if !suffix.starts_with('.') {
                    return Err(err(
                        format!("virtual_hosts[{h}].domains"),
                        format!("wildcard {domain:?} must look like \"*.suffix\""),
                    ));
                }
                table.wildcard_hosts.entry(suffix.to_string()).or_insert(h);
            } else {
                table.exact_hosts.entry(domain.to_string()).or_insert(h);
            }
        }
        let specs = desugared(&vh.routes).map_err(|(r, f, message)| {
            err(format!("virtual_hosts[{h}].routes[{r}].{f}"), message)
        })?;
        let before = previous.and_then(|(spec, table)| {
            Some((&spec.virtual_hosts.get(h)?.routes, table.hosts.get(h)?))
        });
        // The index can be kept when every route has the path it had before.
        let mut same_paths = before.is_some_and(|(specs, _)| specs.len() == vh.routes.len());
        let mut routes = Vec::with_capacity(vh.routes.len());
        for (r, route) in vh.routes.iter().enumerate() {
            let was = before.and_then(|(specs, host)| Some((specs.get(r)?, host.routes.get(r)?)));
            routes.push(match was {
                Some((spec, kept)) if spec == route => kept.clone(),
                _ => {
                    same_paths &= was.is_some_and(|(spec, _)| {
                        path_of(spec) == path_of(route) && grpc_of(spec) == grpc_of(route)
                    });
                    Arc::new(compile_route(r, &specs[r], clusters, policies).map_err(
                        |(f, message)| err(format!("virtual_hosts[{h}].routes[{r}].{f}"), message),
                    )?)
                }
            });
        }
        let index = match before {
            Some((_, host)) if same_paths => host.index.clone(),
            _ => Arc::new(
                RouteIndex::build(&specs, &routes)
                    .map_err(|e| err(format!("virtual_hosts[{h}].routes"), e.to_string()))?,
            ),
        };
        table.hosts.push(VirtualHost {
            name: if vh.name.is_empty() {
                h.to_string()
            } else {
                vh.name.clone()
            },
            routes,
            index,
        });
    }
    Ok(table)
}

fn path_of(route: &pb::Route) -> Option<&route_match::Path> {
    route.r#match.as_ref()?.path.as_ref()
}

fn grpc_of(route: &pb::Route) -> Option<&pb::GrpcMatch> {
    route.r#match.as_ref()?.grpc.as_ref()
}

/// A route, with its field path and message, that does not compile.
type RouteError = (usize, String, String);

/// `routes` with every gRPC match turned into the path match it stands for; borrowed when
/// none has one.
fn desugared(routes: &[pb::Route]) -> Result<Cow<'_, [pb::Route]>, RouteError> {
    if !routes.iter().any(|r| grpc_of(r).is_some()) {
        return Ok(Cow::Borrowed(routes));
    }
    let mut owned = routes.to_vec();
    for (r, route) in owned.iter_mut().enumerate() {
        let Some(m) = route.r#match.as_mut() else {
            continue;
        };
        let Some(grpc) = m.grpc.take() else {
            continue;
        };
        if m.path.is_some() {
            let message = "a gRPC match is a path condition: it cannot have another";
            return Err((r, "match.grpc".into(), message.into()));
        }
        m.path = Some(grpc_path(&grpc));
    }
    Ok(Cow::Owned(owned))
}

/// The path condition a gRPC match stands for: gRPC calls are `POST /service/method`.
fn grpc_path(grpc: &pb::GrpcMatch) -> route_match::Path {
    let (service, method) = (&grpc.service, &grpc.method);
    match (service.is_empty(), method.is_empty()) {
        (false, false) => route_match::Path::Exact(format!("/{service}/{method}")),
        (false, true) => route_match::Path::Prefix(format!("/{service}/")),
        (true, false) => route_match::Path::Regex(format!("/[^/]+/{}", regex::escape(method))),
        (true, true) => route_match::Path::Prefix("/".into()),
    }
}

/// `host` without its port: `a.example:8080` is `a.example`, `[::1]:80` is `[::1]`.
pub fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || (h.starts_with('[') && h.ends_with(']'))) =>
        {
            h
        }
        _ => host,
    }
}

fn anchored(re: &str) -> Result<Regex, portico_api::pattern::PatternError> {
    portico_api::pattern::anchored(re)
}

fn value_match(
    exact: Option<&String>,
    regex: Option<&String>,
    present: bool,
    field: &str,
) -> Result<ValueMatch, (String, String)> {
    match (exact, regex) {
        (Some(e), _) => Ok(ValueMatch::Exact(e.clone())),
        (None, Some(re)) => anchored(re)
            .map(ValueMatch::Regex)
            .map_err(|e| (format!("{field}.regex"), e.to_string())),
        (None, None) if present => Ok(ValueMatch::Present),
        (None, None) => Err((field.to_string(), "no value condition".into())),
    }
}

fn compile_route(
    index: usize,
    spec: &pb::Route,
    clusters: &HashMap<String, Arc<Upstream>>,
    policies: &Policies,
) -> Result<Route, FieldError> {
    static NO_MATCH: pb::RouteMatch = pb::RouteMatch {
        path: None,
        methods: Vec::new(),
        headers: Vec::new(),
        query_params: Vec::new(),
        grpc: None,
    };
    let m = spec.r#match.as_ref().unwrap_or(&NO_MATCH);
    let path = match &m.path {
        None => PathMatch::Any,
        Some(route_match::Path::Exact(_)) => PathMatch::Exact,
        Some(route_match::Path::Prefix(p)) => PathMatch::Prefix(p.as_str().into()),
        Some(route_match::Path::Regex(re)) => {
            anchored(re).map_err(|e| ("match.regex".to_string(), e.to_string()))?;
            PathMatch::Regex
        }
    };
    let methods = m
        .methods
        .iter()
        .map(|s| Method::from_bytes(s.to_ascii_uppercase().as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ("match.methods".to_string(), e.to_string()))?;
    let mut headers = Vec::new();
    for (i, hm) in m.headers.iter().enumerate() {
        let field = format!("match.headers[{i}]");
        let name = HeaderName::from_bytes(hm.name.as_bytes())
            .map_err(|e| (format!("{field}.name"), e.to_string()))?;
        let (exact, regex, present) = match &hm.value {
            Some(header_match::Value::Exact(e)) => (Some(e), None, false),
            Some(header_match::Value::Regex(r)) => (None, Some(r), false),
            Some(header_match::Value::Present(p)) => (None, None, *p),
            None => (None, None, true),
        };
        headers.push(HeaderCondition {
            name,
            value: value_match(exact, regex, present, &field)?,
            invert: hm.invert,
        });
    }
    let mut query = Vec::new();
    for (i, qm) in m.query_params.iter().enumerate() {
        let field = format!("match.query_params[{i}]");
        let (exact, regex, present) = match &qm.value {
            Some(query_param_match::Value::Exact(e)) => (Some(e), None, false),
            Some(query_param_match::Value::Regex(r)) => (None, Some(r), false),
            Some(query_param_match::Value::Present(p)) => (None, None, *p),
            None => (None, None, true),
        };
        query.push(QueryCondition {
            name: qm.name.clone(),
            value: value_match(exact, regex, present, &field)?,
        });
    }
    let action = action::compile(spec.action.as_ref(), clusters)?;
    let transform = |t: Option<&pb::HeaderTransform>, field: &str| {
        HeaderTransform::compile(t).map_err(|e| (field.to_string(), e.to_string()))
    };
    Ok(Route {
        name: if spec.name.is_empty() {
            index.to_string().into()
        } else {
            spec.name.as_str().into()
        },
        path,
        methods,
        headers,
        query,
        action,
        prefix_rewrite: (!spec.prefix_rewrite.is_empty()).then(|| spec.prefix_rewrite.clone()),
        request_headers: transform(spec.request_headers.as_ref(), "request_headers")?,
        response_headers: transform(spec.response_headers.as_ref(), "response_headers")?,
        timeout: duration_or(spec.timeout.as_ref(), DEFAULT_ROUTE_TIMEOUT),
        retry: match &spec.retry {
            Some(r) => RetryPolicy::compile(r)?,
            None => None,
        },
        policies: Chain::resolve(&spec.policies, policies, "policies")?,
        grpc_web: spec.grpc_web,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "router_tests.rs"]
mod tests;
