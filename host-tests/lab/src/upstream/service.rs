//! Per-request behaviour of an upstream: counters, stall, latency spike, injected errors, the worker queue,
//! service time, and the responses (JSON echo for HTTP, the tonic Echo service for gRPC).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use rand::distr::Uniform;
use rand::RngExt;
use rand_distr::{Distribution, LogNormal};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Semaphore, SemaphorePermit};
use tonic::body::Body;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use super::proto::echo_server::{Echo, EchoServer};
use super::proto::{EchoReply, EchoRequest, SlowRequest};
use super::{
    Fault, GrpcStatusDelivery, ServiceTime, UpstreamConfig, UpstreamCounters, UpstreamError,
    UPSTREAM_NAME_HEADER,
};

/// Paths of the gRPC health service, answered SERVING outside the capacity model.
const HEALTH_PATH_PREFIX: &str = "/grpc.health.v1.Health/";
/// Paths of the `mesh.test.v1.Echo` service.
const ECHO_PATH_PREFIX: &str = "/mesh.test.v1.Echo/";
/// What a call of another method becomes when the upstream answers any gRPC method.
const ECHO_GET_PATH: &str = "/mesh.test.v1.Echo/Get";

/// The standard normal quantile of 0.99: a log-normal's p99 is `median * exp(sigma * Z_P99)`.
const Z_P99: f64 = 2.326_347_874_040_841;

/// What the upstream saw of a plain HTTP request; the JSON body of every successful HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoedRequest {
    /// Name of the upstream that answered.
    pub upstream: String,
    /// Request method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Request headers by lower-case name; repeated headers joined with ", ", non-UTF-8 bytes replaced.
    pub headers: BTreeMap<String, String>,
    /// Length of the request body.
    pub body_bytes: usize,
}

/// A validated [`ServiceTime`], ready to draw from.
pub(super) enum Sampler {
    Constant(Duration),
    /// Seconds.
    Uniform(Uniform<f64>),
    /// Seconds.
    LogNormal(LogNormal<f64>),
}

impl Sampler {
    pub(super) fn new(service_time: ServiceTime) -> Result<Self, UpstreamError> {
        let invalid = |why: &str| UpstreamError::InvalidConfig(format!("service_time: {why}"));
        match service_time {
            ServiceTime::Constant(duration) => Ok(Self::Constant(duration)),
            ServiceTime::Uniform { min, max } => {
                Uniform::new_inclusive(min.as_secs_f64(), max.as_secs_f64())
                    .map(Self::Uniform)
                    .map_err(|_| invalid("uniform needs min <= max"))
            }
            ServiceTime::LogNormal { median, p99 } => {
                if median.is_zero() || p99 < median {
                    return Err(invalid("log-normal needs 0 < median <= p99"));
                }
                let mu = median.as_secs_f64().ln();
                let sigma = (p99.as_secs_f64().ln() - mu) / Z_P99;
                LogNormal::new(mu, sigma)
                    .map(Self::LogNormal)
                    .map_err(|error| invalid(&error.to_string()))
            }
        }
    }

    fn sample(&self) -> Duration {
        let seconds = match self {
            Self::Constant(duration) => return *duration,
            Self::Uniform(uniform) => uniform.sample(&mut rand::rng()),
            Self::LogNormal(log_normal) => log_normal.sample(&mut rand::rng()),
        };
        // Only an absurd tail draw overflows a Duration; serve it as "very long".
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    }
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    completed: AtomicU64,
    retries: AtomicU64,
    rejected: AtomicU64,
    injected_errors: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

/// Keeps a request counted in flight until dropped (answered, or dropped by a kill).
struct InFlight<'a>(&'a Counters);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Counters {
    fn enter(&self, retry: bool) -> InFlight<'_> {
        self.received.fetch_add(1, Ordering::Relaxed);
        if retry {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(self)
    }
}

/// Keeps a request counted as waiting for a worker until dropped.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// State shared by all connections of one upstream, across restarts.
pub(super) struct Shared {
    name: String,
    name_value: HeaderValue,
    workers: Semaphore,
    max_queue: Option<usize>,
    queued: AtomicUsize,
    sampler: Sampler,
    fault: watch::Sender<Fault>,
    /// Documents served instead of the echo, by path and query.
    documents: watch::Sender<BTreeMap<String, Bytes>>,
    counters: Counters,
    grpc: EchoServer<EchoService>,
    /// Answers `grpc.health.v1.Health` checks: SERVING.
    health: HealthServer<HealthService>,
    /// Every gRPC method is answered as `Echo/Get`.
    any_grpc_method: bool,
}

