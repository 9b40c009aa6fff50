//! Frames on QUIC streams: a reader that yields whole messages from a long-lived stream, a
//! bounded one-shot read of a stream that carries exactly one frame, and a write.

use std::sync::Arc;
use std::time::Duration;

use bramble_wire::codec::{HEADER_LEN, decode_body, encode_frame};
use bramble_wire::{DecodeError, EncodeError, FrameDecoder, MAX_FRAME_LEN};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes are not a valid frame: the peer broke the protocol.
    #[error("bad frame: {0}")]
    Decode(#[from] DecodeError),
    /// The stream or connection failed.
    #[error("{0}")]
    Stream(String),
    /// The peer sent nothing for this long in the middle of a frame.
    #[error("nothing received for {} s", .0.as_secs())]
    Idle(Duration),
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

/// Memory for one-frame streams being read (requests, large results), shared by the
/// streams of one connection and by every connection: a reader takes a frame's length from
/// both before it allocates the body and gives it back once the frame is decoded. A greedy
/// peer then waits for its own connection's share, and all peers together for the total.
#[derive(Clone, Debug)]
pub struct Budget {
    conn: Arc<Semaphore>,
    total: Arc<Semaphore>,
}

impl Budget {
    /// A budget of `total` bytes for everyone; [`Budget::connection`] gives each connection
    /// its share.
    pub fn new(total: usize) -> Self {
        Self {
            conn: Arc::new(Semaphore::new(total)),
            total: Arc::new(Semaphore::new(total)),
        }
    }

    /// The budget of one new connection: at most `bytes` of it, out of the shared total.
    pub fn connection(&self, bytes: usize) -> Self {
        Self {
            conn: Arc::new(Semaphore::new(bytes)),
            total: self.total.clone(),
        }
    }

    async fn take(&self, bytes: usize) -> (SemaphorePermit<'_>, SemaphorePermit<'_>) {
        // Never more than a budget holds (the frame limit keeps it far below).
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        let closed = "budget semaphores are never closed";
        let conn = self.conn.acquire_many(n).await.expect(closed);
        let total = self.total.acquire_many(n).await.expect(closed);
        (conn, total)
    }
}

/// Reads a stream that carries exactly one frame (the end of the stream is not waited for).
/// Every read must make progress within `idle`, and the body is allocated only once the
/// budget has room for it.
pub async fn read_one<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    budget: &Budget,
    idle: Duration,
) -> Result<T, ReadError> {
    let mut header = [0u8; HEADER_LEN];
    read_exact(recv, &mut header, idle).await?;
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(DecodeError::TooLong {
            len,
            max: MAX_FRAME_LEN,
        }
        .into());
    }
    let _room = budget.take(len).await;
    let mut body = vec![0; len];
    read_exact(recv, &mut body, idle).await?;
    Ok(decode_body(&body)?)
}

/// Fills `buf`, each read within `idle`.
async fn read_exact(
    recv: &mut quinn::RecvStream,
    buf: &mut [u8],
    idle: Duration,
) -> Result<(), ReadError> {
    let mut filled = 0;
    while filled < buf.len() {
        match tokio::time::timeout(idle, recv.read(&mut buf[filled..])).await {
            Ok(Ok(Some(n))) => filled += n,
            Ok(Ok(None)) => return Err(DecodeError::Truncated(filled).into()),
            Ok(Err(e)) => return Err(ReadError::Stream(e.to_string())),
            Err(_) => return Err(ReadError::Idle(idle)),
        }
    }
    Ok(())
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
