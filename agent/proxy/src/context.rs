//! What every request on one client connection shares, and the connection's place under its
//! listener's limit.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::HeaderValue;
use tokio::sync::OwnedSemaphorePermit;

use crate::conn::ConnTrack;
use crate::metrics as m;
use crate::shared::Shared;

/// What every request on one client connection shares.
pub(crate) struct ConnCtx {
    /// The proxy's shared state.
    pub shared: Arc<Shared>,
    /// The listener's bind address (its key in the runtime).
    pub addr: SocketAddr,
    /// The listener's name when the connection was accepted.
    pub listener: Arc<str>,
    /// The client's address.
    pub peer: IpAddr,
    /// The client's address as written into X-Forwarded-For.
    pub client: HeaderValue,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Connection state shared with the I/O wrapper.
    pub track: Arc<ConnTrack>,
    /// The connection's slot, kept by an upgraded stream that outlives the HTTP connection.
    pub slot: Arc<ConnSlot>,
}

/// A connection's place under the listener's limit, and its count among the open
/// connections; held until the connection, or the upgraded stream it became, is gone.
pub(crate) struct ConnSlot {
    _permit: OwnedSemaphorePermit,
    _active: ActiveGuard,
}

impl ConnSlot {
    /// Takes the place `permit` gives on `listener` and counts the connection as open.
    pub fn new(permit: OwnedSemaphorePermit, shared: Arc<Shared>, listener: Arc<str>) -> Self {
        ConnSlot {
            _permit: permit,
            _active: ActiveGuard::new(shared, listener),
        }
    }
}

/// Counts an open connection for as long as it lives.
struct ActiveGuard {
    shared: Arc<Shared>,
    listener: Arc<str>,
}

impl ActiveGuard {
    fn new(shared: Arc<Shared>, listener: Arc<str>) -> Self {
        shared.active.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(m::ACTIVE_CONNECTIONS, m::LABEL_LISTENER => listener.clone())
            .increment(1.0);
        ActiveGuard { shared, listener }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(m::ACTIVE_CONNECTIONS, m::LABEL_LISTENER => self.listener.clone())
            .decrement(1.0);
    }
}
