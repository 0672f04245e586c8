//! Key layout and value encoding: the one place that knows where things live in the store.
//!
//! ```text
//! <root>/v1/config/<kind>/<name>   Resource            (protobuf)
//! <root>/v1/config/~staged-change  StagedChange        (protobuf): present while a change too
//!                                                       large for one transaction is written;
//!                                                       listed with the config, so one listing
//!                                                       shows both (see `commit`)
//! <root>/v1/history/<revision>     HistoryRecord       (protobuf; the config revision of the
//!                                                       change zero-padded to 20 digits, so key
//!                                                       order is numeric order)
//! <root>/v1/history/<revision>/<part> HistoryPart      (protobuf; the deltas of a large
//!                                                       change, part zero-padded to 6 digits)
//! <root>/v1/agents/<node id>       AgentRecord         (protobuf, on a lease)
//! <root>/v1/applied/<replica id>/<chunk>  AppliedVersions  (protobuf, on the replica's
//!                                  registry lease): the versions its agents applied (chunk
//!                                  zero-padded to 6 digits)
//! <root>/v1/meta/config-revision   the config revision: the number of config changes so far
//!                                  (decimal), advanced by one by every change; a CAS on its
//!                                  mod revision orders changes across replicas
//! <root>/v1/service-nodes/<node id> Node               (protobuf, on a lease): present while
//!                                  the node is healthy and announces services; its address
//!                                  is the one other nodes reach them at
//! <root>/v1/upstream-health/<node id> AgentHealth      (protobuf, on a lease): the endpoint
//!                                  states the agent last reported
//! <root>/v1/auth/ca                CaRecord            (protobuf): the certificate authority
//! <root>/v1/auth/bootstrap         BootstrapRecord     (protobuf): the first admin token was
//!                                  made from --bootstrap-token-file
//! <root>/v1/auth/tokens/<name>     Token               (protobuf): API and join tokens, hashed
//! <root>/v1/auth/agents/<node id>  AgentIdentity       (protobuf): what an agent's
//!                                  certificates vouch for, and whether they are revoked
//! <root>/v1/budgets/<policy>/<window start>/<key>  BudgetRecord  (protobuf): a fleet budget's
//!                                  grants and counts in one window (start in ms, 20 digits;
//!                                  '%' and '/' of the key percent-encoded)
//! <root>/v1/usage/minute/<hour start>/<minute start>/<replica>  UsageRollup  (protobuf): the
//!                                  usage one replica's agents reported in one minute
//! <root>/v1/usage/hour/<hour start>  UsageRollup  (protobuf): the whole fleet's usage in one
//!                                  hour, rolled up from the minutes
//! <root>/v1/meta/canary            CanaryPin           (protobuf): present while a canary
//!                                  rollout is active, written and deleted with the config
//!                                  revisions that start and end it (in the watch range)
//! <root>/v1/rollout/record         RolloutRecord       (protobuf): the active canary rollout
//!                                  or the last one
//! <root>/v1/rollout/usage/<revision>/<replica>  RolloutUsage  (protobuf): one replica's
//!                                  agents' traffic on the rollout's routes, by cohort
//! <root>/v1/meta/leader            the leading replica's id (on its election lease)
//! <root>/v1/replicas/<replica id>  ReplicaRecord       (protobuf, on the replica's election
//!                                  lease): what `portico status` shows of it
//! ```
//!
//! Every replica watches [`Keys::config_watch_range`], from the config prefix through the
//! config-revision key, so it sees each change's resources and its config revision in one
//! store revision. The range also holds the history records (one per change); key families
//! written often, such as the agent registry, must sort outside it.
//!
//! `<root>` is "/portico" by default and configurable (`--etcd-prefix`), so several Portico
//! installations can share one etcd.

use portico_api::Kind;
use prost::Message;

use crate::store::{KeyRange, StoreError};

/// The default root of every key.
pub const DEFAULT_ROOT: &str = "/portico";

/// Builds keys under one root.
#[derive(Clone, Debug)]
pub struct Keys {
    root: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(DEFAULT_ROOT)
    }
}

