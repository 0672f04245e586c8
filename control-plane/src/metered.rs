//! A store wrapper that times every call, counts failures and tracks whether the store is
//! reachable, so readiness and the "store unavailable" answers come from one place.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::{STORE_ERRORS, STORE_OPERATION};
use crate::store::{
    KeyRange, KeyValue, LeaseId, Revision, Store, StoreError, Txn, TxnOutcome, WatchStream,
};

/// Wraps a store; cheap to clone.
#[derive(Clone)]
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    reachable: Arc<AtomicBool>,
}

impl MeteredStore {
    /// Wraps `inner`, assumed reachable.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        MeteredStore {
            inner,
            reachable: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Whether the last store call succeeded (or failed for a reason other than reachability).
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Records a failure seen outside a call of this wrapper (e.g. a watch stream that broke).
    pub fn mark_unreachable(&self) {
        self.reachable.store(false, Ordering::Relaxed);
    }

    fn observe<T>(&self, op: &'static str, start: Instant, result: &Result<T, StoreError>) {
        metrics::histogram!(STORE_OPERATION, "op" => op).record(start.elapsed().as_secs_f64());
        match result {
            Ok(_) => self.reachable.store(true, Ordering::Relaxed),
            Err(e) => {
                metrics::counter!(STORE_ERRORS, "op" => op).increment(1);
                if e.is_retryable() {
                    self.reachable.store(false, Ordering::Relaxed);
                }
            }
        }
    }
}

macro_rules! metered {
    ($self:ident, $op:literal, $call:expr) => {{
        let start = Instant::now();
        let result = $call.await;
        $self.observe($op, start, &result);
        result
    }};
}

#[async_trait::async_trait]
impl Store for MeteredStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        metered!(self, "get", self.inner.get(key))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        metered!(self, "list", self.inner.list(prefix))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        metered!(self, "txn", self.inner.txn(txn))
    }

    async fn list_keys(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        metered!(self, "list_keys", self.inner.list_keys(prefix))
    }

    async fn watch_range(
        &self,
        range: KeyRange,
        from: Revision,
    ) -> Result<WatchStream, StoreError> {
        metered!(self, "watch", self.inner.watch_range(range, from))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        metered!(self, "lease_grant", self.inner.lease_grant(ttl))
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        metered!(self, "lease_keep_alive", self.inner.lease_keep_alive(lease))
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        metered!(self, "lease_revoke", self.inner.lease_revoke(lease))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        metered!(self, "compact", self.inner.compact(revision))
    }
}
