//! Host-registered foreign functions (`proxy_call_foreign_function`), e.g. Envoy's
//! `clear_route_cache`, called without panicking.

use crate::error::HostError;

/// Calls the host's foreign function `name` with `arguments`; returns its result bytes, if any.
/// A host without that function answers `NotFound`.
pub fn call_foreign_function(name: &str, arguments: &[u8]) -> Result<Option<Vec<u8>>, HostError> {
    crate::ffi::call_foreign_function(name, arguments)
}
