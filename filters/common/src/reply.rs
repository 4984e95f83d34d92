//! Local replies: answering a request from the filter with an HTTP error or a trailers-only
//! gRPC error, without panicking.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// Bytes the gRPC spec requires percent-encoded in `grpc-message`: everything outside
/// `0x20..=0x7E` (non-ASCII is always encoded), plus '%' itself.
const GRPC_MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// `message` percent-encoded for the `grpc-message` header, as the gRPC HTTP/2 spec requires
/// (UTF-8 bytes outside printable ASCII, and '%', become `%XX`).
pub fn grpc_message_encode(message: &str) -> String {
    utf8_percent_encode(message, GRPC_MESSAGE_ESCAPES).to_string()
}

#[cfg(target_arch = "wasm32")]
pub use host::{send_grpc_error, send_http_error};

#[cfg(target_arch = "wasm32")]
mod host {
    use super::grpc_message_encode;
    use crate::error::HostError;
    use crate::grpc::GrpcStatus;
    use crate::{ffi, wire};

    /// Replies to the current request with HTTP `status`, extra `headers` and `body`. Envoy
    /// turns this into a gRPC error itself when the request was gRPC (the body becomes
    /// `grpc-message`).
    pub fn send_http_error(
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        ffi::send_local_response(status, body, &wire::encode_header_map(headers), -1)
    }

    /// Replies with a trailers-only gRPC error: HTTP 200, `content-type: application/grpc`,
    /// `grpc-status`, `grpc-message` (percent-encoded, omitted when empty) and extra `headers`.
    pub fn send_grpc_error(
        status: GrpcStatus,
        message: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), HostError> {
        let code = status.code().to_string();
        let encoded = grpc_message_encode(message);
        let mut all: Vec<(&str, &str)> =
            vec![("content-type", "application/grpc"), ("grpc-status", &code)];
        if !encoded.is_empty() {
            all.push(("grpc-message", &encoded));
        }
        all.extend_from_slice(headers);
        let grpc_status = i32::try_from(status.code()).unwrap_or(-1);
        ffi::send_local_response(200, &[], &wire::encode_header_map(&all), grpc_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_passes_through() {
        assert_eq!(
            grpc_message_encode("rate limited: try again"),
            "rate limited: try again"
        );
        assert_eq!(grpc_message_encode(""), "");
    }

    #[test]
    fn percent_controls_and_non_ascii_are_encoded() {
        assert_eq!(grpc_message_encode("100%"), "100%25");
        assert_eq!(grpc_message_encode("a\nb\t\x7f"), "a%0Ab%09%7F");
        assert_eq!(grpc_message_encode("café ☕"), "caf%C3%A9 %E2%98%95");
    }
}
