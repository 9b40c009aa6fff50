//! Decoding that allocates no more than the frame justifies.
//!
//! serde's own `Vec<T>` preallocates up to 1 MiB from a length prefix alone, so a six-byte
//! frame claiming a billion elements costs a megabyte. Here a sequence preallocates at most a
//! few elements and grows only as elements actually decode (each takes at least one input
//! byte), and byte strings are read as one slice of the input. The encodings are unchanged:
//! postcard writes a byte string exactly like a `Vec<u8>` or a `String` (a varint length,
//! then the bytes), so these are attributes on fields, not new formats.
//!
//! Element counts are bounded too ([`with_allowance`]): a frame may decode to at most a few
//! times its own size, however its elements are shaped (an empty element costs one input byte
//! and a whole struct in memory).

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;

/// Bytes reserved for a sequence before any element has decoded.
const FIRST_RESERVE: usize = 1024;

/// `#[serde(with = "bytes")]` on a `Vec<u8>`.
pub mod bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }
}

/// `#[serde(with = "opt_bytes")]` on an `Option<Vec<u8>>`.
pub mod opt_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&AsBytes(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<Owned>::deserialize(d).map(|o| o.map(|b| b.0))
    }
}

/// `#[serde(with = "byte_vecs")]` on a `Vec<Vec<u8>>`.
pub mod byte_vecs {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| AsBytes(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let owned: Vec<Owned> = d.deserialize_seq(SeqVisitor(PhantomData))?;
        Ok(owned.into_iter().map(|b| b.0).collect())
    }
}

/// `#[serde(with = "seq")]` on any `Vec<T>`: a bounded preallocation.
pub mod seq {
    use super::*;

    pub fn serialize<T: serde::Serialize, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(SeqVisitor(PhantomData))
    }
}

struct AsBytes<'a>(&'a [u8]);

impl serde::Serialize for AsBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct Owned(Vec<u8>);

impl<'de> Deserialize<'de> for Owned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(BytesVisitor).map(Owned)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<u8>, A::Error> {
        SeqVisitor(PhantomData).visit_seq(seq)
    }
}

thread_local! {
    /// Bytes the current decode may still spend on sequence elements (`None`: no limit).
    static ALLOWANCE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs one decode, `f`, in which sequences may spend at most `bytes` on their elements (each
/// element costs its size in memory, charged as the sequence grows). Returns `f`'s result and
/// whether the allowance ran out (then `f` failed because of it).
pub fn with_allowance<R>(bytes: usize, f: impl FnOnce() -> R) -> (R, bool) {
    let outer = ALLOWANCE.replace(Some(bytes));
    let result = f();
    let exhausted = ALLOWANCE.replace(outer) == Some(usize::MAX);
    (result, exhausted)
}

/// Takes `bytes` from the allowance; false (and marks it exhausted) if there is not enough.
fn charge(bytes: usize) -> bool {
    ALLOWANCE.with(|a| match a.get() {
        None => true,
        Some(left) => match left.checked_sub(bytes) {
            // usize::MAX marks "exhausted"; a real allowance never gets there.
            Some(rest) if rest != usize::MAX => {
                a.set(Some(rest));
                true
            }
            _ => {
                a.set(Some(usize::MAX));
                false
            }
        },
    })
}

struct SeqVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let size = std::mem::size_of::<T>().max(1);
        let first = seq
            .size_hint()
            .unwrap_or(0)
            .min((FIRST_RESERVE / size).max(1));
        let too_many = || serde::de::Error::custom("more elements than the frame justifies");
        if !charge(first * size) {
            return Err(too_many());
        }
        let mut out = Vec::with_capacity(first);
        while let Some(v) = seq.next_element()? {
            if out.len() == out.capacity() {
                // Growth is charged as it happens: doubling, as `push` would.
                let more = out.capacity().max(4);
                if !charge(more * size) {
                    return Err(too_many());
                }
                out.reserve_exact(more);
            }
            out.push(v);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain {
        a: Vec<u8>,
        b: Option<Vec<u8>>,
        c: Vec<Vec<u8>>,
        d: Vec<u32>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Bounded {
        #[serde(with = "super::bytes")]
        a: Vec<u8>,
        #[serde(with = "super::opt_bytes")]
        b: Option<Vec<u8>>,
        #[serde(with = "super::byte_vecs")]
        c: Vec<Vec<u8>>,
        #[serde(with = "super::seq")]
        d: Vec<u32>,
    }

    #[test]
    fn same_bytes_as_the_plain_types() {
        let plain = Plain {
            a: vec![1, 2, 255],
            b: Some(vec![7]),
            c: vec![vec![], vec![9, 9]],
            d: vec![300, 1],
        };
        let bounded = Bounded {
            a: plain.a.clone(),
            b: plain.b.clone(),
            c: plain.c.clone(),
            d: plain.d.clone(),
        };
        let bytes = postcard::to_allocvec(&plain).unwrap();
        assert_eq!(postcard::to_allocvec(&bounded).unwrap(), bytes);
        assert_eq!(postcard::from_bytes::<Bounded>(&bytes).unwrap(), bounded);
    }

    #[test]
    fn elements_beyond_the_allowance_are_an_error() {
        // 100,000 empty byte strings: 100 KB of input, 2.4 MB of Vec headers.
        let c: Vec<Vec<u8>> = vec![Vec::new(); 100_000];
        let bytes = postcard::to_allocvec(&Bounded {
            a: vec![],
            b: None,
            c,
            d: vec![],
        })
        .unwrap();
        let decode = |allowance| {
            super::with_allowance(allowance, || postcard::from_bytes::<Bounded>(&bytes))
        };
        let (decoded, exhausted) = decode(4 << 20);
        assert_eq!(decoded.unwrap().c.len(), 100_000);
        assert!(!exhausted);
        let (decoded, exhausted) = decode(1 << 20);
        assert!(decoded.is_err());
        assert!(exhausted);
    }

    #[test]
    fn a_claimed_length_beyond_the_input_is_an_error() {
        // a: 2^28 bytes announced, three present.
        assert!(postcard::from_bytes::<Bounded>(&[0x80, 0x80, 0x80, 0x80, 0x01, 1, 2, 3]).is_err());
    }
}
