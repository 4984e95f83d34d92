//! Per-worker host state that hostcalls read and write: contexts, HTTP streams, tick timer,
//! metric ids, and the host-wide state shared by all workers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use wasmtime::{Memory, TypedFunc};

use crate::headers::HeaderMap;
use crate::metrics::MetricsStore;
use crate::shared_data::SharedDataStore;
use crate::types::{HttpCall, HttpCallReply, LocalResponse, LogLevel, LogRecord};

/// Locks `mutex`, ignoring poisoning (a panicking test thread leaves the data consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The keys of `map`, sorted.
pub(crate) fn sorted_keys<V>(map: &HashMap<String, V>) -> Vec<String> {
    let mut keys: Vec<String> = map.keys().cloned().collect();
    keys.sort();
    keys
}

/// State shared by every worker of one host.
pub(crate) struct HostShared {
    pub clock_nanos: AtomicU64,
    pub shared_data: SharedDataStore,
    pub metrics: MetricsStore,
    pub logs: Mutex<Vec<LogRecord>>,
    pub calls: Mutex<Calls>,
    pub next_token: AtomicU32,
    pub properties: HashMap<String, Vec<u8>>,
    pub plugin_config: Mutex<Vec<u8>>,
    pub vm_config: Vec<u8>,
    pub clusters: Option<HashSet<String>>,
    pub log_level: LogLevel,
    pub foreign_calls: Mutex<HashMap<String, u64>>,
}

impl HostShared {
    pub fn now_nanos(&self) -> u64 {
        self.clock_nanos.load(Ordering::SeqCst)
    }
}

/// Dispatched HTTP calls: the history, and those still waiting for a reply.
#[derive(Default)]
pub(crate) struct Calls {
    pub history: Vec<HttpCall>,
    pub pending: HashMap<u32, PendingCall>,
}

/// Where to deliver a call's reply, and when it times out.
#[derive(Clone, Copy)]
pub(crate) struct PendingCall {
    /// Virtual time at which the call fails with a timeout (`u64::MAX`: never).
    pub deadline_nanos: u64,
    pub worker: usize,
    pub context_id: u32,
}

/// One HTTP stream's host-side state.
#[derive(Default)]
pub(crate) struct StreamState {
    pub request_headers: Option<HeaderMap>,
    pub request_trailers: Option<HeaderMap>,
    pub response_headers: Option<HeaderMap>,
    pub response_trailers: Option<HeaderMap>,
    /// Body bytes the filter currently sees (held while it buffers).
    pub request_buffer: Option<Vec<u8>>,
    pub response_buffer: Option<Vec<u8>>,
    /// Body bytes passed on (to the upstream / to the client).
    pub request_forwarded: Vec<u8>,
    pub response_forwarded: Vec<u8>,
    pub request_buffering: bool,
    pub response_buffering: bool,
    pub request_paused: bool,
    pub response_paused: bool,
    pub response_complete: bool,
    pub local_response: Option<LocalResponse>,
    pub local_response_delivered: bool,
    pub route_cache_clears: u32,
    pub ended: bool,
}

impl StreamState {
    /// Passes buffered request body on (the filter continued).
    pub fn flush_request(&mut self) {
        if let Some(buffer) = self.request_buffer.as_mut() {
            self.request_forwarded.append(buffer);
        }
        self.request_buffering = false;
    }

    /// Passes buffered response body on (the filter continued).
    pub fn flush_response(&mut self) {
        if let Some(buffer) = self.response_buffer.as_mut() {
            self.response_forwarded.append(buffer);
        }
        self.response_buffering = false;
    }
}

/// The data of one worker's wasmtime `Store`.
pub(crate) struct WorkerState {
    pub index: usize,
    pub shared: Arc<HostShared>,
    pub memory: Option<Memory>,
    pub allocate: Option<TypedFunc<u32, u32>>,
    pub root_context_id: u32,
    pub next_context_id: u32,
    /// The context hostcalls act on (set per callback; `proxy_set_effective_context`).
    pub effective_context: u32,
    pub log_phase: bool,
    pub streams: HashMap<u32, StreamState>,
    pub tick_period: Option<Duration>,
    pub next_tick_nanos: u64,
    /// `proxy_on_tick` calls delivered so far.
    pub ticks_delivered: u64,
    pub metric_names: HashMap<u32, String>,
    pub next_metric_id: u32,
    /// The reply being delivered to `proxy_on_http_call_response`, if any.
    pub call_reply: Option<HttpCallReply>,
    pub last_critical: Option<String>,
    pub stderr: Vec<u8>,
    pub random_state: u64,
}

impl WorkerState {
    pub fn new(index: usize, shared: Arc<HostShared>) -> Self {
        Self {
            index,
            shared,
            memory: None,
            allocate: None,
            root_context_id: 1,
            next_context_id: 2,
            effective_context: 1,
            log_phase: false,
            streams: HashMap::new(),
            tick_period: None,
            next_tick_nanos: 0,
            ticks_delivered: 0,
            metric_names: HashMap::new(),
            next_metric_id: 1,
            call_reply: None,
            last_critical: None,
            stderr: Vec::new(),
            random_state: 0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1),
        }
    }

    /// The stream the effective context refers to, if it is a live HTTP stream.
    pub fn effective_stream(&mut self) -> Option<&mut StreamState> {
        let id = self.effective_context;
        self.streams.get_mut(&id).filter(|s| !s.ended)
    }
}