impl Shared {
    pub(super) fn new(config: &UpstreamConfig, sampler: Sampler) -> Result<Self, UpstreamError> {
        let name_value = HeaderValue::from_str(&config.name).map_err(|_| {
            UpstreamError::InvalidConfig(format!(
                "name {:?} is not a valid header value",
                config.name
            ))
        })?;
        Ok(Self {
            name: config.name.clone(),
            name_value,
            workers: Semaphore::new(config.workers),
            max_queue: config.max_queue,
            queued: AtomicUsize::new(0),
            sampler,
            fault: watch::Sender::new(config.fault),
            documents: watch::Sender::new(BTreeMap::new()),
            counters: Counters::default(),
            grpc: EchoServer::new(EchoService {
                name: config.name.clone(),
            }),
            health: HealthServer::new(HealthService::from_health_reporter(HealthReporter::new())),
            any_grpc_method: config.any_grpc_method,
        })
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn set_fault(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    pub(super) fn set_document(&self, path: &str, body: Bytes) {
        self.documents.send_modify(|documents| {
            documents.insert(path.to_owned(), body);
        });
    }

    /// The document set for `request`'s path and query, if any.
    fn document<B>(&self, request: &Request<B>) -> Option<Bytes> {
        let path = request.uri().path_and_query()?.as_str();
        self.documents.borrow().get(path).cloned()
    }

    pub(super) fn counters(&self) -> UpstreamCounters {
        let c = &self.counters;
        UpstreamCounters {
            received: c.received.load(Ordering::Relaxed),
            completed: c.completed.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            injected_errors: c.injected_errors.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            peak_in_flight: c.peak_in_flight.load(Ordering::Relaxed),
        }
    }

    pub(super) fn reset_counters(&self) {
        let c = &self.counters;
        for counter in [
            &c.received,
            &c.completed,
            &c.retries,
            &c.rejected,
            &c.injected_errors,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        c.peak_in_flight
            .store(c.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The fault in force once no stall is set.
    async fn unstalled_fault(&self) -> Fault {
        let mut faults = self.fault.subscribe();
        // The sender lives in `self`, so waiting cannot fail; fall back to the current fault regardless.
        let unstalled = faults
            .wait_for(|fault| !fault.stall)
            .await
            .map(|fault| *fault);
        unstalled.unwrap_or_else(|_| *self.fault.borrow())
    }

    /// A worker, after waiting in FIFO order; `None` when the queue bound is reached.
    async fn worker(&self) -> Option<SemaphorePermit<'_>> {
        if let Some(bound) = self.max_queue {
            if let Ok(permit) = self.workers.try_acquire() {
                return Some(permit);
            }
            let waiting_before = self.queued.fetch_add(1, Ordering::Relaxed);
            let _queued = Queued(&self.queued);
            if waiting_before >= bound {
                return None;
            }
            return self.workers.acquire().await.ok();
        }
        // The semaphore is never closed, so acquiring only fails in theory.
        self.workers.acquire().await.ok()
    }
}

/// Serves one request (hyper service function).
pub(super) async fn handle(
    shared: Arc<Shared>,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let grpc = is_grpc(request.headers());
    if grpc && request.uri().path().starts_with(HEALTH_PATH_PREFIX) {
        // A health check, not traffic: not counted, no fault, no worker.
        return Ok(
            match tower::ServiceExt::oneshot(shared.health.clone(), request).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
        );
    }
    if grpc && shared.any_grpc_method && !request.uri().path().starts_with(ECHO_PATH_PREFIX) {
        *request.uri_mut() = Uri::from_static(ECHO_GET_PATH);
    }
    let _in_flight = shared.counters.enter(is_retry(request.headers()));
    let fault = shared.unstalled_fault().await;
    if !fault.added_latency.is_zero() {
        tokio::time::sleep(fault.added_latency).await;
    }
    let mut response = if rand::rng().random::<f64>() < fault.error_rate {
        shared
            .counters
            .injected_errors
            .fetch_add(1, Ordering::Relaxed);
        injected_error(grpc, &fault)
    } else if let Some(_worker) = shared.worker().await {
        tokio::time::sleep(shared.sampler.sample()).await;
        if grpc {
            match tower::ServiceExt::oneshot(shared.grpc.clone(), request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        } else if let Some(document) = shared.document(&request) {
            json_response(document)
        } else {
            echo(&shared.name, request).await
        }
    } else {
        shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
        queue_full(grpc)
    };
    response
        .headers_mut()
        .insert(UPSTREAM_NAME_HEADER, shared.name_value.clone());
    shared.counters.completed.fetch_add(1, Ordering::Relaxed);
    Ok(response)
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

fn is_retry(headers: &HeaderMap) -> bool {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    number("x-envoy-attempt-count").is_some_and(|attempt| attempt > 1)
        || number("grpc-previous-rpc-attempts").is_some_and(|previous| previous >= 1)
}

async fn echo(name: &str, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body_bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(_) => return text_response(StatusCode::BAD_REQUEST, "unreadable request body"),
    };
    let mut headers = BTreeMap::<String, String>::new();
    for (header, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(header.as_str().to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let echoed = EchoedRequest {
        upstream: name.to_owned(),
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string),
        headers,
        body_bytes,
    };
    match serde_json::to_vec(&echoed) {
        Ok(json) => json_response(Bytes::from(json)),
        Err(_) => text_response(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode echo"),
    }
}

fn json_response(json: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(json)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn injected_error(grpc: bool, fault: &Fault) -> Response<Body> {
    if !grpc {
        return text_response(fault.http_status, "injected fault");
    }
    grpc_error(fault.grpc_code, "injected-fault", fault.grpc_delivery)
}

fn queue_full(grpc: bool) -> Response<Body> {
    if grpc {
        grpc_error(
            tonic::Code::ResourceExhausted,
            "upstream-queue-full",
            GrpcStatusDelivery::Headers,
        )
    } else {
        text_response(StatusCode::SERVICE_UNAVAILABLE, "upstream queue full")
    }
}

/// A gRPC error response; `message` must need no percent-encoding.
fn grpc_error(
    code: tonic::Code,
    message: &'static str,
    delivery: GrpcStatusDelivery,
) -> Response<Body> {
    let mut status_headers = HeaderMap::new();
    status_headers.insert("grpc-status", HeaderValue::from(code as i32));
    status_headers.insert("grpc-message", HeaderValue::from_static(message));
    let mut response = match delivery {
        GrpcStatusDelivery::Headers => {
            let mut response = Response::new(Body::empty());
            response.headers_mut().extend(status_headers);
            response
        }
        GrpcStatusDelivery::Trailers => {
            Response::new(Body::new(Empty::<Bytes>::new().with_trailers(async move {
                Some(Ok::<_, Infallible>(status_headers))
            })))
        }
    };
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// The `mesh.test.v1.Echo` implementation; runs after the upstream's capacity model has admitted the call.
pub(super) struct EchoService {
    name: String,
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn get(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, tonic::Status> {
        Ok(tonic::Response::new(EchoReply {
            message: request.into_inner().message,
            upstream: self.name.clone(),
        }))
    }

    async fn slow(
        &self,
        request: tonic::Request<SlowRequest>,
    ) -> Result<tonic::Response<EchoReply>, tonic::Status> {
        let request = request.into_inner();
        tokio::time::sleep(Duration::from_millis(request.delay_ms.into())).await;
        Ok(tonic::Response::new(EchoReply {
            message: request.message,
            upstream: self.name.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn quantile(sorted: &[Duration], q: f64) -> Duration {
        sorted[((sorted.len() - 1) as f64 * q).round() as usize]
    }

    #[test]
    fn log_normal_service_time_has_the_configured_median_and_p99() {
        let sampler = Sampler::new(ServiceTime::LogNormal {
            median: Duration::from_millis(10),
            p99: Duration::from_millis(80),
        })
        .unwrap();
        let mut draws: Vec<Duration> = (0..50_000).map(|_| sampler.sample()).collect();
        draws.sort();
        let median = quantile(&draws, 0.5).as_secs_f64() * 1000.0;
        let p99 = quantile(&draws, 0.99).as_secs_f64() * 1000.0;
        assert!((9.5..=10.5).contains(&median), "median {median} ms");
        assert!((72.0..=88.0).contains(&p99), "p99 {p99} ms");
    }

    #[test]
    fn uniform_service_time_stays_in_range() {
        let sampler = Sampler::new(ServiceTime::Uniform {
            min: Duration::from_millis(5),
            max: Duration::from_millis(7),
        })
        .unwrap();
        for _ in 0..1000 {
            let draw = sampler.sample();
            assert!((Duration::from_millis(5)..=Duration::from_millis(7)).contains(&draw));
        }
    }

    #[test]
    fn invalid_service_times_are_rejected() {
        let backwards = ServiceTime::LogNormal {
            median: Duration::from_millis(10),
            p99: Duration::from_millis(5),
        };
        assert!(matches!(
            Sampler::new(backwards),
            Err(UpstreamError::InvalidConfig(_))
        ));
        let inverted = ServiceTime::Uniform {
            min: Duration::from_millis(7),
            max: Duration::from_millis(5),
        };
        assert!(matches!(
            Sampler::new(inverted),
            Err(UpstreamError::InvalidConfig(_))
        ));
    }

    #[test]
    fn retries_are_recognised_from_envoy_and_grpc_headers() {
        let with = |name: &'static str, value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static(value));
            is_retry(&headers)
        };
        assert!(!with("x-envoy-attempt-count", "1"));
        assert!(with("x-envoy-attempt-count", "2"));
        assert!(!with("grpc-previous-rpc-attempts", "0"));
        assert!(with("grpc-previous-rpc-attempts", "1"));
        assert!(!with("x-envoy-attempt-count", "garbage"));
        assert!(!is_retry(&HeaderMap::new()));
    }
}
