//! The embedded store's state on disk and in memory, and every operation on it.
//!
//! All writes go through one mutex: a write holds it from its redb write transaction through
//! the commit (fsync) to the broadcast of its changes. That single order is what lets a watch
//! subscribe to the broadcast and take a read snapshot under the same mutex and know that the
//! snapshot plus the broadcast cover every revision exactly once. Everything here blocks; the
//! async [`super::EmbeddedStore`] calls it from `spawn_blocking`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::broadcast;

use super::codec::{self, Record};
use crate::store::{
    Change, Compare, KeyRange, KeyValue, LeaseId, Op, Revision, StoreError, Txn, TxnOutcome,
    check_txn_size,
};

/// Key → encoded [`Record`].
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Revision → the encoded changes made at it.
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
/// Counters, under the names below.
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// Lease id → TTL in milliseconds.
const LEASES: TableDefinition<i64, u64> = TableDefinition::new("leases");

const META_REVISION: &str = "revision";
const META_OLDEST: &str = "oldest";
const META_NEXT_LEASE: &str = "next_lease";

/// The file name of the database inside the store directory.
const DB_FILE: &str = "portico.redb";
/// The file locked by the directory's owner.
const LOCK_FILE: &str = "LOCK";

/// The changes committed at one revision, as broadcast to watches.
#[derive(Debug)]
pub(super) struct Revised {
    pub revision: Revision,
    pub changes: Vec<Change>,
}

/// What a watch needs to start: history up to `revision` in `snapshot`, later revisions on
/// `events`.
pub(super) struct Subscription {
    pub events: broadcast::Receiver<Arc<Revised>>,
    pub snapshot: ReadTransaction,
    pub revision: Revision,
    pub oldest: Revision,
}

pub(super) struct Core {
    /// `None` only while it is being opened again after an I/O error.
    db: RwLock<Option<Database>>,
    /// Set by an I/O error (a full disk, say): redb then refuses every call until the database
    /// is opened again, which the next call does. What was committed before stays; the
    /// in-memory state only ever follows successful commits, so it needs no reloading.
    broken: AtomicBool,
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Revised>>,
    history: i64,
    dir: PathBuf,
    // Held (flock) for as long as the store is open; released by the OS if the process dies.
    _lock: File,
}

struct State {
    revision: Revision,
    /// The oldest revision whose changes the log still holds.
    oldest: Revision,
    next_lease: LeaseId,
    leases: HashMap<LeaseId, Lease>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

/// One change a write is about to make, with the lease the key had before it.
struct Staged {
    change: Change,
    old_lease: Option<LeaseId>,
}

impl Core {
    pub fn open(
        dir: &Path,
        history: i64,
        watch_buffer: usize,
        init: bool,
    ) -> Result<Core, StoreError> {
        private_dir(dir).map_err(|e| {
            StoreError::Unavailable(format!("creating store directory {}: {e}", dir.display()))
        })?;
        check_present(dir, init)?;
        let lock = lock_dir(dir)?;
        let db_path = dir.join(DB_FILE);
        private_file(&db_path)
            .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", db_path.display())))?;
        let db = Database::create(db_path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => locked(dir),
            e => db_err(dir, e),
        })?;
        let state = load(&db, dir)?;
        Ok(Core {
            db: RwLock::new(Some(db)),
            broken: AtomicBool::new(false),
            state: Mutex::new(state),
            events: broadcast::channel(watch_buffer.max(1)).0,
            history: history.max(1),
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock can only come from a bug between a commit and the
        // in-memory update; the on-disk state is still consistent, so carry on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        let e = e.into();
        if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
            self.broken.store(true, Ordering::Relaxed);
        }
        db_err(&self.dir, e)
    }

    /// The database, opened again first if an I/O error broke it.
    fn database(&self) -> Result<RwLockReadGuard<'_, Option<Database>>, StoreError> {
        if self.broken.load(Ordering::Relaxed) {
            self.reopen()?;
        }
        Ok(self.db.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        let db = self.database()?;
        let db = db.as_ref().ok_or_else(|| self.closed())?;
        db.begin_read().map_err(|e| self.err(e))
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let db = self.database()?;
        let db = db.as_ref().ok_or_else(|| self.closed())?;
        db.begin_write().map_err(|e| self.err(e))
    }

