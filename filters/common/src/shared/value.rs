//! [`SharedValue`]: how typed values are encoded in shared data. All encodings are fixed-size
//! little-endian so every worker (and every build) reads the same bytes the same way.

use std::fmt;

/// Stored bytes that are not a valid encoding of the expected type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    type_name: &'static str,
    reason: String,
}

impl DecodeError {
    /// Bytes that cannot be a `type_name`, because of `reason`.
    pub fn new(type_name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            type_name,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot decode {} from shared data: {}",
            self.type_name, self.reason
        )
    }
}

impl std::error::Error for DecodeError {}

/// A value that can live in shared data.
pub trait SharedValue: Sized {
    /// The value's bytes.
    fn encode(&self) -> Vec<u8>;
    /// The value from its bytes; any malformed input is an error, never a panic.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

fn exact<const N: usize>(type_name: &'static str, bytes: &[u8]) -> Result<[u8; N], DecodeError> {
    <[u8; N]>::try_from(bytes).map_err(|_| {
        DecodeError::new(
            type_name,
            format!("expected {N} bytes, got {}", bytes.len()),
        )
    })
}

impl SharedValue for u64 {
    fn encode(&self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        exact::<8>("u64", bytes).map(u64::from_le_bytes)
    }
}

impl SharedValue for i64 {
    fn encode(&self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        exact::<8>("i64", bytes).map(i64::from_le_bytes)
    }
}

/// A fixed array of `u64`s: `N` little-endian words.
impl<const N: usize> SharedValue for [u64; N] {
    fn encode(&self) -> Vec<u8> {
        self.iter().flat_map(|word| word.to_le_bytes()).collect()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != N * 8 {
            return Err(DecodeError::new(
                "[u64; N]",
                format!("expected {} bytes, got {}", N * 8, bytes.len()),
            ));
        }
        let mut words = [0u64; N];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_le_bytes(exact::<8>("[u64; N]", chunk)?);
        }
        Ok(words)
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
            "cannot decode u64 from shared data: expected 8 bytes, got 3"
        );
    }
}