impl Keys {
    /// Keys under `root` (a trailing '/' is ignored).
    pub fn new(root: &str) -> Self {
        Keys {
            root: root.trim_end_matches('/').to_string(),
        }
    }

    /// Prefix of every config resource.
    pub fn config_prefix(&self) -> String {
        format!("{}/v1/config/", self.root)
    }

    /// Prefix of the config resources of one kind.
    pub fn config_kind_prefix(&self, kind: Kind) -> String {
        format!("{}{}/", self.config_prefix(), kind_segment(kind))
    }

    /// Key of one config resource.
    pub fn config(&self, kind: Kind, name: &str) -> String {
        format!("{}{name}", self.config_kind_prefix(kind))
    }

    /// Key of the marker of a change being written in several transactions. It lies under the
    /// config prefix, so a listing of the config shows it with the resources it is writing.
    pub fn staged_change(&self) -> String {
        format!("{}~staged-change", self.config_prefix())
    }

    /// Whether `key` is [`Keys::staged_change`].
    pub fn is_staged_change(&self, key: &str) -> bool {
        key.strip_prefix(&self.config_prefix()) == Some("~staged-change")
    }

    /// Parses a config key back into kind and name.
    pub fn parse_config(&self, key: &str) -> Option<(Kind, String)> {
        let rest = key.strip_prefix(&self.config_prefix())?;
        let (kind, name) = rest.split_once('/')?;
        let kind = Kind::ALL.into_iter().find(|k| kind_segment(*k) == kind)?;
        Some((kind, name.to_string()))
    }

    /// Prefix of the history records.
    pub fn history_prefix(&self) -> String {
        format!("{}/v1/history/", self.root)
    }

    /// Key of the history record of one change, by config revision.
    pub fn history(&self, revision: i64) -> String {
        format!("{}{revision:020}", self.history_prefix())
    }

    /// Parses a history key back into its config revision.
    pub fn parse_history(&self, key: &str) -> Option<i64> {
        key.strip_prefix(&self.history_prefix())?.parse().ok()
    }

    /// Prefix of the parts of the history record of one large change.
    pub fn history_parts_prefix(&self, revision: i64) -> String {
        format!("{}/", self.history(revision))
    }

    /// Key of one part of the history record of a large change.
    pub fn history_part(&self, revision: i64, part: u32) -> String {
        format!("{}{part:06}", self.history_parts_prefix(revision))
    }

    /// Parses a history part key back into its config revision and part number.
    pub fn parse_history_part(&self, key: &str) -> Option<(i64, u32)> {
        let (revision, part) = key.strip_prefix(&self.history_prefix())?.split_once('/')?;
        Some((revision.parse().ok()?, part.parse().ok()?))
    }

    /// Prefix of the agent registry.
    pub fn agents_prefix(&self) -> String {
        format!("{}/v1/agents/", self.root)
    }

