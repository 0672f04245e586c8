//! The store contract: one trait, two implementations ([`etcd`], [`embedded`]).
//!
//! The contract is etcd's: a flat, ordered key space; every committed transaction gets the next
//! global revision; each key remembers the revision that created it and the one that last
//! changed it; watches replay history from a revision and then follow new changes, and say so
//! explicitly (`WatchEvent::Compacted`) when the history they need is gone, so the reader
//! re-lists (kube-rs style resync). Leases make keys that vanish when their owner stops
//! refreshing them. The store knows nothing of gRPC, resources or agents: keys and values are
//! bytes laid out by [`crate::keys`].

pub mod embedded;
pub mod etcd;

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;

/// A global, monotonic store revision. Every committed change gets the next one.
pub type Revision = i64;

/// A lease id.
pub type LeaseId = i64;

/// The most compares, and the most ops, one transaction may hold: etcd's default
/// `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// The most bytes of keys and values one transaction may hold: below etcd's default request
/// limit (`--max-request-bytes`, 1.5 MiB), with room for the request's own encoding. Both
/// stores refuse more, so what works on the embedded store works on etcd.
pub const MAX_TXN_BYTES: usize = 1280 * 1024;

/// Refuses a transaction larger than [`MAX_TXN_OPS`] or [`MAX_TXN_BYTES`].
pub fn check_txn_size(txn: &Txn) -> Result<(), StoreError> {
    if txn.compares.len() > MAX_TXN_OPS || txn.ops.len() > MAX_TXN_OPS {
        return Err(StoreError::Invalid(format!(
            "a transaction holds at most {MAX_TXN_OPS} compares and {MAX_TXN_OPS} ops"
        )));
    }
    let compared: usize = txn
        .compares
        .iter()
        .map(|c| match c {
            Compare::ModRevision { key, .. } | Compare::Exists { key } => key.len(),
        })
        .sum();
    let written: usize = txn
        .ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::Delete { key } => key.len(),
        })
        .sum();
    if compared + written > MAX_TXN_BYTES {
        return Err(StoreError::Invalid(format!(
            "a transaction holds at most {MAX_TXN_BYTES} bytes of keys and values, not {}",
            compared + written
        )));
    }
    Ok(())
}

/// One stored key and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (empty for a delete event).
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub create_revision: Revision,
    /// The revision that last changed the key (for a delete event: the deleting revision).
    pub mod_revision: Revision,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// A condition a transaction checks before it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod revision equals this; 0 means "the key does not exist".
    ModRevision { key: String, revision: Revision },
    /// The key exists.
    Exists { key: String },
}

/// One write of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create or replace a key, optionally attached to a lease.
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    /// Delete a key (a no-op when it does not exist).
    Delete { key: String },
}

/// Compares, then writes: all of the writes happen, at one new revision, or none do.
///
/// As in etcd, a key may be put at most once per transaction and not also deleted, and a
/// transaction holds at most [`MAX_TXN_OPS`] compares and as many ops, and at most
/// [`MAX_TXN_BYTES`] of keys and values; both stores reject more with [`StoreError::Invalid`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// Every compare must hold for the writes to happen.
    pub compares: Vec<Compare>,
    /// The writes.
    pub ops: Vec<Op>,
}

/// The outcome of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// The compares held and the writes were made durably at this revision. A transaction
    /// that changes nothing (no ops, or only deletes of absent keys) commits without creating
    /// a revision and reports the current one, as etcd does.
    Committed(Revision),
    /// A compare failed; nothing was written. The store's current revision.
    Conflict(Revision),
}

/// What a watch reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// Changes of one or more whole revisions, in revision order. A revision is never split
    /// across two events, so a reader can publish after each event.
    Changes(Vec<Change>),
    /// The history needed to continue is gone (compacted): re-list, then watch again from the
    /// list's revision + 1. Nothing more follows on this stream.
    Compacted {
        /// The oldest revision still available.
        compact_revision: Revision,
    },
}

/// One key change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The key was created or replaced; the new key-value.
    Put(KeyValue),
    /// The key was deleted (explicitly or by lease expiry) at `revision`.
    Delete { key: String, revision: Revision },
}

impl Change {
    /// The revision this change happened at.
    pub fn revision(&self) -> Revision {
        match self {
            Change::Put(kv) => kv.mod_revision,
            Change::Delete { revision, .. } => *revision,
        }
    }

    /// The key changed.
    pub fn key(&self) -> &str {
        match self {
            Change::Put(kv) => &kv.key,
            Change::Delete { key, .. } => key,
        }
    }
}

/// The keys a watch follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// Every key starting with this.
    Prefix(String),
    /// Every key from `start` (inclusive) to `end` (exclusive).
    Span { start: String, end: String },
}

impl KeyRange {
    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        KeyRange::Prefix(prefix.into())
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &str) -> bool {
        match self {
            KeyRange::Prefix(prefix) => key.starts_with(prefix.as_str()),
            KeyRange::Span { start, end } => start.as_str() <= key && key < end.as_str(),
        }
    }

    /// The first key of the range.
    pub fn start(&self) -> &str {
        match self {
            KeyRange::Prefix(start) | KeyRange::Span { start, .. } => start,
        }
    }
}

/// A watch: a stream of events that ends with an error or after `Compacted`.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// What can go wrong talking to a store. Every variant says whether retrying may help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or stopped answering; retrying later may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The lease does not exist (it expired or was revoked); not retryable.
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// Another process (or another open handle in this one) owns the embedded store's
    /// directory; not retryable.
    #[error("store directory {path} is in use by another process")]
    Locked { path: String },
    /// The store's data is unreadable; not retryable.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// The embedded store's database file is missing or empty in a directory that is not new:
    /// its data is gone, and opening it would start from an empty store; not retryable.
    #[error("store file {path} {found}")]
    Uninitialized { path: String, found: String },
    /// The request was malformed (e.g. a watch from revision 0); not retryable.
    #[error("invalid store request: {0}")]
    Invalid(String),
}

impl StoreError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// The store contract (see the module doc). Implementations are cheap to share behind an
/// `Arc<dyn Store>`.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current value of a key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key starting with `prefix`, in key order, and the revision they were read at.
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError>;

    /// Runs a transaction (see [`Txn`]); returns once the writes are durable.
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError>;

    /// Every key starting with `prefix`, in key order, without values (each `value` is
    /// empty), and the revision they were read at.
    async fn list_keys(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let (mut kvs, revision) = self.list(prefix).await?;
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
        Ok((kvs, revision))
    }

    /// Changes to keys in `range`, from revision `from` (inclusive, ≥ 1) onwards.
    async fn watch_range(&self, range: KeyRange, from: Revision)
    -> Result<WatchStream, StoreError>;

    /// Changes to keys starting with `prefix`, from revision `from` (inclusive, ≥ 1) onwards.
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.watch_range(KeyRange::prefix(prefix), from).await
    }

    /// Creates a lease that expires `ttl` after its last keep-alive. etcd counts whole seconds
    /// (the ttl is rounded up) and may raise a short ttl to its minimum (about 2 s by default).
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Refreshes a lease. Fails with [`StoreError::LeaseNotFound`] when it already expired.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Ends a lease now, deleting its keys.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Discards history before `revision`, as etcd compaction does; watches that need it get
    /// [`WatchEvent::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;
}
