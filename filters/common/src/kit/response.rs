//! How a stream ended: [`Outcome`], and [`ResponseTracker`], the pure record of what the
//! response showed (status, gRPC status in headers or trailers, completion, local reply) that
//! the kit keeps for every stream and turns into its outcome.

use crate::grpc::{parse_grpc_status, GrpcStatus};
use crate::reply::http_status_of;

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream answered successfully.
    Success,
    /// The upstream answered with an error (HTTP 5xx, or a gRPC status mapping to 5xx).
    Error,
    /// The stream was reset or the downstream disconnected before the response completed.
    Reset,
    /// A filter of the chain, or Envoy itself (timeout, connect failure, no healthy upstream),
    /// answered instead of the upstream.
    LocalReply,
}

/// What a stream's response showed so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseTracker {
    grpc: bool,
    status: Option<u32>,
    grpc_status: Option<GrpcStatus>,
    complete: bool,
    local_reply: bool,
}

impl ResponseTracker {
    /// Notes the request's `content-type` (gRPC or not).
    pub fn request_content_type(&mut self, content_type: Option<&[u8]>) {
        self.grpc = content_type.is_some_and(crate::grpc::is_grpc);
    }

    /// Whether the request is gRPC.
    pub fn is_grpc(&self) -> bool {
        self.grpc
    }

    /// Notes that a filter of the chain answered the request itself.
    pub fn replied_locally(&mut self) {
        self.local_reply = true;
    }

    /// Notes the response headers: `:status`, and whether they end the stream.
    pub fn response_headers(&mut self, status: Option<&[u8]>, end_of_stream: bool) {
        self.status = status.and_then(parse_status);
        self.complete |= end_of_stream;
    }

    /// Whether a `grpc-status` is still wanted (gRPC request, none seen yet).
    pub fn wants_grpc_status(&self) -> bool {
        self.grpc && self.grpc_status.is_none()
    }

    /// Notes a `grpc-status` value from the response headers or trailers.
    pub fn grpc_status(&mut self, value: Option<&[u8]>) {
        if self.grpc_status.is_none() {
            self.grpc_status = value.and_then(parse_grpc_status);
        }
    }

    /// Notes the end of the response (last body chunk or trailers).
    pub fn response_complete(&mut self) {
        self.complete = true;
    }

    /// The HTTP status of the response, if one arrived.
    pub fn status(&self) -> Option<u32> {
        self.status
    }

    /// How the stream ended, from what the response showed. `upstream_answered` tells whether
    /// Envoy's router got the response from the upstream (`response.code_details` is
    /// `via_upstream`); the kit asks only when an error status makes it matter.
    pub fn outcome(&self, upstream_answered: impl FnOnce() -> bool) -> Outcome {
        if self.local_reply {
            return Outcome::LocalReply;
        }
        let Some(status) = self.status else {
            return Outcome::Reset;
        };
        if !self.complete {
            return Outcome::Reset;
        }
        let error = if status >= 500 {
            true
        } else if self.grpc {
            match self.grpc_status {
                Some(grpc_status) => http_status_of(grpc_status) >= 500,
                None => return Outcome::Reset,
            }
        } else {
            false
        };
        if !error {
            Outcome::Success
        } else if upstream_answered() {
            Outcome::Error
        } else {
            Outcome::LocalReply
        }
    }
}

/// A decimal HTTP status code.
fn parse_status(value: &[u8]) -> Option<u32> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn answered(status: &[u8]) -> ResponseTracker {
        let mut tracker = ResponseTracker::default();
        tracker.response_headers(Some(status), false);
        tracker.response_complete();
        tracker
    }

    #[test]
    fn a_complete_response_is_a_success_or_an_error_by_status() {
        assert_eq!(answered(b"200").outcome(|| true), Outcome::Success);
        assert_eq!(answered(b"404").outcome(|| true), Outcome::Success);
        assert_eq!(answered(b"503").outcome(|| true), Outcome::Error);
    }

    #[test]
    fn an_error_envoy_made_itself_is_a_local_reply() {
        assert_eq!(answered(b"504").outcome(|| false), Outcome::LocalReply);
    }

    #[test]
    fn a_reply_from_a_filter_of_the_chain_is_a_local_reply() {
        let mut tracker = answered(b"200");
        tracker.replied_locally();
        assert_eq!(tracker.outcome(|| true), Outcome::LocalReply);
    }

    #[test]
    fn no_or_incomplete_response_is_a_reset() {
        assert_eq!(ResponseTracker::default().outcome(|| true), Outcome::Reset);
        let mut tracker = ResponseTracker::default();
        tracker.response_headers(Some(b"200"), false);
        assert_eq!(tracker.outcome(|| true), Outcome::Reset);
    }

    #[test]
    fn grpc_errors_count_from_headers_or_trailers() {
        let mut tracker = ResponseTracker::default();
        tracker.request_content_type(Some(b"application/grpc"));
        tracker.response_headers(Some(b"200"), false);
        assert!(tracker.wants_grpc_status());
        tracker.grpc_status(Some(b"14"));
        tracker.response_complete();
        assert!(!tracker.wants_grpc_status());
        assert_eq!(tracker.outcome(|| true), Outcome::Error);

        let mut ok = ResponseTracker::default();
        ok.request_content_type(Some(b"application/grpc+proto"));
        ok.response_headers(Some(b"200"), true);
        ok.grpc_status(Some(b"0"));
        assert_eq!(ok.outcome(|| true), Outcome::Success);
    }

    #[test]
    fn a_grpc_response_without_status_is_a_reset() {
        let mut tracker = ResponseTracker::default();
        tracker.request_content_type(Some(b"application/grpc"));
        tracker.response_headers(Some(b"200"), false);
        tracker.response_complete();
        assert_eq!(tracker.outcome(|| true), Outcome::Reset);
    }

    #[test]
    fn the_router_is_asked_only_about_errors() {
        let asked = std::cell::Cell::new(false);
        answered(b"200").outcome(|| {
            asked.set(true);
            true
        });
        assert!(!asked.get());
    }

    proptest! {
        #[test]
        fn arbitrary_response_bytes_never_panic(
            content_type in proptest::collection::vec(any::<u8>(), 0..40),
            status in proptest::collection::vec(any::<u8>(), 0..8),
            grpc in proptest::collection::vec(any::<u8>(), 0..8),
            end in any::<bool>(),
        ) {
            let mut tracker = ResponseTracker::default();
            tracker.request_content_type(Some(&content_type));
            tracker.response_headers(Some(&status), end);
            tracker.grpc_status(Some(&grpc));
            let _ = tracker.outcome(|| true);
        }
    }
}
