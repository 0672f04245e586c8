//! gRPC status codes: the one place errors become `tonic::Status`.
//!
//! This module sits above the error types it maps: it implements `From<E> for Status` for
//! each of them, and the services convert with `?`, `.into()` or `Status::from` without
//! importing it, so no module both defines an error and depends on this one.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::admin::AdminError;
use crate::auth::AuthError;
use crate::auth::ca::CaError;
use crate::auth::identity::IdentityError;
use crate::commit::CommitError;
use crate::discovery::ProtocolError;
use crate::history::HistoryError;
use crate::store::StoreError;

/// The metadata key every status made here carries, so that clients tell an answer of the
/// control plane from a call that failed on the way (`portico`'s error module reads it). Its
/// value says what failed: `store-unavailable`, `store` or `request`.
pub const ERROR_KIND: &str = "portico-error";

/// The status of a failed Admin call.
impl From<AdminError> for Status {
    fn from(error: AdminError) -> Status {
        let code = match &error {
            AdminError::Store(e)
            | AdminError::History(HistoryError::Read(e))
            | AdminError::Commit(CommitError::Store(e)) => {
                return store_status(e);
            }
            // Nothing was written, and the store is why: its code, the whole message.
            AdminError::Commit(CommitError::Undone { source }) => {
                let code = store_status(source).code();
                let kind = store_kind(source);
                return with_kind(Status::new(code, error.to_string()), kind);
            }
            AdminError::Conflict { .. }
            | AdminError::Busy
            | AdminError::Commit(CommitError::TakenOver { .. })
            | AdminError::PageToken(_) => Code::Aborted,
            AdminError::Invalid(_)
            | AdminError::BadRequest(_)
            | AdminError::Commit(CommitError::TooLarge) => Code::InvalidArgument,
            AdminError::RolloutActive(_) | AdminError::NoRollout => Code::FailedPrecondition,
            AdminError::Decode(_) | AdminError::History(HistoryError::Undecodable(_)) => {
                Code::Internal
            }
            AdminError::History(HistoryError::UnknownRevision(_))
            | AdminError::NotFound(_)
            | AdminError::NoIdentity(_)
            | AdminError::NoSuchRevision { .. } => Code::NotFound,
            AdminError::History(HistoryError::SecretGone { .. })
            | AdminError::History(HistoryError::Pruned { .. })
            | AdminError::Referenced { .. }
            | AdminError::Unpaged { .. } => Code::FailedPrecondition,
            AdminError::Auth(e) => return auth_status(e),
        };
        with_kind(Status::new(code, error.to_string()), "request")
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
            | IdentityError::NoXdsCredential
            | IdentityError::NotAnAgent
            | IdentityError::Unknown(_)
            | IdentityError::Expired(_) => Code::Unauthenticated,
            IdentityError::Revoked(_)
            | IdentityError::Superseded(_)
            | IdentityError::NodeMismatch { .. }
            | IdentityError::AgentNode(_)
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
        with_kind(Status::new(code, error.to_string()), "request")
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
    with_kind(Status::new(code, error.to_string()), "request")
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
    match error {
        // The kind says "store unavailable"; the message is the store's own words.
        StoreError::Unavailable(why) => with_kind(
            Status::new(Code::Unavailable, why.clone()),
            store_kind(error),
        ),
        e => with_kind(
            Status::new(Code::Internal, e.to_string()),
            store_kind(error),
        ),
    }
}

fn store_kind(error: &StoreError) -> &'static str {
    if error.is_retryable() {
        "store-unavailable"
    } else {
        "store"
    }
}

fn with_kind(mut status: Status, kind: &'static str) -> Status {
    status
        .metadata_mut()
        .insert(ERROR_KIND, MetadataValue::from_static(kind));
    status
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

    #[test]
    fn statuses_say_they_come_from_the_control_plane_and_what_failed() {
        let kind = |status: Status| {
            status
                .metadata()
                .get(ERROR_KIND)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let down = StoreError::Unavailable("etcd at e:2379 did not answer".into());
        assert_eq!(kind(down.into()).as_deref(), Some("store-unavailable"));
        let corrupt = AdminError::Store(StoreError::Corrupt("bad".into()));
        assert_eq!(kind(corrupt.into()).as_deref(), Some("store"));
        assert_eq!(kind(AdminError::Busy.into()).as_deref(), Some("request"));
        let conflict = Status::from(AdminError::Conflict {
            expected: 4,
            current: 7,
        });
        assert_eq!(conflict.message(), "the config is at revision 7, not 4");
    }
}
