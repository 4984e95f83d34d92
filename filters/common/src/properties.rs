//! Host properties (`proxy_get_property`), e.g. `plugin_name` or `node.metadata.zone`: the
//! plugin's shared-data namespace ([`namespace_of`]) and (wasm32) trap-free [`property`] and
//! [`plugin_name`] reads.

/// A property path in the ABI's encoding: the segments joined by NUL bytes.
#[cfg(any(test, target_arch = "wasm32"))]
fn encode_path(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

/// A plugin name as a shared-data namespace: ASCII letters, digits, '.' and '-' are kept, every
/// other byte (including '_' itself) becomes `_XX` (two uppercase hex digits), and the empty name
/// becomes `_`. The mapping is injective, so distinct plugin names never share a namespace
/// (`"a/b"` is `a_2Fb`, `"a_b"` is `a_5Fb`); its output is never empty and never contains '/',
/// which separates key segments.
pub fn namespace_of(raw: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(raw.len());
    for &byte in raw {
        if byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-' {
            out.push(char::from(byte));
        } else {
            out.push('_');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    if out.is_empty() {
        // No other name maps to a lone '_': every other '_' is followed by two hex digits.
        out.push('_');
    }
    out
}

#[cfg(target_arch = "wasm32")]
pub use host::{plugin_name, property};

#[cfg(target_arch = "wasm32")]
mod host {
    use super::encode_path;
    use crate::error::HostError;
    use crate::ffi;

    /// The raw value of the property at `path` (e.g. `&["plugin_name"]`); `Ok(None)` when the
    /// host has no such property. Unlike the SDK's `get_property`, never panics.
    pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        ffi::property(&encode_path(path))
    }

    /// The plugin's name: the `plugin_name` property, else `plugin_root_id`, else empty when
    /// both are unset or empty (non-UTF-8 bytes are replaced). [`namespace_of`] makes it a
    /// shared-data namespace.
    pub fn plugin_name() -> String {
        let name = ["plugin_name", "plugin_root_id"]
            .into_iter()
            .find_map(|path| match property(&[path]) {
                Ok(Some(value)) if !value.is_empty() => Some(value),
                Ok(_) => None,
                Err(err) => {
                    log::debug!("cannot read property {path}: {err}");
                    None
                }
            })
            .unwrap_or_default();
        String::from_utf8_lossy(&name).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_joined_by_nul() {
        assert_eq!(encode_path(&["plugin_name"]), b"plugin_name");
        assert_eq!(
            encode_path(&["node", "metadata", "zone"]),
            b"node\0metadata\0zone"
        );
        assert_eq!(encode_path(&[]), b"");
    }

    #[test]
    fn names_that_used_to_collide_get_distinct_namespaces() {
        assert_eq!(namespace_of(b"a/b"), "a_2Fb");
        assert_eq!(namespace_of(b"a_b"), "a_5Fb");
        assert_eq!(namespace_of(b"edge-1.shedder"), "edge-1.shedder");
        assert_eq!(namespace_of("é \0".as_bytes()), "_C3_A9_20_00");
        assert_eq!(namespace_of(b""), "_");
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests {
    use super::namespace_of;
    use proptest::prelude::*;

    /// Inverts [`namespace_of`]; `None` for text it cannot produce.
    fn decode(namespace: &str) -> Option<Vec<u8>> {
        if namespace == "_" {
            return Some(Vec::new());
        }
        let mut out = Vec::new();
        let mut bytes = namespace.bytes();
        while let Some(byte) = bytes.next() {
            if byte == b'_' {
                let hex = [bytes.next()?, bytes.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                if hex.to_ascii_uppercase() != hex {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
            } else {
                out.push(byte);
            }
        }
        Some(out)
    }

    /// Names over a few bytes that look like escapes, so near-collisions are common.
    fn tricky_name() -> impl Strategy<Value = Vec<u8>> {
        let bytes = vec![b'a', b'_', b'/', b'2', b'5', b'F', b'f', b'.', 0xff];
        proptest::collection::vec(proptest::sample::select(bytes), 0..8)
    }

    proptest! {
        #[test]
        fn distinct_names_give_distinct_namespaces(a in tricky_name(), b in tricky_name()) {
            prop_assert_eq!(a == b, namespace_of(&a) == namespace_of(&b));
        }

        #[test]
        fn namespaces_are_safe_key_text_and_decode_back(
            raw in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            let namespace = namespace_of(&raw);
            prop_assert!(!namespace.is_empty());
            prop_assert!(namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
            prop_assert_eq!(decode(&namespace), Some(raw));
        }
    }
}
