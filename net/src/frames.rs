//! Frames on QUIC streams: a reader that yields whole messages from a long-lived stream, a
//! one-shot read of a stream that carries exactly one frame, and a write.

use bramble_wire::codec::{HEADER_LEN, encode_frame};
use bramble_wire::{DecodeError, EncodeError, FrameDecoder, MAX_FRAME_LEN};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes are not a valid frame: the peer broke the protocol.
    #[error("bad frame: {0}")]
    Decode(#[from] DecodeError),
    /// The stream or connection failed.
    #[error("{0}")]
    Stream(String),
}

/// Whole messages from one stream.
pub struct FrameReader {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new(recv: quinn::RecvStream) -> Self {
        Self {
            recv,
            decoder: FrameDecoder::default(),
            buf: vec![0; 64 * 1024],
        }
    }

    /// The next message; `None` once the peer finished the stream between frames.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ReadError> {
        loop {
            if let Some(msg) = self.decoder.next_msg()? {
                return Ok(Some(msg));
            }
            match self.recv.read(&mut self.buf).await {
                Ok(Some(n)) => self.decoder.push(&self.buf[..n]),
                Ok(None) => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
                Err(e) => return Err(ReadError::Stream(e.to_string())),
            }
        }
    }

    /// A message already buffered, without reading (frames that came with an earlier one).
    pub fn buffered<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ReadError> {
        Ok(self.decoder.next_msg()?)
    }
}

/// Reads a stream that carries exactly one frame and then ends.
pub async fn read_one<T: DeserializeOwned>(recv: &mut quinn::RecvStream) -> Result<T, ReadError> {
    let bytes = recv
        .read_to_end(MAX_FRAME_LEN + HEADER_LEN)
        .await
        .map_err(|e| ReadError::Stream(e.to_string()))?;
    let mut decoder = FrameDecoder::default();
    decoder.push(&bytes);
    let msg = decoder
        .next_msg()?
        .ok_or(ReadError::Decode(DecodeError::Truncated(bytes.len())))?;
    decoder.finish()?;
    Ok(msg)
}

/// Writing a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The message cannot be framed (too large).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The stream or connection failed.
    #[error("{0}")]
    Stream(String),
}

/// Encodes `msg` into `scratch` (cleared first) and writes it to `send`.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
    scratch: &mut Vec<u8>,
) -> Result<(), WriteError> {
    scratch.clear();
    encode_frame(msg, scratch)?;
    send.write_all(scratch)
        .await
        .map_err(|e| WriteError::Stream(e.to_string()))
}
