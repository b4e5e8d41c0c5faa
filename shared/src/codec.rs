//! The protobuf codec of every generated client and server: prost's, except that a message that
//! does not parse is the caller's error (`INVALID_ARGUMENT`), not the server's (`INTERNAL`, which
//! tonic answers by default, following gRPC's status code table). INTERNAL is kept for our own
//! bugs, so an alert on it means one; the fuzz test (tests/tests/fuzz.rs) holds us to that.
//! Framing errors below the message (a bad compressed flag) stay INTERNAL, as gRPC requires.

use std::marker::PhantomData;

use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// [`ProstCodec`] with parse errors mapped to `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Default)]
pub struct ProtobufCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Codec for ProtobufCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ParseErrorIsInvalid<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ParseErrorIsInvalid {
            inner: self.inner.decoder(),
            _message: PhantomData,
        }
    }
}

/// Decodes like prost; a message that does not parse is `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct ParseErrorIsInvalid<U> {
    inner: ProstDecoder<U>,
    _message: PhantomData<U>,
}

impl<U: prost::Message + Default> Decoder for ParseErrorIsInvalid<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|status| {
            if status.code() == Code::Internal {
                Status::invalid_argument(format!("malformed request message: {}", status.message()))
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.inner.buffer_settings()
    }
}