    fn closed(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "{}: opening the database again after an I/O error failed; retrying",
            self.dir.join(DB_FILE).display()
        ))
    }

    /// Closes the database and opens it again, as redb asks after an I/O error. Fails (and is
    /// tried again by the next call) while the cause lasts, or while a transaction of the old
    /// handle is still open.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if !self.broken.load(Ordering::Relaxed) {
            return Ok(());
        }
        *db = None;
        let opened = Database::create(self.dir.join(DB_FILE)).map_err(|e| db_err(&self.dir, e))?;
        *db = Some(opened);
        self.broken.store(false, Ordering::Relaxed);
        tracing::warn!(dir = %self.dir.display(), "opened the store again after an I/O error");
        Ok(())
    }

    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let read = self.begin_read()?;
        let kv = read.open_table(KV).map_err(|e| self.err(e))?;
        let Some(bytes) = kv.get(key).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        let record = decode_record(key, bytes.value())?;
        Ok(Some(record.into_key_value(key.to_string())))
    }

    pub fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let read = self.begin_read()?;
        let meta = read.open_table(META).map_err(|e| self.err(e))?;
        let revision = read_meta(&meta, META_REVISION).map_err(|e| self.err(e))?;
        let kv = read.open_table(KV).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in kv.range(prefix..).map_err(|e| self.err(e))? {
            let (key, bytes) = entry.map_err(|e| self.err(e))?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            let record = decode_record(key, bytes.value())?;
            out.push(record.into_key_value(key.to_string()));
        }
        Ok((out, revision))
    }

    pub fn txn(&self, txn: &Txn) -> Result<TxnOutcome, StoreError> {
        check_txn(txn)?;
        let mut state = self.state();
        for op in &txn.ops {
            if let Op::Put {
                lease: Some(lease), ..
            } = op
                && !state.leases.contains_key(lease)
            {
                return Err(StoreError::LeaseNotFound(*lease));
            }
        }
        let write = self.begin_write()?;
        let revision = state.revision + 1;
        let staged = {
            let mut kv = write.open_table(KV).map_err(|e| self.err(e))?;
            if compares_hold(&kv, &txn.compares, |e| self.err(e))? {
                Some(self.apply_ops(&mut kv, &txn.ops, revision)?)
            } else {
                None
            }
        };
        match staged {
            None => {
                write.abort().map_err(|e| self.err(e))?;
                Ok(TxnOutcome::Conflict(state.revision))
            }
            Some(staged) if staged.is_empty() => {
                write.abort().map_err(|e| self.err(e))?;
                Ok(TxnOutcome::Committed(state.revision))
            }
            Some(staged) => {
                self.commit(&mut state, write, staged)?;
                Ok(TxnOutcome::Committed(revision))
            }
        }
    }

    fn apply_ops(
        &self,
        kv: &mut redb::Table<&str, &[u8]>,
        ops: &[Op],
        revision: Revision,
    ) -> Result<Vec<Staged>, StoreError> {
        let mut staged = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    let old = match kv.get(key.as_str()).map_err(|e| self.err(e))? {
                        Some(bytes) => Some(decode_record(key, bytes.value())?),
                        None => None,
                    };
                    let record = Record {
                        create_revision: old.as_ref().map_or(revision, |r| r.create_revision),
                        mod_revision: revision,
                        lease: *lease,
                        value: value.clone(),
                    };
                    kv.insert(key.as_str(), codec::encode_record(&record).as_slice())
                        .map_err(|e| self.err(e))?;
                    staged.push(Staged {
                        change: Change::Put(record.into_key_value(key.clone())),
                        old_lease: old.and_then(|r| r.lease),
                    });
                }
                Op::Delete { key } => {
                    if let Some(staged_delete) = self.delete(kv, key, revision)? {
                        staged.push(staged_delete);
                    }
                }
            }
        }
        Ok(staged)
    }

    fn delete(
        &self,
        kv: &mut redb::Table<&str, &[u8]>,
        key: &str,
        revision: Revision,
    ) -> Result<Option<Staged>, StoreError> {
        let Some(old) = kv.remove(key).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        let old = decode_record(key, old.value())?;
        Ok(Some(Staged {
            change: Change::Delete {
                key: key.to_string(),
                revision,
            },
            old_lease: old.lease,
        }))
    }

    /// Logs `staged` as the next revision, trims the log to the retained history, commits
    /// durably, then updates memory and tells the watches. Called with the state locked.
    fn commit(
        &self,
        state: &mut State,
        write: redb::WriteTransaction,
        staged: Vec<Staged>,
    ) -> Result<Revision, StoreError> {
        let revision = state.revision + 1;
        let oldest = state.oldest.max(revision - self.history + 1);
        let mut changes = Vec::with_capacity(staged.len());
        let mut moves = Vec::with_capacity(staged.len());
        for s in staged {
            let new_lease = match &s.change {
                Change::Put(kv) => kv.lease,
                Change::Delete { .. } => None,
            };
            if s.old_lease.is_some() || new_lease.is_some() {
                moves.push((s.change.key().to_string(), s.old_lease, new_lease));
            }
            changes.push(s.change);
        }
        {
            let mut log = write.open_table(LOG).map_err(|e| self.err(e))?;
            log.insert(revision, codec::encode_changes(&changes).as_slice())
                .map_err(|e| self.err(e))?;
            if oldest > state.oldest {
                log.retain_in(state.oldest..oldest, |_, _| false)
                    .map_err(|e| self.err(e))?;
            }
            let mut meta = write.open_table(META).map_err(|e| self.err(e))?;
            meta.insert(META_REVISION, revision)
                .map_err(|e| self.err(e))?;
            meta.insert(META_OLDEST, oldest).map_err(|e| self.err(e))?;
        }
        write.commit().map_err(|e| self.err(e))?;
        state.revision = revision;
        state.oldest = oldest;
        for (key, old, new) in moves {
            if let Some(lease) = old.and_then(|id| state.leases.get_mut(&id)) {
                lease.keys.remove(&key);
            }
            if let Some(lease) = new.and_then(|id| state.leases.get_mut(&id)) {
                lease.keys.insert(key);
            }
        }
        // No receivers is not an error: nobody is watching.
        let _ = self.events.send(Arc::new(Revised { revision, changes }));
        Ok(revision)
    }

    pub fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Err(StoreError::Invalid("lease ttl must be at least 1ms".into()));
        }
        let mut state = self.state();
        let id = state.next_lease;
        let write = self.begin_write()?;
        {
            let mut leases = write.open_table(LEASES).map_err(|e| self.err(e))?;
            leases.insert(id, ttl_ms).map_err(|e| self.err(e))?;
            let mut meta = write.open_table(META).map_err(|e| self.err(e))?;
            meta.insert(META_NEXT_LEASE, id + 1)
                .map_err(|e| self.err(e))?;
        }
        write.commit().map_err(|e| self.err(e))?;
        state.next_lease = id + 1;
        state.leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + ttl,
                keys: BTreeSet::new(),
            },
        );
        Ok(id)
    }

    pub fn lease_keep_alive(&self, id: LeaseId) -> Result<(), StoreError> {
        let mut state = self.state();
        let now = Instant::now();
        match state.leases.get_mut(&id) {
            // Past its deadline the lease is as good as gone: the expiry pass deletes it soon.
            Some(lease) if lease.deadline > now => {
                lease.deadline = now + lease.ttl;
                Ok(())
            }
            _ => Err(StoreError::LeaseNotFound(id)),
        }
    }

    pub fn lease_revoke(&self, id: LeaseId) -> Result<(), StoreError> {
        let mut state = self.state();
        self.revoke(&mut state, id)
    }

    /// Deletes a lease and, in one revision, the keys attached to it.
    fn revoke(&self, state: &mut State, id: LeaseId) -> Result<(), StoreError> {
        let Some(lease) = state.leases.get(&id) else {
            return Err(StoreError::LeaseNotFound(id));
        };
        let write = self.begin_write()?;
        let revision = state.revision + 1;
        let staged = {
            let mut kv = write.open_table(KV).map_err(|e| self.err(e))?;
            let mut staged = Vec::new();
            for key in &lease.keys {
                if let Some(s) = self.delete(&mut kv, key, revision)? {
                    staged.push(s);
                }
            }
            let mut leases = write.open_table(LEASES).map_err(|e| self.err(e))?;
            leases.remove(id).map_err(|e| self.err(e))?;
            staged
        };
        if staged.is_empty() {
            write.commit().map_err(|e| self.err(e))?;
        } else {
            self.commit(state, write, staged)?;
        }
        state.leases.remove(&id);
        Ok(())
    }

    /// Revokes every lease past its deadline.
    pub fn expire_due(&self) {
        let mut state = self.state();
        let now = Instant::now();
        let due: Vec<LeaseId> = state
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Err(e) = self.revoke(&mut state, id) {
                // Left in place, so the next pass tries again.
                tracing::warn!(lease = id, error = %e, "expiring lease failed");
            }
        }
    }

    pub fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut state = self.state();
        if revision > state.revision {
            return Err(StoreError::Invalid(format!(
                "cannot compact to revision {revision}: the current revision is {}",
                state.revision
            )));
        }
        if revision <= state.oldest {
            return Ok(());
        }
        let write = self.begin_write()?;
        {
            let mut log = write.open_table(LOG).map_err(|e| self.err(e))?;
            log.retain_in(state.oldest..revision, |_, _| false)
                .map_err(|e| self.err(e))?;
            let mut meta = write.open_table(META).map_err(|e| self.err(e))?;
            meta.insert(META_OLDEST, revision)
                .map_err(|e| self.err(e))?;
        }
        write.commit().map_err(|e| self.err(e))?;
        state.oldest = revision;
        Ok(())
    }

    /// Starts a watch: a receiver for every revision after the snapshot, taken atomically with
    /// the snapshot (see the module doc).
    pub fn subscribe(&self) -> Result<Subscription, StoreError> {
        let state = self.state();
        let events = self.events.subscribe();
        let snapshot = self.begin_read()?;
        Ok(Subscription {
            events,
            snapshot,
            revision: state.revision,
            oldest: state.oldest,
        })
    }

    /// The changes to keys in `range` at revisions `from..=to` from the log in `snapshot`,
    /// whole revisions only, stopping after the revision that reaches `max` changes. Returns
    /// them and the next revision to read.
    pub fn read_log(
        &self,
        snapshot: &ReadTransaction,
        range: &KeyRange,
        from: Revision,
        to: Revision,
        max: usize,
    ) -> Result<(Vec<Change>, Revision), StoreError> {
        let log = snapshot.open_table(LOG).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in log.range(from..=to).map_err(|e| self.err(e))? {
            let (revision, bytes) = entry.map_err(|e| self.err(e))?;
            let revision = revision.value();
            let changes = codec::decode_changes(revision, bytes.value()).map_err(|e| {
                StoreError::Corrupt(format!("change log at revision {revision}: {e}"))
            })?;
            out.extend(changes.into_iter().filter(|c| range.contains(c.key())));
            if out.len() >= max {
                return Ok((out, revision + 1));
            }
        }
        Ok((out, to + 1))
    }
}

