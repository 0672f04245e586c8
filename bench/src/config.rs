//! Generated bench configs: the data-plane config (one listener, N prefix routes, one upstream)
//! and the fleet config (many listeners with region selectors, plus one global listener whose
//! route table every agent receives).

use portico_api::Resource;
use portico_api::pb::{
    AgentSelector, Cluster, Endpoint, HealthCheck, Listener, ListenerLimits, RouteAction,
    RouteMatch, RouteTable, VirtualHost, cluster::LbPolicy, listener, resource, route_action,
    route_match,
};

/// The regions of the simulated fleet.
pub const REGIONS: [&str; 5] = ["us-east", "us-west", "eu-west", "eu-central", "ap-south"];

/// Path prefix of route `i` of a generated route table. Only the last one matches the bench
/// request path.
pub fn route_prefix(i: usize) -> String {
    format!("/r{i:05}")
}

/// A listener on `127.0.0.1:port` routed by `route_table`.
pub fn listener(name: &str, port: u16, route_table: &str, regions: &[&str]) -> Resource {
    let spec = Listener {
        address: "127.0.0.1".into(),
        port: u32::from(port),
        protocol: listener::Protocol::Http.into(),
        route_table: route_table.into(),
        selector: Some(AgentSelector {
            regions: regions.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }),
        // The bench opens up to 256 connections; leave room for more.
        limits: Some(ListenerLimits {
            max_connections: 100_000,
            ..Default::default()
        }),
        ..Default::default()
    };
    named(name, resource::Spec::Listener(spec))
}

/// A route table with `routes` prefix routes to `cluster`, all on host "*"; route `i` matches
/// [`route_prefix`]`(i)`, and `tag` names the first route, so that a new tag is a one-route
/// change.
pub fn route_table(name: &str, routes: usize, cluster: &str, tag: &str) -> Resource {
    let routes = (0..routes)
        .map(|i| portico_api::pb::Route {
            name: if i == 0 {
                format!("r0-{tag}")
            } else {
                format!("r{i}")
            },
            r#match: Some(RouteMatch {
                path: Some(route_match::Path::Prefix(route_prefix(i))),
                ..Default::default()
            }),
            action: Some(RouteAction {
                action: Some(route_action::Action::Cluster(cluster.into())),
            }),
            ..Default::default()
        })
        .collect();
    let spec = RouteTable {
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes,
        }],
    };
    named(name, resource::Spec::RouteTable(spec))
}

