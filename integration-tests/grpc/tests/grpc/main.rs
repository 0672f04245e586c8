//! gRPC through the real data path: a real proxy between real gRPC clients and servers
//! (tonic's generated code, tonic-health, Python's grpcio) on port 0. One test binary, one
//! module per concern.
#![allow(clippy::unwrap_used)]

mod calls;
mod errors;
mod health;
mod observability;
mod python;
mod retries;
mod support;
mod web;
