//! Ordered header multi-maps with byte values, and the proxy-wasm wire format for them.
//!
//! The wire format (shared by `proxy_get_header_map_pairs`, `proxy_set_header_map_pairs`,
//! `proxy_send_local_response` and `proxy_http_call`) is: a little-endian `u32` pair count,
//! then a `u32` name length and a `u32` value length per pair, then every name and value
//! each followed by a NUL byte.

use thiserror::Error;

/// An ordered list of header name/value pairs; names may repeat, values are raw bytes.
///
/// Names are stored lowercase, as Envoy's header maps store them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMap {
    pairs: Vec<(String, Vec<u8>)>,
}

impl HeaderMap {
    /// An empty map.
    pub const fn new() -> Self {
        Self { pairs: Vec::new() }
    }

    /// Returns the map with `name: value` appended (builder style; `value` may be any bytes).
    pub fn with(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.add(name, value.as_ref());
        self
    }

    /// Number of pairs (repeated names counted once per occurrence).
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when the map has no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The values of `name` (case-insensitive), in order.
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> {
        let name = name.to_ascii_lowercase();
        self.pairs
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name` (case-insensitive), if present.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.values(name).next()
    }

    /// The first value of `name` as UTF-8 text; `None` when absent or not valid UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name` (case-insensitive), in order.
    pub fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.values(name).collect()
    }

    /// Appends `name: value`, keeping any existing values of `name`.
    pub fn add(&mut self, name: &str, value: &[u8]) {
        self.pairs.push((name.to_ascii_lowercase(), value.to_vec()));
    }

    /// Sets `name` to `value`: the first existing entry keeps its position and takes the value,
    /// later entries of `name` are removed; appends when `name` is absent (Envoy's `setCopy`).
    pub fn replace(&mut self, name: &str, value: &[u8]) {
        let name = name.to_ascii_lowercase();
        match self.pairs.iter().position(|(n, _)| *n == name) {
            Some(first) => {
                self.pairs[first].1 = value.to_vec();
                let mut index = 0;
                self.pairs.retain(|(n, _)| {
                    let keep = index <= first || *n != name;
                    index += 1;
                    keep
                });
            }
            None => self.pairs.push((name, value.to_vec())),
        }
    }

    /// Removes every entry of `name`.
    pub fn remove(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        self.pairs.retain(|(n, _)| *n != name);
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// Serializes the map into the proxy-wasm wire format.
    pub fn serialize(&self) -> Vec<u8> {
        let size = 4 + self
            .pairs
            .iter()
            .map(|(n, v)| n.len() + v.len() + 10)
            .sum::<usize>();
        let mut bytes = Vec::with_capacity(size);
        bytes.extend_from_slice(&wire_len(self.pairs.len()).to_le_bytes());
        for (name, value) in &self.pairs {
            bytes.extend_from_slice(&wire_len(name.len()).to_le_bytes());
            bytes.extend_from_slice(&wire_len(value.len()).to_le_bytes());
        }
        for (name, value) in &self.pairs {
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(value);
            bytes.push(0);
        }
        bytes
    }

    /// Parses the proxy-wasm wire format; an empty input is an empty map.
    /// Names that are not UTF-8 are decoded lossily.
    pub fn deserialize(bytes: &[u8]) -> Result<Self, MapFormatError> {
        if bytes.is_empty() {
            return Ok(Self::new());
        }
        let count = read_u32(bytes, 0)? as usize;
        let mut data = count
            .checked_mul(8)
            .and_then(|sizes| sizes.checked_add(4))
            .ok_or(MapFormatError::Truncated)?;
        let mut pairs = Vec::with_capacity(count.min(bytes.len() / 10));
        for index in 0..count {
            let name_len = read_u32(bytes, 4 + index * 8)? as usize;
            let value_len = read_u32(bytes, 8 + index * 8)? as usize;
            let name = take(bytes, &mut data, name_len)?;
            let value = take(bytes, &mut data, value_len)?;
            pairs.push((
                String::from_utf8_lossy(name).to_ascii_lowercase(),
                value.to_vec(),
            ));
        }
        Ok(Self { pairs })
    }
}

/// Why a serialized header map could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MapFormatError {
    /// The data ends before the sizes it declares.
    #[error("serialized header map is truncated")]
    Truncated,
    /// A name or value is not followed by its NUL terminator.
    #[error("serialized header map entry is missing its NUL terminator")]
    MissingTerminator,
}

fn wire_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, MapFormatError> {
    let end = at.checked_add(4).ok_or(MapFormatError::Truncated)?;
    let word = bytes.get(at..end).ok_or(MapFormatError::Truncated)?;
    let mut le = [0u8; 4];
    le.copy_from_slice(word);
    Ok(u32::from_le_bytes(le))
}

