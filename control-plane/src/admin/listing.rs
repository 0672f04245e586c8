//! List, a page at a time. A page holds resources in order (kind, then name) up to the page
//! size and [`MAX_PAGE_BYTES`] (and at least one), so no answer outgrows what a client
//! receives. Every page of one listing comes from the snapshot its first page was read from,
//! kept here for [`KEEP_FOR`] after its last page was served (at most [`KEPT`] of them), so a
//! listing is one config revision however long the client takes. A request that does not page
//! gets the whole listing only when it fits in one page, and an error otherwise: a client that
//! does not page never gets part of a list.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use portico_api::Kind;
use portico_api::limits::{self, MAX_PAGE_BYTES};
use portico_api::pb::{ListRequest, ListResponse, StoredResource};
use prost::Message;

use super::{AdminError, stored_resource};
use crate::snapshot::Snapshot;
use crate::store::Revision;
use crate::views::Views;

/// How long a listing's snapshot is kept after its last page.
const KEEP_FOR: Duration = Duration::from_secs(300);
/// Most listings' snapshots kept (one per config revision).
const KEPT: usize = 16;

/// The snapshots of listings in progress, by config revision.
#[derive(Default)]
pub(super) struct Listings {
    kept: Mutex<Vec<(Instant, Arc<Snapshot>)>>,
}

/// Where a page ends: the listing's revision and the last resource served.
#[derive(Debug, PartialEq)]
struct Token {
    revision: Revision,
    kind: Kind,
    name: String,
}

impl Token {
    fn encode(&self) -> String {
        format!("{}:{}:{}", self.revision, self.kind as i32, self.name)
    }

    fn decode(text: &str) -> Option<Token> {
        let mut parts = text.splitn(3, ':');
        let revision = parts.next()?.parse().ok()?;
        let kind = Kind::try_from(parts.next()?.parse::<i32>().ok()?).ok()?;
        let name = parts.next()?.to_string();
        Some(Token {
            revision,
            kind,
            name,
        })
    }
}

impl Listings {
    /// One page of `req`, from the current snapshot of `views` for a first page.
    pub(super) fn page(&self, views: &Views, req: ListRequest) -> Result<ListResponse, AdminError> {
        let kind = req.kind();
        let (snapshot, after) = if req.page_token.is_empty() {
            (views.current(), None)
        } else {
            let token = Token::decode(&req.page_token).ok_or_else(|| {
                AdminError::PageToken(format!("{:?} is not a page token", req.page_token))
            })?;
            let snapshot = self.kept(token.revision).ok_or_else(|| {
                AdminError::PageToken(format!(
                    "the listing at revision {} is no longer kept",
                    token.revision
                ))
            })?;
            (snapshot, Some(token))
        };
        let paged = req.page_size > 0 || after.is_some();
        let max = match req.page_size {
            0 => usize::MAX,
            n => n as usize,
        };
        let mut remaining = snapshot
            .iter()
            .filter(|s| kind == Kind::Unspecified || s.resource.kind() == kind)
            .skip_while(|s| {
                after.as_ref().is_some_and(|t| {
                    (s.resource.kind(), s.resource.name.as_str()) <= (t.kind, t.name.as_str())
                })
            })
            .peekable();
        let mut resources: Vec<StoredResource> = Vec::new();
        let mut bytes = 0;
        while let Some(s) = remaining.peek() {
            let shown = stored_resource(&s.resource, s.version);
            let len = shown.encoded_len();
            if !resources.is_empty() && (resources.len() >= max || bytes + len > MAX_PAGE_BYTES) {
                break;
            }
            bytes += len;
            resources.push(shown);
            remaining.next();
        }
        let more = remaining.peek().is_some();
        if more && !paged {
            let rest: Vec<usize> = remaining.map(|s| s.resource.encoded_len()).collect();
            return Err(AdminError::Unpaged {
                resources: resources.len() + rest.len(),
                bytes: limits::bytes(bytes + rest.iter().sum::<usize>()),
            });
        }
        let next_page_token = match (more, resources.last()) {
            (true, Some(last)) => {
                let r = last.resource.as_ref();
                self.keep(&snapshot);
                Token {
                    revision: snapshot.version,
                    kind: r.map_or(Kind::Unspecified, |r| r.kind()),
                    name: r.map(|r| r.name.clone()).unwrap_or_default(),
                }
                .encode()
            }
            _ => String::new(),
        };
        Ok(ListResponse {
            resources,
            revision: snapshot.version,
            next_page_token,
        })
    }

