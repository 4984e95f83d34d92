//! Fixed-width little-endian byte encodings: [`ByteWriter`] builds them and [`ByteReader`] reads
//! them back, reporting short or over-long input as a [`DecodeError`] instead of panicking.
//!
//! Every shared-data value and the proxy-wasm header-map format are written and read with these,
//! so all workers (and all builds) agree on the bytes and hostile or stale bytes never trap.

use std::fmt;

/// Bytes that are not a valid encoding of the expected value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    what: &'static str,
    reason: String,
}

impl DecodeError {
    /// Bytes that cannot be a `what` (e.g. `"WindowState"`), because of `reason`.
    pub fn new(what: &'static str, reason: impl Into<String>) -> Self {
        Self {
            what,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot decode {}: {}", self.what, self.reason)
    }
}

impl std::error::Error for DecodeError {}

/// Builds a little-endian encoding field by field.
///
/// ```
/// use meshkit::bytes::ByteWriter;
/// let mut out = ByteWriter::with_capacity(5);
/// out.u8(1).u32(258);
/// assert_eq!(out.into_vec(), [1, 2, 1, 0, 0]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ByteWriter {
    out: Vec<u8>,
}

impl ByteWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            out: Vec::with_capacity(capacity),
        }
    }

    /// Appends one byte.
    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.out.push(value);
        self
    }

    /// Appends a `u32`, little-endian.
    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes(&value.to_le_bytes())
    }

    /// Appends a `u64`, little-endian.
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes(&value.to_le_bytes())
    }

    /// Appends an `i64`, little-endian two's complement.
    pub fn i64(&mut self, value: i64) -> &mut Self {
        self.bytes(&value.to_le_bytes())
    }

    /// Appends `value` as is (no length prefix).
    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.out.extend_from_slice(value);
        self
    }

    /// The encoded bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.out
    }
}