fn take<'a>(bytes: &'a [u8], at: &mut usize, len: usize) -> Result<&'a [u8], MapFormatError> {
    let end = at.checked_add(len).ok_or(MapFormatError::Truncated)?;
    let slice = bytes.get(*at..end).ok_or(MapFormatError::Truncated)?;
    match bytes.get(end) {
        Some(0) => {}
        Some(_) => return Err(MapFormatError::MissingTerminator),
        None => return Err(MapFormatError::Truncated),
    }
    *at = end + 1;
    Ok(slice)
}

impl<N: AsRef<str>, V: AsRef<[u8]>> FromIterator<(N, V)> for HeaderMap {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut map = Self::new();
        for (name, value) in iter {
            map.add(name.as_ref(), value.as_ref());
        }
        map
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>, const K: usize> From<[(N, V); K]> for HeaderMap {
    fn from(pairs: [(N, V); K]) -> Self {
        pairs.into_iter().collect()
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> From<&[(N, V)]> for HeaderMap {
    fn from(pairs: &[(N, V)]) -> Self {
        pairs.iter().map(|(n, v)| (n, v)).collect()
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> From<Vec<(N, V)>> for HeaderMap {
    fn from(pairs: Vec<(N, V)>) -> Self {
        pairs.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// The serialized form the proxy-wasm SDK's own tests use for these four pairs.
    #[rustfmt::skip]
    const SDK_SERIALIZED: &[u8] = &[
        4, 0, 0, 0,
        7, 0, 0, 0, 3, 0, 0, 0,
        5, 0, 0, 0, 8, 0, 0, 0,
        10, 0, 0, 0, 11, 0, 0, 0,
        10, 0, 0, 0, 10, 0, 0, 0,
        58, 109, 101, 116, 104, 111, 100, 0,
        71, 69, 84, 0,
        58, 112, 97, 116, 104, 0,
        47, 98, 121, 116, 101, 115, 47, 49, 0,
        58, 97, 117, 116, 104, 111, 114, 105, 116, 121, 0,
        104, 116, 116, 112, 98, 105, 110, 46, 111, 114, 103, 0,
        112, 111, 119, 101, 114, 101, 100, 45, 98, 121, 0,
        112, 114, 111, 120, 121, 45, 119, 97, 115, 109, 0,
    ];

    fn sdk_map() -> HeaderMap {
        HeaderMap::from([
            (":method", "GET"),
            (":path", "/bytes/1"),
            (":authority", "httpbin.org"),
            ("powered-by", "proxy-wasm"),
        ])
    }

    #[test]
    fn serializes_exactly_like_the_sdk() {
        assert_eq!(sdk_map().serialize(), SDK_SERIALIZED);
    }

    #[test]
    fn deserializes_what_the_sdk_serializes() {
        assert_eq!(HeaderMap::deserialize(SDK_SERIALIZED).unwrap(), sdk_map());
    }

    #[test]
    fn round_trips_non_utf8_values() {
        let map = HeaderMap::new()
            .with("x-bytes", [0xff, 0xfe])
            .with("x-empty", b"");
        let parsed = HeaderMap::deserialize(&map.serialize()).unwrap();
        assert_eq!(parsed.get("x-bytes"), Some(&[0xff, 0xfe][..]));
        assert_eq!(parsed.get_str("x-bytes"), None);
        assert_eq!(parsed.get("x-empty"), Some(&[][..]));
    }

    #[test]
    fn empty_input_and_zero_count_are_empty_maps() {
        assert!(HeaderMap::deserialize(&[]).unwrap().is_empty());
        assert!(HeaderMap::deserialize(&[0, 0, 0, 0]).unwrap().is_empty());
        assert_eq!(HeaderMap::new().serialize(), [0, 0, 0, 0]);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = sdk_map().serialize();
        for cut in 1..good.len() {
            assert!(
                HeaderMap::deserialize(&good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut unterminated = good.clone();
        let last = unterminated.len() - 1;
        unterminated[last] = b'x';
        assert_eq!(
            HeaderMap::deserialize(&unterminated),
            Err(MapFormatError::MissingTerminator)
        );
        assert_eq!(
            HeaderMap::deserialize(&[0xff, 0xff, 0xff, 0xff]),
            Err(MapFormatError::Truncated)
        );
    }

    #[test]
    fn replace_keeps_first_position_and_drops_duplicates() {
        let mut map = HeaderMap::from([("a", "1"), ("x", "2"), ("b", "3"), ("X", "4")]);
        map.replace("X", b"new");
        let pairs: Vec<_> = map.iter().collect();
        assert_eq!(
            pairs,
            [("a", &b"1"[..]), ("x", &b"new"[..]), ("b", &b"3"[..])]
        );
        map.replace("c", b"5");
        assert_eq!(map.get("c"), Some(&b"5"[..]));
    }

    #[test]
    fn names_are_case_insensitive_and_multi_valued() {
        let mut map = HeaderMap::new()
            .with("Set-Cookie", "a")
            .with("set-cookie", "b");
        assert_eq!(map.get_all("SET-COOKIE"), [&b"a"[..], &b"b"[..]]);
        map.remove("Set-Cookie");
        assert!(map.is_empty());
    }
}
