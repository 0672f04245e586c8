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
pub mod status;
pub mod token;
pub mod usage;

use portico_api::Kind;
use portico_api::pb::{ListRequest, ListResponse};
use tonic::Code;

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
        self.list(admin, Kind::Unspecified).await
    }

    /// Every stored resource of `kind` (every kind for `Kind::Unspecified`), at one revision:
    /// page by page, each page of the listing read at the revision of the first. A listing
    /// the control plane stopped keeping before its last page is read again from the start.
    pub async fn list(&self, admin: &mut Admin, kind: Kind) -> CliResult<ListResponse> {
        let mut attempts = 0;
        'listing: loop {
            attempts += 1;
            let mut all = ListResponse::default();
            let mut token = String::new();
            loop {
                let req = ListRequest {
                    kind: kind as i32,
                    page_size: PAGE_SIZE,
                    page_token: token,
                };
                let page = match admin.list(req).await {
                    Ok(resp) => resp.into_inner(),
                    Err(status) if status.code() == Code::Aborted && attempts < LIST_ATTEMPTS => {
                        continue 'listing;
                    }
                    Err(status) => return Err(self.status(status)),
                };
                all.revision = page.revision;
                all.resources.extend(page.resources);
                if page.next_page_token.is_empty() {
                    return Ok(all);
                }
                token = page.next_page_token;
            }
        }
    }

    /// Classifies a failed config change (`what`: "apply", "delete", "rollback", "promotion",
    /// "abort").
    pub fn write_failed(&self, status: tonic::Status, what: &'static str) -> CliError {
        self.client.write_status(status, what)
    }
}

/// Resources asked for per page; the control plane also stops a page at 4 MiB.
const PAGE_SIZE: u32 = 1000;
/// How often a listing is started again when the control plane stopped keeping it.
const LIST_ATTEMPTS: usize = 3;

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
