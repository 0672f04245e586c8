//! One module per subcommand; each has an `Args` struct and a `run` function.

pub mod agents;
pub mod apply;
pub mod ca;
pub mod completion;
pub mod consumer;
pub mod delete;
pub mod dev;
pub mod diff;
pub mod get;
pub mod health;
pub mod history;
pub mod rollback;
pub mod rollout;
pub mod token;

use portico_api::Kind;
use portico_api::pb::{ListRequest, ListResponse};

use crate::client::{Admin, ClientConfig};
use crate::error::{CliError, CliResult};
use crate::output::Format;

/// What every command gets: where the control plane is and the output format.
pub struct Context {
    /// The connection options.
    pub client: ClientConfig,
    /// `-o`.
    pub format: Format,
}

impl Context {
    /// The Admin client.
    pub async fn connect(&self) -> CliResult<Admin> {
        self.client.connect().await
    }

    /// Classifies a failed call.
    pub fn status(&self, status: tonic::Status) -> CliError {
        self.client.status(status)
    }

    /// Every stored resource, at one revision.
    pub async fn list_all(&self, admin: &mut Admin) -> CliResult<ListResponse> {
        let req = ListRequest {
            kind: Kind::Unspecified as i32,
        };
        match admin.list(req).await {
            Ok(resp) => Ok(resp.into_inner()),
            Err(status) => Err(self.status(status)),
        }
    }

    /// The current config revision, to tell the user after a conflict.
    pub async fn current_revision(&self, admin: &mut Admin) -> Option<i64> {
        let req = portico_api::pb::HistoryRequest {
            limit: 1,
            before_revision: 0,
        };
        let resp = admin.history(req).await.ok()?.into_inner();
        Some(resp.entries.first().map_or(0, |e| e.revision))
    }

    /// Classifies a failed config write, naming the current revision on a conflict.
    pub async fn write_failed(&self, admin: &mut Admin, status: tonic::Status) -> CliError {
        match self.status(status) {
            CliError::Conflict { message, .. } => CliError::Conflict {
                message,
                current_revision: self.current_revision(admin).await,
            },
            other => other,
        }
    }
}

/// A kind named on the command line.
pub fn parse_kind(s: &str) -> CliResult<Kind> {
    Kind::parse(s).ok_or_else(|| {
        let kinds: Vec<_> = Kind::ALL.iter().map(|k| k.display_name()).collect();
        CliError::Usage(format!(
            "unknown kind {s:?}; expected one of {}",
            kinds.join(", ")
        ))
    })
}
