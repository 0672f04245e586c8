//! The proxy's worker threads: one single-threaded tokio runtime per core.
//!
//! Every listener is accepted on by every worker, and a connection stays on the worker that
//! accepted it, with that worker's own upstream pools: a request never moves between threads.
//! A shared work-stealing scheduler spent most of its time handing requests between threads.

use std::cell::Cell;
use std::num::NonZeroUsize;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running the current thread; 0 outside the workers.
pub(crate) fn current() -> usize {
    WORKER.with(Cell::get)
}

/// The default worker count: one per core this process may run on. The standard library reads
/// the CPU affinity mask and the cgroup's CPU quota (v1 and v2, rounded down), so an agent
/// pinned to one core with `taskset`, or limited to 1.5 CPUs by its container, starts one
/// worker, not one per host core.
pub(crate) fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Running worker threads; they stop when this is dropped.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `count` workers (at least one). Workers that cannot be started are logged and
    /// left out; when none can, the caller's runtime serves instead.
    pub fn start(count: usize) -> Workers {
        let stop = CancellationToken::new();
        // Workers log to whatever the creating thread logs to (tests install local ones).
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let mut handles = Vec::new();
        for index in 0..count.max(1) {
            match spawn(index, stop.clone(), dispatch.clone()) {
                Ok(handle) => handles.push(handle),
                Err(e) => tracing::error!(worker = index, error = %e, "cannot start proxy worker"),
            }
        }
        if handles.is_empty()
            && let Ok(handle) = Handle::try_current()
        {
            handles.push(handle);
        }
        Workers { handles, stop }
    }

    /// The workers' runtimes.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn spawn(
    index: usize,
    stop: CancellationToken,
    dispatch: tracing::Dispatch,
) -> std::io::Result<Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(format!("portico-proxy-{index}"))
        .spawn(move || {
            WORKER.with(|w| w.set(index));
            let _log = tracing::dispatcher::set_default(&dispatch);
            runtime.block_on(stop.cancelled());
        })?;
    Ok(handle)
}
