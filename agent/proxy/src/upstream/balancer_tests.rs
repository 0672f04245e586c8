use std::sync::atomic::Ordering;

use super::*;

fn endpoint(i: usize, weight: u32, region: &str, zone: &str) -> Arc<Endpoint> {
    let locality = Locality {
        region: region.into(),
        zone: zone.into(),
    };
    let authority = format!("10.0.0.{i}:80").parse().unwrap();
    Arc::new(Endpoint::new(authority, weight, locality, 1))
}

fn flat(weights: &[u32]) -> Vec<Arc<Endpoint>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| endpoint(i, *w, "", ""))
        .collect()
}

fn counts(b: &Balancer, endpoints: &[Arc<Endpoint>], picks: usize) -> Vec<usize> {
    let mut counts = vec![0; endpoints.len()];
    for _ in 0..picks {
        counts[b.pick(endpoints, None, None).unwrap()] += 1;
    }
    counts
}

#[test]
fn smooth_weighted_round_robin_spreads_turns_by_weight() {
    let endpoints = flat(&[5, 1, 1]);
    let b = Balancer::new(&endpoints, Policy::RoundRobin, None, 1);
    let order: Vec<usize> = (0..7)
        .map(|_| b.pick(&endpoints, None, None).unwrap())
        .collect();
    assert_eq!(order.iter().filter(|i| **i == 0).count(), 5, "{order:?}");
    // No burst: the heavy endpoint never takes more than three turns in a row.
    let longest = order.split(|i| *i != 0).map(<[usize]>::len).max().unwrap();
    assert!(longest <= 3, "{order:?}");
    let c = counts(&b, &endpoints, 7000);
    assert_eq!(c, [5000, 1000, 1000]);
}

#[test]
fn tier_shares_spill_in_proportion_below_the_threshold() {
    let cases: &[(&[u32], &[u32])] = &[
        (&[100], &[10_000]),
        (&[100, 100], &[10_000, 10_000]),
        (&[60, 100], &[6_000, 10_000]),
        (&[60, 20, 100], &[6_000, 8_000, 10_000]),
        (&[0, 100], &[0, 10_000]),
        (&[40, 40], &[5_000, 10_000]),
        (&[0, 0], &[0, 0]),
    ];
    for (health, expected) in cases {
        assert_eq!(shares(health), *expected, "{health:?}");
    }
}

#[test]
fn local_endpoints_first_then_spill_when_too_few_are_healthy() {
    let endpoints: Vec<Arc<Endpoint>> = (0..4)
        .map(|i| endpoint(i, 1, "eu", "eu-1"))
        .chain((4..8).map(|i| endpoint(i, 1, "eu", "eu-2")))
        .chain((8..12).map(|i| endpoint(i, 1, "us", "us-1")))
        .collect();
    let tiering = Tiering {
        local: Locality {
            region: "eu".into(),
            zone: "eu-1".into(),
        },
        threshold: 70,
    };
    let b = Balancer::new(&endpoints, Policy::RoundRobin, Some(tiering), 1);
    let tier = |c: &[usize], r: std::ops::Range<usize>| c[r].iter().sum::<usize>();
    let c = counts(&b, &endpoints, 4000);
    assert_eq!(tier(&c, 0..4), 4000, "all in the agent's zone: {c:?}");
    // Two of four local endpoints down: 50% healthy, below 70%: the zone takes 50/70 of
    // the traffic and the region the rest.
    endpoints[0].set_healthy(false, "down");
    endpoints[1].set_healthy(false, "down");
    b.rebuild(&endpoints);
    let c = counts(&b, &endpoints, 20_000);
    let local = tier(&c, 0..4) as f64 / 20_000.0;
    assert!((local - 5.0 / 7.0).abs() < 0.02, "{c:?}");
    assert_eq!(c[0] + c[1], 0, "never to an unhealthy endpoint");
    assert_eq!(tier(&c, 8..12), 0, "the region covers the rest: {c:?}");
    // Everything down: panic, all endpoints take traffic.
    for e in &endpoints {
        e.set_healthy(false, "down");
    }
    assert!(b.rebuild(&endpoints).panic);
    assert!(counts(&b, &endpoints, 1200).iter().all(|n| *n > 0));
}

#[test]
fn least_request_prefers_the_less_loaded_endpoint() {
    let endpoints = flat(&[1, 1]);
    let b = Balancer::new(&endpoints, Policy::LeastRequest, None, 1);
    for _ in 0..10 {
        endpoints[0].begin(0);
    }
    let c = counts(&b, &endpoints, 1000);
    // A pair of two draws misses endpoint 1 only when both draws are endpoint 0.
    assert!(c[1] > 700, "{c:?}");
    assert_eq!(endpoints[0].in_flight(), 10);
}

#[test]
fn hashing_keeps_a_key_on_its_endpoint_and_avoids_a_failed_one() {
    let endpoints = flat(&[1, 1, 1, 1]);
    let b = Balancer::new(&endpoints, Policy::Maglev, None, 1);
    let first = b.pick(&endpoints, Some(42), None).unwrap();
    for _ in 0..100 {
        assert_eq!(b.pick(&endpoints, Some(42), None), Some(first));
    }
    assert_ne!(b.pick(&endpoints, Some(42), Some(first)), Some(first));
    endpoints[first]
        .outlier
        .ejected_until_ms
        .store(now_ms() + 60_000, Ordering::Release);
    b.rebuild(&endpoints);
    assert_ne!(b.pick(&endpoints, Some(42), None), Some(first), "ejected");
}