    /// Key of one agent's registry record.
    pub fn agent(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.agents_prefix())
    }

    /// Prefix of the replicas' summaries of the versions their agents applied.
    pub fn applied_prefix(&self) -> String {
        format!("{}/v1/applied/", self.root)
    }

    /// Key of one chunk of a replica's applied versions.
    pub fn applied(&self, replica: &str, chunk: usize) -> String {
        format!("{}{replica}/{chunk:06}", self.applied_prefix())
    }

    /// The replica and chunk of an [`Keys::applied`] key.
    pub fn parse_applied<'k>(&self, key: &'k str) -> Option<(&'k str, usize)> {
        let (replica, chunk) = key.strip_prefix(&self.applied_prefix())?.rsplit_once('/')?;
        Some((replica, chunk.parse().ok()?))
    }

    /// Prefix of the healthy nodes announcing services.
    pub fn service_nodes_prefix(&self) -> String {
        format!("{}/v1/service-nodes/", self.root)
    }

    /// Key of one node's announced services, present while it is healthy.
    pub fn service_node(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.service_nodes_prefix())
    }

    /// The node id of a [`Keys::service_node`] key.
    pub fn parse_service_node<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.service_nodes_prefix())
    }

    /// Prefix of the agents' endpoint health.
    pub fn upstream_health_prefix(&self) -> String {
        format!("{}/v1/upstream-health/", self.root)
    }

    /// Key of one agent's endpoint health.
    pub fn upstream_health(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.upstream_health_prefix())
    }

    /// Prefix of everything authentication keeps: the CA, tokens, agent identities.
    pub fn auth_prefix(&self) -> String {
        format!("{}/v1/auth/", self.root)
    }

    /// Key of the certificate authority.
    pub fn ca(&self) -> String {
        format!("{}ca", self.auth_prefix())
    }

    /// Key of the bootstrap record.
    pub fn bootstrap(&self) -> String {
        format!("{}bootstrap", self.auth_prefix())
    }

    /// Prefix of the tokens.
    pub fn tokens_prefix(&self) -> String {
        format!("{}tokens/", self.auth_prefix())
    }

    /// Key of one token, by name.
    pub fn token(&self, name: &str) -> String {
        format!("{}{name}", self.tokens_prefix())
    }

    /// Prefix of the agent identities.
    pub fn identities_prefix(&self) -> String {
        format!("{}agents/", self.auth_prefix())
    }

    /// Key of one agent's identity, by node id.
    pub fn identity(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.identities_prefix())
    }

    /// Prefix of every fleet budget record.
    pub fn budgets_prefix(&self) -> String {
        format!("{}/v1/budgets/", self.root)
    }

    /// Key of the record of `key`'s budget of `policy` in the window starting at
    /// `window_start_ms`.
    pub fn budget(&self, policy: &str, window_start_ms: i64, key: &str) -> String {
        let escaped = key.replace('%', "%25").replace('/', "%2F");
        format!(
            "{}{policy}/{:020}/{escaped}",
            self.budgets_prefix(),
            window_start_ms.max(0)
        )
    }

    /// The window start of a [`Keys::budget`] key.
    pub fn parse_budget_window(&self, key: &str) -> Option<i64> {
        let rest = key.strip_prefix(&self.budgets_prefix())?;
        let mut parts = rest.splitn(3, '/');
        let (_, window, _) = (parts.next()?, parts.next()?, parts.next()?);
        window.parse().ok()
    }

    /// Prefix of the per-minute usage rollups.
    pub fn usage_minutes_prefix(&self) -> String {
        format!("{}/v1/usage/minute/", self.root)
    }

    /// Prefix of the per-minute usage rollups of the hour starting at `hour_start_ms`.
    pub fn usage_minutes_of_hour(&self, hour_start_ms: i64) -> String {
        format!(
            "{}{:020}/",
            self.usage_minutes_prefix(),
            hour_start_ms.max(0)
        )
    }

    /// Key of `replica`'s usage rollup of the minute starting at `minute_start_ms`.
    pub fn usage_minute(&self, minute_start_ms: i64, replica: &str) -> String {
        let hour = minute_start_ms.div_euclid(3_600_000) * 3_600_000;
        format!(
            "{}{:020}/{replica}",
            self.usage_minutes_of_hour(hour),
            minute_start_ms.max(0)
        )
    }

    /// The minute start and replica of a [`Keys::usage_minute`] key.
    pub fn parse_usage_minute<'k>(&self, key: &'k str) -> Option<(i64, &'k str)> {
        let rest = key.strip_prefix(&self.usage_minutes_prefix())?;
        let mut parts = rest.splitn(3, '/');
        let (_, minute, replica) = (parts.next()?, parts.next()?, parts.next()?);
        Some((minute.parse().ok()?, replica))
    }

    /// Prefix of the hourly usage rollups.
    pub fn usage_hours_prefix(&self) -> String {
        format!("{}/v1/usage/hour/", self.root)
    }

    /// Key of the fleet's usage rollup of the hour starting at `hour_start_ms`.
    pub fn usage_hour(&self, hour_start_ms: i64) -> String {
        format!("{}{:020}", self.usage_hours_prefix(), hour_start_ms.max(0))
    }

    /// The hour start of a [`Keys::usage_hour`] key.
    pub fn parse_usage_hour(&self, key: &str) -> Option<i64> {
        key.strip_prefix(&self.usage_hours_prefix())?.parse().ok()
    }

    /// Key holding the config revision (the number of config changes); every change compares
    /// its mod revision and rewrites it.
    pub fn config_revision(&self) -> String {
        format!("{}/v1/meta/config-revision", self.root)
    }

    /// Key of the active canary rollout's pin ([`portico_api::pb::CanaryPin`]). It lies in
    /// [`Keys::config_watch_range`], so watchers see it with the config revision that starts or
    /// ends the rollout.
    pub fn canary_pin(&self) -> String {
        format!("{}/v1/meta/canary", self.root)
    }

    /// Key of the canary rollout record: the active rollout or the last one.
    pub fn rollout(&self) -> String {
        format!("{}/v1/rollout/record", self.root)
    }

    /// Prefix of the replicas' traffic counts for the rollout of `revision`.
    pub fn rollout_usage_prefix(&self, revision: i64) -> String {
        format!("{}/v1/rollout/usage/{revision:020}/", self.root)
    }

    /// Key of one replica's traffic counts for the rollout of `revision`.
    pub fn rollout_usage(&self, revision: i64, replica: &str) -> String {
        format!("{}{replica}", self.rollout_usage_prefix(revision))
    }

    /// Prefix of every rollout's traffic counts.
    pub fn rollout_usages_prefix(&self) -> String {
        format!("{}/v1/rollout/usage/", self.root)
    }

    /// Key of the leader election: the leading replica's id, on its lease.
    pub fn leader(&self) -> String {
        format!("{}/v1/meta/leader", self.root)
    }

    /// Prefix of the replicas' records.
    pub fn replicas_prefix(&self) -> String {
        format!("{}/v1/replicas/", self.root)
    }

    /// Key of one replica's record.
    pub fn replica(&self, id: &str) -> String {
        format!("{}{id}", self.replicas_prefix())
    }

    /// The keys a snapshot watcher follows: the config prefix through the config-revision key.
    pub fn config_watch_range(&self) -> KeyRange {
        KeyRange::Span {
            start: self.config_prefix(),
            // The smallest key after the config-revision key.
            end: format!("{}\0", self.config_revision()),
        }
    }
}

