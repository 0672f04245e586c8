//! A request body that can be sent more than once, for retries: what each try reads from the
//! client is kept, up to a bound, and the next try reads the kept bytes before it goes on
//! reading from the client.
//!
//! Only one try reads at a time: starting a try cuts the previous one off (its body fails),
//! so a connection still sending the old try's body cannot take bytes meant for the new one.
//! A body that grew past the bound can no longer be replayed; the try that read it goes on.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{BoxError, ProxyBody};

/// A request body shared by the tries of one request.
pub struct Replay {
    shared: Arc<Mutex<State>>,
    size: SizeHint,
}

struct State {
    source: ProxyBody,
    /// What tries have read so far, while it stays within `limit`.
    kept: Vec<Bytes>,
    kept_bytes: usize,
    limit: usize,
    /// The body grew past `limit`: it cannot be replayed.
    overflowed: bool,
    /// The source ended, with these trailers.
    ended: bool,
    trailers: Option<HeaderMap>,
    /// The current try; bodies of earlier tries fail.
    generation: u64,
}

impl Replay {
    /// Wraps `source`, keeping up to `limit` bytes for replay.
    pub fn new(source: ProxyBody, limit: usize) -> Replay {
        let size = source.size_hint();
        Replay {
            shared: Arc::new(Mutex::new(State {
                source,
                kept: Vec::new(),
                kept_bytes: 0,
                limit,
                overflowed: false,
                ended: false,
                trailers: None,
                generation: 0,
            })),
            size,
        }
    }

    /// Whether another try can still send the whole body.
    pub fn replayable(&self) -> bool {
        !lock(&self.shared).overflowed
    }

    /// The body of the next try; the previous try's body stops.
    pub fn attempt(&self) -> ProxyBody {
        let generation = {
            let mut state = lock(&self.shared);
            state.generation += 1;
            state.generation
        };
        Try {
            shared: self.shared.clone(),
            generation,
            next: 0,
            trailers_sent: false,
            size: self.size,
        }
        .boxed()
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every update leaves the state whole, so a poisoned lock is still good.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One try's view of the body.
struct Try {
    shared: Arc<Mutex<State>>,
    generation: u64,
    /// The next kept chunk to send; past the kept chunks, read from the source.
    next: usize,
    trailers_sent: bool,
    size: SizeHint,
}

/// A try's body read after a newer try started.
#[derive(Debug, thiserror::Error)]
#[error("the request body moved on to a newer try")]
struct Superseded;

impl Body for Try {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let shared = self.shared.clone();
        let mut state = lock(&shared);
        if state.generation != self.generation {
            return Poll::Ready(Some(Err(Superseded.into())));
        }
        if !state.overflowed && self.next < state.kept.len() {
            let chunk = state.kept[self.next].clone();
            self.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if state.ended {
            if self.trailers_sent {
                return Poll::Ready(None);
            }
            self.trailers_sent = true;
            return Poll::Ready(state.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        }
        let polled = Pin::new(&mut state.source).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !state.overflowed {
                        state.kept_bytes += data.len();
                        if state.kept_bytes > state.limit {
                            state.overflowed = true;
                            state.kept = Vec::new();
                        } else {
                            state.kept.push(data.clone());
                            self.next = state.kept.len();
                        }
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    state.trailers = Some(trailers.clone());
                    self.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                state.ended = true;
                self.trailers_sent = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        let state = lock(&self.shared);
        state.generation == self.generation
            && state.ended
            && (state.overflowed || self.next >= state.kept.len())
            && (state.trailers.is_none() || self.trailers_sent)
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::body;

    async fn read(b: ProxyBody) -> Result<Vec<u8>, String> {
        b.collect()
            .await
            .map(|c| c.to_bytes().to_vec())
            .map_err(|e| e.to_string())
    }

    fn chunks(parts: &[&'static str]) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        http_body_util::StreamBody::new(futures::stream::iter(frames)).boxed()
    }

    #[tokio::test]
    async fn a_later_try_sends_what_the_first_read_and_the_rest() {
        let replay = Replay::new(chunks(&["ab", "cd", "ef"]), 64);
        let mut first = replay.attempt();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        assert!(replay.replayable());
        let second = replay.attempt();
        assert!(
            first.frame().await.unwrap().is_err(),
            "the first try is cut off"
        );
        assert_eq!(read(second).await.unwrap(), b"abcdef");
        assert_eq!(read(replay.attempt()).await.unwrap(), b"abcdef");
        assert!(read(body::empty()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_body_past_the_bound_is_not_replayable() {
        let replay = Replay::new(chunks(&["abcd", "efgh"]), 6);
        assert_eq!(read(replay.attempt()).await.unwrap(), b"abcdefgh");
        assert!(!replay.replayable());
    }
}
