//! Wakes a connection's task for its shutdown and idle signals apart from its I/O.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// Wakes a connection's task for its shutdown and idle signals apart from its I/O, so that the
/// signals are polled only when one of them fired. The I/O wakes the task several times per
/// request, and polling a cancellation token takes a lock shared by every worker.
pub(crate) struct Signals {
    state: Arc<SignalState>,
    waker: Waker,
}

struct SignalState {
    /// Set when a signal woke the task; initially set, so the first poll registers them all.
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for SignalState {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Signals {
    pub fn new() -> Self {
        let state = Arc::new(SignalState {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Signals {
            waker: Waker::from(state.clone()),
            state,
        }
    }

    /// Runs `check` with the signals' own waker if a signal fired since the last check.
    pub fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        check: impl FnOnce(&mut Context<'_>) -> Option<T>,
    ) -> Poll<T> {
        self.state.task.register(cx.waker());
        if !self.state.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        match check(&mut Context::from_waker(&self.waker)) {
            Some(event) => Poll::Ready(event),
            None => Poll::Pending,
        }
    }

    /// Makes the next poll check the signals, e.g. after a timer was reset.
    pub fn rearm(&self) {
        self.state.woken.store(true, Ordering::Release);
    }
}
