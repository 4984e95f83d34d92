//! [`FakeHost`]: an in-memory [`Host`] for native tests of a filter's worker logic: the current
//! stream's header maps, properties, a settable clock, shared data with Envoy's CAS semantics and
//! injectable CAS failures, recorded metrics, local replies, route-cache clears and HTTP callouts
//! (recorded when dispatched; the test sets the response and delivers it to the chain).

use super::host::{Host, MetricKind};
use crate::clock::Timestamp;
use crate::error::HostError;
use crate::grpc::GrpcStatus;
use crate::headers::HeaderMapKind;
use crate::shared::{MemoryStore, SharedStore, StoreError};
use proxy_wasm::types::Status;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A local reply a filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentReply {
    /// HTTP status (for gRPC replies, the status Envoy would send to a non-gRPC client).
    pub status: u32,
    /// The gRPC status, for gRPC replies.
    pub grpc_status: Option<GrpcStatus>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body (for gRPC replies, the message).
    pub body: Vec<u8>,
}

type HeaderList = Vec<(String, Vec<u8>)>;

/// An HTTP callout a filter dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchedCall {
    /// The token returned to the filter.
    pub token: u32,
    /// The cluster it was sent to.
    pub upstream: String,
    /// Its headers, pseudo-headers included.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Its body.
    pub body: Vec<u8>,
    /// The timeout asked for.
    pub timeout: Duration,
}

impl DispatchedCall {
    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }
}

/// The response of the callout being answered.
#[derive(Default)]
struct CallResponse {
    headers: HeaderList,
    body: Vec<u8>,
}

/// An in-memory host. Header maps are those of "the current stream": tests set them before
/// driving a stream step.
#[derive(Default)]
pub struct FakeHost {
    now: Cell<u64>,
    maps: RefCell<HashMap<HeaderMapKind, HeaderList>>,
    properties: RefCell<HashMap<Vec<String>, Vec<u8>>>,
    store: FakeStore,
    metric_ids: RefCell<HashMap<String, u32>>,
    metric_values: RefCell<Vec<(String, MetricKind, i64)>>,
    replies: RefCell<Vec<SentReply>>,
    route_cache_clears: Cell<u32>,
    tick_period: Cell<Option<Duration>>,
    calls: RefCell<Vec<DispatchedCall>>,
    refused_clusters: RefCell<Vec<String>>,
    call_response: RefCell<CallResponse>,
}

/// Shared data with Envoy's semantics and injectable CAS failures.
#[derive(Default)]
struct FakeStore {
    inner: Arc<MemoryStore>,
    failing_writes: Cell<u32>,
    failed_writes: Cell<u64>,
}

impl SharedStore for FakeStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        if cas != 0 && self.failing_writes.get() > 0 {
            self.failing_writes.set(self.failing_writes.get() - 1);
            self.failed_writes.set(self.failed_writes.get() + 1);
            return Err(StoreError::CasMismatch);
        }
        self.inner.set(key, value, cas)
    }
}

impl FakeHost {
    /// A host at time 1 s after the epoch with empty maps and shared data.
    pub fn new() -> FakeHost {
        let host = FakeHost::default();
        host.now.set(1_000_000_000);
        host
    }

    /// A host whose shared data is `store`, so hosts on several threads act as several Envoy
    /// workers sharing one shared-data store.
    pub fn with_store(store: Arc<MemoryStore>) -> FakeHost {
        let mut host = FakeHost::new();
        host.store.inner = store;
        host
    }

    /// Sets the clock.
    pub fn set_now(&self, now: Timestamp) {
        self.now.set(now.as_nanos());
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.now.set(self.now.get().saturating_add(by));
    }

    fn set_map(&self, kind: HeaderMapKind, headers: &[(&str, &str)]) {
        let list = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect();
        self.maps.borrow_mut().insert(kind, list);
    }

    /// Replaces the request headers.
    pub fn set_request_headers(&self, headers: &[(&str, &str)]) {
        self.set_map(HeaderMapKind::RequestHeaders, headers);
    }