/// A cluster of static endpoints on 127.0.0.1.
pub fn cluster(name: &str, ports: &[u16]) -> Resource {
    let spec = Cluster {
        endpoints: ports
            .iter()
            .map(|&port| Endpoint {
                address: "127.0.0.1".into(),
                port: u32::from(port),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    named(name, resource::Spec::Cluster(spec))
}

/// The data-plane bench config: listener `bench` on `listen_port` with `routes` prefix routes,
/// all to cluster `upstream` at `upstream_port`.
pub fn dataplane(listen_port: u16, upstream_port: u16, routes: usize) -> Vec<Resource> {
    vec![
        listener("bench", listen_port, "bench", &[]),
        route_table("bench", routes, "upstream", "v0"),
        cluster("upstream", &[upstream_port]),
    ]
}

/// How the load-balancing bench cell's cluster balances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Balancing {
    /// One endpoint, round robin: the plain data-plane cells.
    Single,
    /// Three endpoints (the same upstream at 127.0.0.1, .2 and .3), round robin.
    RoundRobin,
    /// Three endpoints, least request, each health-checked every second.
    LeastRequestChecked,
}

/// [`dataplane`] with the cluster `balancing` asks for.
pub fn dataplane_balanced(
    listen_port: u16,
    upstream_port: u16,
    routes: usize,
    balancing: Balancing,
) -> Vec<Resource> {
    let mut resources = dataplane(listen_port, upstream_port, routes);
    if balancing == Balancing::Single {
        return resources;
    }
    let spec = Cluster {
        endpoints: (1..=3)
            .map(|i| Endpoint {
                address: format!("127.0.0.{i}"),
                port: u32::from(upstream_port),
                ..Default::default()
            })
            .collect(),
        lb_policy: match balancing {
            Balancing::LeastRequestChecked => LbPolicy::LeastRequest,
            _ => LbPolicy::RoundRobin,
        }
        .into(),
        health_check: (balancing == Balancing::LeastRequestChecked).then(|| HealthCheck {
            path: "/healthz".into(),
            interval: Some(pbjson_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    if let Some(cluster) = resources.iter_mut().find(|r| r.name == "upstream") {
        cluster.spec = Some(resource::Spec::Cluster(spec));
    }
    resources
}

/// The fleet bench config: `listeners` listeners, each selecting one region, with its own
/// route table of `routes` routes and its own 3-endpoint cluster; plus listener `global`
/// (every agent) whose route table [`fleet_change`] edits.
pub fn fleet(listeners: usize, routes: usize) -> Vec<Resource> {
    let mut out = Vec::with_capacity(3 * listeners + 3);
    for i in 0..listeners {
        let region = REGIONS[i % REGIONS.len()];
        let port = 20_000 + u16::try_from(i).unwrap_or(u16::MAX - 20_000);
        out.push(listener(
            &format!("l-{i}"),
            port,
            &format!("rt-{i}"),
            &[region],
        ));
        out.push(route_table(
            &format!("rt-{i}"),
            routes,
            &format!("c-{i}"),
            "v0",
        ));
        out.push(cluster(&format!("c-{i}"), &[8001, 8002, 8003]));
    }
    out.push(listener("global", 19_999, "global", &[]));
    out.extend(fleet_change(routes, 0));
    out.push(cluster("global", &[8000]));
    out
}

/// The one resource a single route change rewrites: the global route table, at `generation`.
pub fn fleet_change(routes: usize, generation: u64) -> Vec<Resource> {
    vec![route_table(
        "global",
        routes,
        "global",
        &format!("v{generation}"),
    )]
}

fn named(name: &str, spec: resource::Spec) -> Resource {
    Resource {
        name: name.into(),
        spec: Some(spec),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_api::{Kind, ResourceSet};

    fn set(resources: Vec<Resource>) -> ResourceSet {
        let mut set = ResourceSet::new();
        for r in resources {
            assert!(set.insert(r).is_none(), "duplicate resource");
        }
        set
    }

    #[test]
    fn dataplane_config_is_valid_and_routes_the_last_prefix() {
        let resources = dataplane(18081, 18080, 1000);
        let set = set(resources.clone());
        assert_eq!(portico_api::validate::validate_set(&set), vec![]);
        let Some(resource::Spec::RouteTable(table)) = &resources[1].spec else {
            panic!("second resource is not the route table");
        };
        let routes = &table.virtual_hosts[0].routes;
        assert_eq!(routes.len(), 1000);
        assert_eq!(
            routes[999].r#match.as_ref().and_then(|m| m.path.clone()),
            Some(route_match::Path::Prefix("/r00999".into()))
        );
    }

    #[test]
    fn fleet_config_is_valid_and_a_change_is_one_route() {
        let set = set(fleet(200, 10));
        assert_eq!(set.of_kind(Kind::Listener).count(), 201);
        assert_eq!(portico_api::validate::validate_set(&set), vec![]);
        let before = fleet_change(10, 0);
        let after = fleet_change(10, 1);
        let routes = |r: &Resource| match &r.spec {
            Some(resource::Spec::RouteTable(t)) => t.virtual_hosts[0].routes.clone(),
            _ => panic!("not a route table"),
        };
        let changed = routes(&before[0])
            .iter()
            .zip(routes(&after[0]).iter())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed, 1);
    }
}
