//! Per-connection state and the I/O wrapper under hyper that gives HTTP/1 clients real
//! answers where hyper would only close the connection.
//!
//! hyper's own `header_read_timeout` closes the socket without a response and also fires on
//! idle keep-alive connections, and hyper silently accepts a request carrying both
//! Content-Length and Transfer-Encoding (it drops Content-Length). So [`ConnIo`] watches the
//! bytes of each HTTP/1 request head as they arrive: it answers 408 itself when a started head
//! does not complete in time, and records which framing headers the head carried for the
//! request handler to reject. HTTP/2 connections pass through untouched.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::access_log;
use crate::headers::new_request_id;

/// Head flag: the head carried both Content-Length and Transfer-Encoding.
pub const HEAD_CL_AND_TE: u8 = 1;

/// What a connection's requests and its I/O wrapper share.
#[derive(Debug)]
pub struct ConnTrack {
    epoch: Instant,
    in_flight: AtomicUsize,
    started: AtomicU64,
    /// Millis since `epoch` of the last read or finished request.
    last_active: AtomicU64,
    /// 1 + the value of `started` when the current head began arriving; 0 when none is.
    head_pending: AtomicU64,
    head_flags: AtomicU8,
    /// Set once the connection was handed over to an upgraded protocol (WebSocket...).
    upgraded: AtomicBool,
}

impl Default for ConnTrack {
    fn default() -> Self {
        ConnTrack {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            last_active: AtomicU64::new(0),
            head_pending: AtomicU64::new(0),
            head_flags: AtomicU8::new(0),
            upgraded: AtomicBool::new(false),
        }
    }
}

impl ConnTrack {
    fn touch(&self) -> Instant {
        let now = Instant::now();
        let millis = now.duration_since(self.epoch).as_millis() as u64;
        self.last_active.store(millis, Ordering::Relaxed);
        now
    }

    /// A request reached the handler; returns the flags of its head.
    pub fn begin_request(&self) -> u8 {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.started.fetch_add(1, Ordering::AcqRel);
        self.head_flags.swap(0, Ordering::AcqRel)
    }

    /// A request's response finished (or was abandoned).
    pub fn end_request(&self) {
        self.touch();
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// The connection now carries an upgraded protocol: its bytes are no longer HTTP heads.
    pub fn mark_upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    fn head_in_progress(&self) -> bool {
        let pending = self.head_pending.load(Ordering::Acquire);
        pending != 0 && pending - 1 == self.started.load(Ordering::Acquire)
    }

    /// When the connection has idled too long, if nothing happens before: `first` after
    /// accept while it has sent no request (so silent sockets cannot hold the listener's
    /// connection slots for a whole keep-alive period), `idle` after that.
    pub fn idle_deadline(&self, first: Duration, idle: Duration) -> tokio::time::Instant {
        let wait = if self.started.load(Ordering::Acquire) == 0 {
            first
        } else {
            idle
        };
        let last = Duration::from_millis(self.last_active.load(Ordering::Relaxed));
        tokio::time::Instant::from_std(self.epoch + last + wait)
    }

    /// Whether the connection has had no request, head or byte for as long as
    /// [`ConnTrack::idle_deadline`] allows.
    pub fn is_idle(&self, first: Duration, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && !self.head_in_progress()
            && tokio::time::Instant::now() >= self.idle_deadline(first, idle)
    }
}

/// Scans an HTTP/1 request head for the framing headers as its bytes arrive, keeping only the
/// start of the current line: enough to recognise the two header names.
#[derive(Debug, Default)]
struct HeadScan {
    /// Bytes fed so far.
    seen: usize,
    /// Lines completed; the request line is the first.
    lines: usize,
    /// The current line's first bytes, lowercased.
    start: [u8; LINE_START],
    /// The current line's length so far.
    len: usize,
    /// Whether the current line's last byte so far is a carriage return.
    cr: bool,
    /// Whether the current line may be one of the two headers (by its first letter).
    candidate: bool,
    flags: u8,
    done: bool,
}

/// Bytes of a line kept: the longer name with its colon, "transfer-encoding:".
const LINE_START: usize = 18;
const CL: u8 = 2;
const TE: u8 = 4;

impl HeadScan {
    /// Feeds bytes; returns the head flags once the blank line ending the head is seen.
    fn feed(&mut self, data: &[u8], limit: usize) -> Option<u8> {
        if self.done || self.seen > limit {
            return None;
        }
        self.seen += data.len();
        let mut rest = data;
        while !rest.is_empty() {
            let newline = rest.iter().position(|b| *b == b'\n');
            let line = &rest[..newline.unwrap_or(rest.len())];
            rest = newline.map_or(&[], |nl| &rest[nl + 1..]);
            if self.len == 0
                && let Some(first) = line.first()
            {
                self.candidate = matches!(first.to_ascii_lowercase(), b'c' | b't');
            }
            if self.candidate {
                let kept = self.len.min(LINE_START);
                for (to, from) in self.start[kept..].iter_mut().zip(line) {
                    *to = from.to_ascii_lowercase();
                }
            }
            self.len += line.len();
            if let Some(last) = line.last() {
                self.cr = *last == b'\r';
            }
            if newline.is_none() {
                break;
            }
            let content = self.len - usize::from(self.cr);
            let kept = if self.candidate {
                self.len.min(LINE_START)
            } else {
                0
            };
            (self.len, self.cr, self.candidate) = (0, false, false);
            self.lines += 1;
            if self.lines == 1 {
                continue;
            }
            if content == 0 {
                self.done = true;
                let both = self.flags & (CL | TE) == CL | TE;
                return Some(if both { HEAD_CL_AND_TE } else { 0 });
            }
            let start = &self.start[..kept];
            if start.starts_with(b"content-length:") {
                self.flags |= CL;
            } else if start.starts_with(b"transfer-encoding:") {
                self.flags |= TE;
            }
        }
        None
    }
}

struct HeadState {
    seq: u64,
    /// When the head's first bytes arrived.
    since: Instant,
    /// Armed only once a read waits for the rest of a head: most heads arrive whole.
    deadline: Option<Pin<Box<Sleep>>>,
    scan: HeadScan,
}

/// The I/O under one client connection (after TLS).
pub struct ConnIo<S> {
    inner: S,
    track: Arc<ConnTrack>,
    listener: Arc<str>,
    head_timeout: Duration,
    head_limit: usize,
    head: Option<HeadState>,
    h2: bool,
    first_read: bool,
    timed_out: bool,
    responses_written: u64,
}

impl<S> ConnIo<S> {
    /// Wraps `inner`. `h2` when ALPN already chose HTTP/2.
    pub fn new(
        inner: S,
        track: Arc<ConnTrack>,
        listener: Arc<str>,
        head_timeout: Duration,
        head_limit: usize,
        h2: bool,
    ) -> Self {
        ConnIo {
            inner,
            track,
            listener,
            head_timeout,
            head_limit,
            head: None,
            h2,
            first_read: true,
            timed_out: false,
            responses_written: 0,
        }
    }

