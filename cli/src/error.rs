//! Command failures and the exit code each one maps to.
//!
//! Scripts branch on the exit code, so the mapping lives here and nowhere else:
//! 0 ok, 1 error, 2 usage, 3 conflict, 4 validation failed, 5 rollout failed or timed out,
//! 6 not authenticated or not allowed.
//!
//! A failed call is classified by what the control plane attached to it, not by its text:
//! every status the control plane makes carries the [`ERROR_KIND`] metadata key. One without
//! it failed on the way (the connection broke, the control plane died): for a read that is an
//! unreachable control plane, for a change one that may or may not have committed.

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

/// The metadata key the control plane sets on every status it makes (its value says what
/// failed: `store-unavailable`, `store`, `request`); the control plane's `status` module
/// writes it.
pub const ERROR_KIND: &str = "portico-error";

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
    /// The control plane answered, but its store did not.
    #[error(
        "the control plane at {server} answered: store unavailable ({reason}); \
         the config cannot be changed, nor history read, until the store is back"
    )]
    StoreUnavailable { server: String, reason: String },
    /// The connection failed while a change was on its way: it may or may not have committed.
    #[error(
        "the connection to the control plane at {server} failed during the {what} ({reason}): \
         the change may or may not have been committed. Check with `portico history` (a new \
         revision with your message) or `portico diff` before running it again"
    )]
    Uncertain {
        server: String,
        what: &'static str,
        reason: String,
    },
    /// A file or directory named on the command line cannot be read.
    #[error("{0}")]
    File(String),
    /// The control plane did not accept the token (none, unknown, expired).
    #[error(
        "not authenticated: {0}; pass a token with --token or PORTICO_TOKEN \
         (portico token create makes one)"
    )]
    Unauthenticated(String),
    /// The token's role does not allow the command.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The config changed since it was read. The message says how (the control plane's
    /// message names the current revision).
    #[error("conflict: {0}; re-run the command to apply on top of the current config")]
    Conflict(String),
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

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Conflict(_) => EXIT_CONFLICT,
            CliError::Validation(_) => EXIT_VALIDATION,
            CliError::Rollout(_) => EXIT_ROLLOUT,
            CliError::Unauthenticated(_) | CliError::PermissionDenied(_) => EXIT_AUTH,
            CliError::Unreachable { .. }
            | CliError::StoreUnavailable { .. }
            | CliError::Uncertain { .. }
            | CliError::File(_)
            | CliError::Server(_)
            | CliError::Other(_) => EXIT_ERROR,
        }
    }

    /// Classifies a gRPC status from a call to `server` that changes the config (`what`:
    /// "apply", "delete", "rollback", "promotion", "abort"): a failure on the way leaves the
    /// change uncertain.
    pub fn from_write_status(status: tonic::Status, server: &str, what: &'static str) -> CliError {
        match CliError::from_status(status, server) {
            CliError::Unreachable { server, reason } => CliError::Uncertain {
                server,
                what,
                reason,
            },
            other => other,
        }
    }

    /// Classifies a gRPC status from a call to `server`.
    pub fn from_status(status: tonic::Status, server: &str) -> CliError {
        use tonic::Code;
        let message = status.message().to_string();
        let kind = status
            .metadata()
            .get(ERROR_KIND)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(kind) = kind else {
            // Not made by the control plane: the call failed on the way there or back.
            return match status.code() {
                Code::Unauthenticated => CliError::Unauthenticated(message),
                Code::PermissionDenied => CliError::PermissionDenied(message),
                // A message over a size limit, or a call the control plane does not know:
                // nothing was done.
                code @ (Code::OutOfRange | Code::ResourceExhausted | Code::Unimplemented) => {
                    CliError::Server(format!("{code:?}: {message}"))
                }
                code => CliError::Unreachable {
                    server: server.to_string(),
                    reason: if message.is_empty() {
                        format!("{code:?}")
                    } else {
                        message
                    },
                },
            };
        };
        match status.code() {
            Code::Unavailable if kind == "store-unavailable" => CliError::StoreUnavailable {
                server: server.to_string(),
                reason: message,
            },
            Code::Aborted => CliError::Conflict(if message.is_empty() {
                "the config changed meanwhile".into()
            } else {
                message
            }),
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

    /// A status as the control plane makes it.
    fn from_server(code: Code, message: &str, kind: &str) -> Status {
        let mut status = Status::new(code, message);
        status
            .metadata_mut()
            .insert(ERROR_KIND, kind.parse().unwrap());
        status
    }

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
            let err = CliError::from_status(from_server(code, "x", "request"), "http://s");
            assert_eq!(err.exit_code(), exit, "{code:?}");
        }
    }

    #[test]
    fn local_failures_map_to_their_exit_codes() {
        assert_eq!(CliError::Usage("u".into()).exit_code(), EXIT_USAGE);
        assert_eq!(CliError::Rollout("r".into()).exit_code(), EXIT_ROLLOUT);
        assert_eq!(CliError::File("f".into()).exit_code(), EXIT_ERROR);
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
        assert!(
            text.contains("cannot reach the control plane at http://cp:7000"),
            "{text}"
        );
        assert!(
            text.contains("--server") && text.contains("PORTICO_SERVER"),
            "{text}"
        );
    }

    #[test]
    fn a_store_that_is_down_is_not_an_unreachable_control_plane() {
        let status = from_server(
            Code::Unavailable,
            "store unavailable: etcd at http://e:2379 did not answer",
            "store-unavailable",
        );
        let text = CliError::from_status(status, "http://cp:7000").to_string();
        assert!(
            text.starts_with("the control plane at http://cp:7000 answered: store unavailable"),
            "{text}"
        );
        assert!(!text.contains("--server"), "{text}");
    }

    #[test]
    fn a_change_cut_off_on_the_way_may_have_committed() {
        for status in [
            Status::unknown("transport error"),
            Status::unavailable("connection reset"),
            Status::internal("h2 protocol error"),
        ] {
            let err = CliError::from_write_status(status, "http://cp:7000", "apply");
            let text = err.to_string();
            assert!(text.contains("during the apply"), "{text}");
            assert!(
                text.contains("may or may not have been committed")
                    && text.contains("portico history"),
                "{text}"
            );
            assert_eq!(err.exit_code(), EXIT_ERROR);
        }
        // What the control plane answered is what it is.
        let answered = from_server(
            Code::Aborted,
            "the config is at revision 7, not 4",
            "request",
        );
        assert_eq!(
            CliError::from_write_status(answered, "s", "apply").exit_code(),
            EXIT_CONFLICT
        );
    }

    #[test]
    fn conflict_says_how_to_retry_and_names_the_revision_once() {
        let status = from_server(
            Code::Aborted,
            "the config is at revision 7, not 4",
            "request",
        );
        let text = CliError::from_status(status, "s").to_string();
        assert_eq!(
            text,
            "conflict: the config is at revision 7, not 4; re-run the command to apply on top \
             of the current config"
        );
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
