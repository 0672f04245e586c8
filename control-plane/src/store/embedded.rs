//! `embedded` store implementation.
