//! [`SharedValue`]: how typed values are encoded in shared data. All encodings are fixed-size
//! little-endian, written and read with [`crate::bytes`], so every worker (and every build) reads
//! the same bytes the same way.

pub use crate::bytes::DecodeError;
use crate::bytes::{ByteReader, ByteWriter};

/// A value that can live in shared data.
pub trait SharedValue: Sized {
    /// The value's bytes.
    fn encode(&self) -> Vec<u8>;
    /// The value from its bytes; any malformed input is an error, never a panic.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// Decodes all of `bytes` as a `what` with `read`; leftover bytes are an error.
fn decode_all<'a, T>(
    bytes: &'a [u8],
    what: &'static str,
    read: impl FnOnce(&mut ByteReader<'a>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let mut input = ByteReader::new(bytes, what);
    let value = read(&mut input)?;
    input.finish()?;
    Ok(value)
}

impl SharedValue for u64 {
    fn encode(&self) -> Vec<u8> {
        let mut out = ByteWriter::with_capacity(8);
        out.u64(*self);
        out.into_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_all(bytes, "u64", ByteReader::u64)
    }
}

impl SharedValue for i64 {
    fn encode(&self) -> Vec<u8> {
        let mut out = ByteWriter::with_capacity(8);
        out.i64(*self);
        out.into_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_all(bytes, "i64", ByteReader::i64)
    }
}

/// A fixed array of `u64`s: `N` little-endian words.
impl<const N: usize> SharedValue for [u64; N] {
    fn encode(&self) -> Vec<u8> {
        let mut out = ByteWriter::with_capacity(N * 8);
        for word in self {
            out.u64(*word);
        }
        out.into_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_all(bytes, "[u64; N]", |input| {
            let mut words = [0u64; N];
            for word in &mut words {
                *word = input.u64()?;
            }
            Ok(words)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_little_endian() {
        assert_eq!(258u64.encode(), [2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(u64::decode(&u64::MAX.encode()), Ok(u64::MAX));
        assert_eq!(i64::decode(&(-5i64).encode()), Ok(-5));
        assert_eq!(
            <[u64; 3]>::decode(&[1, u64::MAX, 0].encode()),
            Ok([1, u64::MAX, 0])
        );
    }

    #[test]
    fn garbage_bytes_are_errors() {
        assert!(u64::decode(b"").is_err());
        assert!(u64::decode(b"1234567").is_err());
        assert!(i64::decode(b"123456789").is_err());
        assert!(<[u64; 2]>::decode(&[0u8; 15]).is_err());
        assert_eq!(
            u64::decode(b"abc").unwrap_err().to_string(),
            "cannot decode u64: needs 8 bytes at offset 0, 3 left"
        );
    }
}
