//! Builders of the resources tests configure: plain `pb` values, so a test sends them over
//! the Admin API, hands them to a proxy, or writes them as a file with [`yaml`], which renders
//! through the file format itself (`portico_api::file::to_yaml`).
//!
//! Each builder fills what a working resource needs and nothing else; a test sets more with
//! [`Edit::with`] on the spec's own type, so every field stays reachable without a builder
//! method per field:
//!
//! ```
//! use portico_api::pb;
//! use portico_test_support::resources::{Edit, listener, regions};
//!
//! let web = listener("web", 8080, "shop")
//!     .with(|l: &mut pb::Listener| l.selector = Some(regions(&["eu"])))
//!     .label("team", "storefront");
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use portico_api::Resource;
use portico_api::pb::{self, resource::Spec, route_action::Action, route_match::Path};

/// A kind's spec message: what [`resource`] and [`Edit::with`] take.
pub trait KindSpec: Sized {
    /// The spec as the resource's `spec` field.
    fn into_spec(self) -> Spec;
    /// This kind's message in `spec`, if `spec` is of this kind.
    fn of(spec: &mut Spec) -> Option<&mut Self>;
}

macro_rules! kind_spec {
    ($($message:ident),*) => {$(
        impl KindSpec for pb::$message {
            fn into_spec(self) -> Spec {
                Spec::$message(self)
            }
            fn of(spec: &mut Spec) -> Option<&mut Self> {
                match spec {
                    Spec::$message(s) => Some(s),
                    _ => None,
                }
            }
        }
    )*};
}

kind_spec!(Listener, RouteTable, Cluster, Policy, Consumer, Secret);

/// Changes to a built resource.
pub trait Edit {
    /// Changes the spec, whose type names the kind; panics when the resource is of another.
    fn with<S: KindSpec>(self, edit: impl FnOnce(&mut S)) -> Self;
    /// Sets label `key` to `value`.
    fn label(self, key: &str, value: &str) -> Self;
}

impl Edit for Resource {
    fn with<S: KindSpec>(mut self, edit: impl FnOnce(&mut S)) -> Self {
        let key = self.key();
        match self.spec.as_mut().and_then(S::of) {
            Some(spec) => edit(spec),
            None => panic!(
                "{key} is not a {}",
                std::any::type_name::<S>().rsplit("::").next().unwrap_or("")
            ),
        }
        self
    }

    fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }
}

/// A resource named `name` with `spec`.
pub fn resource(name: &str, spec: impl KindSpec) -> Resource {
    Resource {
        name: name.to_string(),
        spec: Some(spec.into_spec()),
        ..Default::default()
    }
}

// ---- listeners -----------------------------------------------------------------------------

/// An HTTP Listener on 127.0.0.1:`port` routing through the RouteTable `route_table`, on
/// every agent.
pub fn listener(name: &str, port: u16, route_table: &str) -> Resource {
    resource(
        name,
        pb::Listener {
            address: "127.0.0.1".to_string(),
            port: port.into(),
            protocol: pb::listener::Protocol::Http as i32,
            route_table: route_table.to_string(),
            ..Default::default()
        },
    )
}

/// An HTTPS Listener on 127.0.0.1:`port` with `certificates` (see [`sni`]).
pub fn https_listener(
    name: &str,
    port: u16,
    route_table: &str,
    certificates: Vec<pb::SniCertificate>,
) -> Resource {
    listener(name, port, route_table).with(|l: &mut pb::Listener| {
        l.protocol = pb::listener::Protocol::Https as i32;
        l.tls = Some(pb::ListenerTls {
            certificates,
            ..Default::default()
        });
    })
}

/// An API Listener (no socket) for proxyless gRPC clients dialing `xds:///NAME`, routing
/// through the RouteTable `route_table`.
pub fn api_listener(name: &str, route_table: &str) -> Resource {
    resource(
        name,
        pb::Listener {
            protocol: pb::listener::Protocol::Api as i32,
            route_table: route_table.to_string(),
            ..Default::default()
        },
    )
}

/// A selector of the data planes of `kinds` ("portico", "envoy").
pub fn kinds(kinds: &[&str]) -> pb::AgentSelector {
    pb::AgentSelector {
        kinds: strings(kinds),
        ..Default::default()
    }
}

/// A listener certificate: the tls Secret `secret`, for `server_names` (none: for any name).
pub fn sni(secret: &str, server_names: &[&str]) -> pb::SniCertificate {
    pb::SniCertificate {
        server_names: strings(server_names),
        secret: secret.to_string(),
    }
}

/// A selector of the agents in `regions`.
pub fn regions(regions: &[&str]) -> pb::AgentSelector {
    pb::AgentSelector {
        regions: strings(regions),
        ..Default::default()
    }
}

// ---- route tables --------------------------------------------------------------------------

/// A RouteTable of `virtual_hosts`.
pub fn route_table(name: &str, virtual_hosts: Vec<pb::VirtualHost>) -> Resource {
    resource(name, pb::RouteTable { virtual_hosts })
}

/// A virtual host for `domains` with `routes`, tried in order.
pub fn vhost(name: &str, domains: &[&str], routes: Vec<pb::Route>) -> pb::VirtualHost {
    pb::VirtualHost {
        name: name.to_string(),
        domains: strings(domains),
        routes,
    }
}

/// A route for requests whose path matches `path` (every request when `None`).
pub fn route(name: &str, path: Option<Path>, action: Action) -> pb::Route {
    pb::Route {
        name: name.to_string(),
        r#match: Some(pb::RouteMatch {
            path,
            ..Default::default()
        }),
        action: Some(pb::RouteAction {
            action: Some(action),
        }),
        ..Default::default()
    }
}

