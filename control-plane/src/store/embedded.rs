//! The embedded store: etcd's contract on one node, durable in a local redb file.
//!
//! One process owns the directory (a lock file, released by the OS when the process dies). A
//! directory that is not new but whose database file is missing or empty is refused, unless
//! the caller asks for a new store on purpose ([`EmbeddedOptions::init`]). Every
//! committed transaction with changes gets the next revision and is fsynced before `txn`
//! returns. A change log keeps the last [`EmbeddedOptions::history`] revisions (less after an
//! explicit `compact`), so a watch can start or resume from any of them; one that needs older
//! history, or falls so far behind that its revisions leave the log, gets
//! [`WatchEvent::Compacted`](crate::store::WatchEvent::Compacted). Leases live in the file with
//! their TTL; a background thread revokes the overdue ones, and after a restart every lease gets
//! a fresh TTL.
//!
//! # Layout
//! - `codec`: the on-disk encoding of keys and log entries.
//! - `core`: the state and every operation, blocking.
//! - `watch`: the task behind each watch stream.

mod codec;
mod core;
mod watch;

use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;

use self::core::Core;
use super::{
    KeyRange, KeyValue, LeaseId, Revision, Store, StoreError, Txn, TxnOutcome, WatchStream,
};

/// How often overdue leases are looked for.
const LEASE_TICK: Duration = Duration::from_millis(100);

/// Tuning of the embedded store; the defaults suit a control plane.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// How many recent revisions the change log keeps for watches to resume from.
    pub history: i64,
    /// How many revisions a watch may lag behind the newest before it re-reads the log instead
    /// of live events.
    pub watch_buffer: usize,
    /// Create a new, empty store even where the directory is not new but holds no database,
    /// or a 0-byte one (which [`EmbeddedStore::open`] refuses with
    /// [`StoreError::Uninitialized`]). A database with data is opened as it is.
    pub init: bool,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            history: 10_000,
            watch_buffer: 1024,
            init: false,
        }
    }
}

/// The embedded store (see the module doc).
pub struct EmbeddedStore {
    // Declared first so it is dropped (and its thread joined) before the core.
    _expirer: Expirer,
    core: Arc<Core>,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir` with default options. Blocks on disk I/O;
    /// fails with [`StoreError::Locked`] if another process or handle has the directory open,
    /// and with [`StoreError::Uninitialized`] if the directory is not new but its database is
    /// missing or empty (see [`EmbeddedOptions::init`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<EmbeddedStore, StoreError> {
        EmbeddedStore::open_with(dir, EmbeddedOptions::default())
    }

    /// [`EmbeddedStore::open`] with explicit options.
    pub fn open_with(
        dir: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> Result<EmbeddedStore, StoreError> {
        let core = Arc::new(Core::open(
            dir.as_ref(),
            options.history,
            options.watch_buffer,
            options.init,
        )?);
        let expirer = Expirer::start(&core)?;
        Ok(EmbeddedStore {
            _expirer: expirer,
            core,
        })
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Core) -> Result<T, StoreError> + Send + 'static,
    {
        let core = self.core.clone();
        run_blocking(move || f(&core)).await
    }
}

/// Runs blocking store work off the async runtime's worker threads.
async fn run_blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.blocking(move |core| core.get(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let prefix = prefix.to_string();
        self.blocking(move |core| core.list(&prefix)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        self.blocking(move |core| core.txn(&txn)).await
    }

    async fn watch_range(
        &self,
        range: KeyRange,
        from: Revision,
    ) -> Result<WatchStream, StoreError> {
        if from < 1 {
            return Err(StoreError::Invalid(format!(
                "a watch starts at revision 1 or later, not {from}"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(watch::QUEUE);
        tokio::spawn(watch::follow(Arc::downgrade(&self.core), range, from, tx));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.blocking(move |core| core.lease_grant(ttl)).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.blocking(move |core| core.lease_keep_alive(lease))
            .await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.blocking(move |core| core.lease_revoke(lease)).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.blocking(move |core| core.compact(revision)).await
    }
}

/// The background thread that expires leases; stopped and joined when dropped.
struct Expirer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Expirer {
    fn start(core: &Arc<Core>) -> Result<Expirer, StoreError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let core = Arc::downgrade(core);
        let thread = std::thread::Builder::new()
            .name("store-leases".into())
            .spawn(move || {
                // Ends when the sender is dropped (Disconnected) or the store is gone.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(LEASE_TICK) {
                    match core.upgrade() {
                        Some(core) => core.expire_due(),
                        None => return,
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("starting the lease thread: {e}")))?;
        Ok(Expirer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Expirer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
