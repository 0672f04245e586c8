//! Every replica's copy of the tokens and agent identities, listed at start and kept current by
//! a watch on `<root>/v1/auth/`, so checking a call costs a map lookup and keeps working while
//! the store is away, and a revocation through any replica reaches every replica's streams.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use portico_api::backoff::Backoff;
use portico_api::pb::{AgentIdentity, Token};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::keys::{self, Keys};
use crate::metered::MeteredStore;
use crate::store::{Change, KeyValue, Revision, Store, StoreError, WatchEvent};

/// How long a change waits for this replica's table to show it.
const SHOW_TIMEOUT: Duration = Duration::from_secs(5);

/// A stored value and the store revision that last wrote it (what a compare-and-write
/// compares).
#[derive(Clone, Debug, PartialEq)]
pub struct Entry<T> {
    /// The value.
    pub value: T,
    /// Its key's mod revision.
    pub mod_revision: Revision,
}

/// The tokens and identities at one store revision. Immutable once published.
#[derive(Clone, Debug, Default)]
pub struct AuthTable {
    /// The store revision this table reflects.
    pub revision: Revision,
    tokens: BTreeMap<String, Entry<Token>>,
    by_hash: HashMap<String, String>,
    identities: BTreeMap<String, Entry<AgentIdentity>>,
}

impl AuthTable {
    /// The token whose SHA-256 (lowercase hex) is `sha256`.
    pub fn token_by_hash(&self, sha256: &str) -> Option<&Entry<Token>> {
        self.tokens.get(self.by_hash.get(sha256)?)
    }

    /// The token named `name`.
    pub fn token(&self, name: &str) -> Option<&Entry<Token>> {
        self.tokens.get(name)
    }

    /// Every token, by name.
    pub fn tokens(&self) -> impl Iterator<Item = &Entry<Token>> {
        self.tokens.values()
    }

    /// The identity of `node_id`.
    pub fn identity(&self, node_id: &str) -> Option<&Entry<AgentIdentity>> {
        self.identities.get(node_id)
    }

    fn put(&mut self, keys: &Keys, kv: &KeyValue) {
        if let Some(name) = kv.key.strip_prefix(&keys.tokens_prefix()) {
            self.remove_token(name);
            match keys::decode::<Token>(&kv.key, &kv.value) {
                Ok(token) => {
                    self.by_hash.insert(token.sha256.clone(), name.to_string());
                    self.tokens.insert(
                        name.to_string(),
                        Entry {
                            value: token,
                            mod_revision: kv.mod_revision,
                        },
                    );
                }
                Err(e) => tracing::warn!(error = %e, "skipping an undecodable token"),
            }
        } else if let Some(id) = kv.key.strip_prefix(&keys.identities_prefix()) {
            match keys::decode::<AgentIdentity>(&kv.key, &kv.value) {
                Ok(identity) => {
                    self.identities.insert(
                        id.to_string(),
                        Entry {
                            value: identity,
                            mod_revision: kv.mod_revision,
                        },
                    );
                }
                Err(e) => {
                    // An identity that cannot be read vouches for nobody.
                    self.identities.remove(id);
                    tracing::warn!(error = %e, "skipping an undecodable agent identity");
                }
            }
        }
    }

    fn delete(&mut self, keys: &Keys, key: &str) {
        if let Some(name) = key.strip_prefix(&keys.tokens_prefix()) {
            self.remove_token(name);
        } else if let Some(id) = key.strip_prefix(&keys.identities_prefix()) {
            self.identities.remove(id);
        }
    }

    fn remove_token(&mut self, name: &str) {
        if let Some(old) = self.tokens.remove(name) {
            self.by_hash.remove(&old.value.sha256);
        }
    }
}

/// The current table, shared by the Admin service, the Identity service and every stream.
#[derive(Debug)]
pub struct AuthState {
    tx: watch::Sender<Arc<AuthTable>>,
}

impl AuthState {
    /// Lists the tokens and identities; returns the state and the revision listed at.
    pub async fn load(
        store: &MeteredStore,
        keys: &Keys,
    ) -> Result<(AuthState, Revision), StoreError> {
        let (table, listed_at) = list(store, keys).await?;
        Ok((
            AuthState {
                tx: watch::Sender::new(Arc::new(table)),
            },
            listed_at,
        ))
    }

