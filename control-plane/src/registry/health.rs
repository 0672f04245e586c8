//! An agent's endpoint health between its reports and the registry's writes.
//!
//! Every report carries the state of each endpoint of the agent's clusters and the requests and
//! errors since the previous report. Writing that to the store on every report would cost the
//! whole fleet's endpoint lists every report interval. Instead the value is written:
//! - when a state changed (an endpoint turned unhealthy, was ejected or returned, a cluster
//!   entered or left panic mode, endpoints came or went), at the next flush;
//! - otherwise at most every [`COUNTS_EVERY`], when requests were counted meanwhile, with the
//!   counts summed since the last write (`window_seconds` says over how long);
//! - and at least every [`REWRITE_EVERY`] while it has endpoints, so a value another replica
//!   overwrote is put right.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use portico_api::pb::{AgentHealth, ClusterHealth, Node, endpoint_health::State};

use super::timestamp;

/// Counts alone are written at most this often.
pub const COUNTS_EVERY: Duration = Duration::from_secs(30);
/// An unchanged value is written again this often.
pub const REWRITE_EVERY: Duration = Duration::from_secs(300);
/// Two ejection ends this close are the same ejection: an agent reports its monotonic end
/// converted to wall time, which moves by a millisecond or so between reports.
const SAME_EJECTION_MS: i64 = 1_000;

/// One agent's endpoint health: its last report, and what was last written.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The last report's clusters, with the counts summed since the last write.
    latest: Vec<ClusterHealth>,
    /// Endpoints the last report left out.
    omitted: u32,
    /// When the last report arrived.
    reported_at: Option<SystemTime>,
    /// The clusters as last written (`None`: nothing is known to be stored).
    written: Option<Vec<ClusterHealth>>,
    /// When the counts started to be summed.
    window_start: Option<Instant>,
    /// When the value was last taken for writing.
    last_write: Option<Instant>,
    /// A write is due.
    pending: bool,
}

impl Tracker {
    /// Takes a report's clusters (already bounded), received at `at` (wall clock) and `now`.
    pub fn observe(
        &mut self,
        clusters: Vec<ClusterHealth>,
        omitted: u32,
        at: SystemTime,
        now: Instant,
    ) {
        let mut counted: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
        for c in &self.latest {
            for e in &c.endpoints {
                counted.insert((&c.cluster, &e.address), (e.requests, e.errors));
            }
        }
        let mut clusters = clusters;
        for c in &mut clusters {
            for e in &mut c.endpoints {
                if let Some((requests, errors)) =
                    counted.get(&(c.cluster.as_str(), e.address.as_str()))
                {
                    e.requests = e.requests.saturating_add(*requests);
                    e.errors = e.errors.saturating_add(*errors);
                }
            }
        }
        self.latest = clusters;
        self.omitted = omitted;
        self.reported_at = Some(at);
        self.window_start.get_or_insert(now);
        let since_write = self.last_write.map(|t| now.saturating_duration_since(t));
        let changed = match &self.written {
            None => !self.latest.is_empty(),
            Some(written) => !same_states(written, &self.latest),
        };
        let counts_due = since_write.is_none_or(|d| d >= COUNTS_EVERY) && has_counts(&self.latest);
        let rewrite_due =
            since_write.is_some_and(|d| d >= REWRITE_EVERY) && !self.latest.is_empty();
        self.pending |= changed || counts_due || rewrite_due;
    }

    /// Whether a write is due.
    pub fn pending(&self) -> bool {
        self.pending
    }

    /// The value to write for `node` now.
    pub fn value(&self, node: &Node, now: Instant) -> AgentHealth {
        let window = self
            .window_start
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        AgentHealth {
            node_id: node.id.clone(),
            region: node.region.clone(),
            zone: node.zone.clone(),
            time: self.reported_at.map(timestamp),
            window_seconds: u32::try_from(window.as_secs()).unwrap_or(u32::MAX),
            clusters: self.latest.clone(),
            endpoints_omitted: self.omitted,
        }
    }

    /// The value from [`Tracker::value`] is being written: the counts start again from zero.
    pub fn taken(&mut self, now: Instant) {
        for e in self.latest.iter_mut().flat_map(|c| &mut c.endpoints) {
            e.requests = 0;
            e.errors = 0;
        }
        self.written = Some(self.latest.clone());
        self.window_start = Some(now);
        self.last_write = Some(now);
        self.pending = false;
    }

    /// What was written is gone or in doubt (a failed write, a lost lease): write again.
    pub fn rewrite(&mut self) {
        self.written = None;
        self.pending = !self.latest.is_empty();
    }
}

/// The endpoints each cluster has unhealthy or ejected (clusters with none left out).
pub fn unhealthy_by_cluster(clusters: &[ClusterHealth]) -> BTreeMap<String, u64> {
    clusters
        .iter()
        .filter_map(|c| {
            let n = c
                .endpoints
                .iter()
                .filter(|e| {
                    matches!(
                        State::try_from(e.state),
                        Ok(State::Unhealthy | State::Ejected)
                    )
                })
                .count() as u64;
            (n > 0).then(|| (c.cluster.clone(), n))
        })
        .collect()
}

