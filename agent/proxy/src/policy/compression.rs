//! `compression`: gzip or brotli by the client's Accept-Encoding, streamed frame by frame.
//!
//! [`Encoder`] compresses each data frame as it comes and sends what the compressor produced;
//! when the upstream has nothing more for now, it flushes, so a slow stream (server-sent
//! events) reaches the client as it is produced, and the whole body is never held.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use portico_api::pb;

use crate::body::BoxError;

/// An encoding the agent compresses with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// brotli.
    Brotli,
    /// gzip.
    Gzip,
}

impl Algorithm {
    fn token(self) -> &'static str {
        match self {
            Algorithm::Brotli => "br",
            Algorithm::Gzip => "gzip",
        }
    }
}

/// A compiled `compression` policy.
#[derive(Debug)]
pub struct Compression {
    algorithms: Vec<Algorithm>,
    min_bytes: u64,
    /// "type/subtype", or "type/" for "type/*".
    content_types: Vec<String>,
}

const DEFAULT_TYPES: &[&str] = &["text/", "application/json", "application/javascript"];

impl Compression {
    /// Compiles the policy.
    pub fn compile(spec: &pb::Compression) -> Result<Compression, (String, String)> {
        let mut algorithms = Vec::new();
        for (i, a) in spec.algorithms.iter().enumerate() {
            algorithms.push(match a.as_str() {
                "br" => Algorithm::Brotli,
                "gzip" => Algorithm::Gzip,
                other => {
                    return Err((
                        format!("compression.algorithms[{i}]"),
                        format!("unknown algorithm {other:?}"),
                    ));
                }
            });
        }
        if algorithms.is_empty() {
            algorithms = vec![Algorithm::Brotli, Algorithm::Gzip];
        }
        let types: Vec<String> = if spec.content_types.is_empty() {
            DEFAULT_TYPES.iter().map(|t| t.to_string()).collect()
        } else {
            spec.content_types
                .iter()
                .map(|t| t.to_ascii_lowercase().trim_end_matches('*').to_string())
                .collect()
        };
        Ok(Compression {
            algorithms,
            min_bytes: if spec.min_bytes == 0 {
                1024
            } else {
                spec.min_bytes
            },
            content_types: types,
        })
    }

    /// The algorithm the client's Accept-Encoding prefers among those offered: the highest
    /// q-value above zero, ties broken by the policy's order; "*" stands for every algorithm
    /// the header does not name.
    pub fn negotiate(&self, accept: &HeaderValue) -> Option<Algorithm> {
        let text = accept.to_str().ok()?;
        let mut star = None;
        let mut named: Vec<(Algorithm, f32)> = Vec::new();
        for item in text.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match token.as_str() {
                "*" => star = Some(q),
                "br" => named.push((Algorithm::Brotli, q)),
                "gzip" | "x-gzip" => named.push((Algorithm::Gzip, q)),
                _ => {}
            }
        }
        let mut best: Option<(Algorithm, f32)> = None;
        for a in &self.algorithms {
            let q = named
                .iter()
                .find(|(n, _)| n == a)
                .map(|(_, q)| *q)
                .or(star)
                .unwrap_or(0.0);
            if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
                best = Some((*a, q));
            }
        }
        best.map(|(a, _)| a)
    }

    /// Whether a response of this content type is compressible.
    pub fn compressible(&self, headers: &HeaderMap) -> bool {
        let Some(media) = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
        else {
            return false;
        };
        self.content_types.iter().any(|t| {
            if t.ends_with('/') {
                media.starts_with(t.as_str())
            } else {
                media == *t
            }
        })
    }

    /// Whether a response with these parts is compressed with `algorithm`; if so, its headers
    /// are changed for the encoded body. `length` is the body's size when known without a
    /// Content-Length header (a body the agent made). Adds `Vary: Accept-Encoding` to every
    /// response of a compressible type.
    pub fn prepare(
        &self,
        (method, status): (&Method, StatusCode),
        headers: &mut HeaderMap,
        length: Option<u64>,
        algorithm: Option<Algorithm>,
    ) -> Option<Algorithm> {
        if !self.compressible(headers) {
            return None;
        }
        super::cors::vary(headers, "accept-encoding");
        let algorithm = algorithm?;
        let no_body = *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let encoded = headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        let small = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .or(length)
            .is_some_and(|n| n < self.min_bytes);
        let ranged = status == StatusCode::PARTIAL_CONTENT;
        if no_body || encoded || small || ranged {
            return None;
        }
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::ACCEPT_RANGES);
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(algorithm.token()),
        );
        // The encoded body is another representation: a strong validator no longer holds.
        if let Some(etag) = headers.get(header::ETAG)
            && !etag.as_bytes().starts_with(b"W/")
            && let Ok(weak) = HeaderValue::from_bytes(&[b"W/", etag.as_bytes()].concat())
        {
            headers.insert(header::ETAG, weak);
        }
        Some(algorithm)
    }
}

/// The compressor of one body.
enum Coder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl Coder {
    fn new(algorithm: Algorithm) -> Coder {
        match algorithm {
            Algorithm::Gzip => Coder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(5),
            )),
            // Quality 4, window 2^22: brotli's fast settings, near gzip's speed.
            Algorithm::Brotli => Coder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                4,
                22,
            ))),
        }
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Coder::Gzip(c) => c.write_all(data),
            Coder::Brotli(c) => c.write_all(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Coder::Gzip(c) => c.flush(),
            Coder::Brotli(c) => c.flush(),
        }
    }

    /// What the compressor produced so far.
    fn take(&mut self) -> Bytes {
        let out = match self {
            Coder::Gzip(c) => c.get_mut(),
            Coder::Brotli(c) => c.get_mut(),
        };
        Bytes::from(std::mem::take(out))
    }

    /// Ends the stream; the rest of the output.
    fn finish(self) -> std::io::Result<Bytes> {
        match self {
            Coder::Gzip(c) => c.finish().map(Bytes::from),
            Coder::Brotli(c) => Ok(Bytes::from(c.into_inner())),
        }
    }
}

