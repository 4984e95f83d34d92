//! [`Host`]: everything a filter's worker logic may ask of Envoy, as one narrow trait; and the
//! metric handles [`Counter`], [`Gauge`] and [`Histogram`] defined through it.
//!
//! In a module the kit passes its proxy-wasm implementation (every call trap-free); native
//! tests pass [`FakeHost`](super::fake::FakeHost). Header reads return bytes: hostile client
//! bytes never become a panic.

use crate::clock::Timestamp;
use crate::error::HostError;
use crate::grpc::GrpcStatus;
use crate::headers::HeaderMapKind;
use crate::shared::SharedStore;
use std::time::Duration;

/// The kinds of stat a filter defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Monotonic counter.
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Distribution of recorded values.
    Histogram,
}

/// The host as a filter sees it. Every method reports failure as a value (or logs it and does
/// nothing, for best-effort calls such as metrics); none may panic.
pub trait Host {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// The value of header `name` in map `kind` as bytes; `None` when absent or when the map is
    /// not available in the current phase. A header sent on several lines gives its first value
    /// only (Envoy's `get_header_map_value`): read a list header with [`Self::header_values`].
    fn header(&self, kind: HeaderMapKind, name: &str) -> Option<Vec<u8>>;

    /// Every value of header `name` in map `kind`, one per header line, in order; empty when
    /// absent or when the map is not available in the current phase.
    fn header_values(&self, kind: HeaderMapKind, name: &str) -> Vec<Vec<u8>>;

    /// Replaces (or adds) header `name` in map `kind`.
    fn set_header(&self, kind: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError>;

    /// Removes every value of header `name` from map `kind`.
    fn remove_header(&self, kind: HeaderMapKind, name: &str) -> Result<(), HostError>;

    /// Makes Envoy pick the route again after routing headers changed.
    fn clear_route_cache(&self) -> Result<(), HostError>;

    /// The raw value of a host property (e.g. `["source", "address"]`); `None` when absent.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;

    /// Envoy's shared data (shared by every worker's VM of the same `vm_id`).
    fn shared_store(&self) -> &dyn SharedStore;

    /// Answers the current request with HTTP `status`, `headers` and `body`.
    fn send_http_reply(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError>;

    /// Answers the current request with a trailers-only gRPC error (`status`, `message`, extra
    /// `headers`).
    fn send_grpc_reply(
        &self,
        status: GrpcStatus,
        message: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), HostError>;

    /// Defines a stat and returns its id.
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError>;

    /// Adds `delta` to a counter or gauge (best effort).
    fn increment_metric(&self, id: u32, delta: i64);

    /// Sets a gauge or records a histogram value (best effort).
    fn record_metric(&self, id: u32, value: u64);

    /// Sets the root context's tick period.
    fn set_tick_period(&self, period: Duration) -> Result<(), HostError>;

    /// Sends an HTTP request to Envoy cluster `upstream` (an HTTP callout): `headers` must
    /// include `:method`, `:path` and `:authority`; an empty `body` sends none; `timeout` is
    /// capped at [`MAX_TIMEOUT`](crate::callout::MAX_TIMEOUT). Returns the callout's token: the
    /// kit hands its response (or failure) to the dispatching filter's
    /// [`on_http_call_response`](super::Filter::on_http_call_response). Envoy refuses an unknown
    /// cluster or missing pseudo-headers with `BadArgument`. A callout dispatched while handling
    /// a stream is cancelled when that stream ends; one dispatched from a tick always answers.
    fn dispatch_http_call(
        &self,
        upstream: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError>;

    /// Response header `name` (e.g. `:status`) of the callout being answered; `None` when
    /// absent, when the callout failed (it has no headers) or outside
    /// [`on_http_call_response`](super::Filter::on_http_call_response).
    fn http_call_response_header(&self, name: &str) -> Option<Vec<u8>>;

    /// Every response header of the callout being answered, in order (empty when it failed).
    fn http_call_response_headers(&self) -> Vec<(String, Vec<u8>)>;

    /// The response body of the callout being answered (empty when it had none or failed).
    fn http_call_response_body(&self) -> Vec<u8>;
}

/// Defines a stat, logging (never panicking) when the host refuses it.
fn define(host: &dyn Host, kind: MetricKind, name: &str) -> Option<u32> {
    match host.define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(err) => {
            log::error!("cannot define metric {name}: {err}; it will not be recorded");
            None
        }
    }
}

/// A counter stat; a handle the host refused does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    id: Option<u32>,
}

impl Counter {
    /// Defines the counter `name` (use [`Setup::counter`](super::Setup::counter)).
    pub fn define(host: &dyn Host, name: &str) -> Counter {
        Counter {
            id: define(host, MetricKind::Counter, name),
        }
    }

    /// Adds `delta`.
    pub fn increment(&self, host: &dyn Host, delta: u64) {
        if let Some(id) = self.id {
            host.increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX));
        }
    }
}

/// A gauge stat; a handle the host refused does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge {
    id: Option<u32>,
}

impl Gauge {
    /// Defines the gauge `name` (use [`Setup::gauge`](super::Setup::gauge)).
    pub fn define(host: &dyn Host, name: &str) -> Gauge {
        Gauge {
            id: define(host, MetricKind::Gauge, name),
        }
    }

    /// Sets the value.
    pub fn set(&self, host: &dyn Host, value: u64) {
        if let Some(id) = self.id {
            host.record_metric(id, value);
        }
    }
}

/// A histogram stat; a handle the host refused does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram {
    id: Option<u32>,
}

impl Histogram {
    /// Defines the histogram `name`.
    pub fn define(host: &dyn Host, name: &str) -> Histogram {
        Histogram {
            id: define(host, MetricKind::Histogram, name),
        }
    }

    /// Records one value.
    pub fn record(&self, host: &dyn Host, value: u64) {
        if let Some(id) = self.id {
            host.record_metric(id, value);
        }
    }
}
