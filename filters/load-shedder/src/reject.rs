//! The reply a shed request receives ([`RejectionReply`]), prepared once per configuration so
//! the per-request path only borrows it: HTTP 503 with `retry-after`, or for gRPC a
//! trailers-only reply with the configured status and `grpc-retry-pushback-ms`. Both carry
//! [`SHED_HEADER`] so clients and dashboards can tell sidecar shedding from service errors.

use crate::config::RejectionConfig;
use meshkit::grpc::GrpcStatus;

/// Response header marking a reply as shed by the sidecar, with its value.
pub const SHED_HEADER: (&str, &str) = ("x-mesh-shed", "1");
/// HTTP status of a shed plain-HTTP request.
pub const HTTP_STATUS: u32 = 503;
/// Body of a shed plain-HTTP request, and the `grpc-message` of a shed gRPC request.
pub const MESSAGE: &str = "request shed by the sidecar: the service is overloaded";

/// The prepared reply for shed requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionReply {
    grpc_status: GrpcStatus,
    retry_after_seconds: String,
    retry_pushback_millis: String,
}

impl RejectionReply {
    /// Prepares the reply described by `config`.
    pub fn new(config: &RejectionConfig) -> RejectionReply {
        RejectionReply {
            grpc_status: config.grpc_status,
            retry_after_seconds: config.retry_after_seconds.to_string(),
            retry_pushback_millis: (u64::from(config.retry_after_seconds) * 1_000).to_string(),
        }
    }

    /// Headers of the HTTP 503 reply: `retry-after` and [`SHED_HEADER`].
    pub fn http_headers(&self) -> [(&str, &str); 2] {
        [("retry-after", &self.retry_after_seconds), SHED_HEADER]
    }

    /// The gRPC status of the trailers-only reply.
    pub fn grpc_status(&self) -> GrpcStatus {
        self.grpc_status
    }

    /// Extra headers of the gRPC reply: `grpc-retry-pushback-ms` and [`SHED_HEADER`].
    pub fn grpc_headers(&self) -> [(&str, &str); 2] {
        [
            ("grpc-retry-pushback-ms", &self.retry_pushback_millis),
            SHED_HEADER,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_carry_the_configured_delay_and_the_shed_marker() {
        let reply = RejectionReply::new(&RejectionConfig {
            grpc_status: GrpcStatus::ResourceExhausted,
            retry_after_seconds: 3,
        });
        assert_eq!(
            reply.http_headers(),
            [("retry-after", "3"), ("x-mesh-shed", "1")]
        );
        assert_eq!(reply.grpc_status(), GrpcStatus::ResourceExhausted);
        assert_eq!(
            reply.grpc_headers(),
            [("grpc-retry-pushback-ms", "3000"), ("x-mesh-shed", "1")]
        );
    }

    #[test]
    fn default_grpc_status_is_unavailable() {
        let reply = RejectionReply::new(&RejectionConfig::default());
        assert_eq!(reply.grpc_status(), GrpcStatus::Unavailable);
        assert_eq!(reply.http_headers()[0], ("retry-after", "1"));
    }
}
