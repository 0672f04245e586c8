//! Body types of the data path: the boxed body everything is converted to, and the request body
//! wrapper that counts bytes and enforces the listener's size limit while streaming.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

use crate::grpc::frames::MessageLimit;

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request sent upstream and every response sent to clients.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body; boxing it allocates nothing.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// The body of a request on its way upstream: as the client sends it, or read whole by a
/// policy that had to see all of it (a JSON Schema check).
pub enum RequestBody {
    /// Streamed from the client.
    Incoming(hyper::body::Incoming),
    /// Read already; `None` once sent.
    Buffered(Option<Bytes>),
    /// The client's body translated as it streams (gRPC-Web text decoded).
    Translated(ProxyBody),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::Buffered(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Translated(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming(b) => b.is_end_stream(),
            RequestBody::Buffered(b) => b.as_ref().is_none_or(Bytes::is_empty),
            RequestBody::Translated(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming(b) => b.size_hint(),
            RequestBody::Buffered(b) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Translated(b) => b.size_hint(),
        }
    }
}

/// The body exceeded the listener's limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// What a [`LimitedBody`] shares with the request handler.
#[derive(Debug, Default)]
pub struct BodyStats {
    /// Bytes received so far.
    pub bytes: AtomicU64,
    /// Set when the body went past the limit.
    pub exceeded: AtomicBool,
    /// Set when reading the body from the client failed (malformed chunked framing, a
    /// connection closed mid-body).
    pub failed: AtomicBool,
    /// Set when the body was read to its end.
    pub ended: AtomicBool,
    /// Set when the upstream side first asked for the body.
    pub polled: AtomicBool,
}

/// A request body that counts its bytes and fails once they pass `limit`, or, for a gRPC
/// call, once one of its messages is declared larger than `limit`.
pub struct LimitedBody<B> {
    inner: B,
    limit: u64,
    stats: Arc<BodyStats>,
    /// Set for gRPC calls: the limit is per message.
    messages: Option<MessageLimit>,
}

impl<B> LimitedBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, limit: u64, stats: Arc<BodyStats>) -> Self {
        LimitedBody {
            inner,
            limit,
            stats,
            messages: None,
        }
    }

    /// Holds each gRPC message of the body to the limit, instead of the whole body: a
    /// streaming call can send any number of messages.
    pub fn per_message(mut self) -> Self {
        self.messages = Some(MessageLimit::new(self.limit));
        self
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.stats.polled.load(Ordering::Relaxed) {
            self.stats.polled.store(true, Ordering::Relaxed);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                self.stats.ended.store(true, Ordering::Relaxed);
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => {
                self.stats.failed.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if self.inner.is_end_stream() {
            self.stats.ended.store(true, Ordering::Relaxed);
        }
        if let Some(data) = frame.data_ref() {
            let total = self
                .stats
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed)
                + data.len() as u64;
            let this = &mut *self;
            let over = match &mut this.messages {
                Some(messages) => messages.feed(data).is_err(),
                None => total > this.limit,
            };
            if over {
                self.stats.exceeded.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge(self.limit)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    fn chunks(parts: &[&'static str]) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn body_within_limit_streams_through_and_is_counted() {
        let stats = Arc::new(BodyStats::default());
        let body = LimitedBody::new(chunks(&["abc", "de"]), 5, stats.clone());
        let collected = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(collected.ok(), Some(Bytes::from_static(b"abcde")));
        assert_eq!(stats.bytes.load(Ordering::Relaxed), 5);
        assert!(!stats.exceeded.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn grpc_bodies_are_limited_per_message() {
        let message = |n: u8| {
            let mut m = vec![0, 0, 0, 0, n];
            m.extend(std::iter::repeat_n(b'x', n.into()));
            Box::leak(String::from_utf8(m).unwrap().into_boxed_str()) as &'static str
        };
        let stats = Arc::new(BodyStats::default());
        let within = [message(4), message(4)];
        let body = LimitedBody::new(chunks(&within), 5, stats.clone());
        assert!(body.per_message().collect().await.is_ok());
        assert_eq!(stats.bytes.load(Ordering::Relaxed), 18);
        let stats = Arc::new(BodyStats::default());
        let over = [message(4), message(6)];
        let body = LimitedBody::new(chunks(&over), 5, stats.clone());
        assert!(body.per_message().collect().await.is_err());
        assert!(stats.exceeded.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn body_past_limit_fails_and_flags() {
        let stats = Arc::new(BodyStats::default());
        let body = LimitedBody::new(chunks(&["abc", "def"]), 5, stats.clone());
        assert!(body.collect().await.is_err());
        assert!(stats.exceeded.load(Ordering::Relaxed));
    }
}