    /// Replaces the response headers.
    pub fn set_response_headers(&self, headers: &[(&str, &str)]) {
        self.set_map(HeaderMapKind::ResponseHeaders, headers);
    }

    /// Replaces the response trailers.
    pub fn set_response_trailers(&self, trailers: &[(&str, &str)]) {
        self.set_map(HeaderMapKind::ResponseTrailers, trailers);
    }

    /// Adds a header with arbitrary (possibly hostile) value bytes to map `kind`.
    pub fn add_header_bytes(&self, kind: HeaderMapKind, name: &str, value: &[u8]) {
        self.maps
            .borrow_mut()
            .entry(kind)
            .or_default()
            .push((name.to_owned(), value.to_vec()));
    }

    /// Sets a property.
    pub fn set_property(&self, path: &[&str], value: &[u8]) {
        let path = path.iter().map(|segment| segment.to_string()).collect();
        self.properties.borrow_mut().insert(path, value.to_vec());
    }

    /// Makes the next `writes` shared-data writes with a nonzero cas fail with `CasMismatch`,
    /// as if other workers kept winning the race.
    pub fn fail_next_cas_writes(&self, writes: u32) {
        self.store.failing_writes.set(writes);
    }

    /// How many writes [`FakeHost::fail_next_cas_writes`] failed so far.
    pub fn failed_cas_writes(&self) -> u64 {
        self.store.failed_writes.get()
    }

    /// The shared data itself (e.g. to read or seed a key).
    pub fn store(&self) -> &MemoryStore {
        &self.store.inner
    }

    fn metric(&self, name: &str) -> Option<i64> {
        let values = self.metric_values.borrow();
        values
            .iter()
            .find(|(metric, _, _)| metric == name)
            .map(|(_, _, value)| *value)
    }

    /// A counter's value (0 when never defined).
    pub fn counter(&self, name: &str) -> u64 {
        self.metric(name)
            .and_then(|value| u64::try_from(value).ok())
            .unwrap_or(0)
    }

    /// A gauge's value, if defined.
    pub fn gauge(&self, name: &str) -> Option<i64> {
        self.metric(name)
    }

    /// Every defined stat name.
    pub fn metric_names(&self) -> Vec<String> {
        let values = self.metric_values.borrow();
        values.iter().map(|(name, _, _)| name.clone()).collect()
    }

    /// The local replies sent so far, oldest first.
    pub fn replies(&self) -> Vec<SentReply> {
        self.replies.borrow().clone()
    }

    /// Takes the local replies sent so far, oldest first, leaving none.
    pub fn take_replies(&self) -> Vec<SentReply> {
        self.replies.take()
    }

    /// How often the route cache was cleared.
    pub fn route_cache_clears(&self) -> u32 {
        self.route_cache_clears.get()
    }

    /// The tick period last set.
    pub fn tick_period(&self) -> Option<Duration> {
        self.tick_period.get()
    }

    /// A header of map `kind` as the filter left it.
    pub fn header_of(&self, kind: HeaderMapKind, name: &str) -> Option<Vec<u8>> {
        self.header(kind, name)
    }

    /// Every HTTP callout dispatched so far, oldest first.
    pub fn dispatched_calls(&self) -> Vec<DispatchedCall> {
        self.calls.borrow().clone()
    }

    /// Makes dispatches to cluster `upstream` fail with `BadArgument`, as Envoy answers for a
    /// cluster it does not know.
    pub fn refuse_cluster(&self, upstream: &str) {
        self.refused_clusters.borrow_mut().push(upstream.to_owned());
    }

    /// Sets the response the filter reads while a callout is answered: deliver it with the
    /// chain's `on_http_call_response(host, token)`.
    pub fn set_http_call_response(&self, headers: &[(&str, &str)], body: &[u8]) {
        *self.call_response.borrow_mut() = CallResponse {
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
                .collect(),
            body: body.to_vec(),
        };
    }

    /// Makes the callout being answered a failure (reset, no healthy upstream, timeout): no
    /// headers, no body, as Envoy reports it.
    pub fn set_http_call_failure(&self) {
        *self.call_response.borrow_mut() = CallResponse::default();
    }

