//! Token roles by name, as the CLI takes and prints them and the control plane's refusals say.

use crate::pb::Role;

impl Role {
    /// The role's name: `viewer`, `operator`, `admin`, `join`, or `none` when unset.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Join => "join",
            Role::Unspecified => "none",
        }
    }
}
