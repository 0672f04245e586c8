//! An agent node as the rest of the config sees it: the format of its id, and which listeners
//! select it. The agent (which listeners to bind) and the control plane (which listeners to
//! send) both decide by these rules, so they cannot disagree.

use std::collections::BTreeMap;

use crate::pb::AgentSelector;

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
    fn every_non_empty_part_of_a_selector_must_match() {
        let labels: BTreeMap<String, String> = [("tier".to_string(), "edge".to_string())].into();
        let selector = |regions: &[&str], zones: &[&str], l: &[(&str, &str)]| AgentSelector {
            regions: regions.iter().map(|s| s.to_string()).collect(),
            zones: zones.iter().map(|s| s.to_string()).collect(),
            labels: l
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
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
}