/// Creates `dir` (and its parents) if needed, and makes it readable by its owner alone: the
/// store holds private keys.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // A directory made earlier, or by someone else, is tightened too.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Creates the file at `path` if needed with mode 0600, and sets 0600 on one that exists.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Refuses a directory whose database is gone while the directory is not new: a 0-byte
/// database file, or none beside other files (its lock, a stray backup). Opening either would
/// create an empty store, and the control plane would serve an empty config as if nothing had
/// ever been applied. An empty (or new) directory is a first start and opens; with `init` the
/// caller asked for an empty store on purpose, and a 0-byte file is replaced. A database with
/// data is never touched here, `init` or not.
fn check_present(dir: &Path, init: bool) -> Result<(), StoreError> {
    let db = dir.join(DB_FILE);
    let found = match std::fs::metadata(&db) {
        Ok(meta) if meta.len() > 0 => return Ok(()),
        Ok(_) if init => {
            return std::fs::remove_file(&db).map_err(|e| {
                StoreError::Unavailable(format!("removing the empty {}: {e}", db.display()))
            });
        }
        Ok(_) => "is empty (0 bytes)".to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut others: Vec<String> = std::fs::read_dir(dir)
                .map_err(|e| StoreError::Unavailable(format!("reading {}: {e}", dir.display())))?
                .filter_map(|entry| Some(entry.ok()?.file_name().to_string_lossy().into_owned()))
                .collect();
            if others.is_empty() || init {
                return Ok(());
            }
            others.sort();
            format!(
                "is missing, but its directory is not new (it holds {})",
                others.join(", ")
            )
        }
        Err(e) => {
            return Err(StoreError::Unavailable(format!(
                "reading {}: {e}",
                db.display()
            )));
        }
    };
    Err(StoreError::Uninitialized {
        path: db.display().to_string(),
        found,
    })
}

