//! Prost's gRPC codec with small per-stream buffers, for streams that carry many small
//! messages at a time on one process (an agent's ACKs, a one-route diff): tonic starts each
//! stream with 8 KiB buffers each way, which 100,000 streams turn into 1.6 GB. A buffer still
//! grows for a larger message.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Each stream's encode and decode buffers start at this size.
pub const STREAM_BUFFER: usize = 1024;
/// Tonic's default: an encoded batch is handed to the stream once it passes this size.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Encodes `T` and decodes `U` with [`STREAM_BUFFER`]-sized buffers.
#[derive(Debug)]
pub struct SmallBuffers<T, U>(PhantomData<fn(T) -> U>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        SmallBuffers(PhantomData)
    }
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(buffers())
    }
}

fn buffers() -> BufferSettings {
    BufferSettings::new(STREAM_BUFFER, YIELD_THRESHOLD)
}