    fn drop_stale_head(&mut self) {
        let started = self.track.started.load(Ordering::Acquire);
        let upgraded = self.track.upgraded.load(Ordering::Acquire);
        if self
            .head
            .as_ref()
            .is_some_and(|h| h.seq != started || upgraded)
        {
            self.head = None;
        }
    }

    fn observe_read(&mut self, data: &[u8]) {
        let now = self.track.touch();
        if self.first_read {
            self.first_read = false;
            self.h2 |= data.starts_with(b"PRI * HTTP/2.0");
        }
        if self.h2 || self.track.upgraded.load(Ordering::Acquire) {
            return;
        }
        self.drop_stale_head();
        if self.track.in_flight.load(Ordering::Acquire) > 0 {
            return;
        }
        let head = self.head.get_or_insert_with(|| {
            let seq = self.track.started.load(Ordering::Acquire);
            self.track.head_pending.store(seq + 1, Ordering::Release);
            HeadState {
                seq,
                since: now,
                deadline: None,
                scan: HeadScan::default(),
            }
        });
        if let Some(flags) = head.scan.feed(data, self.head_limit) {
            self.track.head_flags.store(flags, Ordering::Release);
        }
    }

    /// Notes response heads hyper writes for requests the handler never saw (its automatic
    /// 400/431 answers to unparsable heads) so they are logged like every other answer.
    fn observe_write(&mut self, data: &[u8]) {
        if self.h2
            || self.track.upgraded.load(Ordering::Acquire)
            || !data.starts_with(b"HTTP/1.")
            || data.get(9) == Some(&b'1')
        {
            return;
        }
        self.responses_written += 1;
        if self.responses_written > self.track.started.load(Ordering::Acquire) {
            self.responses_written -= 1;
            let status = std::str::from_utf8(data.get(9..12).unwrap_or_default())
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let id = new_request_id();
            let id = id.to_str().unwrap_or_default();
            access_log::rejected(&self.listener, id, status, "malformed_head");
        }
    }
}

impl<S: AsyncWrite + Unpin> ConnIo<S> {
    /// Answers 408 on the raw stream: best effort, the connection closes right after.
    fn answer_timeout(&mut self, cx: &mut Context<'_>) {
        let id = new_request_id();
        let id = id.to_str().unwrap_or_default();
        let body = format!("408 Request Timeout (request id {id})\n");
        let response = format!(
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nconnection: close\r\nx-request-id: {id}\r\n\r\n{body}",
            body.len()
        );
        let _ = Pin::new(&mut self.inner).poll_write(cx, response.as_bytes());
        let _ = Pin::new(&mut self.inner).poll_flush(cx);
        self.timed_out = true;
        self.head = None;
        access_log::rejected(&self.listener, id, 408, "header_read_timeout");
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.timed_out {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let data = &buf.filled()[before..];
                if !data.is_empty() {
                    self.observe_read(data);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                self.drop_stale_head();
                let timeout = self.head_timeout;
                let expired = self.head.as_mut().is_some_and(|h| {
                    !h.scan.done
                        && h.deadline
                            .get_or_insert_with(|| {
                                let at = tokio::time::Instant::from_std(h.since + timeout);
                                Box::pin(tokio::time::sleep_until(at))
                            })
                            .as_mut()
                            .poll(cx)
                            .is_ready()
                });
                if expired {
                    self.answer_timeout(cx);
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.observe_write(data);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0)
            && let Some(first) = bufs.iter().find(|b| !b.is_empty())
        {
            self.observe_write(first);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scan(chunks: &[&str]) -> Option<u8> {
        let mut s = HeadScan::default();
        chunks.iter().find_map(|c| s.feed(c.as_bytes(), 1024))
    }

    mod properties {
        use super::*;
        use portico_test_support::fuzz::CASES;
        use proptest::prelude::*;

        /// What the scan must find, read the plain way: the head's lines up to the first empty
        /// one, each checked for the two header names.
        fn reference(data: &[u8]) -> Option<u8> {
            let mut flags = 0;
            let mut lines = data.split(|b| *b == b'\n');
            lines.next_back(); // Not ended by a newline: not a line yet.
            for (n, line) in lines.enumerate() {
                if n == 0 {
                    continue;
                }
                if line.strip_suffix(b"\r").unwrap_or(line).is_empty() {
                    return Some(if flags == CL | TE { HEAD_CL_AND_TE } else { 0 });
                }
                let lower = line.to_ascii_lowercase();
                if lower.starts_with(b"content-length:") {
                    flags |= CL;
                } else if lower.starts_with(b"transfer-encoding:") {
                    flags |= TE;
                }
            }
            None
        }

        fn head_bytes() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(b"\r\n".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\r".to_vec()),
                Just(b"Content-Length: 1".to_vec()),
                Just(b"TRANSFER-ENCODING: chunked".to_vec()),
                Just(b"transfer-encoding:".to_vec()),
                Just(b"content-length".to_vec()),
                Just(b"Host: a".to_vec()),
                Just(b"GET / HTTP/1.1".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..8),
            ];
            proptest::collection::vec(piece, 0..16).prop_map(|p| p.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(CASES))]

            /// However a head's bytes are split into reads, the scan finds what reading the
            /// whole head line by line finds, and never panics.
            #[test]
            fn the_scan_does_not_depend_on_how_a_head_is_split(
                data in head_bytes(),
                cuts in proptest::collection::vec(any::<usize>(), 0..6),
            ) {
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
                cuts.sort_unstable();
                let mut scan = HeadScan::default();
                let mut found = None;
                let mut from = 0;
                for cut in cuts.into_iter().chain([data.len()]) {
                    if found.is_none() {
                        found = scan.feed(&data[from..cut], usize::MAX / 2);
                    }
                    from = cut;
                }
                prop_assert_eq!(found, reference(&data), "{:?}", String::from_utf8_lossy(&data));
            }
        }
    }

    #[test]
    fn head_scan_finds_framing_headers_across_chunks() {
        let cases: &[(&[&str], Option<u8>)] = &[
            (&["GET / HTTP/1.1\r\nHost: a\r\n\r\n"], Some(0)),
            (
                &["POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"],
                Some(HEAD_CL_AND_TE),
            ),
            (
                &[
                    "POST / HTTP/1.1\r\ntransfer-enc",
                    "oding: chunked\r\ncontent-LENGTH: 3\r\n",
                    "\r\n",
                ],
                Some(HEAD_CL_AND_TE),
            ),
            (
                &["POST / HTTP/1.1\nContent-Length: 3\nTransfer-Encoding: x\n\n"],
                Some(HEAD_CL_AND_TE),
            ),
            (&["POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n"], Some(0)),
            (&["GET / HTTP/1.1\r\nHost: a\r\n"], None),
        ];
        for (chunks, expected) in cases {
            assert_eq!(scan(chunks), *expected, "{chunks:?}");
        }
    }

    #[test]
    fn head_scan_gives_up_past_the_limit() {
        let mut s = HeadScan::default();
        let long = "x".repeat(2000);
        assert_eq!(s.feed(long.as_bytes(), 1024), None);
        assert_eq!(s.feed(b"\r\n\r\n", 1024), None);
    }
}