/// Paths starting with `p` at a segment boundary.
pub fn prefix(p: &str) -> Option<Path> {
    Some(Path::Prefix(p.to_string()))
}

/// Exactly the path `p`.
pub fn exact(p: &str) -> Option<Path> {
    Some(Path::Exact(p.to_string()))
}

/// Paths the regular expression `re` matches whole.
pub fn regex(re: &str) -> Option<Path> {
    Some(Path::Regex(re.to_string()))
}

/// A request header `name` whose value is exactly `value`.
pub fn header_exact(name: &str, value: &str) -> pb::HeaderMatch {
    pb::HeaderMatch {
        name: name.to_string(),
        value: Some(pb::header_match::Value::Exact(value.to_string())),
        invert: false,
    }
}

/// A query parameter `name`, with any value.
pub fn query_present(name: &str) -> pb::QueryParamMatch {
    pb::QueryParamMatch {
        name: name.to_string(),
        value: Some(pb::query_param_match::Value::Present(true)),
    }
}

/// Forward to the Cluster `cluster`.
pub fn to(cluster: &str) -> Action {
    Action::Cluster(cluster.to_string())
}

/// Split between clusters, each `(cluster, weight)`.
pub fn weighted(clusters: &[(&str, u32)]) -> Action {
    Action::WeightedClusters(pb::WeightedClusters {
        clusters: clusters
            .iter()
            .map(|(cluster, weight)| pb::WeightedCluster {
                cluster: cluster.to_string(),
                weight: *weight,
            })
            .collect(),
    })
}

/// Answer with a redirect.
pub fn redirect(redirect: pb::Redirect) -> Action {
    Action::Redirect(redirect)
}

/// Answer `status` with `body` (as `text/plain`, the default).
pub fn direct(status: u32, body: &str) -> Action {
    Action::DirectResponse(pb::DirectResponse {
        status,
        body: body.to_string(),
        content_type: String::new(),
    })
}

// ---- clusters ------------------------------------------------------------------------------

/// A Cluster of `endpoints`, with every other field at its default.
pub fn cluster(name: &str, endpoints: &[SocketAddr]) -> Resource {
    resource(
        name,
        pb::Cluster {
            endpoints: endpoints
                .iter()
                .map(|a| pb::Endpoint {
                    address: a.ip().to_string(),
                    port: a.port().into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
    )
}

// ---- secrets -------------------------------------------------------------------------------

/// A tls Secret holding `tls`.
pub fn secret(name: &str, tls: pb::TlsSecret) -> Resource {
    resource(
        name,
        pb::Secret {
            secret: Some(pb::secret::Secret::Tls(tls)),
        },
    )
}

/// A tls Secret with a self-signed certificate for `host`, generated now.
pub fn tls_secret(name: &str, host: &str) -> Resource {
    secret(name, crate::tls::self_signed(host).secret)
}

// ---- sets ----------------------------------------------------------------------------------

/// The smallest config that serves traffic: a Listener `name` on 127.0.0.1:`port` whose every
/// request goes, through the RouteTable `name`, to the Cluster `name` of `endpoints`.
pub fn routed(name: &str, port: u16, endpoints: &[SocketAddr]) -> Vec<Resource> {
    vec![
        listener(name, port, name),
        route_table(
            name,
            vec![vhost(
                "any",
                &["*"],
                vec![route("all", prefix("/"), to(name))],
            )],
        ),
        cluster(name, endpoints),
    ]
}

/// `resources` as a YAML file, rendered by the file format; panics when one cannot be.
pub fn yaml(resources: &[Resource]) -> String {
    portico_api::file::to_yaml(resources).unwrap_or_else(|e| panic!("{e}"))
}

/// The resources of a YAML file's text; panics when it does not parse.
pub fn parse(yaml: &str) -> Vec<Resource> {
    match portico_api::file::parse("fixture.yaml".as_ref(), yaml) {
        Ok(loaded) => loaded.into_iter().map(|l| l.resource).collect(),
        Err(errors) => panic!(
            "fixture does not parse:\n{}",
            errors
                .iter()
                .map(|e| format!("  {e}\n"))
                .collect::<String>()
        ),
    }
}

/// A protobuf duration.
pub fn duration(d: Duration) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use portico_api::ResourceSet;
    use portico_api::validate::validate_set;

    use super::*;
    use crate::fixtures::parse;

    #[test]
    fn built_resources_render_as_yaml_and_read_back_unchanged() {
        let mut set = routed("shop", 8080, &["127.0.0.1:9000".parse().unwrap()]);
        set[0] = set[0]
            .clone()
            .with(|l: &mut pb::Listener| l.selector = Some(regions(&["eu"])))
            .label("team", "storefront");
        set.push(https_listener(
            "secure",
            8443,
            "shop",
            vec![sni("cert", &["shop.example.com"])],
        ));
        set.push(tls_secret("cert", "shop.example.com"));
        let text = yaml(&set);
        assert!(text.contains("kind: Listener"), "{text}");
        assert_eq!(parse(&text), set);
        let errors = validate_set(&set.into_iter().collect::<ResourceSet>());
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    #[should_panic(expected = "Cluster/c is not a Listener")]
    fn editing_the_spec_of_another_kind_panics() {
        let _ = cluster("c", &[]).with(|l: &mut pb::Listener| l.port = 1);
    }
}
