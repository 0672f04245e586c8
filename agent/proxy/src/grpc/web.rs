//! gRPC-Web (what browsers can send): the same length-prefixed messages as gRPC, over HTTP/1.1
//! or HTTP/2, with the trailers sent as a last frame of the body (flag 0x80) instead of HTTP
//! trailers, and in the `-text` form all of it base64-encoded. A route that opts in turns such
//! a request into gRPC toward the upstream; [`super::CallBody`] turns the answer back.

use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{self, HeaderValue};
use http_body::{Body, Frame, SizeHint};

use super::{BoxError, Protocol, TE_TRAILERS};

/// Turns the head of a gRPC-Web request into a gRPC one: the content type (its `+codec`
/// suffix kept), `te: trailers`, and no Content-Length when base64 decoding changes the size.
pub fn request_head(headers: &mut HeaderMap, protocol: Protocol) {
    let web_len = match protocol {
        Protocol::Grpc => return,
        Protocol::Web => "application/grpc-web".len(),
        Protocol::WebText => "application/grpc-web-text".len(),
    };
    let suffix = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().get(web_len..))
        .unwrap_or_default();
    let mut grpc = b"application/grpc".to_vec();
    grpc.extend_from_slice(suffix);
    if let Ok(value) = HeaderValue::from_bytes(&grpc) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::TE, TE_TRAILERS.clone());
    if protocol == Protocol::WebText {
        headers.remove(header::CONTENT_LENGTH);
    }
}

/// The content type of the answer to a gRPC-Web call whose upstream answered with gRPC
/// content type `upstream`: `application/grpc+proto` becomes `application/grpc-web+proto`
/// (or `-web-text+proto`), a bare `application/grpc` gets `+proto`.
pub fn response_content_type(upstream: &HeaderValue, protocol: Protocol) -> HeaderValue {
    let rest = upstream
        .as_bytes()
        .get("application/grpc".len()..)
        .unwrap_or_default();
    let mut value = protocol.content_type().as_bytes().to_vec();
    if !rest.is_empty() {
        value.truncate(value.len() - "+proto".len());
        value.extend_from_slice(rest);
    }
    HeaderValue::from_bytes(&value).unwrap_or_else(|_| protocol.content_type())
}

/// Why a `grpc-web-text` body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A piece of the body is not base64.
    #[error("grpc-web-text body is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The body ended inside a 4-character group.
    #[error("grpc-web-text body ends inside a base64 group")]
    Truncated,
}

/// A `grpc-web-text` request body decoded from base64 as it streams. Each group of four
/// characters decodes on its own, so bodies made of separately padded pieces (one per
/// message, as clients send them) decode too.
pub struct TextDecode<B> {
    inner: B,
    /// Characters of an unfinished group.
    pending: BytesMut,
}

impl<B> TextDecode<B> {
    /// Decodes `inner`.
    pub fn new(inner: B) -> Self {
        TextDecode {
            inner,
            pending: BytesMut::new(),
        }
    }
}

/// Decodes the whole groups of `pending`, leaving an unfinished group in it.
fn decode_groups(pending: &mut BytesMut) -> Result<Bytes, base64::DecodeError> {
    let whole = pending.len() / 4 * 4;
    let input = pending.split_to(whole);
    let mut out = Vec::with_capacity(whole / 4 * 3);
    let mut start = 0;
    // A padded group ends one base64 string; the next string starts after it.
    for end in (4..=whole).step_by(4) {
        if input[end - 1] == b'=' {
            STANDARD.decode_vec(&input[start..end], &mut out)?;
            start = end;
        }
    }
    STANDARD.decode_vec(&input[start..], &mut out)?;
    Ok(Bytes::from(out))
}

