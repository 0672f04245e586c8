//! What compiling any resource shares: errors in the shape of validation errors, and the
//! defaults of unset durations. Below both [`crate::runtime`] and [`crate::policy`], so that
//! each compiles its resources without importing the other's.

use std::time::Duration;

use portico_api::validate::ValidationError;
use portico_api::{Kind, ResourceKey};

/// Why a config does not compile: the resource, the field path and what is wrong, in the
/// shape of a validation error, so agents and the control plane report faults alike.
pub type CompileError = ValidationError;

/// An error in field `field` of resource `kind/name`.
pub(crate) fn compile_error(
    kind: Kind,
    name: &str,
    field: impl Into<String>,
    message: impl Into<String>,
) -> CompileError {
    ValidationError {
        key: ResourceKey::new(kind, name),
        field: field.into(),
        message: message.into(),
    }
}

/// A protobuf duration, or `default` when unset or zero.
pub fn duration_or(d: Option<&pbjson_types::Duration>, default: Duration) -> Duration {
    match d {
        Some(d) if d.seconds > 0 || d.nanos > 0 => {
            Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
        }
        _ => default,
    }
}
