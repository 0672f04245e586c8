//! `portico-proxy`: the agent's data path. It compiles a config into an immutable runtime and
//! serves HTTP traffic with it; it knows nothing of the control plane, the discovery stream or
//! the disk cache, which live in `portico-agent` and meet the data path only through
//! [`Proxy::apply`].
//!
//! # Layout
//! Compiling a config:
//! - `compile`: what compiling any resource shares (errors in validation's shape, duration
//!   defaults), below `runtime` and `policy`.
//! - [`config`]: [`config::ConfigSet`], every resource at one config version, and how an update
//!   changes it.
//! - [`runtime`]: a config compiled into an immutable [`runtime::Runtime`] (route tables,
//!   clusters, listeners), reusing whatever did not change.
//! - [`tls`]: TLS material for listeners and upstreams.
//! - [`policy`]: gateway policies compiled (authentication, rate limits, CORS, ...), with the
//!   consumer directory and the rate limiters' buckets.
//!
//! Serving it, from the socket up (a module imports only modules listed before it):
//! - [`body`], [`headers`], [`host`], [`path`], [`error`]: body types, header hygiene and
//!   transforms, the one host of a request, path normalisation, and the classified errors the
//!   agent answers with.
//! - [`grpc`]: gRPC calls recognised, their statuses, deadlines and message framing, and
//!   gRPC-Web translated to and from gRPC.
//! - [`metrics`]: every data-path metric, named once; [`access_log`]: the log line format;
//!   [`usage`]: usage counters per worker, collected for reports; `budgets`: fleet budgets
//!   (quotas, FLEET rate limits) granted by the control plane and spent by requests.
//! - `workers`: the threads serving traffic, one single-threaded runtime per core.
//! - [`connector`], [`upstream`]: connections to endpoints, clusters' balancing, health and
//!   per-worker pools; `replay`: request bodies kept for retries.
//! - `shared`: what the proxy shares with its listeners and connections (the current runtime).
//! - `conn`: per-connection state and the I/O wrapper that answers 408 and spots framing
//!   conflicts; `context`: what every request on one connection shares.
//! - `response`, `request_log`: the bodies sent to clients, and the record of each request that
//!   becomes its access log line and metrics.
//! - `service`: request handling in named phases: check the head, route, run the policies,
//!   act, forward.
//! - `listener`: bound sockets, accept loops, serving and draining connections.
//! - [`Proxy`] (`proxy`): owns the listeners and the runtime; [`Proxy::apply`] swaps configs.

pub mod access_log;
pub mod body;
mod budgets;
mod compile;
pub mod config;
pub mod connector;
pub mod error;
pub mod grpc;
pub mod headers;
pub mod host;
pub mod metrics;
pub mod path;
pub mod policy;
pub mod runtime;
pub mod tls;
pub mod upstream;
pub mod usage;

mod conn;
mod context;
mod listener;
mod proxy;
mod replay;
mod request_log;
mod response;
mod service;
mod shared;
mod signals;
mod workers;

pub use proxy::{ApplyError, Proxy, ProxyConfig};