/// Takes the directory's lock file, or reports who has it.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(locked(dir)),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Unavailable(format!(
            "locking {}: {e}",
            path.display()
        ))),
    }
}

fn locked(dir: &Path) -> StoreError {
    StoreError::Locked {
        path: dir.display().to_string(),
    }
}

/// Creates the tables on first open and reads the counters and leases back. Leases restart
/// with a full TTL, as etcd's do after a leader change: their deadlines were in the old
/// process's clock.
fn load(db: &Database, dir: &Path) -> Result<State, StoreError> {
    let err = |e: redb::Error| db_err(dir, e);
    let write = db.begin_write().map_err(|e| err(e.into()))?;
    let state = {
        let mut meta = write.open_table(META).map_err(|e| err(e.into()))?;
        for name in [META_REVISION, META_OLDEST, META_NEXT_LEASE] {
            if meta.get(name).map_err(|e| err(e.into()))?.is_none() {
                // etcd's empty store is at revision 1, and the first write makes revision 2.
                meta.insert(name, 1).map_err(|e| err(e.into()))?;
            }
        }
        write.open_table(LOG).map_err(|e| err(e.into()))?;
        let leases_table = write.open_table(LEASES).map_err(|e| err(e.into()))?;
        let now = Instant::now();
        let mut leases = HashMap::new();
        for entry in leases_table.iter().map_err(|e| err(e.into()))? {
            let (id, ttl_ms) = entry.map_err(|e| err(e.into()))?;
            let ttl = Duration::from_millis(ttl_ms.value());
            leases.insert(
                id.value(),
                Lease {
                    ttl,
                    deadline: now + ttl,
                    keys: BTreeSet::new(),
                },
            );
        }
        let kv = write.open_table(KV).map_err(|e| err(e.into()))?;
        for entry in kv.iter().map_err(|e| err(e.into()))? {
            let (key, bytes) = entry.map_err(|e| err(e.into()))?;
            let record = decode_record(key.value(), bytes.value())?;
            if let Some(lease) = record.lease.and_then(|id| leases.get_mut(&id)) {
                lease.keys.insert(key.value().to_string());
            }
        }
        State {
            revision: read_meta(&meta, META_REVISION).map_err(err)?,
            oldest: read_meta(&meta, META_OLDEST).map_err(err)?,
            next_lease: read_meta(&meta, META_NEXT_LEASE).map_err(err)?,
            leases,
        }
    };
    write.commit().map_err(|e| err(e.into()))?;
    Ok(state)
}

