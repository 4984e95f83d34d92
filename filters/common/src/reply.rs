//! Local replies: answering a request from the filter with an HTTP error or a trailers-only
//! gRPC error, without panicking, and the HTTP status matching a gRPC status
//! ([`http_status_of`]).

use crate::grpc::GrpcStatus;

#[cfg(target_arch = "wasm32")]
pub use host::{send_grpc_error, send_http_error};

#[cfg(target_arch = "wasm32")]
mod host {
    use super::http_status_of;
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

    /// Replies with a trailers-only gRPC error. The host builds the reply: for a gRPC request
    /// Envoy answers HTTP 200 with `content-type: application/grpc`, `grpc-status` = `status`
    /// and `grpc-message` = `message` (percent-encoded by Envoy), plus the extra `headers`; so
    /// `headers` must not repeat those. A request Envoy does not see as gRPC gets HTTP
    /// [`http_status_of`]`(status)` with `message` as its body.
    pub fn send_grpc_error(
        status: GrpcStatus,
        message: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), HostError> {
        let grpc_status = i32::try_from(status.code()).unwrap_or(-1);
        ffi::send_local_response(
            http_status_of(status),
            message.as_bytes(),
            &wire::encode_header_map(headers),
            grpc_status,
        )
    }
}

/// The HTTP status matching a gRPC status, as gRPC's HTTP mapping and Envoy use it for replies
/// to clients that are not gRPC (e.g. `UNAVAILABLE` → 503, `RESOURCE_EXHAUSTED` → 429).
pub fn http_status_of(status: GrpcStatus) -> u32 {
    match status {
        GrpcStatus::Ok => 200,
        GrpcStatus::InvalidArgument | GrpcStatus::FailedPrecondition | GrpcStatus::OutOfRange => {
            400
        }
        GrpcStatus::Unauthenticated => 401,
        GrpcStatus::PermissionDenied => 403,
        GrpcStatus::NotFound => 404,
        GrpcStatus::AlreadyExists | GrpcStatus::Aborted => 409,
        GrpcStatus::ResourceExhausted => 429,
        GrpcStatus::Cancelled => 499,
        GrpcStatus::Unimplemented => 501,
        GrpcStatus::Unavailable => 503,
        GrpcStatus::DeadlineExceeded => 504,
        GrpcStatus::Unknown | GrpcStatus::Internal | GrpcStatus::DataLoss => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_statuses_map_to_http_statuses() {
        assert_eq!(http_status_of(GrpcStatus::Unavailable), 503);
        assert_eq!(http_status_of(GrpcStatus::ResourceExhausted), 429);
        assert_eq!(http_status_of(GrpcStatus::PermissionDenied), 403);
        assert_eq!(http_status_of(GrpcStatus::Internal), 500);
        assert_eq!(http_status_of(GrpcStatus::Ok), 200);
    }
}
