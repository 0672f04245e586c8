//! The data path through real sockets: a real proxy between real clients and real upstream
//! servers on port 0. One test binary, one module per concern.
#![allow(clippy::unwrap_used)]

mod access_log;
mod apply;
mod balancing;
mod hostile;
mod limits;
mod metrics;
mod policies;
mod pool;
mod protocols;
mod routing;
mod support;
mod tls;
