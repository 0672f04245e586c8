//! gRPC's message framing: each message is a 1-byte flag (bit 0: compressed; 0x80: a gRPC-Web
//! trailer frame), a 4-byte big-endian length and the message.

use bytes::{BufMut, Bytes, BytesMut};

/// The length of the prefix before each message.
pub const PREFIX: usize = 5;
/// The flag of a gRPC-Web trailer frame.
pub const TRAILER_FLAG: u8 = 0x80;

/// `payload` framed as one message with `flag`.
pub fn frame(flag: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(PREFIX + payload.len());
    out.put_u8(flag);
    // Messages framed here are the agent's own, far below 4 GiB.
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.put_slice(payload);
    out.freeze()
}

/// The first message of `body`, if the body holds a whole one: its flag and bytes.
pub fn first_message(body: &[u8]) -> Option<(u8, &[u8])> {
    let prefix = body.get(..PREFIX)?;
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    Some((prefix[0], body.get(PREFIX..PREFIX.checked_add(len)?)?))
}

/// Follows the message prefixes of a stream fed in pieces and finds a message declared larger
/// than the limit, before any of its bytes arrive.
#[derive(Debug)]
pub struct MessageLimit {
    limit: u64,
    /// Prefix bytes of the next message read so far.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
}

impl MessageLimit {
    /// A limit of `limit` bytes per message.
    pub fn new(limit: u64) -> Self {
        MessageLimit {
            limit,
            prefix: [0; PREFIX],
            prefix_len: 0,
            remaining: 0,
        }
    }

    /// Reads the next piece of the stream; `Err` with the declared length of a message over
    /// the limit.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), u64> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(data.len() as u64);
                self.remaining -= skip;
                data = &data[skip as usize..];
                continue;
            }
            let take = (PREFIX - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            self.prefix_len += take;
            data = &data[take..];
            if self.prefix_len == PREFIX {
                let p = self.prefix;
                let len = u64::from(u32::from_be_bytes([p[1], p[2], p[3], p[4]]));
                if len > self.limit {
                    return Err(len);
                }
                self.remaining = len;
                self.prefix_len = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let f = frame(0, b"hello");
        assert_eq!(&f[..], b"\0\0\0\0\x05hello");
        assert_eq!(first_message(&f), Some((0, &b"hello"[..])));
        assert_eq!(first_message(&f[..6]), None);
        assert_eq!(first_message(b"\x80\0\0"), None);
    }

    #[test]
    fn each_message_is_held_to_the_limit_whatever_the_pieces() {
        let mut stream = Vec::new();
        for len in [3usize, 10, 0, 10] {
            stream.extend_from_slice(&frame(0, &vec![7; len]));
        }
        for piece in [1, 2, 5, 7, stream.len()] {
            let mut limit = MessageLimit::new(10);
            for chunk in stream.chunks(piece) {
                limit.feed(chunk).unwrap();
            }
        }
        let mut over = MessageLimit::new(10);
        over.feed(&frame(0, &[1; 4])).unwrap();
        assert_eq!(over.feed(&frame(0, &[1; 11])[..3]), Ok(()));
        assert_eq!(over.feed(&frame(0, &[1; 11])[3..5]), Err(11));
    }
}
