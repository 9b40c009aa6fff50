//! Decoding that allocates no more than the frame justifies.
//!
//! serde's own `Vec<T>` preallocates up to 1 MiB from a length prefix alone, so a six-byte
//! frame claiming a billion elements costs a megabyte. Here a sequence preallocates at most a
//! few elements and grows only as elements actually decode (each takes at least one input
//! byte), and byte strings are read as one slice of the input. The encodings are unchanged:
//! postcard writes a byte string exactly like a `Vec<u8>` or a `String` (a varint length,
//! then the bytes), so these are attributes on fields, not new formats.

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

struct SeqVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let room = FIRST_RESERVE / std::mem::size_of::<T>().max(1);
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(room.max(1)));
        while let Some(v) = seq.next_element()? {
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
    fn a_claimed_length_beyond_the_input_is_an_error() {
        // a: 2^28 bytes announced, three present.
        assert!(postcard::from_bytes::<Bounded>(&[0x80, 0x80, 0x80, 0x80, 0x01, 1, 2, 3]).is_err());
    }
}
