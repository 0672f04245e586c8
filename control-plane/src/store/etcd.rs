//! `etcd` store implementation.
