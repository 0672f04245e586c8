//! `portico-api`: the one source of truth for what Portico's resources and services are.
//!
//! The `.proto` files under `proto/` define the six resource kinds and the Discovery and Admin
//! gRPC services; `build.rs` generates prost/tonic code and proto3-JSON serde impls from them.
//! On top of the generated types this crate holds the resource file format and validation of a
//! whole resource set, so that the control plane, the agent and the CLI agree on both.
//!
//! # Layout
//! - [`pb`]: generated messages and gRPC stubs (`portico.v1`).
//! - [`backoff`]: capped exponential backoff with jitter.
//! - [`codec`]: prost's gRPC codec with small per-stream buffers.
//! - [`budget`]: fleet budgets (quotas, FLEET rate limits): keys, sizes by plan, windows.
//! - [`diff`]: unified diffs of resources as YAML (`portico diff`, a history change's diff).
//! - [`error`]: [`error::Chain`], an error shown with its causes.
//! - [`file`](mod@file): the resource file format (YAML/JSON envelope), loading files and directories.
//! - [`health`]: how much endpoint health one agent report carries.
//! - [`pattern`]: regular expressions compiled alike everywhere, within size limits.
//! - [`limits`]: size limits of resources, changes and Admin API messages.
//! - [`node`]: node ids, announced services and which listeners select a node, for agents and
//!   control plane alike.
//! - [`reference`](mod@reference): what each resource refers to (for validation and scoping); redaction.
//! - [`text`]: agent-supplied text made safe to keep, log and print.
//! - [`secret`]: secret material kept out of sight: a `Debug` of Secrets that never shows it,
//!   and the fingerprints history keeps instead.
//! - [`validate`]: validation of a whole resource set with field-path errors.
//! - [`role`]: token roles by name.
//! - [`stage`]: canary rollout stages by name.
//! - [`resource`]: the kind of a resource, its key, [`ResourceSet`], helpers on [`pb::Resource`].
//! - [`usage`]: usage counts in reports and rollups: latency buckets, sums, quantiles, bounds.

pub mod backoff;
pub mod budget;
pub mod codec;
pub mod diff;
pub mod error;
pub mod file;
pub mod health;
pub mod limits;
pub mod node;
pub mod pattern;
pub mod reference;
pub mod resource;
pub mod role;
pub mod secret;
pub mod stage;
pub mod text;
pub mod usage;
pub mod validate;

/// Generated protobuf messages, gRPC clients/servers, and their proto3-JSON serde impls.
// Comments come from the .proto files, which are not written as rustdoc.
#[allow(clippy::all, missing_docs, rustdoc::invalid_html_tags)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/portico.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/portico.v1.serde.rs"));
}

pub use pb::{Kind, Resource, ResourceKey};
pub use resource::ResourceSet;
