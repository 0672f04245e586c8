//! The data path: listeners, routing, upstream pools.
//!
//! [`Proxy`] owns the running listeners and the current runtime. It never sees the sync
//! client: the two meet only in [`Proxy::apply`].

use crate::config::ConfigSet;

/// Why a config could not be applied. The previous config keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The config does not compile (bad reference, regex, certificate...).
    #[error("{0}")]
    Compile(String),
    /// A new listener could not be bound.
    #[error("bind {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

/// The running data path.
#[derive(Default)]
pub struct Proxy {}

impl Proxy {
    /// Compiles `config`, binds its new listeners and swaps it in atomically. On error nothing
    /// changes.
    pub async fn apply(&self, _config: &ConfigSet) -> Result<(), ApplyError> {
        Ok(())
    }

    /// Client connections open now, over every listener.
    pub fn active_connections(&self) -> u64 {
        0
    }

    /// Stops accepting on every listener and waits up to `grace` for in-flight requests.
    pub async fn shutdown(&self, _grace: std::time::Duration) {}
}
