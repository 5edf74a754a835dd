//! The gRPC codec of every Meridian service: prost's, except that a message that does not
//! decode is `INVALID_ARGUMENT` with the reason `MALFORMED_REQUEST` (prost's codec reports
//! `INTERNAL` without a reason, which reads as a server fault and which clients retry).

use std::marker::PhantomData;

use prost::Message as _;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder};

use crate::api::ErrorDetail;
use crate::REASON_METADATA_KEY;

/// The reason code of a request that is not a valid protobuf message of its method's type.
pub const MALFORMED_REQUEST: &str = crate::reasons::MALFORMED_REQUEST;

/// prost encoding and decoding, with typed decode errors.
#[derive(Debug, Clone)]
pub struct MeridianCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for MeridianCodec<T, U> {
    fn default() -> Self {
        Self { _types: PhantomData }
    }
}

impl<T, U> Codec for MeridianCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = MeridianDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        MeridianDecoder { inner: ProstCodec::<T, U>::raw_decoder(BufferSettings::default()) }
    }
}

/// prost's decoder, with its decode errors mapped to [`malformed`].
#[derive(Debug)]
pub struct MeridianDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: prost::Message + Default + Send + 'static> Decoder for MeridianDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(src).map_err(|s| if s.code() == Code::Internal { malformed(s.message()) } else { s })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

/// `INVALID_ARGUMENT` with reason `MALFORMED_REQUEST` (metadata and `ErrorDetail`).
pub fn malformed(detail: &str) -> Status {
    let message = format!("the request is not a valid message of this method: {detail}");
    let error =
        ErrorDetail { reason: MALFORMED_REQUEST.to_owned(), message: message.clone(), leader_hint: String::new() };
    let mut status = Status::with_details(Code::InvalidArgument, message, error.encode_to_vec().into());
    status.metadata_mut().insert(REASON_METADATA_KEY, tonic::metadata::MetadataValue::from_static(MALFORMED_REQUEST));
    status
}