/// The key segment of a kind: stable, lowercase, never renamed (stored data depends on it).
fn kind_segment(kind: Kind) -> &'static str {
    match kind {
        Kind::Unspecified => "unspecified",
        Kind::Listener => "listener",
        Kind::RouteTable => "route-table",
        Kind::Cluster => "cluster",
        Kind::Policy => "policy",
        Kind::Consumer => "consumer",
        Kind::Secret => "secret",
    }
}

/// Encodes the config revision as the config-revision key stores it.
pub fn encode_revision(revision: i64) -> Vec<u8> {
    revision.to_string().into_bytes()
}

/// Decodes the config-revision key's value.
pub fn decode_revision(key: &str, bytes: &[u8]) -> Result<i64, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|r: &i64| *r >= 0)
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "{key} holds {:?}, not a config revision",
                String::from_utf8_lossy(bytes)
            ))
        })
}

/// Encodes a stored value (every value is a protobuf message except the config revision).
pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

/// Decodes a stored value, naming the key when the bytes are not a valid message.
pub fn decode<M: Message + Default>(key: &str, bytes: &[u8]) -> Result<M, DecodeError> {
    M::decode(bytes).map_err(|source| DecodeError {
        key: key.to_string(),
        source,
    })
}

/// A stored value that is not the message its key says it is.
#[derive(Debug, thiserror::Error)]
#[error("stored value at {key} does not decode")]
pub struct DecodeError {
    /// The key.
    pub key: String,
    /// Why.
    #[source]
    pub source: prost::DecodeError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_round_trip() {
        let keys = Keys::new("/portico/");
        for kind in Kind::ALL {
            let key = keys.config(kind, "web-1");
            assert!(key.starts_with("/portico/v1/config/"), "{key}");
            assert_eq!(keys.parse_config(&key), Some((kind, "web-1".to_string())));
        }
        assert_eq!(keys.parse_config("/portico/v1/config/bogus/x"), None);
        assert_eq!(keys.parse_config("/other/v1/config/listener/x"), None);
    }

