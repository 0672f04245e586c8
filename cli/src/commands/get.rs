//! `portico get KIND [NAME]`: a table of resources with a few key fields per kind, or the
//! resources in the file format (`-o yaml|json`), which `apply` takes back as is.

use portico_api::pb::cluster::UpstreamProtocol;
use portico_api::pb::listener::Protocol;
use portico_api::pb::resource::Spec;
use portico_api::pb::{GetRequest, Kind, Resource, ResourceKey, StoredResource, policy, secret};
use portico_api::reference::redacted;

use crate::commands::{Context, parse_kind};
use crate::error::CliResult;
use crate::output::{self, Format, Table};

/// `portico get KIND [NAME]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kind (Listener, RouteTable, Cluster, Policy, Consumer, Secret; any case, plural
    /// accepted), or "all".
    pub kind: String,
    /// One resource's name; all of the kind when omitted.
    pub name: Option<String>,
}

/// Runs `get`.
pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let kind = if args.kind.eq_ignore_ascii_case("all") && args.name.is_none() {
        Kind::Unspecified
    } else {
        parse_kind(&args.kind)?
    };
    let mut admin = ctx.connect().await?;
    let stored = match &args.name {
        Some(name) => admin
            .get(GetRequest {
                key: Some(ResourceKey::new(kind, name.as_str())),
            })
            .await
            .map_err(|s| ctx.status(s))?
            .into_inner()
            .resource
            .into_iter()
            .collect::<Vec<_>>(),
        None => ctx.list(&mut admin, kind).await?.resources,
    };
    let text = match ctx.format {
        Format::Yaml | Format::Json => {
            let (resources, secrets) = dump(kind, &stored);
            if secrets > 0 {
                eprintln!(
                    "{secrets} secret(s) left out: their material is never printed back (`get \
                     secret NAME -o yaml` shows one redacted)"
                );
            }
            output::resources(ctx.format, &resources)?
        }
        Format::Table if stored.is_empty() => {
            eprintln!("no resources found");
            return Ok(());
        }
        Format::Table => table(kind, &stored),
    };
    print!("{text}");
    if !text.is_empty() && !text.ends_with('\n') {
        println!();
    }
    Ok(())
}

/// The resources printed for `-o yaml|json`, and how many secrets were left out: a dump of
/// every kind must be safe to apply back, and a redacted secret is not.
fn dump(kind: Kind, stored: &[StoredResource]) -> (Vec<Resource>, usize) {
    // The control plane sends secrets redacted already; redacting again here keeps material
    // off the terminal whatever a server sends.
    let all = stored
        .iter()
        .filter_map(|s| s.resource.as_ref().map(redacted));
    if kind != Kind::Unspecified {
        return (all.collect(), 0);
    }
    let (secrets, rest): (Vec<_>, Vec<_>) = all.partition(|r| r.kind() == Kind::Secret);
    (rest, secrets.len())
}

/// The table: NAME, REVISION and the key fields of `kind` (KIND first when listing all kinds).
pub fn table(kind: Kind, stored: &[StoredResource]) -> String {
    let mut header = vec!["NAME", "REVISION"];
    if kind == Kind::Unspecified {
        header.insert(0, "KIND");
        header.push("SUMMARY");
    } else {
        header.extend(columns(kind));
    }
    let mut t = Table::new(header);
    for s in stored {
        let Some(r) = &s.resource else { continue };
        let mut row = vec![r.name.clone(), s.revision.to_string()];
        let cells = cells(r.spec.as_ref());
        if kind == Kind::Unspecified {
            row.insert(0, r.kind().display_name().to_string());
            let summary: Vec<String> = columns(r.kind())
                .iter()
                .zip(&cells)
                .filter(|(_, v)| !v.is_empty())
                .map(|(c, v)| format!("{}={v}", c.to_ascii_lowercase().replace(' ', "_")))
                .collect();
            row.push(summary.join(" "));
        } else {
            row.extend(cells);
        }
        t.row(row);
    }
    t.render()
}

fn columns(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Listener => &["ADDRESS", "PROTOCOL", "ROUTE TABLE", "REGIONS"],
        Kind::RouteTable => &["DOMAINS", "ROUTES"],
        Kind::Cluster => &["ENDPOINTS", "LB", "PROTOCOL"],
        Kind::Policy => &["TYPE"],
        Kind::Consumer => &["PLAN", "API KEYS", "JWT SUBJECTS"],
        Kind::Secret => &["TYPE"],
        Kind::Unspecified => &[],
    }
}

