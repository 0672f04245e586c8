//! Who an xDS client is: its registry node and kind, from the `node` of its first request.
//!
//! - id: `node.id` (the node-id rules of Portico agents: 1–128 of `[A-Za-z0-9._-]`);
//! - region and zone: `node.locality.region` and `.zone`, required as for Portico agents,
//!   since listener selectors and locality read them;
//! - labels: the string, number and boolean fields of `node.metadata` whose keys are valid
//!   label keys, and `cluster` = `node.cluster` when set;
//! - agent version: `user_agent_name` and its version;
//! - kind: `grpc` when the user agent is a gRPC library ("gRPC Python", "gRPC Go", ...),
//!   `envoy` otherwise.

use envoy_types::pb::envoy::config::core::v3::{Node as XdsNode, node};
use envoy_types::pb::google::protobuf::value::Kind as ValueKind;
use portico_api::node::{DataPlane, MAX_ID_LEN, check_id};
use portico_api::pb::Node;
use tonic::Status;

/// Most labels taken from the metadata.
const MAX_LABELS: usize = 64;
const MAX_LABEL_KEY_LEN: usize = 63;
const MAX_LABEL_VALUE_LEN: usize = 256;

/// The registry node and kind of the client whose node is `node`; an invalid-argument status
/// naming the field when it cannot be registered.
pub fn identify(node: &XdsNode) -> Result<(Node, DataPlane), Status> {
    let bad = |field: &str, rule: String| Status::invalid_argument(format!("{field}: {rule}"));
    check_id(&node.id).map_err(|rule| bad("node.id", rule))?;
    let locality = node.locality.clone().unwrap_or_default();
    check_id(&locality.region).map_err(|rule| bad("node.locality.region", rule))?;
    check_id(&locality.zone).map_err(|rule| bad("node.locality.zone", rule))?;
    let mut labels = std::collections::BTreeMap::new();
    let valid_key = |k: &str| {
        !k.is_empty()
            && k.len() <= MAX_LABEL_KEY_LEN
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if let Some(metadata) = &node.metadata {
        for (k, v) in &metadata.fields {
            let value = match &v.kind {
                Some(ValueKind::StringValue(s)) => s.clone(),
                Some(ValueKind::BoolValue(b)) => b.to_string(),
                Some(ValueKind::NumberValue(n)) => n.to_string(),
                _ => continue,
            };
            if valid_key(k) && value.len() <= MAX_LABEL_VALUE_LEN {
                labels.insert(k.clone(), value);
            }
        }
    }
    if !node.cluster.is_empty() && node.cluster.len() <= MAX_LABEL_VALUE_LEN {
        labels.insert("cluster".to_string(), node.cluster.clone());
    }
    while labels.len() > MAX_LABELS {
        labels.pop_last();
    }
    let version = match &node.user_agent_version_type {
        Some(node::UserAgentVersionType::UserAgentVersion(v)) => v.clone(),
        Some(node::UserAgentVersionType::UserAgentBuildVersion(b)) => b
            .version
            .as_ref()
            .map(|v| format!("{}.{}.{}", v.major_number, v.minor_number, v.patch))
            .unwrap_or_default(),
        None => String::new(),
    };
    let mut agent_version = format!("{} {version}", node.user_agent_name)
        .trim()
        .to_string();
    if agent_version.len() > MAX_ID_LEN {
        let mut cut = MAX_ID_LEN;
        while !agent_version.is_char_boundary(cut) {
            cut -= 1;
        }
        agent_version.truncate(cut);
    }
    let kind = if node.user_agent_name.to_ascii_lowercase().contains("grpc") {
        DataPlane::Grpc
    } else {
        DataPlane::Envoy
    };
    Ok((
        Node {
            id: node.id.clone(),
            region: locality.region,
            zone: locality.zone,
            labels,
            agent_version,
            ..Default::default()
        },
        kind,
    ))
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::Locality;
    use envoy_types::pb::google::protobuf::{Struct, Value};

    use super::*;

    fn node(id: &str, agent: &str) -> XdsNode {
        XdsNode {
            id: id.into(),
            cluster: "greeters".into(),
            locality: Some(Locality {
                region: "eu".into(),
                zone: "eu-1".into(),
                sub_zone: String::new(),
            }),
            user_agent_name: agent.into(),
            user_agent_version_type: Some(node::UserAgentVersionType::UserAgentVersion(
                "1.70.0".into(),
            )),
            metadata: Some(Struct {
                fields: [
                    ("tier", ValueKind::StringValue("edge".into())),
                    ("canary", ValueKind::BoolValue(true)),
                    ("bad key", ValueKind::StringValue("x".into())),
                    ("nested", ValueKind::StructValue(Struct::default())),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), Value { kind: Some(v) }))
                .collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_node_becomes_a_registry_node_of_its_kind() {
        let (n, kind) = identify(&node("client-1", "gRPC Python")).expect("valid");
        assert_eq!(kind, DataPlane::Grpc);
        assert_eq!(
            (n.id.as_str(), n.region.as_str(), n.zone.as_str()),
            ("client-1", "eu", "eu-1")
        );
        assert_eq!(n.agent_version, "gRPC Python 1.70.0");
        let labels: Vec<(&str, &str)> = n
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("canary", "true"),
                ("cluster", "greeters"),
                ("tier", "edge")
            ]
        );
        let (_, kind) = identify(&node("proxy-1", "envoy")).expect("valid");
        assert_eq!(kind, DataPlane::Envoy);
    }

    #[test]
    fn ids_and_localities_follow_the_rules_of_agents() {
        let status = identify(&node("sidecar~10.0.0.1", "envoy")).expect_err("bad id");
        assert!(status.message().starts_with("node.id: "), "{status:?}");
        let mut n = node("proxy-1", "envoy");
        n.locality = None;
        let status = identify(&n).expect_err("no locality");
        assert!(
            status.message().starts_with("node.locality.region: "),
            "{status:?}"
        );
    }
}
