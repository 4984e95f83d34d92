//! The current HTTP stream's request and response bodies: [`BodyKind`] and (wasm32) trap-free
//! reads and replacements of the buffered body.
//!
//! A body callback (`on_http_request_body` / `on_http_response_body`) reports how many bytes are
//! buffered; returning `Action::Pause` until `end_of_stream` makes the host buffer the whole
//! body, which can then be read and replaced at once.

/// Which body of the current HTTP stream to access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyKind {
    /// The request body.
    Request,
    /// The response body.
    Response,
}

impl BodyKind {
    /// The SDK's buffer type for this body.
    #[cfg(any(test, target_arch = "wasm32"))]
    fn buffer_type(self) -> proxy_wasm::types::BufferType {
        use proxy_wasm::types::BufferType;
        match self {
            BodyKind::Request => BufferType::HttpRequestBody,
            BodyKind::Response => BufferType::HttpResponseBody,
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use host::{body_bytes, replace_body};

#[cfg(target_arch = "wasm32")]
mod host {
    use super::BodyKind;
    use crate::error::HostError;
    use crate::ffi;

    /// The first `size` bytes of the buffered body (`size` as the body callback reported it);
    /// `Ok(None)` when the host has no such body.
    pub fn body_bytes(kind: BodyKind, size: usize) -> Result<Option<Vec<u8>>, HostError> {
        ffi::buffer_bytes(kind.buffer_type() as u32, 0, size)
    }

    /// Replaces the first `size` bytes of the buffered body with `body`; with the `size` the
    /// body callback reported, the whole buffered body.
    pub fn replace_body(kind: BodyKind, size: usize, body: &[u8]) -> Result<(), HostError> {
        ffi::set_buffer_bytes(kind.buffer_type() as u32, 0, size, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_the_abi_buffer_types() {
        assert_eq!(BodyKind::Request.buffer_type() as u32, 0);
        assert_eq!(BodyKind::Response.buffer_type() as u32, 1);
    }
}
