//! The proxy-wasm ABI's serialized header-map format, as used by `proxy_get_header_map_pairs`,
//! `proxy_set_header_map_pairs` and `proxy_send_local_response`:
//! a little-endian `u32` pair count, then a `u32` key length and `u32` value length per pair, then
//! every key and value in order, each followed by a NUL byte.

use std::fmt;

/// A serialized header map that does not follow the format (truncated, or lengths that overflow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedHeaderMap {
    reason: &'static str,
}

impl fmt::Display for MalformedHeaderMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed serialized header map: {}", self.reason)
    }
}

impl std::error::Error for MalformedHeaderMap {}

/// One header: raw name and raw value bytes.
pub type HeaderPair = (Vec<u8>, Vec<u8>);

/// Serializes `pairs` in the ABI's header-map format.
pub fn encode_header_map<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let payload: usize = pairs
        .iter()
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 2)
        .sum();
    let mut out = Vec::with_capacity(4 + pairs.len() * 8 + payload);
    out.extend_from_slice(&len_u32(pairs.len()).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&len_u32(key.as_ref().len()).to_le_bytes());
        out.extend_from_slice(&len_u32(value.as_ref().len()).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key.as_ref());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    out
}

/// Parses a serialized header map; empty input is an empty map. Never panics on bad input.
pub fn decode_header_map(bytes: &[u8]) -> Result<Vec<HeaderPair>, MalformedHeaderMap> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let count = read_u32(bytes, 0).ok_or(malformed("missing pair count"))?;
    let count = usize::try_from(count).map_err(|_| malformed("pair count too large"))?;
    let lengths_end = count
        .checked_mul(8)
        .and_then(|n| n.checked_add(4))
        .filter(|&end| end <= bytes.len())
        .ok_or(malformed("pair count exceeds the data"))?;
    let mut pairs = Vec::with_capacity(count);
    let mut cursor = lengths_end;
    for index in 0..count {
        let at = 4 + index * 8;
        let key_len = read_len(bytes, at)?;
        let value_len = read_len(bytes, at + 4)?;
        let key = take_terminated(bytes, &mut cursor, key_len)?;
        let value = take_terminated(bytes, &mut cursor, value_len)?;
        pairs.push((key.to_vec(), value.to_vec()));
    }
    Ok(pairs)
}

fn malformed(reason: &'static str) -> MalformedHeaderMap {
    MalformedHeaderMap { reason }
}

fn len_u32(len: usize) -> u32 {
    // Header maps handed to the host are far below 4 GiB; saturate rather than wrap if not.
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
}

fn read_len(bytes: &[u8], at: usize) -> Result<usize, MalformedHeaderMap> {
    read_u32(bytes, at)
        .and_then(|len| usize::try_from(len).ok())
        .ok_or(malformed("truncated length table"))
}

fn take_terminated<'a>(
    bytes: &'a [u8],
    cursor: &mut usize,
    len: usize,
) -> Result<&'a [u8], MalformedHeaderMap> {
    let end = cursor
        .checked_add(len)
        .filter(|&end| end < bytes.len())
        .ok_or(malformed("entry runs past the end"))?;
    let entry = &bytes[*cursor..end];
    if bytes[end] != 0 {
        return Err(malformed("entry is not NUL-terminated"));
    }
    *cursor = end + 1;
    Ok(entry)
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
        let mut no_nul = encoded;
        no_nul[12 + 3] = b'!';
        assert!(decode_header_map(&no_nul).is_err());
    }
}
