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

impl SharedValue for u64 {
    fn encode(&self) -> Vec<u8> {
        let mut out = ByteWriter::with_capacity(8);
        out.u64(*self);
        out.into_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = ByteReader::new(bytes, "u64");
        let value = input.u64()?;
        input.finish()?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_round_trips_little_endian() {
        assert_eq!(258u64.encode(), [2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(u64::decode(&u64::MAX.encode()), Ok(u64::MAX));
    }

    #[test]
    fn garbage_bytes_are_errors() {
        assert!(u64::decode(b"").is_err());
        assert!(u64::decode(b"1234567").is_err());
        assert!(u64::decode(b"123456789").is_err());
        assert_eq!(
            u64::decode(b"abc").unwrap_err().to_string(),
            "cannot decode u64: needs 8 bytes at offset 0, 3 left"
        );
    }
}
