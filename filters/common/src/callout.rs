//! HTTP callouts: dispatching a request to an Envoy cluster, reading its response in
//! `on_http_call_response`, and resuming the request that waited for it (host part wasm32).
//!
//! Nothing here panics. The dispatch itself goes through the SDK's `dispatch_http_call`, because
//! the SDK's dispatcher must register the callout's token: it routes `on_http_call_response` by
//! that token and panics on a token it did not register. The SDK call panics only if the host
//! answers with a status other than `Ok`, `BadArgument` or `InternalFailure`, which neither
//! Envoy nor the emulated host does; the inputs that would make it misbehave (a timeout beyond
//! `u32` milliseconds, which it truncates, and header values that are not text) are handled here
//! first. Reading the response and resuming go through meshkit's own imports.

use std::time::Duration;

/// The longest callout timeout: Envoy reads the ABI's timeout as a signed 32-bit millisecond
/// count and refuses negative ones.
pub const MAX_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// `timeout` in whole milliseconds, capped at [`MAX_TIMEOUT`].
#[cfg(any(test, target_arch = "wasm32"))]
fn timeout_millis(timeout: Duration) -> u64 {
    u64::try_from(timeout.min(MAX_TIMEOUT).as_millis()).unwrap_or(i32::MAX as u64)
}

#[cfg(target_arch = "wasm32")]
pub use host::{
    dispatch_http_call, response_body, response_header, response_headers, response_trailers,
    resume_request,
};

#[cfg(target_arch = "wasm32")]
mod host {
    use super::timeout_millis;
    use crate::error::HostError;
    use crate::{ffi, headers};
    use proxy_wasm::types::{BufferType, MapType, Status};
    use std::time::Duration;

    const RESPONSE_HEADERS: u32 = MapType::HttpCallResponseHeaders as u32;
    const RESPONSE_TRAILERS: u32 = MapType::HttpCallResponseTrailers as u32;
    const RESPONSE_BODY: u32 = BufferType::HttpCallResponseBody as u32;
    const HTTP_REQUEST: u32 = 0;

    /// Sends a request to cluster `upstream`: `headers` must include `:method`, `:path` and
    /// `:authority`; `timeout` is capped at [`MAX_TIMEOUT`](super::MAX_TIMEOUT). Returns the
    /// callout's token; the response (or its failure) arrives in `on_http_call_response` of
    /// the context that dispatched it. Envoy refuses an unknown cluster or missing pseudo-headers
    /// with `BadArgument`. Header and trailer values must be UTF-8 (the SDK, which must record
    /// the callout, takes text); other bytes are refused with `BadArgument` before dispatching.
    pub fn dispatch_http_call(
        upstream: &str,
        headers: &[(&str, &[u8])],
        body: Option<&[u8]>,
        trailers: &[(&str, &[u8])],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let headers = text_pairs(headers)?;
        let trailers = text_pairs(trailers)?;
        let timeout = Duration::from_millis(timeout_millis(timeout));
        proxy_wasm::hostcalls::dispatch_http_call(upstream, headers, body, trailers, timeout)
            .map_err(|status| HostError::new("dispatch_http_call", status))
    }

    fn text_pairs<'a>(pairs: &[(&'a str, &'a [u8])]) -> Result<Vec<(&'a str, &'a str)>, HostError> {
        pairs
            .iter()
            .map(|&(name, value)| match std::str::from_utf8(value) {
                Ok(value) => Ok((name, value)),
                Err(_) => {
                    log::debug!("callout header {name:?} is not UTF-8; not dispatching");
                    Err(HostError::new("dispatch_http_call", Status::BadArgument))
                }
            })
            .collect()
    }

    /// The raw value of response header `name` (e.g. `:status`) of the callout being answered;
    /// `Ok(None)` when absent. Only valid inside `on_http_call_response`.
    pub fn response_header(name: &str) -> Result<Option<Vec<u8>>, HostError> {
        ffi::header_map_value(RESPONSE_HEADERS, name)
    }

    /// Every response header of the callout being answered, in order; names decoded lossily.
    pub fn response_headers() -> Result<Vec<(String, Vec<u8>)>, HostError> {
        headers::map_pairs(RESPONSE_HEADERS)
    }

    /// Every response trailer of the callout being answered, in order; names decoded lossily.
    pub fn response_trailers() -> Result<Vec<(String, Vec<u8>)>, HostError> {
        headers::map_pairs(RESPONSE_TRAILERS)
    }

    /// The first `size` bytes of the response body of the callout being answered (`size` as
    /// `on_http_call_response` reported it); `Ok(None)` when the host has no body.
    pub fn response_body(size: usize) -> Result<Option<Vec<u8>>, HostError> {
        ffi::buffer_bytes(RESPONSE_BODY, 0, size)
    }

    /// Resumes the current request after a callback returned `Action::Pause` (e.g. while it
    /// waited for a callout).
    pub fn resume_request() -> Result<(), HostError> {
        ffi::continue_stream(HTTP_REQUEST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_whole_milliseconds_capped_at_the_signed_limit() {
        assert_eq!(timeout_millis(Duration::from_micros(1_500)), 1);
        assert_eq!(timeout_millis(Duration::from_millis(500)), 500);
        assert_eq!(timeout_millis(MAX_TIMEOUT), 2_147_483_647);
        // The SDK would truncate 2^32 ms to 0 (no timeout) and Envoy would refuse 2^31 ms.
        assert_eq!(
            timeout_millis(Duration::from_millis(1 << 32)),
            2_147_483_647
        );
        assert_eq!(timeout_millis(Duration::MAX), 2_147_483_647);
    }
}
