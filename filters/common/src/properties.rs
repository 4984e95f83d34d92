//! Host properties (`proxy_get_property`), e.g. `plugin_name` or `node.metadata.zone`: the ABI's
//! path encoding ([`encode_path`]) and (wasm32) a trap-free [`property`] read.

/// A property path in the ABI's encoding: the segments joined by NUL bytes.
pub fn encode_path(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

#[cfg(target_arch = "wasm32")]
pub use host::property;

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
}