/// Reads a little-endian encoding field by field. Every read checks the remaining length and
/// fails with a [`DecodeError`] naming `what` without consuming anything;
/// [`finish`](Self::finish) rejects trailing bytes.
///
/// ```
/// use meshkit::bytes::ByteReader;
/// let mut input = ByteReader::new(&[1, 2, 1, 0, 0], "example");
/// assert_eq!(input.u8(), Ok(1));
/// assert_eq!(input.u32(), Ok(258));
/// assert!(input.finish().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct ByteReader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> ByteReader<'a> {
    /// A reader at the start of `bytes`, which encode a `what` (named in errors).
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, at: 0, what }
    }

    /// The next `n` bytes as they are.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let left = self.bytes.len() - self.at;
        match self
            .at
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.at..end))
        {
            Some(chunk) => {
                self.at += n;
                Ok(chunk)
            }
            None => Err(DecodeError::new(
                self.what,
                format!("needs {n} bytes at offset {}, {left} left", self.at),
            )),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        self.array::<1>().map(|[byte]| byte)
    }

    /// The next little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    /// The next little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    /// The next little-endian `i64`.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_le_bytes)
    }

    /// Ends the read: an error if any bytes are left over.
    pub fn finish(self) -> Result<(), DecodeError> {
        let left = self.bytes.len() - self.at;
        if left == 0 {
            Ok(())
        } else {
            Err(DecodeError::new(
                self.what,
                format!("{left} trailing bytes after offset {}", self.at),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_little_endian_fields_in_order() {
        let mut out = ByteWriter::new();
        out.u8(0xab).u32(0x0102_0304).u64(1).i64(-2).bytes(b"xy");
        let expected: Vec<u8> = [0xab, 4, 3, 2, 1]
            .into_iter()
            .chain(1u64.to_le_bytes())
            .chain((-2i64).to_le_bytes())
            .chain(*b"xy")
            .collect();
        assert_eq!(out.into_vec(), expected);
    }

    #[test]
    fn reads_back_what_was_written() {
        let mut out = ByteWriter::with_capacity(23);
        out.u8(7)
            .u32(u32::MAX)
            .u64(u64::MAX - 1)
            .i64(i64::MIN)
            .bytes(b"ab");
        let bytes = out.into_vec();
        let mut input = ByteReader::new(&bytes, "test value");
        assert_eq!(input.u8(), Ok(7));
        assert_eq!(input.u32(), Ok(u32::MAX));
        assert_eq!(input.u64(), Ok(u64::MAX - 1));
        assert_eq!(input.i64(), Ok(i64::MIN));
        assert_eq!(input.take(2), Ok(&b"ab"[..]));
        assert_eq!(input.finish(), Ok(()));
    }

    #[test]
    fn a_short_read_is_an_error_naming_the_value_and_consumes_nothing() {
        let mut input = ByteReader::new(&[1, 2, 3], "WindowState");
        assert_eq!(
            input.u32().unwrap_err().to_string(),
            "cannot decode WindowState: needs 4 bytes at offset 0, 3 left"
        );
        assert_eq!(input.take(3), Ok(&[1u8, 2, 3][..]));
        assert!(input.u8().is_err());
        assert!(input.take(usize::MAX).is_err());
        assert_eq!(input.take(0), Ok(&[][..]));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut input = ByteReader::new(&[0; 9], "u64");
        assert_eq!(input.u64(), Ok(0));
        assert_eq!(
            input.finish().unwrap_err().to_string(),
            "cannot decode u64: 1 trailing bytes after offset 8"
        );
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq)]
    enum Field {
        U8(u8),
        U32(u32),
        U64(u64),
        I64(i64),
        Bytes(Vec<u8>),
    }

    fn field() -> impl Strategy<Value = Field> {
        prop_oneof![
            any::<u8>().prop_map(Field::U8),
            any::<u32>().prop_map(Field::U32),
            any::<u64>().prop_map(Field::U64),
            any::<i64>().prop_map(Field::I64),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Field::Bytes),
        ]
    }

    fn read_field(input: &mut ByteReader<'_>, like: &Field) -> Result<Field, DecodeError> {
        Ok(match like {
            Field::U8(_) => Field::U8(input.u8()?),
            Field::U32(_) => Field::U32(input.u32()?),
            Field::U64(_) => Field::U64(input.u64()?),
            Field::I64(_) => Field::I64(input.i64()?),
            Field::Bytes(bytes) => Field::Bytes(input.take(bytes.len())?.to_vec()),
        })
    }

    proptest! {
        #[test]
        fn any_field_sequence_round_trips(fields in proptest::collection::vec(field(), 0..12)) {
            let mut out = ByteWriter::new();
            for field in &fields {
                match field {
                    Field::U8(v) => out.u8(*v),
                    Field::U32(v) => out.u32(*v),
                    Field::U64(v) => out.u64(*v),
                    Field::I64(v) => out.i64(*v),
                    Field::Bytes(v) => out.bytes(v),
                };
            }
            let bytes = out.into_vec();
            let mut input = ByteReader::new(&bytes, "fields");
            for field in &fields {
                prop_assert_eq!(&read_field(&mut input, field)?, field);
            }
            prop_assert_eq!(input.finish(), Ok(()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            reads in proptest::collection::vec((0u8..5, 0usize..80), 0..24),
        ) {
            let mut input = ByteReader::new(&bytes, "garbage");
            let mut consumed = 0usize;
            for (kind, n) in reads {
                let before = input.clone();
                let got = match kind {
                    0 => input.u8().map(|_| 1),
                    1 => input.u32().map(|_| 4),
                    2 => input.u64().map(|_| 8),
                    3 => input.i64().map(|_| 8),
                    _ => input.take(n).map(<[u8]>::len),
                };
                match got {
                    Ok(len) => consumed += len,
                    Err(_) => prop_assert_eq!(input.at, before.at, "a failed read consumes nothing"),
                }
            }
            prop_assert_eq!(input.finish().is_ok(), consumed == bytes.len());
        }
    }
}
