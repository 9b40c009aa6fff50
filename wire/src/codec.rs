//! Framing: a u32 little-endian body length, then one postcard value.
//!
//! The length is checked against a maximum *before* anything is allocated, and bodies are
//! decoded with `take_from_bytes`: trailing bytes inside a frame are an error, not ignored.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest frame body accepted by default (16 MiB): room for a task's capped output and a
/// large scatter chunk, small enough that a hostile length cannot exhaust a Pi's memory.
pub const MAX_FRAME_LEN: usize = 16 << 20;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Encoding failed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The message does not fit the output buffer or exceeds [`MAX_FRAME_LEN`].
    #[error("message too large for frame ({0} bytes or more)")]
    TooLarge(usize),
    /// postcard refused the value.
    #[error("cannot encode message: {0}")]
    Postcard(#[from] postcard::Error),
}

/// Decoding failed; the connection that sent it should be closed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The peer announced a body larger than the maximum.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
    /// The body is not a valid encoding of the expected message.
    #[error("malformed frame body: {0}")]
    Body(#[from] postcard::Error),
    /// The body decoded but bytes were left over.
    #[error("{0} trailing bytes after message")]
    Trailing(usize),
    /// The body holds more elements than its size justifies (many empty ones).
    #[error("a frame of {0} bytes decodes to more than {EXPANSION} times its size")]
    Inflated(usize),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({0} bytes buffered)")]
    Truncated(usize),
}

/// Appends one frame (length + body) to `out`.
pub fn encode_frame<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let mut out_vec = std::mem::take(out);
    out_vec = postcard::to_extend(msg, out_vec)?;
    *out = out_vec;
    let len = out.len() - start - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(EncodeError::TooLarge(len));
    }
    let len32 = u32::try_from(len).map_err(|_| EncodeError::TooLarge(len))?;
    out[start..start + HEADER_LEN].copy_from_slice(&len32.to_le_bytes());
    Ok(())
}

/// Encodes one frame into `buf` without allocating; returns the frame's bytes.
pub fn encode_frame_to_slice<'b, T: Serialize>(
    msg: &T,
    buf: &'b mut [u8],
) -> Result<&'b [u8], EncodeError> {
    let cap = buf.len();
    let (header, body) = buf
        .split_first_chunk_mut::<HEADER_LEN>()
        .ok_or(EncodeError::TooLarge(cap))?;
    let len = match postcard::to_slice(msg, body) {
        Ok(used) => used.len(),
        Err(postcard::Error::SerializeBufferFull) => return Err(EncodeError::TooLarge(cap)),
        Err(e) => return Err(e.into()),
    };
    let len32 = u32::try_from(len).map_err(|_| EncodeError::TooLarge(len))?;
    *header = len32.to_le_bytes();
    Ok(&buf[..HEADER_LEN + len])
}

/// A frame body may decode to at most this many times its size in sequence elements...
pub const EXPANSION: usize = 8;
/// ... plus this much (small frames of many tiny elements, e.g. a chunk of empty results).
pub const EXPANSION_SLACK: usize = 4 << 20;

/// Decodes exactly one value from a whole frame body, in at most [`EXPANSION`] times its size
/// (plus [`EXPANSION_SLACK`]) of sequence elements.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let allowance = EXPANSION * body.len() + EXPANSION_SLACK;
    let (decoded, exhausted) =
        crate::serde_bounded::with_allowance(allowance, || postcard::take_from_bytes::<T>(body));
    let (msg, rest) = match decoded {
        Err(_) if exhausted => return Err(DecodeError::Inflated(body.len())),
        other => other?,
    };
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(msg)
}

/// Accumulates stream bytes and yields whole messages (push bytes in, pull messages out).
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the unread part of `buf`; consumed bytes are dropped lazily.
    pos: usize,
    max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    /// A decoder that rejects bodies longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            max,
        }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` until one is buffered.
    pub fn next_msg<T: DeserializeOwned>(&mut self) -> Result<Option<T>, DecodeError> {
        let unread = &self.buf[self.pos..];
        let Some((header, rest)) = unread.split_first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*header) as usize;
        if len > self.max {
            return Err(DecodeError::TooLong { len, max: self.max });
        }
        let Some(body) = rest.get(..len) else {
            // Reserve for the announced frame only now that the length has been checked.
            self.buf.reserve(len - rest.len());
            return Ok(None);
        };
        let msg = decode_body(body)?;
        self.pos += HEADER_LEN + len;
        Ok(Some(msg))
    }

    /// Call at end of stream: an error if a partial frame is left.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(DecodeError::Truncated(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_decode_whole() {
        let mut bytes = Vec::new();
        encode_frame(&(7u32, String::from("pi-01")), &mut bytes).unwrap();
        encode_frame(&(8u32, String::from("pi-02")), &mut bytes).unwrap();
        for split in 0..bytes.len() {
            let mut d = FrameDecoder::default();
            d.push(&bytes[..split]);
            let mut got = Vec::new();
            while let Some(m) = d.next_msg::<(u32, String)>().unwrap() {
                got.push(m);
            }
            d.push(&bytes[split..]);
            while let Some(m) = d.next_msg::<(u32, String)>().unwrap() {
                got.push(m);
            }
            assert_eq!(got, [(7, "pi-01".into()), (8, "pi-02".into())]);
            d.finish().unwrap();
        }
    }

    #[test]
    fn oversized_length_rejected_before_body_arrives() {
        let mut d = FrameDecoder::new(1024);
        d.push(&1025u32.to_le_bytes());
        assert!(matches!(
            d.next_msg::<u8>(),
            Err(DecodeError::TooLong { len: 1025, .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut d = FrameDecoder::default();
        d.push(&[2, 0, 0, 0, 5, 9]); // body [5, 9]: a u8 then a stray byte
        assert!(matches!(d.next_msg::<u8>(), Err(DecodeError::Trailing(1))));
    }

    #[test]
    fn truncated_stream_detected() {
        let mut d = FrameDecoder::default();
        d.push(&[3, 0, 0]);
        assert!(d.next_msg::<u8>().unwrap().is_none());
        assert!(matches!(d.finish(), Err(DecodeError::Truncated(3))));
    }

    #[test]
    fn slice_encoding_matches_vec_encoding() {
        let msg = (1u8, 300u32, String::from("x"));
        let mut v = Vec::new();
        encode_frame(&msg, &mut v).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(encode_frame_to_slice(&msg, &mut buf).unwrap(), &v[..]);
        let mut tiny = [0u8; 5];
        assert!(matches!(
            encode_frame_to_slice(&msg, &mut tiny),
            Err(EncodeError::TooLarge(5))
        ));
    }
}
