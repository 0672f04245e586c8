//! An agent node as the rest of the config sees it: the format of its id, the services it
//! announces, and which listeners select it. The agent (which listeners to bind, which services
//! it may announce) and the control plane (which listeners to send, which Hello to accept) both
//! decide by these rules, so they cannot disagree.

use std::collections::BTreeMap;

use crate::pb::{AgentSelector, Listener, ServicePort, listener::Protocol};

/// The longest node id, region or zone (discovery.proto).
pub const MAX_ID_LEN: usize = 128;

/// Whether `s` is a valid node id, region or zone: 1–128 characters of `[A-Za-z0-9._-]`.
pub fn check_id(s: &str) -> Result<(), String> {
    let valid = !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "must be 1–{MAX_ID_LEN} characters of letters, digits, '.', '_' and '-', got {s:?}"
        ))
    }
}

/// The most labels one node has.
pub const MAX_LABELS: usize = 64;
/// The longest label key.
pub const MAX_LABEL_KEY_LEN: usize = 63;
/// The longest label value.
pub const MAX_LABEL_VALUE_LEN: usize = 256;

/// Whether node labels are within the protocol's limits: at most [`MAX_LABELS`], keys of 1–63
/// characters of `[A-Za-z0-9._-]`, values of at most 256 bytes.
pub fn check_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), String> {
    let mut count = 0;
    for (k, v) in labels {
        count += 1;
        let key_ok = !k.is_empty()
            && k.len() <= MAX_LABEL_KEY_LEN
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !key_ok {
            return Err(format!(
                "key {k:?} must be 1–{MAX_LABEL_KEY_LEN} characters of [A-Za-z0-9._-]"
            ));
        }
        if v.len() > MAX_LABEL_VALUE_LEN {
            return Err(format!(
                "value of {k:?} is longer than {MAX_LABEL_VALUE_LEN}"
            ));
        }
        if crate::text::has_control(v) {
            return Err(format!("value of {k:?} holds a control character"));
        }
    }
    if count > MAX_LABELS {
        return Err(format!("more than {MAX_LABELS} labels"));
    }
    Ok(())
}

/// The most services one node announces.
pub const MAX_SERVICES: usize = 64;

/// Whether `name` is a valid service name: 1–63 lowercase letters, digits and '-', not starting
/// or ending with '-' (a DNS label). `Cluster.service` follows the same rule.
pub fn check_service_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid service name {name:?}: use 1-63 lowercase letters, digits and '-', \
             not starting or ending with '-'"
        ))
    }
}

/// Whether `port` is a valid announced port: 1–65535.
pub fn check_service_port(port: u32) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port {port} is not in 1-65535"))
    }
}

/// Whether a node's services are valid: each name and port valid, at most [`MAX_SERVICES`],
/// none announced twice.
pub fn check_services(services: &[ServicePort]) -> Result<(), String> {
    if services.len() > MAX_SERVICES {
        return Err(format!(
            "{} services; a node announces at most {MAX_SERVICES}",
            services.len()
        ));
    }
    for (i, s) in services.iter().enumerate() {
        check_service_name(&s.name)?;
        check_service_port(s.port).map_err(|e| format!("service {}: {e}", s.name))?;
        if services[..i].contains(s) {
            return Err(format!("service {}={} is announced twice", s.name, s.port));
        }
    }
    Ok(())
}

/// Parses `NAME=PORT`, as `portico-agent --service` takes it.
pub fn parse_service(s: &str) -> Result<ServicePort, String> {
    let Some((name, port)) = s.split_once('=') else {
        return Err(format!("{s:?} is not NAME=PORT"));
    };
    let (name, port) = (name.trim(), port.trim());
    check_service_name(name)?;
    let port: u32 = port
        .parse()
        .map_err(|_| format!("{port:?} in {s:?} is not a port number"))?;
    check_service_port(port)?;
    Ok(ServicePort {
        name: name.to_string(),
        port,
    })
}

/// Whether `address` is one other nodes can reach a node's services at: an IP address or a
/// host name (no port).
pub fn check_address(address: &str) -> Result<(), String> {
    if crate::validate::field::is_host(address) {
        Ok(())
    } else {
        Err(format!(
            "invalid address {address:?}: expected an IP address or a host name, without a port"
        ))
    }
}

