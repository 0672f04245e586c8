//! Who may do what: the certificate authority agents and the CLI trust, API tokens and their
//! roles, and agent identities.
//!
//! With authentication on, every Admin call carries `authorization: Bearer TOKEN`. The token
//! is looked up by its SHA-256 in this replica's [`table::AuthTable`]; its role must allow the
//! call ([`Caller::require`]), and its name is the caller recorded as the author of changes. With
//! authentication off every caller is `anonymous` with every role. Agents authenticate with
//! client certificates instead ([`identity`]).
//!
//! # Layout
//! - [`ca`]: the CA (kept in the store), serving certificates, agent client certificates.
//! - [`table`]: every replica's copy of the tokens and agent identities, kept current.
//! - [`tokens`]: creating, listing and revoking tokens; the bootstrap token.
//! - [`identity`]: the Identity service (join, renew) and which streams a certificate admits.
//! - [`xds`]: which xDS clients are admitted (agent certificate or join token) and what node
//!   they may claim.

pub mod ca;
pub mod identity;
pub mod table;
pub mod tokens;
pub mod xds;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portico_api::pb::{Role, Token};
use sha2::{Digest, Sha256};
use tonic::Request;

use crate::keys::Keys;
use crate::metered::MeteredStore;
use crate::store::StoreError;
use ca::Authority;
use table::{AuthState, AuthTable};

/// The caller of "anonymous" calls, with authentication off.
pub const ANONYMOUS: &str = "anonymous";

/// Why a call or a join was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: Bearer` header.
    #[error("authentication is on: this call needs a token (authorization: Bearer TOKEN)")]
    NoToken,
    /// The header is not `Bearer TOKEN`.
    #[error("the authorization header must be \"Bearer TOKEN\"")]
    Malformed,
    /// No token has this hash.
    #[error("unknown or revoked token")]
    UnknownToken,
    /// The token's time is over.
    #[error("token {name:?} expired")]
    Expired { name: String },
    /// A join token used for an Admin call, or an API token used to join.
    #[error("token {name:?} is a {role} token: {what}")]
    WrongKind {
        name: String,
        role: &'static str,
        what: &'static str,
    },
    /// The role does not allow the call.
    #[error("{what} needs role {need}; token {name:?} has role {role}")]
    Forbidden {
        name: String,
        role: &'static str,
        need: &'static str,
        what: String,
    },
    /// A token request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// A token of this name exists.
    #[error("a token named {0:?} exists; revoke it first or choose another name")]
    Exists(String),
    /// No token of this name.
    #[error("no token named {0:?}")]
    NoSuchToken(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who made a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, or [`ANONYMOUS`].
    pub name: String,
    /// The token's role (`ADMIN` for anonymous callers: authentication is off).
    pub role: Role,
}

impl Caller {
    /// Refuses unless the caller's role allows `need`; `what` names the refused action.
    pub fn require(&self, need: Role, what: impl Into<String>) -> Result<(), AuthError> {
        if allows(self.role, need) {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                name: self.name.clone(),
                role: self.role.name(),
                need: need.name(),
                what: what.into(),
            })
        }
    }
}

/// Whether `have` may do what `need` may: each of viewer, operator, admin may do what the
/// roles before it may; a join token may do nothing here.
pub fn allows(have: Role, need: Role) -> bool {
    let rank = |r: Role| match r {
        Role::Viewer => 1,
        Role::Operator => 2,
        Role::Admin => 3,
        Role::Join | Role::Unspecified => 0,
    };
    rank(have) > 0 && rank(have) >= rank(need)
}

/// The lowercase hex SHA-256 of a token: what the store keeps.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Authentication of one control plane.
pub struct Auth {
    /// Whether calls and streams must authenticate.
    pub on: bool,
    /// The certificate authority.
    pub authority: Arc<Authority>,
    /// How long agent certificates are valid.
    pub agent_cert_ttl: Duration,
    /// The tokens and identities.
    pub state: Arc<AuthState>,
    store: MeteredStore,
    keys: Keys,
}

impl Auth {
    /// Authentication over `state`.
    pub fn new(
        on: bool,
        authority: Arc<Authority>,
        agent_cert_ttl: Duration,
        state: Arc<AuthState>,
        store: MeteredStore,
        keys: Keys,
    ) -> Auth {
        Auth {
            on,
            authority,
            agent_cert_ttl,
            state,
            store,
            keys,
        }
    }

    /// The current tokens and identities.
    pub fn table(&self) -> Arc<AuthTable> {
        self.state.current()
    }

    /// The caller of `req`, whose role must allow `need` (`what` names the call in the
    /// refusal). With authentication off: [`ANONYMOUS`].
    pub fn caller<T>(&self, req: &Request<T>, need: Role, what: &str) -> Result<Caller, AuthError> {
        if !self.on {
            return Ok(Caller {
                name: ANONYMOUS.to_string(),
                role: Role::Admin,
            });
        }
        let token = self.presented(req)?.ok_or(AuthError::NoToken)?;
        if token.role() == Role::Join {
            return Err(AuthError::WrongKind {
                name: token.name.clone(),
                role: "join",
                what: "it lets agents join and makes no Admin call",
            });
        }
        let caller = Caller {
            name: token.name.clone(),
            role: token.role(),
        };
        caller.require(need, what)?;
        Ok(caller)
    }

    /// The token `req` presents (`authorization: Bearer TOKEN`), as stored: `None` without the
    /// header; refused when the header is malformed or the token unknown, revoked or expired.
    fn presented<T>(&self, req: &Request<T>) -> Result<Option<Token>, AuthError> {
        let Some(header) = req.metadata().get("authorization") else {
            return Ok(None);
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Malformed)?;
        let table = self.table();
        let entry = table
            .token_by_hash(&hash(token))
            .ok_or(AuthError::UnknownToken)?;
        if expired(&entry.value, SystemTime::now()) {
            return Err(AuthError::Expired {
                name: entry.value.name.clone(),
            });
        }
        Ok(Some(entry.value.clone()))
    }
}

/// Whether `token` has expired at `now`.
pub fn expired(token: &portico_api::pb::Token, now: SystemTime) -> bool {
    token
        .expires
        .as_ref()
        .is_some_and(|e| crate::registry::system_time(e) <= now)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_role_allows_the_ones_before_it_and_join_allows_nothing() {
        use Role::*;
        for (have, need, ok) in [
            (Viewer, Viewer, true),
            (Viewer, Operator, false),
            (Operator, Viewer, true),
            (Operator, Operator, true),
            (Operator, Admin, false),
            (Admin, Admin, true),
            (Admin, Viewer, true),
            (Join, Viewer, false),
            (Unspecified, Viewer, false),
        ] {
            assert_eq!(allows(have, need), ok, "{have:?} for {need:?}");
        }
        let caller = Caller {
            name: "ci".into(),
            role: Viewer,
        };
        let err = caller.require(Operator, "apply").unwrap_err().to_string();
        assert_eq!(
            err,
            "apply needs role operator; token \"ci\" has role viewer"
        );
    }

    #[test]
    fn tokens_hash_as_lowercase_hex_sha256() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
