//! `portico-control-plane`: holds Portico's configuration in a store and streams it to agents.
//!
//! # Layout
//! - [`store`]: the store trait and its `etcd` and `embedded` implementations.
//! - [`keys`]: key layout and value encoding; nothing else builds store keys.

pub mod keys;
pub mod store;