/// Whether a listener with `selector` runs on a node in `region` and `zone` with `labels`. An
/// absent or empty selector selects every node; otherwise every non-empty part must match.
pub fn selects(
    selector: Option<&AgentSelector>,
    region: &str,
    zone: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let Some(s) = selector else { return true };
    (s.regions.is_empty() || s.regions.iter().any(|r| r == region))
        && (s.zones.is_empty() || s.zones.iter().any(|z| z == zone))
        && s.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The kind of data plane a node is: what it can run, and so which listeners it is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataPlane {
    /// A Portico agent: HTTP and HTTPS listeners whose selector's `kinds` is empty or names
    /// "portico".
    #[default]
    Portico,
    /// An Envoy proxy over xDS: HTTP and HTTPS listeners whose selector's `kinds` names
    /// "envoy".
    Envoy,
    /// A proxyless gRPC client over xDS: API listeners.
    Grpc,
}

impl DataPlane {
    /// Every kind, in the order `kinds` values are listed in messages.
    pub const ALL: [DataPlane; 3] = [DataPlane::Portico, DataPlane::Envoy, DataPlane::Grpc];

    /// The name used in `AgentSelector.kinds`, `AgentRecord.kind` and `portico agents`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataPlane::Portico => "portico",
            DataPlane::Envoy => "envoy",
            DataPlane::Grpc => "grpc",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<DataPlane> {
        DataPlane::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether a node of this kind runs `listener` (before its selector's regions, zones and
    /// labels are looked at).
    pub fn runs(self, listener: &Listener) -> bool {
        let kinds = listener
            .selector
            .as_ref()
            .map(|s| s.kinds.as_slice())
            .unwrap_or_default();
        let named = |k: DataPlane| kinds.iter().any(|n| n == k.as_str());
        match (self, listener.protocol() == Protocol::Api) {
            (DataPlane::Grpc, api) => api,
            (_, true) => false,
            (DataPlane::Portico, false) => kinds.is_empty() || named(DataPlane::Portico),
            (DataPlane::Envoy, false) => named(DataPlane::Envoy),
        }
    }
}

impl std::fmt::Display for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_documented_character_set() {
        for ok in ["edge-1", "edge-1.eu_west", "A", &"x".repeat(128)] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "edge 1", "edge/1", "é", &"x".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn services_parse_as_name_equals_port() {
        let api = |port| ServicePort {
            name: "api".into(),
            port,
        };
        for (input, expected) in [
            ("api=8080", Ok(api(8080))),
            (" api = 1 ", Ok(api(1))),
            ("api=65535", Ok(api(65535))),
            ("api", Err("is not NAME=PORT")),
            ("api=0", Err("not in 1-65535")),
            ("api=65536", Err("not in 1-65535")),
            ("api=http", Err("is not a port number")),
            ("Api=80", Err("invalid service name")),
            ("-api=80", Err("invalid service name")),
            ("a.b=80", Err("invalid service name")),
            ("=80", Err("invalid service name")),
        ] {
            match (parse_service(input), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{input}: {got}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
        let long = "a".repeat(64);
        assert!(check_service_name(&long).is_err());
        assert!(check_service_name(&long[..63]).is_ok());
    }

    #[test]
    fn a_node_announces_each_service_port_once_and_at_most_the_limit() {
        let s = |name: &str, port| ServicePort {
            name: name.into(),
            port,
        };
        assert!(check_services(&[s("api", 80), s("api", 81), s("web", 80)]).is_ok());
        let twice = check_services(&[s("api", 80), s("api", 80)]).unwrap_err();
        assert!(twice.contains("announced twice"), "{twice}");
        assert!(check_services(&[s("api", 0)]).is_err());
        let many: Vec<_> = (0..=MAX_SERVICES as u32).map(|i| s("api", i + 1)).collect();
        assert!(check_services(&many).unwrap_err().contains("at most"));
    }

    #[test]
    fn addresses_are_ips_or_host_names_without_a_port() {
        for ok in ["10.0.0.1", "::1", "node-1.eu.example", "localhost"] {
            assert!(check_address(ok).is_ok(), "{ok}");
        }
        for bad in ["", "10.0.0.1:80", "http://x", "a b", "-x"] {
            assert!(check_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_non_empty_part_of_a_selector_must_match() {
        let labels: BTreeMap<String, String> = [("tier".to_string(), "edge".to_string())].into();
        let selector = |regions: &[&str], zones: &[&str], l: &[(&str, &str)]| AgentSelector {
            regions: regions.iter().map(|s| s.to_string()).collect(),
            zones: zones.iter().map(|s| s.to_string()).collect(),
            labels: l
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let cases = [
            (None, true),
            (Some(selector(&[], &[], &[])), true),
            (Some(selector(&["eu", "us"], &[], &[])), true),
            (Some(selector(&["us"], &[], &[])), false),
            (Some(selector(&[], &["eu-1"], &[("tier", "edge")])), true),
            (Some(selector(&[], &["eu-2"], &[])), false),
            (Some(selector(&[], &[], &[("tier", "core")])), false),
            (Some(selector(&[], &[], &[("role", "x")])), false),
        ];
        for (s, expected) in cases {
            assert_eq!(
                selects(s.as_ref(), "eu", "eu-1", &labels),
                expected,
                "{s:?}"
            );
        }
    }

    #[test]
    fn each_kind_runs_its_listeners() {
        let listener = |protocol: Protocol, kinds: &[&str]| Listener {
            protocol: protocol.into(),
            selector: Some(AgentSelector {
                kinds: kinds.iter().map(|k| k.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let cases = [
            (listener(Protocol::Http, &[]), [true, false, false]),
            (
                listener(Protocol::Https, &["portico"]),
                [true, false, false],
            ),
            (listener(Protocol::Http, &["envoy"]), [false, true, false]),
            (
                listener(Protocol::Http, &["portico", "envoy"]),
                [true, true, false],
            ),
            (listener(Protocol::Api, &[]), [false, false, true]),
            (listener(Protocol::Api, &["grpc"]), [false, false, true]),
        ];
        for (i, (l, want)) in cases.iter().enumerate() {
            for (kind, want) in DataPlane::ALL.into_iter().zip(want) {
                assert_eq!(kind.runs(l), *want, "case {i}, {kind}");
            }
        }
        for kind in DataPlane::ALL {
            assert_eq!(DataPlane::parse(kind.as_str()), Some(kind));
        }
    }
}