fn read_meta(meta: &impl ReadableTable<&'static str, i64>, name: &str) -> Result<i64, redb::Error> {
    Ok(meta.get(name)?.map_or(1, |v| v.value()))
}

fn compares_hold(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    compares: &[Compare],
    err: impl Fn(redb::Error) -> StoreError,
) -> Result<bool, StoreError> {
    for compare in compares {
        let holds = match compare {
            Compare::ModRevision { key, revision } => {
                let current = match kv.get(key.as_str()).map_err(|e| err(e.into()))? {
                    Some(bytes) => codec::mod_revision(bytes.value())
                        .map_err(|e| StoreError::Corrupt(format!("key {key}: {e}")))?,
                    None => 0,
                };
                current == *revision
            }
            Compare::Exists { key } => kv.get(key.as_str()).map_err(|e| err(e.into()))?.is_some(),
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Rejects what etcd rejects: too many compares, ops or bytes, or a key put twice, or put
/// and deleted, in one transaction.
fn check_txn(txn: &Txn) -> Result<(), StoreError> {
    check_txn_size(txn)?;
    let mut puts = HashSet::new();
    for op in &txn.ops {
        if let Op::Put { key, .. } = op
            && !puts.insert(key.as_str())
        {
            return Err(StoreError::Invalid(format!(
                "key {key} is written twice in one transaction"
            )));
        }
    }
    for op in &txn.ops {
        if let Op::Delete { key } = op
            && puts.contains(key.as_str())
        {
            return Err(StoreError::Invalid(format!(
                "key {key} is both put and deleted in one transaction"
            )));
        }
    }
    Ok(())
}

fn decode_record(key: &str, bytes: &[u8]) -> Result<Record, StoreError> {
    codec::decode_record(bytes).map_err(|e| StoreError::Corrupt(format!("key {key}: {e}")))
}

fn db_err(dir: &Path, e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Corrupted(msg) => {
            StoreError::Corrupt(format!("{}: {msg}", dir.join(DB_FILE).display()))
        }
        e => StoreError::Unavailable(format!("{}: {e}", dir.join(DB_FILE).display())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_store_is_readable_by_its_owner_alone() {
        let parent = tempfile::tempdir().unwrap();
        // A new directory, and one made before with the usual umask.
        let new = parent.path().join("a/b/store");
        let old = parent.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        for dir in [&new, &old] {
            let core = Core::open(dir, 10, 1, false).unwrap();
            assert_eq!(mode(dir), 0o700, "{}", dir.display());
            for file in [DB_FILE, LOCK_FILE] {
                assert_eq!(mode(&dir.join(file)), 0o600, "{file} in {}", dir.display());
            }
            drop(core);
        }
    }
}
