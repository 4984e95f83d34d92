//! The proxy-wasm ABI's serialized header-map format, as used by `proxy_get_header_map_pairs`,
//! `proxy_set_header_map_pairs` and `proxy_send_local_response`:
//! a little-endian `u32` pair count, then a `u32` key length and `u32` value length per pair, then
//! every key and value in order, each followed by a NUL byte.

use crate::bytes::{ByteReader, ByteWriter, DecodeError};

const WHAT: &str = "serialized header map";

/// One header: raw name and raw value bytes.
pub type HeaderPair = (Vec<u8>, Vec<u8>);

/// Serializes `pairs` in the ABI's header-map format.
pub fn encode_header_map<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let payload: usize = pairs
        .iter()
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 2)
        .sum();
    let mut out = ByteWriter::with_capacity(4 + pairs.len() * 8 + payload);
    out.u32(len_u32(pairs.len()));
    for (key, value) in pairs {
        out.u32(len_u32(key.as_ref().len()))
            .u32(len_u32(value.as_ref().len()));
    }
    for (key, value) in pairs {
        out.bytes(key.as_ref()).u8(0).bytes(value.as_ref()).u8(0);
    }
    out.into_vec()
}

/// Parses a serialized header map; empty input is an empty map. Input that does not follow the
/// format exactly (truncated, lengths that overflow, missing NULs, trailing bytes) is an error,
/// never a panic.
pub fn decode_header_map(bytes: &[u8]) -> Result<Vec<HeaderPair>, DecodeError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut input = ByteReader::new(bytes, WHAT);
    let count = input.u32()?;
    let table_len = usize::try_from(count)
        .ok()
        .and_then(|count| count.checked_mul(8))
        .ok_or_else(|| DecodeError::new(WHAT, format!("pair count {count} is too large")))?;
    // The length table fits in the input, so `count` is small enough to allocate for.
    let mut lengths = ByteReader::new(input.take(table_len)?, WHAT);
    let mut pairs = Vec::with_capacity(table_len / 8);
    for _ in 0..count {
        let key = take_terminated(&mut input, lengths.u32()?)?;
        let value = take_terminated(&mut input, lengths.u32()?)?;
        pairs.push((key.to_vec(), value.to_vec()));
    }
    input.finish()?;
    Ok(pairs)
}

fn len_u32(len: usize) -> u32 {
    // Header maps handed to the host are far below 4 GiB; saturate rather than wrap if not.
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// The next `len` bytes, which must be followed by a NUL.
fn take_terminated<'a>(input: &mut ByteReader<'a>, len: u32) -> Result<&'a [u8], DecodeError> {
    let len = usize::try_from(len)
        .map_err(|_| DecodeError::new(WHAT, format!("entry length {len} is too large")))?;
    let entry = input.take(len)?;
    match input.u8()? {
        0 => Ok(entry),
        _ => Err(DecodeError::new(WHAT, "entry is not NUL-terminated")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_pairs_including_binary_values() {
        let pairs: Vec<HeaderPair> = vec![
            (b":status".to_vec(), b"200".to_vec()),
            (b"x-bin".to_vec(), vec![0xff, 0x00, 0x80]),
            (b"empty".to_vec(), Vec::new()),
        ];
        assert_eq!(decode_header_map(&encode_header_map(&pairs)), Ok(pairs));
    }

    #[test]
    fn matches_the_abi_layout() {
        let encoded = encode_header_map(&[("a", "bc")]);
        assert_eq!(
            encoded,
            [1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'b', b'c', 0]
        );
    }

    #[test]
    fn empty_input_is_an_empty_map() {
        assert_eq!(decode_header_map(&[]), Ok(Vec::new()));
        assert_eq!(
            decode_header_map(&encode_header_map::<&str, &str>(&[])),
            Ok(Vec::new())
        );
    }

    #[test]
    fn rejects_truncated_and_lying_input() {
        let encoded = encode_header_map(&[("key", "value")]);
        for cut in 1..encoded.len() {
            assert!(
                decode_header_map(&encoded[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut huge_count = encoded.clone();
        huge_count[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_header_map(&huge_count).is_err());
        let mut huge_len = encoded.clone();
        huge_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_header_map(&huge_len).is_err());
        let mut no_nul = encoded.clone();
        no_nul[12 + 3] = b'!';
        assert!(decode_header_map(&no_nul).is_err());
        let mut trailing = encoded;
        trailing.push(0);
        assert!(decode_header_map(&trailing).is_err());
    }
}
