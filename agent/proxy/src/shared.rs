//! What the proxy shares with its accept loops and connections, and each worker's handle on
//! the current runtime.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budgets::Budgets;
use crate::runtime::Runtime;
use crate::usage::Usage;

/// State shared by the proxy, its accept loops and its connections.
pub(crate) struct Shared {
    /// The runtime new requests use.
    pub runtime: ArcSwap<Runtime>,
    /// Whether access log lines are written.
    pub access_log: bool,
    /// Cancelled by `Proxy::shutdown`; every listener's stop token is a child.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown grace period is over: remaining connections are dropped.
    pub kill: CancellationToken,
    /// Accept loops and connections.
    pub tracker: TaskTracker,
    /// Open client connections.
    pub active: AtomicU64,
    /// Usage counters, one table per worker.
    pub usage: Usage,
    /// Fleet budgets granted by the control plane.
    pub budgets: Budgets,
}

/// The runtime as a request holds it: a handle made by the request's worker, so taking and
/// dropping one per request changes no reference count shared with the other cores.
pub(crate) type WorkerRuntime = Arc<Arc<Runtime>>;

thread_local! {
    static RUNTIME: RefCell<Option<WorkerRuntime>> = const { RefCell::new(None) };
}

impl Shared {
    /// The runtime new requests use, through this thread's handle on it.
    pub fn current_runtime(&self) -> WorkerRuntime {
        let current = self.runtime.load();
        RUNTIME.with_borrow_mut(|held| match held {
            Some(handle) if Arc::ptr_eq(handle.as_ref(), &current) => handle.clone(),
            _ => {
                let handle = Arc::new(arc_swap::Guard::into_inner(current));
                *held = Some(handle.clone());
                handle
            }
        })
    }
}