/// A body compressed as it streams.
pub struct Encoder<B> {
    inner: B,
    coder: Option<Coder>,
    /// Input written since the last flush.
    pending: bool,
    /// Trailers of the inner body, sent after the last compressed bytes.
    trailers: Option<HeaderMap>,
}

impl<B> Encoder<B> {
    /// Compresses `inner` with `algorithm`.
    pub fn new(inner: B, algorithm: Algorithm) -> Self {
        Encoder {
            inner,
            coder: Some(Coder::new(algorithm)),
            pending: false,
            trailers: None,
        }
    }
}

impl<B> Body for Encoder<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(coder) = this.coder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => {
                    if !this.pending {
                        return Poll::Pending;
                    }
                    // Nothing more for now: send what is compressed so far.
                    this.pending = false;
                    coder.flush()?;
                    let out = coder.take();
                    if out.is_empty() {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        coder.write(&data)?;
                        this.pending = true;
                        let out = coder.take();
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            this.trailers = Some(t);
                        }
                    }
                },
                Poll::Ready(None) => {
                    let rest = this.coder.take().map(Coder::finish).transpose()?;
                    match rest {
                        Some(out) if !out.is_empty() => {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                        _ => continue,
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.coder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Read;

    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn policy(algorithms: &[&str]) -> Compression {
        Compression::compile(&pb::Compression {
            algorithms: algorithms.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn accept_encoding_q_values_choose() {
        let both = policy(&["br", "gzip"]);
        let pick = |p: &Compression, v: &'static str| p.negotiate(&HeaderValue::from_static(v));
        assert_eq!(pick(&both, "gzip, br"), Some(Algorithm::Brotli));
        assert_eq!(pick(&both, "gzip;q=1, br;q=0.5"), Some(Algorithm::Gzip));
        assert_eq!(pick(&both, "br;q=0, gzip"), Some(Algorithm::Gzip));
        assert_eq!(pick(&both, "identity"), None);
        assert_eq!(pick(&both, "*"), Some(Algorithm::Brotli));
        assert_eq!(pick(&both, "*;q=0.1, br;q=0"), Some(Algorithm::Gzip));
        let gzip_first = policy(&["gzip", "br"]);
        assert_eq!(pick(&gzip_first, "br, gzip"), Some(Algorithm::Gzip));
    }

    #[tokio::test]
    async fn frames_are_compressed_as_they_stream() {
        let text = "hello compression ".repeat(500);
        for algorithm in [Algorithm::Gzip, Algorithm::Brotli] {
            let chunks: Vec<Result<Frame<Bytes>, BoxError>> = text
                .as_bytes()
                .chunks(1000)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            let body = StreamBody::new(futures::stream::iter(chunks));
            let encoded = Encoder::new(body, algorithm)
                .collect()
                .await
                .unwrap()
                .to_bytes();
            assert!(
                encoded.len() < text.len() / 10,
                "{algorithm:?}: {}",
                encoded.len()
            );
            let mut decoded = String::new();
            match algorithm {
                Algorithm::Gzip => {
                    flate2::read::GzDecoder::new(&encoded[..])
                        .read_to_string(&mut decoded)
                        .unwrap();
                }
                Algorithm::Brotli => {
                    brotli::Decompressor::new(&encoded[..], 4096)
                        .read_to_string(&mut decoded)
                        .unwrap();
                }
            }
            assert_eq!(decoded, text);
        }
    }

    #[test]
    fn encoded_small_and_bodiless_responses_are_left_alone() {
        let p = policy(&[]);
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.insert(*n, HeaderValue::from_static(v));
            }
            h
        };
        let json = ("content-type", "application/json");
        let go = |h: &mut HeaderMap, status| {
            p.prepare((&Method::GET, status), h, None, Some(Algorithm::Gzip))
        };
        let mut big = headers(&[json, ("content-length", "5000"), ("etag", "\"a\"")]);
        assert_eq!(go(&mut big, StatusCode::OK), Some(Algorithm::Gzip));
        assert_eq!(big["content-encoding"], "gzip");
        assert_eq!(big["vary"], "accept-encoding");
        assert_eq!(big["etag"], "W/\"a\"");
        assert!(!big.contains_key("content-length"));
        assert_eq!(
            go(
                &mut headers(&[json, ("content-length", "10")]),
                StatusCode::OK
            ),
            None
        );
        assert_eq!(
            go(
                &mut headers(&[json, ("content-encoding", "br")]),
                StatusCode::OK
            ),
            None
        );
        assert_eq!(go(&mut headers(&[json]), StatusCode::NO_CONTENT), None);
        let mut image = headers(&[("content-type", "image/png")]);
        assert_eq!(go(&mut image, StatusCode::OK), None);
        assert!(!image.contains_key("vary"));
        assert_eq!(
            go(
                &mut headers(&[("content-type", "text/html")]),
                StatusCode::OK
            ),
            Some(Algorithm::Gzip)
        );
    }
}