fn cells(spec: Option<&Spec>) -> Vec<String> {
    match spec {
        None => Vec::new(),
        Some(Spec::Listener(l)) => {
            let address = if l.address.is_empty() {
                "0.0.0.0"
            } else {
                &l.address
            };
            let protocol = match l.protocol() {
                Protocol::Https => "https",
                _ => "http",
            };
            let regions = l
                .selector
                .as_ref()
                .map(|s| s.regions.join(","))
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "*".into());
            vec![
                format!("{address}:{}", l.port),
                protocol.into(),
                l.route_table.clone(),
                regions,
            ]
        }
        Some(Spec::RouteTable(t)) => {
            let domains: Vec<&str> = t
                .virtual_hosts
                .iter()
                .flat_map(|v| v.domains.iter().map(String::as_str))
                .collect();
            let routes: usize = t.virtual_hosts.iter().map(|v| v.routes.len()).sum();
            vec![domains.join(","), routes.to_string()]
        }
        Some(Spec::Cluster(c)) => vec![
            c.endpoints.len().to_string(),
            c.lb_policy()
                .as_str_name()
                .to_ascii_lowercase()
                .replace("lb_policy_unspecified", "round_robin"),
            {
                let protocol = match c.protocol() {
                    UpstreamProtocol::Http2 => "http2",
                    _ => "http1",
                };
                let tls = c.tls.as_ref().is_some_and(|t| t.enabled);
                format!("{protocol}{}", if tls { "+tls" } else { "" })
            },
        ],
        Some(Spec::Policy(p)) => vec![policy_type(p.policy.as_ref()).into()],
        Some(Spec::Consumer(c)) => vec![
            if c.plan.is_empty() {
                "-".into()
            } else {
                c.plan.clone()
            },
            c.api_keys.len().to_string(),
            c.jwt_subjects.len().to_string(),
        ],
        Some(Spec::Secret(s)) => vec![match s.secret {
            Some(secret::Secret::Tls(_)) => "tls".into(),
            Some(secret::Secret::Opaque(_)) => "opaque".into(),
            None => "-".into(),
        }],
    }
}

fn policy_type(p: Option<&policy::Policy>) -> &'static str {
    use policy::Policy as P;
    match p {
        None => "-",
        Some(P::ApiKeyAuth(_)) => "api_key_auth",
        Some(P::JwtAuth(_)) => "jwt_auth",
        Some(P::RateLimit(_)) => "rate_limit",
        Some(P::Quota(_)) => "quota",
        Some(P::Cors(_)) => "cors",
        Some(P::IpFilter(_)) => "ip_filter",
        Some(P::RequestValidation(_)) => "request_validation",
        Some(P::Headers(_)) => "headers",
        Some(P::Compression(_)) => "compression",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_api::pb::{Cluster, Endpoint, Listener, Resource, Route, RouteTable, VirtualHost};

    fn stored(name: &str, spec: Spec, revision: i64) -> StoredResource {
        StoredResource {
            resource: Some(Resource {
                name: name.into(),
                spec: Some(spec),
                ..Default::default()
            }),
            revision,
        }
    }

    #[test]
    fn listener_table_shows_address_protocol_and_route_table() {
        let l = Listener {
            address: "127.0.0.1".into(),
            port: 8080,
            route_table: "main".into(),
            ..Default::default()
        };
        assert_eq!(
            table(Kind::Listener, &[stored("public", Spec::Listener(l), 3)]),
            "NAME     REVISION   ADDRESS          PROTOCOL   ROUTE TABLE   REGIONS\n\
             public   3          127.0.0.1:8080   http       main          *\n"
        );
    }

    #[test]
    fn dumps_of_every_kind_leave_secrets_out() {
        let secret = stored("key", Spec::Secret(Default::default()), 1);
        let cluster = stored("web", Spec::Cluster(Default::default()), 1);
        let both = [secret.clone(), cluster];
        let (resources, left_out) = dump(Kind::Unspecified, &both);
        assert_eq!(left_out, 1);
        assert_eq!(resources.len(), 1);
        assert_eq!(resources[0].name, "web");
        // Asking for secrets by kind prints them, redacted by the server.
        assert_eq!(dump(Kind::Secret, &[secret]).0.len(), 1);
    }

    #[test]
    fn listing_all_kinds_adds_a_kind_column_and_a_summary() {
        let c = Cluster {
            endpoints: vec![Endpoint::default(), Endpoint::default()],
            ..Default::default()
        };
        let t = RouteTable {
            virtual_hosts: vec![VirtualHost {
                domains: vec!["*".into()],
                routes: vec![Route::default(); 3],
                ..Default::default()
            }],
        };
        assert_eq!(
            table(
                Kind::Unspecified,
                &[
                    stored("main", Spec::RouteTable(t), 2),
                    stored("web", Spec::Cluster(c), 5)
                ]
            ),
            "KIND         NAME   REVISION   SUMMARY\n\
             RouteTable   main   2          domains=* routes=3\n\
             Cluster      web    5          endpoints=2 lb=round_robin protocol=http1\n"
        );
    }
}
