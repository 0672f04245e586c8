//! gRPC status codes: the one place errors become `tonic::Status`.
//!
//! This module sits above the error types it maps: it implements `From<E> for Status` for
//! each of them, and the services convert with `?`, `.into()` or `Status::from` without
//! importing it, so no module both defines an error and depends on this one.

use tonic::{Code, Status};

use crate::admin::AdminError;
use crate::auth::AuthError;
use crate::auth::ca::CaError;
use crate::auth::identity::IdentityError;
use crate::discovery::ProtocolError;
use crate::history::HistoryError;
use crate::store::StoreError;

/// The status of a failed Admin call.
impl From<AdminError> for Status {
    fn from(error: AdminError) -> Status {
        let code = match &error {
            AdminError::Store(e) | AdminError::History(HistoryError::Read(e)) => {
                return store_status(e);
            }
            AdminError::Conflict { .. } => Code::Aborted,
            AdminError::Busy => Code::Aborted,
            AdminError::Invalid(_) | AdminError::BadRequest(_) | AdminError::TooLarge(_) => {
                Code::InvalidArgument
            }
            AdminError::History(HistoryError::UnknownRevision(_)) => Code::NotFound,
            AdminError::History(HistoryError::SecretGone { .. }) => Code::FailedPrecondition,
            AdminError::NotFound(_) | AdminError::NoIdentity(_) => Code::NotFound,
            AdminError::Referenced { .. } => Code::FailedPrecondition,
            AdminError::Auth(e) => return auth_status(e),
        };
        Status::new(code, error.to_string())
    }
}

/// The status of a refused call or join.
impl From<AuthError> for Status {
    fn from(error: AuthError) -> Status {
        auth_status(&error)
    }
}

/// The status refusing an agent: its certificate, its Hello or its join.
impl From<IdentityError> for Status {
    fn from(error: IdentityError) -> Status {
        let code = match &error {
            IdentityError::NoCertificate
            | IdentityError::NotAnAgent
            | IdentityError::Unknown(_)
            | IdentityError::Expired(_) => Code::Unauthenticated,
            IdentityError::Revoked(_)
            | IdentityError::Superseded(_)
            | IdentityError::NodeMismatch { .. }
            | IdentityError::Region { .. }
            | IdentityError::Label { .. }
            | IdentityError::UsedUp(_)
            | IdentityError::Live(_)
            | IdentityError::RevokedBefore(..) => Code::PermissionDenied,
            IdentityError::Token(e) => return auth_status(e),
            IdentityError::BadRequest(_) | IdentityError::Ca(CaError::Request(_)) => {
                Code::InvalidArgument
            }
            IdentityError::Ca(_) => Code::Internal,
            IdentityError::Store(e) => return store_status(e),
            IdentityError::Busy => Code::Aborted,
        };
        Status::new(code, error.to_string())
    }
}

fn auth_status(error: &AuthError) -> Status {
    let code = match error {
        AuthError::NoToken
        | AuthError::Malformed
        | AuthError::UnknownToken
        | AuthError::Expired { .. } => Code::Unauthenticated,
        AuthError::WrongKind { .. } | AuthError::Forbidden { .. } => Code::PermissionDenied,
        AuthError::BadRequest(_) => Code::InvalidArgument,
        AuthError::Exists(_) => Code::AlreadyExists,
        AuthError::NoSuchToken(_) => Code::NotFound,
        AuthError::Store(e) => return store_status(e),
    };
    Status::new(code, error.to_string())
}

/// The status of a failed store call.
impl From<StoreError> for Status {
    fn from(error: StoreError) -> Status {
        store_status(&error)
    }
}

/// The status refusing or ending a discovery stream that broke the protocol.
impl From<ProtocolError> for Status {
    fn from(error: ProtocolError) -> Status {
        let code = match &error {
            ProtocolError::UnknownMethod { .. } => Code::Unimplemented,
            _ => Code::InvalidArgument,
        };
        Status::new(code, error.to_string())
    }
}

fn store_status(error: &StoreError) -> Status {
    let code = if error.is_retryable() {
        Code::Unavailable
    } else {
        Code::Internal
    };
    Status::new(code, error.to_string())
}

#[cfg(test)]
mod tests {
    use portico_api::{Kind, ResourceKey};

    use super::*;

    #[test]
    fn each_error_gets_its_code() {
        let cases: [(Status, Code); 7] = [
            (
                StoreError::Unavailable("down".into()).into(),
                Code::Unavailable,
            ),
            (StoreError::Corrupt("bad".into()).into(), Code::Internal),
            (
                AdminError::NotFound(ResourceKey::new(Kind::Cluster, "c")).into(),
                Code::NotFound,
            ),
            (AdminError::Busy.into(), Code::Aborted),
            (
                AdminError::History(HistoryError::UnknownRevision(7)).into(),
                Code::NotFound,
            ),
            (ProtocolError::Missing.into(), Code::InvalidArgument),
            (
                ProtocolError::UnknownMethod {
                    path: "/x/Y".into(),
                }
                .into(),
                Code::Unimplemented,
            ),
        ];
        for (status, code) in cases {
            assert_eq!(status.code(), code, "{status:?}");
        }
    }
}
