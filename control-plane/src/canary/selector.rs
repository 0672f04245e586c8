//! Which agents a canary rollout picks: a label selector (`slot=1`, `tier=edge,region=eu`; the
//! keys `region` and `zone` match the agent's region and zone) or a share of the fleet (`5%`),
//! picked by a hash of the node id so every replica, and every restart, picks the same agents.

use portico_api::pb::{CanarySelector, Node};
use sha2::{Digest, Sha256};

/// The longest selector accepted, in bytes.
const MAX_LEN: usize = 1024;

/// Parses `text`; the error says what is wrong with it.
pub fn parse(text: &str) -> Result<CanarySelector, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the canary selector is empty: give labels (slot=1) or a share (5%)".into());
    }
    if text.len() > MAX_LEN {
        return Err(format!(
            "the canary selector is longer than {MAX_LEN} bytes"
        ));
    }
    if let Some(share) = text.strip_suffix('%') {
        let percent: f64 = share
            .trim()
            .parse()
            .map_err(|_| format!("canary share {text:?} is not a number followed by %"))?;
        if !(percent > 0.0 && percent <= 100.0) {
            return Err(format!(
                "canary share {text:?} must be above 0% and at most 100%"
            ));
        }
        return Ok(CanarySelector {
            text: text.to_string(),
            percent,
            ..Default::default()
        });
    }
    let mut selector = CanarySelector {
        text: text.to_string(),
        ..Default::default()
    };
    for pair in text.split(',') {
        let (key, value) = pair
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .ok_or_else(|| {
                format!("canary selector {text:?}: {pair:?} is not key=value (or give a share, 5%)")
            })?;
        if selector
            .labels
            .insert(key.to_string(), value.to_string())
            .is_some()
        {
            return Err(format!("canary selector {text:?} names {key:?} twice"));
        }
    }
    Ok(selector)
}

/// Whether `selector` picks the agent of `node`.
pub fn selects(selector: &CanarySelector, node: &Node) -> bool {
    if selector.percent > 0.0 {
        return share(&node.id) < selector.percent / 100.0;
    }
    !selector.labels.is_empty()
        && selector.labels.iter().all(|(key, value)| {
            let actual = match key.as_str() {
                "region" => Some(&node.region),
                "zone" => Some(&node.zone),
                _ => node.labels.get(key),
            };
            actual == Some(value)
        })
}

/// Where `node_id` falls in [0, 1): the first 8 bytes of its SHA-256.
fn share(node_id: &str) -> f64 {
    let digest = Sha256::digest(node_id.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(head) as f64 / (u64::MAX as f64 + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, region: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            id: id.into(),
            region: region.into(),
            zone: format!("{region}-a"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn labels_region_and_zone_select_by_all_of_them() {
        let s = parse("tier=edge, region=eu").unwrap();
        assert!(selects(&s, &node("a", "eu", &[("tier", "edge")])));
        assert!(!selects(&s, &node("b", "us", &[("tier", "edge")])));
        assert!(!selects(&s, &node("c", "eu", &[])));
        assert!(selects(&parse("zone=eu-a").unwrap(), &node("d", "eu", &[])));
    }

    #[test]
    fn a_share_picks_about_that_many_agents_and_always_the_same() {
        let s = parse("10%").unwrap();
        let picked: Vec<String> = (0..10_000)
            .map(|i| format!("node-{i}"))
            .filter(|id| selects(&s, &node(id, "eu", &[])))
            .collect();
        assert!((900..1100).contains(&picked.len()), "{}", picked.len());
        assert!(picked.iter().all(|id| selects(&s, &node(id, "us", &[]))));
        assert!(selects(&parse("100%").unwrap(), &node("x", "", &[])));
    }

    #[test]
    fn malformed_selectors_say_what_is_wrong() {
        for (text, says) in [
            ("", "empty"),
            ("0%", "above 0%"),
            ("150%", "at most 100%"),
            ("five%", "not a number"),
            ("slot", "key=value"),
            ("slot=1,slot=2", "twice"),
            ("=1", "key=value"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
