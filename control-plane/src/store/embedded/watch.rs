//! The task behind an embedded watch stream: replay from the log, then follow live commits.
//!
//! The task subscribes to live commits and takes a log snapshot atomically (see
//! [`super::core`]), replays the snapshot from the requested revision, then forwards live
//! revisions after the snapshot's. If it lags so far that the broadcast drops revisions it has
//! not seen, it starts over from the log at its next revision; only when the log no longer holds
//! that revision does the reader get `Compacted`. Memory per watch is bounded by the queue.
//!
//! The task holds the store only weakly, so dropping the store ends every watch (with an error),
//! and ends itself as soon as the reader drops the stream.

use std::sync::{Arc, Weak};

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;

use super::core::{Core, Revised};
use super::run_blocking;
use crate::store::{Change, KeyRange, Revision, StoreError, WatchEvent};

/// Events queued per watch before the task waits for the reader.
pub(super) const QUEUE: usize = 16;
/// Changes per event, beyond which whole revisions go into the next event.
const BATCH: usize = 1000;

type Sender = mpsc::Sender<Result<WatchEvent, StoreError>>;

pub(super) async fn follow(core: Weak<Core>, range: KeyRange, from: Revision, tx: Sender) {
    let mut watch = Watch { range, next: from };
    if let Err(e) = watch.run(&core, &tx).await {
        let _ = tx.send(Err(e)).await;
    }
}

struct Watch {
    range: KeyRange,
    /// The next revision the reader has not seen.
    next: Revision,
}

/// Why a watch stopped forwarding live events.
enum Stop {
    /// The reader is gone, or the stream has ended normally.
    Done,
    /// Live events were missed; continue from the log.
    Resync,
}

impl Watch {
    async fn run(&mut self, core: &Weak<Core>, tx: &Sender) -> Result<(), StoreError> {
        loop {
            let store = core.upgrade().ok_or_else(closed)?;
            let sub = {
                let store = store.clone();
                run_blocking(move || store.subscribe()).await?
            };
            if self.next < sub.oldest {
                let compacted = WatchEvent::Compacted {
                    compact_revision: sub.oldest,
                };
                let _ = tx.send(Ok(compacted)).await;
                return Ok(());
            }
            let mut snapshot = sub.snapshot;
            while self.next <= sub.revision {
                let (store, range, next) = (store.clone(), self.range.clone(), self.next);
                let (back, changes, after) = run_blocking(move || {
                    let (changes, after) =
                        store.read_log(&snapshot, &range, next, sub.revision, BATCH)?;
                    Ok((snapshot, changes, after))
                })
                .await?;
                snapshot = back;
                self.next = after;
                if !changes.is_empty() && tx.send(Ok(WatchEvent::Changes(changes))).await.is_err() {
                    return Ok(());
                }
            }
            // Neither the snapshot nor the store may outlive the replay: the snapshot pins old
            // pages, and a strong reference would keep a dropped store open.
            drop(snapshot);
            drop(store);
            match self.live(sub.events, tx).await? {
                Stop::Done => return Ok(()),
                Stop::Resync => continue,
            }
        }
    }

    /// Forwards live revisions, batching those already queued into one event.
    async fn live(
        &mut self,
        mut events: tokio::sync::broadcast::Receiver<Arc<Revised>>,
        tx: &Sender,
    ) -> Result<Stop, StoreError> {
        loop {
            let first = tokio::select! {
                _ = tx.closed() => return Ok(Stop::Done),
                received = events.recv() => received,
            };
            let mut changes = Vec::new();
            match first {
                Ok(revised) => {
                    if !self.take(&revised, &mut changes) {
                        return Ok(Stop::Resync);
                    }
                }
                Err(RecvError::Lagged(_)) => return Ok(Stop::Resync),
                Err(RecvError::Closed) => return Err(closed()),
            }
            while changes.len() < BATCH {
                match events.try_recv() {
                    Ok(revised) => {
                        if !self.take(&revised, &mut changes) {
                            self.flush(changes, tx).await;
                            return Ok(Stop::Resync);
                        }
                    }
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    Err(TryRecvError::Lagged(_)) => {
                        self.flush(changes, tx).await;
                        return Ok(Stop::Resync);
                    }
                }
            }
            if !self.flush(changes, tx).await {
                return Ok(Stop::Done);
            }
        }
    }

    /// Adds the matching changes of `revised` if it is the next revision; false on a gap,
    /// which the ordering in `core` rules out but a resync from the log would repair.
    fn take(&mut self, revised: &Revised, changes: &mut Vec<Change>) -> bool {
        if revised.revision < self.next {
            return true;
        }
        if revised.revision > self.next {
            return false;
        }
        self.next = revised.revision + 1;
        changes.extend(
            revised
                .changes
                .iter()
                .filter(|c| self.range.contains(c.key()))
                .cloned(),
        );
        true
    }

    /// Sends the changes, if any; false when the reader is gone.
    async fn flush(&self, changes: Vec<Change>, tx: &Sender) -> bool {
        changes.is_empty() || tx.send(Ok(WatchEvent::Changes(changes))).await.is_ok()
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("the store was closed".into())
}