/// Whether any endpoint had requests counted.
fn has_counts(clusters: &[ClusterHealth]) -> bool {
    clusters
        .iter()
        .flat_map(|c| &c.endpoints)
        .any(|e| e.requests > 0 || e.errors > 0)
}

/// Whether two reports give every endpoint the same state (counts aside).
pub fn same_states(a: &[ClusterHealth], b: &[ClusterHealth]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.cluster == y.cluster
                && x.panic == y.panic
                && x.endpoints.len() == y.endpoints.len()
                && x.endpoints.iter().zip(&y.endpoints).all(|(e, f)| {
                    e.address == f.address
                        && e.state == f.state
                        && e.reason == f.reason
                        && e.region == f.region
                        && e.zone == f.zone
                        && (e.ejected_until_unix_ms - f.ejected_until_unix_ms).abs()
                            < SAME_EJECTION_MS
                })
        })
}

#[cfg(test)]
mod tests {
    use portico_api::pb::{EndpointHealth, endpoint_health::State};

    use super::*;

    fn report(states: &[(State, u64, i64)]) -> Vec<ClusterHealth> {
        vec![ClusterHealth {
            cluster: "api".into(),
            endpoints: states
                .iter()
                .enumerate()
                .map(|(i, (state, requests, until))| EndpointHealth {
                    address: format!("10.0.0.{i}:80"),
                    state: *state as i32,
                    requests: *requests,
                    ejected_until_unix_ms: *until,
                    ..Default::default()
                })
                .collect(),
            panic: false,
        }]
    }

    fn node() -> Node {
        Node {
            id: "edge-1".into(),
            region: "eu".into(),
            zone: "eu-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn writes_follow_state_changes_and_counts_at_most_every_interval() {
        use State::*;
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // (seconds, report as (state, requests, ejected until), write due)
        type Report<'a> = &'a [(State, u64, i64)];
        let steps: &[(u64, Report, bool)] = &[
            (0, &[(Healthy, 0, 0)], true),
            // Same states, no counts: nothing to write.
            (10, &[(Healthy, 0, 0)], false),
            // Counts, but the last write is recent.
            (20, &[(Healthy, 5, 0)], false),
            // A state change is written at once.
            (21, &[(Unhealthy, 1, 0)], true),
            // An ejection end moving by a few milliseconds is the same ejection.
            (22, &[(Ejected, 0, 50_000)], true),
            (23, &[(Ejected, 0, 50_400)], false),
            (24, &[(Ejected, 0, 80_000)], true),
            // Counts after the interval.
            (40, &[(Ejected, 3, 80_000)], false),
            (54, &[(Ejected, 3, 80_000)], true),
            // Nothing counted for a long time: rewritten anyway.
            (100, &[(Ejected, 0, 80_000)], false),
            (360, &[(Ejected, 0, 80_000)], true),
        ];
        let mut tracker = Tracker::default();
        for (secs, states, due) in steps {
            tracker.observe(report(states), 0, wall, at(*secs));
            assert_eq!(tracker.pending(), *due, "at {secs}s");
            if tracker.pending() {
                tracker.taken(at(*secs));
            }
        }
    }

    #[test]
    fn counts_are_summed_over_the_window() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut tracker = Tracker::default();
        tracker.observe(report(&[(State::Healthy, 4, 0)]), 0, wall, t0);
        tracker.taken(t0);
        for (s, requests) in [(10, 3), (20, 5), (30, 2)] {
            tracker.observe(
                report(&[(State::Healthy, requests, 0)]),
                2,
                wall,
                t0 + Duration::from_secs(s),
            );
        }
        assert!(tracker.pending());
        let value = tracker.value(&node(), t0 + Duration::from_secs(30));
        assert_eq!(value.clusters[0].endpoints[0].requests, 10);
        assert_eq!(value.window_seconds, 30);
        assert_eq!(value.endpoints_omitted, 2);
        assert_eq!(
            (value.node_id.as_str(), value.region.as_str()),
            ("edge-1", "eu")
        );
        tracker.taken(t0 + Duration::from_secs(30));
        let next = tracker.value(&node(), t0 + Duration::from_secs(30));
        assert_eq!(next.clusters[0].endpoints[0].requests, 0);
    }

    #[test]
    fn unhealthy_and_ejected_endpoints_are_counted_by_cluster() {
        let mut clusters = report(&[
            (State::Healthy, 0, 0),
            (State::Unhealthy, 0, 0),
            (State::Ejected, 0, 9),
            (State::Draining, 0, 0),
        ]);
        clusters.extend(report(&[(State::Healthy, 0, 0)]).into_iter().map(|mut c| {
            c.cluster = "web".into();
            c
        }));
        let counted = unhealthy_by_cluster(&clusters);
        assert_eq!(counted, BTreeMap::from([("api".to_string(), 2)]));
    }

    #[test]
    fn a_lost_write_is_written_again() {
        let now = Instant::now();
        let mut tracker = Tracker::default();
        tracker.observe(report(&[(State::Healthy, 0, 0)]), 0, SystemTime::now(), now);
        tracker.taken(now);
        assert!(!tracker.pending());
        tracker.rewrite();
        assert!(tracker.pending());
        // An agent without clusters has nothing to write.
        let mut empty = Tracker::default();
        empty.observe(Vec::new(), 0, SystemTime::now(), now);
        assert!(!empty.pending());
    }
}
