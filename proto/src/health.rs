//! Endpoint health in reports: how much of it one report carries. The agent bounds what it
//! sends and the control plane bounds what it keeps by the same rule, so a report's size, and
//! the registry value made from it, stay bounded however large the agent's clusters are.

use crate::pb::{ClusterHealth, endpoint_health::State};

/// The most endpoints one report carries, over all its clusters.
pub const MAX_REPORTED_ENDPOINTS: usize = 512;
/// The longest reason kept, in bytes.
pub const MAX_REASON_LEN: usize = 256;
/// The longest cluster name, address, region or zone kept, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Keeps at most `max` endpoints over `clusters`: every endpoint that is not healthy first (in
/// cluster order), then healthy ones in cluster order until the cap; a cluster none of whose
/// endpoints is kept is dropped. Shortens reasons to [`MAX_REASON_LEN`] and names, addresses,
/// regions and zones to [`MAX_NAME_LEN`]. Returns how many endpoints were left out.
pub fn bound(clusters: &mut Vec<ClusterHealth>, max: usize) -> u32 {
    let healthy = |state: i32| state == State::Healthy as i32;
    let not_healthy = clusters
        .iter()
        .flat_map(|c| &c.endpoints)
        .filter(|e| !healthy(e.state))
        .count();
    let mut room_not_healthy = max;
    let mut room_healthy = max.saturating_sub(not_healthy);
    let mut omitted = 0u32;
    for cluster in clusters.iter_mut() {
        cluster.endpoints.retain(|e| {
            let room = if healthy(e.state) {
                &mut room_healthy
            } else {
                &mut room_not_healthy
            };
            if *room == 0 {
                omitted += 1;
                return false;
            }
            *room -= 1;
            true
        });
        shorten(&mut cluster.cluster, MAX_NAME_LEN);
        for e in &mut cluster.endpoints {
            shorten(&mut e.reason, MAX_REASON_LEN);
            for field in [&mut e.address, &mut e.region, &mut e.zone] {
                shorten(field, MAX_NAME_LEN);
            }
        }
    }
    clusters.retain(|c| !c.endpoints.is_empty());
    omitted
}

/// Cuts `s` to at most `max` bytes, at a character boundary, with its control characters
/// escaped ([`crate::text::printable`]): how agent-supplied text is bounded and defused before
/// the control plane keeps, logs or shows it.
pub fn shorten(s: &mut String, max: usize) {
    if s.len() > max || crate::text::has_control(s) {
        *s = crate::text::printable(s, max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::EndpointHealth;

    fn cluster(name: &str, states: &[State]) -> ClusterHealth {
        ClusterHealth {
            cluster: name.into(),
            endpoints: states
                .iter()
                .enumerate()
                .map(|(i, s)| EndpointHealth {
                    address: format!("{name}-{i}:80"),
                    state: *s as i32,
                    ..Default::default()
                })
                .collect(),
            panic: false,
        }
    }

    fn kept(clusters: &[ClusterHealth]) -> Vec<String> {
        clusters
            .iter()
            .flat_map(|c| c.endpoints.iter().map(|e| e.address.clone()))
            .collect()
    }

    /// Clusters as (name, endpoint states).
    type Clusters<'a> = &'a [(&'a str, &'a [State])];

    #[test]
    fn endpoints_not_healthy_are_kept_first() {
        use State::*;
        let cases: &[(Clusters, usize, &[&str], u32)] = &[
            // Under the cap: everything.
            (&[("a", &[Healthy, Unhealthy])], 4, &["a-0:80", "a-1:80"], 0),
            // Not healthy ones first, then healthy ones in order.
            (
                &[("a", &[Healthy, Healthy]), ("b", &[Ejected, Healthy])],
                2,
                &["a-0:80", "b-0:80"],
                2,
            ),
            // More not healthy than the cap: only those, and an emptied cluster goes.
            (
                &[("a", &[Healthy]), ("b", &[Ejected, Draining, Unhealthy])],
                2,
                &["b-0:80", "b-1:80"],
                2,
            ),
            // A cluster without endpoints is not reported.
            (&[("a", &[]), ("b", &[Healthy])], 4, &["b-0:80"], 0),
        ];
        for (input, max, expected, omitted) in cases {
            let mut clusters: Vec<_> = input.iter().map(|(n, s)| cluster(n, s)).collect();
            let left_out = bound(&mut clusters, *max);
            assert_eq!(kept(&clusters), *expected, "{input:?}");
            assert_eq!(left_out, *omitted, "{input:?}");
            assert!(clusters.iter().all(|c| !c.endpoints.is_empty()));
        }
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let mut clusters = vec![cluster("a", &[State::Unhealthy])];
        clusters[0].endpoints[0].reason = "é".repeat(MAX_REASON_LEN);
        bound(&mut clusters, 1);
        let reason = &clusters[0].endpoints[0].reason;
        assert!(reason.len() <= MAX_REASON_LEN && reason.len() >= MAX_REASON_LEN - 1);
    }

    #[test]
    fn long_names_and_addresses_are_cut() {
        let mut clusters = vec![cluster(&"c".repeat(100_000), &[State::Unhealthy])];
        let e = &mut clusters[0].endpoints[0];
        e.address = "a".repeat(100_000);
        e.region = "r".repeat(100_000);
        e.zone = "z".repeat(100_000);
        bound(&mut clusters, 1);
        assert_eq!(clusters[0].cluster.len(), MAX_NAME_LEN);
        let e = &clusters[0].endpoints[0];
        for field in [&e.address, &e.region, &e.zone] {
            assert_eq!(field.len(), MAX_NAME_LEN);
        }
    }
}
