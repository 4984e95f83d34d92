//! [`HttpStream`]: one HTTP request/response exchange driven through a worker's module, and
//! what the module did to it.

use crate::error::EmulatorError;
use crate::headers::HeaderMap;
use crate::host::Worker;
use crate::state::{lock, StreamState};
use crate::types::{Action, LocalResponse};
use crate::vm::Direction;

/// The headers, body and trailers senders of one direction of [`HttpStream`]: each hands the
/// event to the worker's VM, which runs the module's callback for it.
macro_rules! direction_senders {
    (
        $direction:expr,
        $headers:ident: $headers_doc:literal,
        $body:ident: $body_doc:literal,
        $trailers:ident: $trailers_doc:literal $(,)?
    ) => {
        #[doc = $headers_doc]
        pub fn $headers(
            &mut self,
            headers: impl Into<HeaderMap>,
            end_of_stream: bool,
        ) -> Result<Action, EmulatorError> {
            self.worker.lock().send_headers(
                self.context_id,
                $direction,
                headers.into(),
                end_of_stream,
            )
        }

        #[doc = $body_doc]
        pub fn $body(
            &mut self,
            chunk: &[u8],
            end_of_stream: bool,
        ) -> Result<Action, EmulatorError> {
            self.worker
                .lock()
                .send_body(self.context_id, $direction, chunk, end_of_stream)
        }

        #[doc = $trailers_doc]
        pub fn $trailers(
            &mut self,
            trailers: impl Into<HeaderMap>,
        ) -> Result<Action, EmulatorError> {
            self.worker
                .lock()
                .send_trailers(self.context_id, $direction, trailers.into())
        }
    };
}

/// One HTTP stream (an HTTP context in the module).
///
/// Drive it like Envoy would: request headers, body chunks, trailers, then the response. The
/// stream ends (`proxy_on_done`, `proxy_on_log`, `proxy_on_delete`) when the response's end of
/// stream passes the filter unpaused, when the module sends a local response (which is first
/// encoded through the module's response callbacks, as Envoy does), or on
/// [`reset`](Self::reset) / [`finish`](Self::finish). Sending on an ended stream is
/// `Err(StreamEnded)`. Dropping a stream that has not ended leaves its context in the module.
pub struct HttpStream {
    worker: Worker,
    context_id: u32,
}

impl HttpStream {
    pub(crate) fn new(worker: Worker, context_id: u32) -> Self {
        Self { worker, context_id }
    }

    /// The context id the module knows this stream by.
    pub fn context_id(&self) -> u32 {
        self.context_id
    }

    /// The worker this stream runs on.
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    direction_senders!(
        Direction::Request,
        send_request_headers: "Request headers arrive: `proxy_on_request_headers`.",
        send_request_body: "A request body chunk arrives: `proxy_on_request_body`.",
        send_request_trailers:
            "Request trailers arrive (ending the request): `proxy_on_request_trailers`.",
    );

    direction_senders!(
        Direction::Response,
        send_response_headers:
            "Response headers arrive from the upstream: `proxy_on_response_headers`.",
        send_response_body: "A response body chunk arrives: `proxy_on_response_body`.",
        send_response_trailers:
            "Response trailers arrive (ending the response): `proxy_on_response_trailers`.",
    );

    /// The client disconnects mid-stream: Envoy destroys the filter, which the module sees as
    /// `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`; pending HTTP calls are cancelled.
    pub fn reset(&mut self) -> Result<(), EmulatorError> {
        self.worker.lock().complete(self.context_id)
    }

    /// Ends a stream the test does not drive to the end of its response (same callbacks as
    /// [`reset`](Self::reset)); a no-op when the stream already ended.
    pub fn finish(&mut self) -> Result<(), EmulatorError> {
        if self.is_ended() {
            return Ok(());
        }
        self.worker.lock().complete(self.context_id)
    }

    fn read<T>(&self, f: impl FnOnce(&StreamState) -> T) -> Option<T> {
        self.worker
            .lock()
            .state()
            .streams
            .get(&self.context_id)
            .map(f)
    }

    /// Request headers as the upstream would get them (after the module's changes).
    pub fn request_headers(&self) -> Option<HeaderMap> {
        self.read(|s| s.request_headers.clone()).flatten()
    }

    /// Request trailers after the module's changes.
    pub fn request_trailers(&self) -> Option<HeaderMap> {
        self.read(|s| s.request_trailers.clone()).flatten()
    }

    /// Response headers as the client would get them (a local response's, if one was sent).
    pub fn response_headers(&self) -> Option<HeaderMap> {
        self.read(|s| s.response_headers.clone()).flatten()
    }

    /// Response trailers after the module's changes.
    pub fn response_trailers(&self) -> Option<HeaderMap> {
        self.read(|s| s.response_trailers.clone()).flatten()
    }

    /// Request body bytes passed on to the upstream so far (after the module's changes).
    pub fn request_body(&self) -> Vec<u8> {
        self.read(|s| s.request_forwarded.clone())
            .unwrap_or_default()
    }

    /// Response body bytes passed on to the client so far (after the module's changes).
    pub fn response_body(&self) -> Vec<u8> {
        self.read(|s| s.response_forwarded.clone())
            .unwrap_or_default()
    }

    /// The local response the module sent, if any.
    pub fn local_response(&self) -> Option<LocalResponse> {
        self.read(|s| s.local_response.clone()).flatten()
    }

    /// How many times the module called `clear_route_cache` on this stream.
    pub fn route_cache_clears(&self) -> u32 {
        self.read(|s| s.route_cache_clears).unwrap_or(0)
    }

    /// True while the module holds the request (last request callback paused and no
    /// `proxy_continue_stream` since).
    pub fn is_request_paused(&self) -> bool {
        self.read(|s| s.request_paused).unwrap_or(false)
    }

    /// True while the module holds the response.
    pub fn is_response_paused(&self) -> bool {
        self.read(|s| s.response_paused).unwrap_or(false)
    }

    /// True once the stream ended (its context was deleted in the module).
    pub fn is_ended(&self) -> bool {
        self.read(|s| s.ended).unwrap_or(true)
    }
}

impl Drop for HttpStream {
    fn drop(&mut self) {
        let mut vm = self.worker.lock();
        let index = self.worker.index();
        let state = vm.state_mut();
        state.streams.remove(&self.context_id);
        lock(&state.shared.calls)
            .pending
            .retain(|_, call| !(call.worker == index && call.context_id == self.context_id));
    }
}
