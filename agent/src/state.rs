//! What the agent serves now, shared by sync, the cache writer, reports and the admin endpoint.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use portico_proxy::config::ConfigSet;

/// The agent's live state. The config is published only after the data path applied it.
#[derive(Debug)]
pub struct State {
    applied: watch::Sender<Option<Arc<ConfigSet>>>,
    started: Instant,
    draining: AtomicBool,
    ahead: Mutex<Option<Ahead>>,
}

/// The agent serves a newer config than the control plane it is connected to offers, and
/// refused the control plane's (see `sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ahead {
    /// The version the agent serves.
    pub served: i64,
    /// The control plane's version it refused.
    pub offered: i64,
}

impl Default for State {
    fn default() -> Self {
        State {
            applied: watch::Sender::new(None),
            started: Instant::now(),
            draining: AtomicBool::new(false),
            ahead: Mutex::new(None),
        }
    }
}

impl State {
    /// The config the data path serves, if any.
    pub fn applied(&self) -> Option<Arc<ConfigSet>> {
        self.applied.borrow().clone()
    }

    /// The version the data path serves (0: none).
    pub fn applied_version(&self) -> i64 {
        self.applied.borrow().as_ref().map_or(0, |c| c.version)
    }

    /// Records that the data path now serves `config`.
    pub fn publish(&self, config: Arc<ConfigSet>) {
        self.applied.send_replace(Some(config));
    }

    /// Notified on every [`State::publish`].
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<ConfigSet>>> {
        self.applied.subscribe()
    }

    /// Ready to take traffic: a config is applied and the agent is not draining.
    pub fn ready(&self) -> bool {
        self.applied.borrow().is_some() && !self.draining.load(Ordering::Relaxed)
    }

    /// Marks the agent as shutting down, so load balancers in front of it stop sending.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Records whether the agent is ahead of its control plane (`None`: not known to be).
    pub fn set_ahead(&self, ahead: Option<Ahead>) {
        *self.ahead.lock().unwrap_or_else(|p| p.into_inner()) = ahead;
    }

    /// Whether the agent refused its control plane's config as older than its own.
    pub fn ahead(&self) -> Option<Ahead> {
        *self.ahead.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Time since the agent started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}
