//! gRPC status codes: the one place errors become `tonic::Status`.

use tonic::{Code, Status};

use crate::admin::AdminError;
use crate::discovery::ProtocolError;
use crate::history::HistoryError;
use crate::store::StoreError;

/// The status of a failed Admin call.
pub fn admin(error: AdminError) -> Status {
    let code = match &error {
        AdminError::Store(e) | AdminError::History(HistoryError::Read(e)) => return store(e),
        AdminError::Conflict { .. } => Code::Aborted,
        AdminError::Busy => Code::Aborted,
        AdminError::Invalid(_) | AdminError::BadRequest(_) | AdminError::TooLarge(_) => {
            Code::InvalidArgument
        }
        AdminError::History(HistoryError::UnknownRevision(_)) => Code::NotFound,
        AdminError::NotFound(_) => Code::NotFound,
        AdminError::Referenced { .. } => Code::FailedPrecondition,
    };
    Status::new(code, error.to_string())
}

/// The status of a failed store call.
pub fn store(error: &StoreError) -> Status {
    let code = if error.is_retryable() {
        Code::Unavailable
    } else {
        Code::Internal
    };
    Status::new(code, error.to_string())
}

/// The status refusing or ending a discovery stream that broke the protocol.
pub fn protocol(error: ProtocolError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// The status of a call to a method this server does not have.
pub fn unknown_method() -> Status {
    Status::unimplemented("no such method")
}
