//! Trap-free reading and writing of HTTP header and trailer maps.
//!
//! Unlike the SDK's `get_http_request_header` & co., nothing here panics: a header map that is
//! unavailable in the current phase, or a value that is not UTF-8, is an error value or `None`.

/// Which header map of the current HTTP stream to access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderMapKind {
    /// The request headers.
    RequestHeaders,
    /// The request trailers.
    RequestTrailers,
    /// The response headers.
    ResponseHeaders,
    /// The response trailers.
    ResponseTrailers,
}

impl HeaderMapKind {
    /// The SDK's map type for this kind.
    #[cfg(any(test, target_arch = "wasm32"))]
    fn map_type(self) -> proxy_wasm::types::MapType {
        use proxy_wasm::types::MapType;
        match self {
            HeaderMapKind::RequestHeaders => MapType::HttpRequestHeaders,
            HeaderMapKind::RequestTrailers => MapType::HttpRequestTrailers,
            HeaderMapKind::ResponseHeaders => MapType::HttpResponseHeaders,
            HeaderMapKind::ResponseTrailers => MapType::HttpResponseTrailers,
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use host::{
    add_header, clear_route_cache, header_bytes, header_str, header_values, remove_header,
    set_header,
};

#[cfg(target_arch = "wasm32")]
pub(crate) use host::map_pairs;

#[cfg(target_arch = "wasm32")]
mod host {
    use super::HeaderMapKind;
    use crate::error::HostError;
    use crate::ffi;
    use crate::wire;
    use proxy_wasm::types::Status;

    fn abi(kind: HeaderMapKind) -> u32 {
        kind.map_type() as u32
    }

    /// The raw value of header `name`; `Ok(None)` when absent, `Err` when the map is unavailable.
    pub fn header_bytes(kind: HeaderMapKind, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        ffi::header_map_value(abi(kind), name)
    }

    /// The value of header `name` as text; `None` when absent, when the map is unavailable in
    /// this phase, or when the value is not UTF-8 (the reason is logged at debug level).
    pub fn header_str(kind: HeaderMapKind, name: &str) -> Option<String> {
        match header_bytes(kind, name) {
            Ok(Some(bytes)) => match String::from_utf8(bytes) {
                Ok(value) => Some(value),
                Err(_) => {
                    log::debug!("{kind:?} header {name:?} is not valid UTF-8; ignoring it");
                    None
                }
            },
            Ok(None) => None,
            Err(err) => {
                log::debug!("cannot read {kind:?} header {name:?}: {err}");
                None
            }
        }
    }

    /// Every value of header `name` (one per header line), in order; `Err` when the map is
    /// unavailable.
    pub fn header_values(kind: HeaderMapKind, name: &str) -> Result<Vec<Vec<u8>>, HostError> {
        Ok(map_pairs(abi(kind))?
            .into_iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
            .collect())
    }

    /// Every pair of the header map with ABI number `map_type` (a callout response's headers or
    /// trailers) in order; names are decoded lossily, values kept as bytes.
    pub(crate) fn map_pairs(map_type: u32) -> Result<Vec<(String, Vec<u8>)>, HostError> {
        let serialized = ffi::header_map_pairs(map_type)?;
        let pairs = wire::decode_header_map(&serialized).map_err(|err| {
            log::debug!("header map {map_type}: {err}");
            HostError::new("get_header_map_pairs", Status::SerializationFailure)
        })?;
        Ok(pairs
            .into_iter()
            .map(|(name, value)| (String::from_utf8_lossy(&name).into_owned(), value))
            .collect())
    }

    /// Sets header `name` to `value`, replacing any existing values.
    pub fn set_header(kind: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        ffi::replace_header_map_value(abi(kind), name, value)
    }

    /// Adds a value for header `name`, keeping existing values.
    pub fn add_header(kind: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        ffi::add_header_map_value(abi(kind), name, value)
    }

    /// Removes every value of header `name` (absent headers are not an error).
    pub fn remove_header(kind: HeaderMapKind, name: &str) -> Result<(), HostError> {
        ffi::remove_header_map_value(abi(kind), name)
    }

    /// Asks Envoy to re-pick the route after header changes (the `clear_route_cache` foreign
    /// function). A host without that function (`NotFound`) is logged and treated as success.
    pub fn clear_route_cache() -> Result<(), HostError> {
        match ffi::call_foreign_function("clear_route_cache", &[]) {
            Ok(_) => Ok(()),
            Err(err) if err.status() == Status::NotFound => {
                log::debug!("host has no clear_route_cache function; route not re-picked");
                Ok(())
            }
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_the_abi_map_types() {
        assert_eq!(HeaderMapKind::RequestHeaders.map_type() as u32, 0);
        assert_eq!(HeaderMapKind::RequestTrailers.map_type() as u32, 1);
        assert_eq!(HeaderMapKind::ResponseHeaders.map_type() as u32, 2);
        assert_eq!(HeaderMapKind::ResponseTrailers.map_type() as u32, 3);
    }
}
