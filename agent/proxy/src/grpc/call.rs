//! The body of an upstream's answer to a gRPC call on its way to the client: it ends the call
//! with DEADLINE_EXCEEDED when the client's `grpc-timeout` runs out, notes the status the
//! trailers carry (for the access log and metrics), and for gRPC-Web calls turns the trailers
//! into the body's last frame (base64-encoding everything for `grpc-web-text`).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::frames::{self, TRAILER_FLAG};
use super::status::{self, Code};
use super::web::TextEncode;
use super::{BoxError, Protocol};

/// The message of the status a call ends with when its deadline passes.
pub const DEADLINE_MESSAGE: &str = "deadline exceeded at the gateway";

/// An upstream's answer to a gRPC call (see the module doc).
pub struct CallBody<B> {
    /// `None` once the deadline ended the call.
    inner: Option<B>,
    deadline: Option<Pin<Box<Sleep>>>,
    /// The gRPC-Web form the client speaks, if it does.
    web: Option<(Protocol, TextEncode)>,
    status: Option<Code>,
    ended: bool,
}

impl<B> CallBody<B> {
    /// Wraps `inner`, ending the call at `deadline`, for a client speaking `protocol`.
    pub fn new(inner: B, deadline: Option<Instant>, protocol: Protocol) -> Self {
        CallBody {
            inner: Some(inner),
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            web: protocol.is_web().then(|| (protocol, TextEncode::default())),
            status: None,
            ended: false,
        }
    }

    /// The status the call's trailers carried, once they passed (or the deadline's).
    pub fn status(&self) -> Option<Code> {
        self.status
    }

    /// The last frame: the trailers, as HTTP trailers or as a gRPC-Web trailer frame.
    fn last(&mut self, trailers: HeaderMap) -> Frame<Bytes> {
        self.ended = true;
        let Some((protocol, text)) = &mut self.web else {
            return Frame::trailers(trailers);
        };
        // gRPC-Web trailers: "name: value\r\n" lines, names in lower case (as HeaderMap has
        // them).
        let mut block = BytesMut::new();
        for (name, value) in &trailers {
            block.put_slice(name.as_str().as_bytes());
            block.put_slice(b": ");
            block.put_slice(value.as_bytes());
            block.put_slice(b"\r\n");
        }
        let framed = frames::frame(TRAILER_FLAG, &block);
        Frame::data(match protocol {
            Protocol::WebText => text.finish(&framed),
            _ => framed,
        })
    }
}

impl<B> Body for CallBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            // Dropping the upstream's body resets its stream: the upstream stops too.
            this.inner = None;
            this.status = Some(Code::DeadlineExceeded);
            let trailers = status::trailers(Code::DeadlineExceeded, DEADLINE_MESSAGE);
            return Poll::Ready(Some(Ok(this.last(trailers))));
        }
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(None);
        };
        loop {
            let frame = match Pin::new(&mut *inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => {
                    this.ended = true;
                    // The rest of a text body, padded.
                    return Poll::Ready(match &mut this.web {
                        Some((_, text)) if text.carrying() => {
                            Some(Ok(Frame::data(text.finish(&[]))))
                        }
                        _ => None,
                    });
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let frame = match frame.into_data() {
                Ok(data) => match &mut this.web {
                    Some((Protocol::WebText, text)) => {
                        let encoded = text.encode(&data);
                        if encoded.is_empty() {
                            continue;
                        }
                        Frame::data(encoded)
                    }
                    _ => Frame::data(data),
                },
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        this.status = Code::of(&trailers);
                        this.last(trailers)
                    }
                    Err(other) => other,
                },
            };
            return Poll::Ready(Some(Ok(frame)));
        }
    }

    fn is_end_stream(&self) -> bool {
        // A trailers-only answer keeps its shape: the head ends the stream.
        self.ended
            || (self.inner.as_ref().is_some_and(B::is_end_stream)
                && self.web.as_ref().is_none_or(|(_, t)| !t.carrying()))
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.inner, &self.web) {
            (Some(inner), None) => inner.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine;
    use http::HeaderValue;
    use http_body_util::{BodyExt, StreamBody};

    fn answer(
        messages: &[&[u8]],
        status: &'static str,
    ) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = messages
            .iter()
            .map(|m| Ok(Frame::data(frames::frame(0, m))))
            .collect();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static(status));
        frames.push(Ok(Frame::trailers(trailers)));
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn grpc_answers_pass_and_their_status_is_noted() {
        let mut body = CallBody::new(answer(&[b"a"], "5"), None, Protocol::Grpc);
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&data[..], b"\0\0\0\0\x01a");
        let trailers = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(trailers["grpc-status"], "5");
        assert_eq!(body.status(), Some(Code::NotFound));
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn web_answers_end_with_a_trailer_frame() {
        let body = CallBody::new(answer(&[b"ab"], "0"), None, Protocol::Web);
        let bytes = body.collect().await.unwrap().to_bytes();
        let (flag, message) = frames::first_message(&bytes).unwrap();
        assert_eq!((flag, message), (0, &b"ab"[..]));
        let (flag, trailer) = frames::first_message(&bytes[7..]).unwrap();
        assert_eq!(flag, 0x80);
        assert_eq!(trailer, b"grpc-status: 0\r\n");

        let text = CallBody::new(answer(&[b"a", b"bc"], "0"), None, Protocol::WebText);
        let encoded = text.collect().await.unwrap().to_bytes();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&encoded)
            .unwrap();
        assert_eq!(&decoded[..6], b"\0\0\0\0\x01a");
        assert_eq!(&decoded[6..13], b"\0\0\0\0\x02bc");
        assert_eq!(decoded[13], 0x80);
    }

    #[tokio::test]
    async fn the_deadline_ends_the_call_with_deadline_exceeded() {
        let never = http_body_util::StreamBody::new(futures::stream::pending::<
            Result<Frame<Bytes>, BoxError>,
        >());
        let deadline = Instant::now() + std::time::Duration::from_millis(20);
        let mut body = CallBody::new(never, Some(deadline), Protocol::Grpc);
        let trailers = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(trailers["grpc-status"], "4");
        assert_eq!(body.status(), Some(Code::DeadlineExceeded));
        assert!(body.frame().await.is_none());
    }
}
