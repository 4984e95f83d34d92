//! The values tests exchange with the emulated host: ABI enums, captured logs, local
//! responses, and dispatched HTTP calls with their scripted replies.

use std::time::Duration;

use crate::headers::HeaderMap;

/// What a module's HTTP callback asked the host to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Continue the filter chain (ABI value 0).
    Continue,
    /// Stop iteration until the module calls `proxy_continue_stream` (any non-zero ABI value).
    Pause,
}

impl Action {
    pub(crate) fn from_abi(value: u32) -> Self {
        if value == 0 {
            Self::Continue
        } else {
            Self::Pause
        }
    }
}

/// Log level of a `proxy_log` record (the ABI's numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// 0
    Trace,
    /// 1
    Debug,
    /// 2
    Info,
    /// 3
    Warn,
    /// 4
    Error,
    /// 5: meshkit's panic hook logs panics here.
    Critical,
}

impl LogLevel {
    pub(crate) fn from_abi(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            5 => Self::Critical,
            _ => return None,
        })
    }

    pub(crate) fn to_abi(self) -> u32 {
        self as u32
    }
}

/// One `proxy_log` call captured by the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Index of the worker whose VM logged it.
    pub worker: usize,
    /// Level the module logged at.
    pub level: LogLevel,
    /// The message text (lossily decoded).
    pub message: String,
}

/// A response the module generated with `proxy_send_local_response`, as the module sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status code.
    pub status: u32,
    /// The "response code details" string (empty when the module gave none).
    pub details: String,
    /// Extra headers the module asked for.
    pub headers: HeaderMap,
    /// Body bytes (for a gRPC reply the SDK passes the grpc-message here).
    pub body: Vec<u8>,
    /// gRPC status when the module asked for a gRPC reply (ABI value >= 0).
    pub grpc_status: Option<u32>,
}

/// An HTTP call the module dispatched with `proxy_http_call`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    /// The token returned to the module; pass it to `EmulatedHost::respond_to_call`.
    pub token: u32,
    /// Worker whose VM dispatched the call.
    pub worker: usize,
    /// Context that dispatched it (the root context or an HTTP stream's context).
    pub context_id: u32,
    /// Upstream cluster name.
    pub upstream: String,
    /// Request headers (including `:method`, `:path`, `:authority`).
    pub headers: HeaderMap,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: HeaderMap,
    /// Timeout the module asked for.
    pub timeout: Duration,
}

/// The scripted outcome of an HTTP call, delivered through `proxy_on_http_call_response`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpCallReply {
    /// The upstream answered.
    Response {
        /// Response headers, including `:status`.
        headers: HeaderMap,
        /// Response body.
        body: Vec<u8>,
        /// Response trailers.
        trailers: HeaderMap,
    },
    /// The call failed (reset, no healthy upstream, or timeout): Envoy reports it as a
    /// response with zero headers, zero body bytes and zero trailers.
    Failure,
}

impl HttpCallReply {
    /// A response with `:status` = `status`, the given extra headers and body, no trailers.
    pub fn response(status: u16, headers: impl Into<HeaderMap>, body: impl Into<Vec<u8>>) -> Self {
        let mut all = HeaderMap::new().with(":status", status.to_string());
        for (name, value) in headers.into().iter() {
            all.add(name, value);
        }
        Self::Response {
            headers: all,
            body: body.into(),
            trailers: HeaderMap::new(),
        }
    }

    /// The same reply with `trailers` added (no effect on [`HttpCallReply::Failure`]).
    pub fn with_trailers(self, trailers: impl Into<HeaderMap>) -> Self {
        match self {
            Self::Response { headers, body, .. } => Self::Response {
                headers,
                body,
                trailers: trailers.into(),
            },
            Self::Failure => Self::Failure,
        }
    }
}