    #[test]
    fn applied_keys_round_trip_whatever_the_replica_id() {
        let keys = Keys::default();
        for replica in ["cp-1", "eu/cp-2", ""] {
            let key = keys.applied(replica, 12);
            assert_eq!(keys.parse_applied(&key), Some((replica, 12)), "{key}");
        }
        assert_eq!(keys.parse_applied("/portico/v1/applied/cp-1"), None);
        assert_eq!(keys.parse_applied("/portico/v1/applied/cp-1/x"), None);
    }

    #[test]
    fn the_watch_range_holds_config_and_the_revision_but_not_the_registry() {
        let keys = Keys::default();
        let range = keys.config_watch_range();
        assert!(range.contains(&keys.config(Kind::Cluster, "c")));
        assert!(range.contains(&keys.config_revision()));
        // The registry's key families are written often: they sort outside.
        assert!(!range.contains(&keys.agent("edge-1")));
        assert!(!range.contains(&keys.service_node("edge-1")));
        assert!(!range.contains(&keys.upstream_health("edge-1")));
        assert!(!range.contains(&keys.applied("cp-1", 0)));
        assert!(!range.contains(&keys.token("t")));
        assert!(!range.contains(&keys.identity("edge-1")));
        assert!(!range.contains(&keys.ca()));
        assert!(!range.contains(&keys.budget("quota", 0, "consumer:ann")));
        assert!(!range.contains(&keys.usage_minute(0, "cp-1")));
        assert!(!range.contains(&keys.usage_hour(0)));
        assert!(!range.contains(&keys.leader()));
        assert!(!range.contains(&keys.replica("cp-1")));
        assert!(!range.contains(&format!("{}x", keys.config_revision())));
    }

    #[test]
    fn config_revisions_round_trip_and_garbage_is_corrupt() {
        let key = Keys::default().config_revision();
        assert_eq!(decode_revision(&key, &encode_revision(42)).ok(), Some(42));
        for bad in [&b"x"[..], b"-1", b""] {
            assert!(matches!(
                decode_revision(&key, bad),
                Err(StoreError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn history_keys_sort_numerically() {
        let keys = Keys::default();
        assert!(keys.history(9) < keys.history(10));
        assert_eq!(keys.parse_history(&keys.history(1234)), Some(1234));
        let part = keys.history_part(1234, 7);
        assert!(part.starts_with(&keys.history_parts_prefix(1234)));
        assert!(keys.history(1234) < part && part < keys.history(1235));
        assert_eq!(keys.parse_history(&part), None);
        assert_eq!(keys.parse_history_part(&part), Some((1234, 7)));
        assert_eq!(keys.parse_history_part(&keys.history(1234)), None);
    }

    #[test]
    fn the_staged_change_marker_is_listed_with_the_config_but_is_no_resource() {
        let keys = Keys::default();
        let marker = keys.staged_change();
        assert!(marker.starts_with(&keys.config_prefix()));
        assert!(keys.is_staged_change(&marker));
        assert_eq!(keys.parse_config(&marker), None);
        assert!(keys.config_watch_range().contains(&marker));
        assert!(!keys.is_staged_change(&keys.config(Kind::Cluster, "a")));
    }

    #[test]
    fn service_node_keys_round_trip() {
        let keys = Keys::default();
        assert_eq!(
            keys.parse_service_node(&keys.service_node("edge-1")),
            Some("edge-1")
        );
        assert_eq!(keys.parse_service_node(&keys.agent("edge-1")), None);
    }

    #[test]
    fn budget_and_usage_keys_round_trip() {
        let keys = Keys::default();
        let key = keys.budget("per-route", 1_700_000_000_000, "route:web/a%b");
        assert_eq!(
            key,
            "/portico/v1/budgets/per-route/00000001700000000000/route:web%2Fa%25b"
        );
        assert_eq!(keys.parse_budget_window(&key), Some(1_700_000_000_000));
        let minute = keys.usage_minute(3_600_000 + 120_000, "cp-1");
        assert!(minute.starts_with(&keys.usage_minutes_of_hour(3_600_000)));
        assert_eq!(keys.parse_usage_minute(&minute), Some((3_720_000, "cp-1")));
        assert_eq!(
            keys.parse_usage_hour(&keys.usage_hour(7_200_000)),
            Some(7_200_000)
        );
    }
}