impl<B> Body for TextDecode<B>
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
        loop {
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) if this.pending.is_empty() => return Poll::Ready(None),
                Poll::Ready(None) => {
                    return Poll::Ready(Some(Err(Box::new(TextError::Truncated))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                // Request trailers pass as they are.
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            };
            this.pending.extend_from_slice(&data);
            match decode_groups(&mut this.pending) {
                Ok(decoded) if decoded.is_empty() => continue,
                Ok(decoded) => return Poll::Ready(Some(Ok(Frame::data(decoded)))),
                Err(e) => return Poll::Ready(Some(Err(Box::new(TextError::Base64(e))))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Base64 encoding of a body sent in pieces: whole 3-byte groups are encoded as they come and
/// the rest carried to the next piece, so the body is one base64 string, padded at its end.
#[derive(Debug, Default)]
pub struct TextEncode {
    carry: Vec<u8>,
}

impl TextEncode {
    /// The characters for `data`, as far as whole groups go.
    pub fn encode(&mut self, data: &[u8]) -> Bytes {
        self.carry.extend_from_slice(data);
        let whole = self.carry.len() / 3 * 3;
        let out = STANDARD.encode(&self.carry[..whole]);
        self.carry.drain(..whole);
        Bytes::from(out)
    }

    /// The characters for `data` and whatever was carried, padded: the end of the body.
    pub fn finish(&mut self, data: &[u8]) -> Bytes {
        self.carry.extend_from_slice(data);
        let out = STANDARD.encode(&self.carry);
        self.carry.clear();
        Bytes::from(out)
    }

    /// Whether bytes are carried, to be written by [`TextEncode::finish`].
    pub fn carrying(&self) -> bool {
        !self.carry.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn headers(content_type: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("8"));
        h
    }

    #[test]
    fn request_heads_become_grpc() {
        let mut binary = headers("application/grpc-web+proto");
        request_head(&mut binary, Protocol::Web);
        assert_eq!(binary["content-type"], "application/grpc+proto");
        assert_eq!(binary["te"], "trailers");
        assert!(binary.contains_key("content-length"));
        let mut text = headers("application/grpc-web-text");
        request_head(&mut text, Protocol::WebText);
        assert_eq!(text["content-type"], "application/grpc");
        assert!(!text.contains_key("content-length"));
    }

    #[test]
    fn answers_get_the_web_content_type() {
        let cases = [
            (
                "application/grpc",
                Protocol::Web,
                "application/grpc-web+proto",
            ),
            (
                "application/grpc+json",
                Protocol::Web,
                "application/grpc-web+json",
            ),
            (
                "application/grpc",
                Protocol::WebText,
                "application/grpc-web-text+proto",
            ),
            (
                "application/grpc+proto",
                Protocol::WebText,
                "application/grpc-web-text+proto",
            ),
        ];
        for (upstream, protocol, want) in cases {
            let got = response_content_type(&HeaderValue::from_static(upstream), protocol);
            assert_eq!(got, want, "{upstream} {protocol:?}");
        }
    }

    async fn decoded(pieces: &[&'static str]) -> Result<Bytes, BoxError> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = pieces
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        let body = TextDecode::new(StreamBody::new(futures::stream::iter(frames)));
        body.collect().await.map(|c| c.to_bytes())
    }

    #[tokio::test]
    async fn text_bodies_decode_across_pieces_and_padded_strings() {
        // "hello" and "world!" encoded apart, each padded, cut anywhere.
        let whole = "aGVsbG8=d29ybGQh";
        for cut in 0..whole.len() {
            let (a, b) = whole.split_at(cut);
            let a: &'static str = Box::leak(a.to_string().into_boxed_str());
            let b: &'static str = Box::leak(b.to_string().into_boxed_str());
            assert_eq!(
                decoded(&[a, b]).await.unwrap(),
                "helloworld!",
                "cut at {cut}"
            );
        }
        assert!(decoded(&["aGVsbG8"]).await.is_err(), "truncated");
        assert!(decoded(&["a*Vs"]).await.is_err(), "not base64");
    }

    #[test]
    fn text_encoding_carries_partial_groups() {
        let mut e = TextEncode::default();
        let mut out = Vec::new();
        for piece in [&b"he"[..], b"llo", b" w", b"orld"] {
            out.extend_from_slice(&e.encode(piece));
        }
        assert!(e.carrying());
        out.extend_from_slice(&e.finish(b"!"));
        assert_eq!(
            STANDARD.decode(&out).unwrap(),
            b"hello world!",
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert!(!e.carrying());
    }
}