    /// The kept snapshot of `revision`, marked as used now.
    fn kept(&self, revision: Revision) -> Option<Arc<Snapshot>> {
        let mut kept = self.lock();
        let now = Instant::now();
        kept.retain(|(used, _)| now.duration_since(*used) < KEEP_FOR);
        let entry = kept.iter_mut().find(|(_, s)| s.version == revision)?;
        entry.0 = now;
        Some(entry.1.clone())
    }

    /// Keeps `snapshot` for the next pages of its listing.
    fn keep(&self, snapshot: &Arc<Snapshot>) {
        let mut kept = self.lock();
        let now = Instant::now();
        if let Some(entry) = kept.iter_mut().find(|(_, s)| s.version == snapshot.version) {
            entry.0 = now;
            return;
        }
        kept.push((now, snapshot.clone()));
        if kept.len() > KEPT {
            kept.sort_by_key(|(used, _)| std::cmp::Reverse(*used));
            kept.truncate(KEPT);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(Instant, Arc<Snapshot>)>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use portico_api::Resource;
    use portico_api::pb::{Cluster, resource::Spec};

    use super::*;
    use crate::snapshot::Stored;

    fn cluster(name: &str, pad: usize) -> Stored {
        let resource = Resource {
            name: name.into(),
            labels: [("pad".to_string(), "x".repeat(pad))].into_iter().collect(),
            spec: Some(Spec::Cluster(Cluster::default())),
        };
        Stored::new(resource, 1, 1)
    }

    fn names(page: &ListResponse) -> Vec<String> {
        page.resources
            .iter()
            .map(|s| s.resource.as_ref().unwrap().name.clone())
            .collect()
    }

    #[test]
    fn pages_cover_one_snapshot_in_order_and_unpaged_lists_must_fit() {
        let views = Views::new(Arc::new(Snapshot::new(
            7,
            (0..5).map(|i| cluster(&format!("c{i}"), 10)),
        )));
        let listings = Listings::default();
        let ask = |token: &str| ListRequest {
            page_size: 2,
            page_token: token.to_string(),
            ..Default::default()
        };
        let first = listings.page(&views, ask("")).unwrap();
        assert_eq!(names(&first), ["c0", "c1"]);
        // A change meanwhile does not show in the listing's later pages.
        views.publish(Arc::new(Snapshot::new(8, [cluster("a", 10)])));
        let second = listings.page(&views, ask(&first.next_page_token)).unwrap();
        assert_eq!(
            (names(&second), second.revision),
            (vec!["c2".into(), "c3".into()], 7)
        );
        let last = listings.page(&views, ask(&second.next_page_token)).unwrap();
        assert_eq!(names(&last), ["c4"]);
        assert_eq!(last.next_page_token, "");

        let unpaged = listings.page(&views, ListRequest::default()).unwrap();
        assert_eq!(names(&unpaged), ["a"]);
        assert!(matches!(
            listings.page(&views, ask("garbage")),
            Err(AdminError::PageToken(_))
        ));
        assert!(matches!(
            listings.page(&views, ask("3:3:x")),
            Err(AdminError::PageToken(_))
        ));
    }

    #[test]
    fn pages_stop_at_the_byte_limit_and_unpaged_lists_beyond_it_are_refused() {
        let big = MAX_PAGE_BYTES / 3;
        let views = Views::new(Arc::new(Snapshot::new(
            3,
            (0..4).map(|i| cluster(&format!("c{i}"), big)),
        )));
        let listings = Listings::default();
        let paged = ListRequest {
            page_size: 100,
            ..Default::default()
        };
        let first = listings.page(&views, paged).unwrap();
        assert_eq!(names(&first), ["c0", "c1"]);
        assert!(matches!(
            listings.page(&views, ListRequest::default()),
            Err(AdminError::Unpaged { resources: 4, .. })
        ));
    }
}
