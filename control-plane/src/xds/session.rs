//! What both ADS flavours do alike on a stream: take requests, follow the snapshots and the
//! service table, and after each event let the flavour send what is due ([`Flavour::step`]).
//! [`sotw`](super::sotw) and [`delta`](super::delta) differ only in what they keep per type
//! and what they send.

use std::future::Future;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::catalog::Catalog;
use super::{Stream, Sync};
use crate::snapshot::Snapshot;

/// Where a flavour's responses go.
pub(super) type Tx<F> = mpsc::Sender<Result<<F as Flavour>::Response, Status>>;

/// One ADS flavour's stream state.
pub(super) trait Flavour: Send + Sized + 'static {
    /// The client's request message.
    type Request: Send + 'static;
    /// The response message.
    type Response: Send + 'static;

    /// A new stream's state.
    fn new(stream: Stream) -> Self;
    /// The node a request names (the first request of a stream must).
    fn node(request: &Self::Request) -> Option<&Node>;
    /// The stream shared by both flavours.
    fn stream(&mut self) -> &mut Stream;
    /// Takes in one request.
    fn receive(&mut self, request: Self::Request);
    /// Sends what `catalog` makes due; `None` when the client is gone.
    fn step(
        &mut self,
        catalog: &Arc<Catalog>,
        tx: &Tx<Self>,
    ) -> impl Future<Output = Option<Sync>> + Send;
}

/// Serves one stream from its first request until the client leaves, the stream fails or
/// `cancel` fires.
pub(super) async fn run<F: Flavour>(
    mut session: F,
    first: F::Request,
    mut inbound: Streaming<F::Request>,
    tx: Tx<F>,
    cancel: CancellationToken,
) {
    let snapshots = session.stream().views.subscribe();
    // While a canary rollout does not pick the client, the revision before it; looked up once
    // per published snapshot.
    let served = |stream: &Stream, current: &Arc<Snapshot>| {
        crate::canary::served(&stream.views, current, &stream.node)
            .unwrap_or_else(|| current.clone())
    };
    let mut current = served(session.stream(), &snapshots.borrow());
    let tables = session.stream().services.subscribe();
    let mut table = tables.borrow().clone();
    let mut changes = WatchStream::from_changes(snapshots);
    let mut table_changes = WatchStream::from_changes(tables);
    let cancelled = cancel.cancelled();
    let closed = tx.closed();
    tokio::pin!(cancelled, closed);
    session.receive(first);
    loop {
        let catalog = session.stream().catalog(&current, &table);
        match session.step(&catalog, &tx).await {
            Some(sync) => session.stream().account(catalog.version, sync),
            None => break,
        }
        tokio::select! {
            _ = &mut cancelled => break,
            _ = &mut closed => break,
            next = changes.next() => match next {
                Some(snapshot) => current = served(session.stream(), &snapshot),
                None => break,
            },
            next = table_changes.next() => match next {
                Some(t) => table = t,
                None => break,
            },
            message = inbound.message() => match message {
                Ok(Some(request)) => session.receive(request),
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(node = %session.stream().node.id, %status, "xDS stream failed");
                    break;
                }
            },
        }
    }
}
