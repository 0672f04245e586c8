//! The bodies of responses sent to clients: an upstream's passed through, or one the agent
//! made; and the wrapper that counts the bytes sent and writes the request's log at the end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};
use crate::grpc::{CallBody, Code};
use crate::policy::compression::Encoder;
use crate::request_log::RequestLog;
use crate::upstream::PooledBody;

/// The body of every response sent to clients: an upstream's, passed through as it is, or
/// one the agent made.
pub(crate) enum ResponseBody {
    /// From an upstream connection.
    Upstream(PooledBody),
    /// Made by the agent (errors, redirects, fixed answers).
    Local(ProxyBody),
    /// Either of the above, compressed by a compression policy.
    Compressed(Box<Encoder<ResponseBody>>),
    /// An upstream's answer to a gRPC call: its deadline, its status, gRPC-Web.
    Grpc(Box<CallBody<PooledBody>>),
}

impl ResponseBody {
    /// The status a gRPC call's trailers carried, once they passed.
    fn grpc_status(&self) -> Option<Code> {
        match self {
            ResponseBody::Grpc(b) => b.status(),
            _ => None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ResponseBody::Local(b) => Pin::new(b).poll_frame(cx),
            ResponseBody::Compressed(b) => Pin::new(&mut **b).poll_frame(cx),
            ResponseBody::Grpc(b) => Pin::new(&mut **b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(b) => b.is_end_stream(),
            ResponseBody::Local(b) => b.is_end_stream(),
            ResponseBody::Compressed(b) => b.is_end_stream(),
            ResponseBody::Grpc(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(b) => b.size_hint(),
            ResponseBody::Local(b) => b.size_hint(),
            ResponseBody::Compressed(b) => b.size_hint(),
            ResponseBody::Grpc(b) => b.size_hint(),
        }
    }
}

/// A response body that counts the bytes sent and carries the request's log until it ends.
pub(crate) struct LoggedBody {
    inner: ResponseBody,
    log: RequestLog,
}

impl LoggedBody {
    /// Wraps `inner`; `log` is written when this body is dropped.
    pub fn new(inner: ResponseBody, log: RequestLog) -> Self {
        LoggedBody { inner, log }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(code) = self.inner.grpc_status() {
            self.log.grpc_status = Some(code);
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.log.bytes_out += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
