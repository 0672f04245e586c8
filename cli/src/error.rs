//! Command failures and the exit code each one maps to.
//!
//! Scripts branch on the exit code, so the mapping lives here and nowhere else:
//! 0 ok, 1 error, 2 usage, 3 conflict, 4 validation failed, 5 rollout failed or timed out,
//! 6 not authenticated or not allowed.

/// Exit code of a successful command.
pub const EXIT_OK: u8 = 0;
/// Exit code of any failure not listed below.
pub const EXIT_ERROR: u8 = 1;
/// Exit code of a bad command line (also what clap uses).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the config changed meanwhile (gRPC ABORTED).
pub const EXIT_CONFLICT: u8 = 3;
/// Exit code when validation failed (gRPC INVALID_ARGUMENT, or errors in an apply).
pub const EXIT_VALIDATION: u8 = 4;
/// Exit code when a rollout was rejected by an agent or did not finish in time.
pub const EXIT_ROLLOUT: u8 = 5;
/// Exit code when the control plane refused the caller: no or an unknown token
/// (UNAUTHENTICATED), or a role that does not allow the command (PERMISSION_DENIED).
pub const EXIT_AUTH: u8 = 6;

/// Why a command failed. The message is one line (validation lists one error per line).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is wrong in a way clap cannot see (e.g. an unknown kind).
    #[error("{0}")]
    Usage(String),
    /// The control plane could not be reached.
    #[error(
        "cannot reach the control plane at {server} ({reason}); \
         point to it with --server URL or PORTICO_SERVER"
    )]
    Unreachable { server: String, reason: String },
    /// The control plane did not accept the token (none, unknown, expired).
    #[error(
        "not authenticated: {0}; pass a token with --token or PORTICO_TOKEN \
         (portico token create makes one)"
    )]
    Unauthenticated(String),
    /// The token's role does not allow the command.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The config changed since it was read.
    #[error("conflict: {message}{}; re-run the command to apply on top of the current config", current_revision_hint(*.current_revision))]
    Conflict {
        message: String,
        current_revision: Option<i64>,
    },
    /// The input was rejected; nothing was written.
    #[error("validation failed, nothing was applied:\n{}", .0.join("\n"))]
    Validation(Vec<String>),
    /// A rollout was rejected or timed out.
    #[error("{0}")]
    Rollout(String),
    /// Anything else the server said.
    #[error("{0}")]
    Server(String),
    /// A local failure (a file, the terminal, a port).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn current_revision_hint(rev: Option<i64>) -> String {
    rev.map(|r| format!(" (current revision {r})"))
        .unwrap_or_default()
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Conflict { .. } => EXIT_CONFLICT,
            CliError::Validation(_) => EXIT_VALIDATION,
            CliError::Rollout(_) => EXIT_ROLLOUT,
            CliError::Unauthenticated(_) | CliError::PermissionDenied(_) => EXIT_AUTH,
            CliError::Unreachable { .. } | CliError::Server(_) | CliError::Other(_) => EXIT_ERROR,
        }
    }

    /// Classifies a gRPC status from a call to `server`.
    pub fn from_status(status: tonic::Status, server: &str) -> CliError {
        use tonic::Code;
        let message = status.message().to_string();
        match status.code() {
            Code::Aborted => CliError::Conflict {
                message: if message.is_empty() {
                    "the config changed meanwhile".into()
                } else {
                    message
                },
                current_revision: None,
            },
            Code::InvalidArgument => {
                CliError::Validation(message.lines().map(String::from).collect())
            }
            Code::Unauthenticated => CliError::Unauthenticated(message),
            Code::PermissionDenied => CliError::PermissionDenied(message),
            Code::Unavailable => CliError::Unreachable {
                server: server.to_string(),
                reason: if message.is_empty() {
                    "unavailable".into()
                } else {
                    message
                },
            },
            Code::NotFound | Code::FailedPrecondition | Code::AlreadyExists => {
                CliError::Server(message)
            }
            code => CliError::Server(format!("{code:?}: {message}")),
        }
    }
}

/// The result of a command.
pub type CliResult<T = ()> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    #[test]
    fn grpc_codes_map_to_documented_exit_codes() {
        for (code, exit) in [
            (Code::Aborted, EXIT_CONFLICT),
            (Code::InvalidArgument, EXIT_VALIDATION),
            (Code::Unavailable, EXIT_ERROR),
            (Code::NotFound, EXIT_ERROR),
            (Code::Internal, EXIT_ERROR),
            (Code::FailedPrecondition, EXIT_ERROR),
            (Code::Unauthenticated, EXIT_AUTH),
            (Code::PermissionDenied, EXIT_AUTH),
        ] {
            let err = CliError::from_status(Status::new(code, "x"), "http://s");
            assert_eq!(err.exit_code(), exit, "{code:?}");
        }
    }

    #[test]
    fn local_failures_map_to_their_exit_codes() {
        assert_eq!(CliError::Usage("u".into()).exit_code(), EXIT_USAGE);
        assert_eq!(CliError::Rollout("r".into()).exit_code(), EXIT_ROLLOUT);
        assert_eq!(
            CliError::Other(anyhow::anyhow!("disk")).exit_code(),
            EXIT_ERROR
        );
    }

    #[test]
    fn refusals_say_what_was_refused_and_how_to_authenticate() {
        let err = CliError::from_status(
            Status::permission_denied("apply needs role operator; token \"ci\" has role viewer"),
            "http://s",
        );
        assert_eq!(
            err.to_string(),
            "permission denied: apply needs role operator; token \"ci\" has role viewer"
        );
        let err = CliError::from_status(Status::unauthenticated("unknown or revoked token"), "s");
        assert!(err.to_string().contains("--token"), "{err}");
    }

    #[test]
    fn unreachable_names_the_url_and_how_to_change_it() {
        let err =
            CliError::from_status(Status::unavailable("connection refused"), "http://cp:7000");
        let text = err.to_string();
        assert!(text.contains("http://cp:7000"), "{text}");
        assert!(
            text.contains("--server") && text.contains("PORTICO_SERVER"),
            "{text}"
        );
    }

    #[test]
    fn conflict_names_the_current_revision_and_how_to_retry() {
        let err = CliError::Conflict {
            message: "expected revision 4".into(),
            current_revision: Some(7),
        };
        let text = err.to_string();
        assert!(text.contains("current revision 7"), "{text}");
        assert!(text.contains("re-run"), "{text}");
    }

    #[test]
    fn validation_lists_every_error_on_its_own_line() {
        let err = CliError::Validation(vec!["a: x".into(), "b: y".into()]);
        assert_eq!(
            err.to_string(),
            "validation failed, nothing was applied:\na: x\nb: y"
        );
    }
}