    /// The current table.
    pub fn current(&self) -> Arc<AuthTable> {
        self.tx.borrow().clone()
    }

    /// Notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<AuthTable>> {
        self.tx.subscribe()
    }

    /// Waits (bounded) until the table reflects store revision `revision`, so a call right
    /// after a token change sees it.
    pub async fn shown(&self, revision: Revision) {
        let mut rx = self.subscribe();
        let _ = tokio::time::timeout(SHOW_TIMEOUT, rx.wait_for(|t| t.revision >= revision)).await;
    }

    /// Follows the store from `from` until `cancel`, listing again whenever the watch ends.
    pub async fn follow(
        self: Arc<Self>,
        store: MeteredStore,
        keys: Keys,
        mut from: Revision,
        cancel: CancellationToken,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.follow_once(&store, &keys, from) => r,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "auth watch failed; keeping the last tokens");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            } else {
                backoff.reset();
            }
            match list(&store, &keys).await {
                Ok((table, listed_at)) => {
                    self.tx.send_replace(Arc::new(table));
                    from = listed_at + 1;
                }
                Err(e) => tracing::warn!(error = %e, "listing tokens failed; keeping the last"),
            }
        }
    }

    /// Applies watch events from `from` until the watch ends (Ok) or fails.
    async fn follow_once(
        &self,
        store: &MeteredStore,
        keys: &Keys,
        from: Revision,
    ) -> Result<(), StoreError> {
        let mut watch = store.watch(&keys.auth_prefix(), from).await?;
        while let Some(event) = watch.next().await {
            match event? {
                WatchEvent::Changes(changes) => {
                    let mut table = (*self.current()).clone();
                    for change in &changes {
                        table.revision = table.revision.max(change.revision());
                        match change {
                            Change::Put(kv) => table.put(keys, kv),
                            Change::Delete { key, .. } => table.delete(keys, key),
                        }
                    }
                    self.tx.send_replace(Arc::new(table));
                }
                WatchEvent::Compacted { .. } => return Ok(()),
            }
        }
        Ok(())
    }
}

async fn list(store: &MeteredStore, keys: &Keys) -> Result<(AuthTable, Revision), StoreError> {
    let (kvs, listed_at) = store.list(&keys.auth_prefix()).await?;
    let mut table = AuthTable {
        revision: listed_at,
        ..AuthTable::default()
    };
    for kv in &kvs {
        table.put(keys, kv);
    }
    Ok((table, listed_at))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kv(key: String, value: Vec<u8>, rev: Revision) -> KeyValue {
        KeyValue {
            key,
            value,
            create_revision: rev,
            mod_revision: rev,
            lease: None,
        }
    }

    #[test]
    fn tokens_are_found_by_hash_until_deleted_or_replaced() {
        let keys = Keys::default();
        let mut table = AuthTable::default();
        let token = |hash: &str| Token {
            name: "ci".into(),
            sha256: hash.into(),
            ..Default::default()
        };
        table.put(&keys, &kv(keys.token("ci"), keys::encode(&token("aa")), 2));
        assert_eq!(table.token_by_hash("aa").unwrap().mod_revision, 2);
        table.put(&keys, &kv(keys.token("ci"), keys::encode(&token("bb")), 3));
        assert!(table.token_by_hash("aa").is_none());
        assert!(table.token_by_hash("bb").is_some());
        table.delete(&keys, &keys.token("ci"));
        assert!(table.token_by_hash("bb").is_none());
        assert_eq!(table.tokens().count(), 0);
        // Garbage is skipped, and an undecodable identity vouches for nobody.
        let id = AgentIdentity {
            node_id: "edge-1".into(),
            ..Default::default()
        };
        table.put(&keys, &kv(keys.identity("edge-1"), keys::encode(&id), 4));
        assert!(table.identity("edge-1").is_some());
        table.put(&keys, &kv(keys.identity("edge-1"), vec![0xff, 0xff], 5));
        assert!(table.identity("edge-1").is_none());
    }
}