    fn update_metric(&self, id: u32, f: impl FnOnce(&mut i64)) {
        let mut values = self.metric_values.borrow_mut();
        if let Some((_, _, value)) = usize::try_from(id).ok().and_then(|i| values.get_mut(i)) {
            f(value);
        }
    }
}

impl Host for FakeHost {
    fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.now.get())
    }

    fn header(&self, kind: HeaderMapKind, name: &str) -> Option<Vec<u8>> {
        let maps = self.maps.borrow();
        maps.get(&kind)?
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    }

    fn header_values(&self, kind: HeaderMapKind, name: &str) -> Vec<Vec<u8>> {
        let maps = self.maps.borrow();
        maps.get(&kind).map_or_else(Vec::new, |list| {
            list.iter()
                .filter(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.clone())
                .collect()
        })
    }

    fn set_header(&self, kind: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.remove_header(kind, name)?;
        self.add_header_bytes(kind, name, value);
        Ok(())
    }

    fn remove_header(&self, kind: HeaderMapKind, name: &str) -> Result<(), HostError> {
        if let Some(list) = self.maps.borrow_mut().get_mut(&kind) {
            list.retain(|(key, _)| !key.eq_ignore_ascii_case(name));
        }
        Ok(())
    }

    fn clear_route_cache(&self) -> Result<(), HostError> {
        self.route_cache_clears
            .set(self.route_cache_clears.get() + 1);
        Ok(())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let path: Vec<String> = path.iter().map(|segment| segment.to_string()).collect();
        self.properties.borrow().get(&path).cloned()
    }

    fn shared_store(&self) -> &dyn SharedStore {
        &self.store
    }

    fn send_http_reply(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        self.replies.borrow_mut().push(SentReply {
            status,
            grpc_status: None,
            headers: owned(headers),
            body: body.to_vec(),
        });
        Ok(())
    }

    fn send_grpc_reply(
        &self,
        status: GrpcStatus,
        message: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), HostError> {
        self.replies.borrow_mut().push(SentReply {
            status: crate::reply::http_status_of(status),
            grpc_status: Some(status),
            headers: owned(headers),
            body: message.as_bytes().to_vec(),
        });
        Ok(())
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        if let Some(&id) = self.metric_ids.borrow().get(name) {
            return Ok(id);
        }
        let mut values = self.metric_values.borrow_mut();
        let id = u32::try_from(values.len())
            .map_err(|_| HostError::new("define_metric", Status::InternalFailure))?;
        values.push((name.to_owned(), kind, 0));
        self.metric_ids.borrow_mut().insert(name.to_owned(), id);
        Ok(id)
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        self.update_metric(id, |value| *value = value.saturating_add(delta));
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.update_metric(id, |stored| {
            *stored = i64::try_from(value).unwrap_or(i64::MAX)
        });
    }

    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        self.tick_period.set(Some(period));
        Ok(())
    }

    fn dispatch_http_call(
        &self,
        upstream: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let missing_pseudo = [":method", ":path", ":authority"]
            .iter()
            .any(|pseudo| headers.iter().all(|(name, _)| name != pseudo));
        if missing_pseudo || self.refused_clusters.borrow().iter().any(|c| c == upstream) {
            return Err(HostError::new("dispatch_http_call", Status::BadArgument));
        }
        let mut calls = self.calls.borrow_mut();
        let token = u32::try_from(calls.len() + 1)
            .map_err(|_| HostError::new("dispatch_http_call", Status::InternalFailure))?;
        calls.push(DispatchedCall {
            token,
            upstream: upstream.to_owned(),
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_vec()))
                .collect(),
            body: body.to_vec(),
            timeout: timeout.min(crate::callout::MAX_TIMEOUT),
        });
        Ok(token)
    }

    fn http_call_response_header(&self, name: &str) -> Option<Vec<u8>> {
        let response = self.call_response.borrow();
        response
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    }

    fn http_call_response_headers(&self) -> Vec<(String, Vec<u8>)> {
        self.call_response.borrow().headers.clone()
    }

    fn http_call_response_body(&self) -> Vec<u8> {
        self.call_response.borrow().body.clone()
    }
}

fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_cas_failures_hit_only_conditional_writes_and_are_counted() {
        let host = FakeHost::new();
        let store = host.shared_store();
        store.set("k", b"1", 0).unwrap();
        host.fail_next_cas_writes(2);
        let (_, cas) = store.get("k").unwrap().unwrap();
        assert_eq!(store.set("k", b"2", cas), Err(StoreError::CasMismatch));
        store.set("k", b"3", 0).unwrap();
        let (_, cas) = store.get("k").unwrap().unwrap();
        assert_eq!(store.set("k", b"4", cas), Err(StoreError::CasMismatch));
        assert_eq!(store.set("k", b"5", cas), Ok(()));
        assert_eq!(host.failed_cas_writes(), 2);
    }

    #[test]
    fn a_header_on_several_lines_gives_its_first_value_or_all_of_them() {
        let host = FakeHost::new();
        let request = HeaderMapKind::RequestHeaders;
        host.set_request_headers(&[("baggage", "a=1"), ("x", "y"), ("Baggage", "b=2")]);
        assert_eq!(host.header(request, "baggage"), Some(b"a=1".to_vec()));
        assert_eq!(
            host.header_values(request, "baggage"),
            [b"a=1".to_vec(), b"b=2".to_vec()]
        );
        assert!(host.header_values(request, "absent").is_empty());
        assert!(host
            .header_values(HeaderMapKind::ResponseHeaders, "baggage")
            .is_empty());
    }

    #[test]
    fn metrics_defined_twice_share_one_value() {
        let host = FakeHost::new();
        let a = host.define_metric(MetricKind::Counter, "mesh.f.c").unwrap();
        let b = host.define_metric(MetricKind::Counter, "mesh.f.c").unwrap();
        host.increment_metric(a, 2);
        host.increment_metric(b, 3);
        assert_eq!(host.counter("mesh.f.c"), 5);
    }

    #[test]
    fn callouts_are_recorded_and_answered_as_the_test_says() {
        let host = FakeHost::new();
        let headers: [(&str, &[u8]); 3] = [
            (":method", b"POST"),
            (":path", b"/x"),
            (":authority", b"admin"),
        ];
        let first = host
            .dispatch_http_call("admin", &headers, b"", Duration::from_secs(5))
            .unwrap();
        let second = host
            .dispatch_http_call("admin", &headers, b"body", Duration::MAX)
            .unwrap();
        assert_ne!(first, second);
        let calls = host.dispatched_calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].header(":PATH"), Some(&b"/x"[..]));
        assert_eq!(calls[1].body, b"body");
        assert_eq!(calls[1].timeout, crate::callout::MAX_TIMEOUT);

        host.refuse_cluster("missing");
        let refused = host.dispatch_http_call("missing", &headers, b"", Duration::from_secs(1));
        assert_eq!(refused.unwrap_err().status(), Status::BadArgument);
        let no_path = host.dispatch_http_call("admin", &headers[..1], b"", Duration::from_secs(1));
        assert!(no_path.is_err());
        assert_eq!(host.dispatched_calls().len(), 2);

        host.set_http_call_response(&[(":status", "200"), ("x-a", "b")], b"ok");
        assert_eq!(
            host.http_call_response_header(":status"),
            Some(b"200".to_vec())
        );
        assert_eq!(host.http_call_response_headers().len(), 2);
        assert_eq!(host.http_call_response_body(), b"ok");
        host.set_http_call_failure();
        assert_eq!(host.http_call_response_header(":status"), None);
        assert!(host.http_call_response_body().is_empty());
    }

    #[test]
    fn headers_are_case_insensitive_and_editable() {
        let host = FakeHost::new();
        host.set_request_headers(&[("X-Key", "a")]);
        let request = HeaderMapKind::RequestHeaders;
        assert_eq!(host.header(request, "x-key"), Some(b"a".to_vec()));
        host.set_header(request, "x-key", b"b").unwrap();
        assert_eq!(host.header(request, "X-KEY"), Some(b"b".to_vec()));
        host.remove_header(request, "x-key").unwrap();
        assert_eq!(host.header(request, "x-key"), None);
    }
}
