//! Scriptable loopback upstreams for the lab: one port serving HTTP/1.1, HTTP/2 (h2c prior knowledge) and the
//! gRPC `mesh.test.v1.Echo` service, with a capacity model (N workers, a service-time distribution, a FIFO
//! queue with an optional bound), faults changeable at runtime, kill/restart on the same port, and counters.
//!
//! gRPC health checks (`grpc.health.v1.Health/Check`) are answered SERVING before any of the stages
//! below and are not counted. With [`UpstreamConfig::any_grpc_method`] a call of any other gRPC method
//! is answered as `Echo/Get`: a stand-in for a real service's API.
//!
//! Every response carries [`UPSTREAM_NAME_HEADER`] with the configured name. Plain HTTP requests get a JSON
//! echo of what the upstream saw (see [`EchoedRequest`]), or the document set for their path
//! ([`UpstreamHandle::set_document`]: a registry or config endpoint a test changes at runtime); gRPC requests
//! are answered by the Echo service.
//!
//! A request goes through these stages, in order:
//! 1. counted as received (and as a retry when `x-envoy-attempt-count` > 1 or `grpc-previous-rpc-attempts`
//!    >= 1), in flight until its response is produced;
//! 2. held while the fault's `stall` is set;
//! 3. delayed by the fault's `added_latency`;
//! 4. answered at once with the injected error if the fault's `error_rate` draw says so (no worker used);
//! 5. queued for one of the `workers` (rejected with 503 / `RESOURCE_EXHAUSTED` when `max_queue` requests are
//!    already waiting), then holds the worker for a service time drawn from [`ServiceTime`].

mod service;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::{CancellationToken, DropGuard};

pub use service::EchoedRequest;
use service::{Sampler, Shared};

/// Generated gRPC types of `proto/mesh/test/v1/echo.proto` (`mesh.test.v1.Echo`: `Get`, `Slow`).
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("mesh.test.v1");
}

/// Pause after a failed accept (e.g. out of file descriptors) before accepting again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Response header naming the upstream that answered (its [`UpstreamConfig::name`]).
pub const UPSTREAM_NAME_HEADER: &str = "x-upstream-name";

/// How long a request holds a worker, drawn independently per request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServiceTime {
    /// Always the same duration.
    Constant(Duration),
    /// Uniformly distributed in `[min, max]`.
    Uniform {
        /// Shortest service time.
        min: Duration,
        /// Longest service time.
        max: Duration,
    },
    /// Log-normal with the given median and 99th percentile (`p99 >= median > 0`): a realistic long tail.
    LogNormal {
        /// 50th percentile.
        median: Duration,
        /// 99th percentile.
        p99: Duration,
    },
}

/// Where an injected gRPC error's `grpc-status` is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GrpcStatusDelivery {
    /// A trailers-only response: `grpc-status` in the response headers, no body.
    #[default]
    Headers,
    /// A normal response (headers without status, empty body) whose trailers carry `grpc-status`.
    Trailers,
}

/// Faults applied to every request from the moment they are set (see the module docs for the order).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// Fraction of requests (0.0..=1.0) answered with the injected error.
    pub error_rate: f64,
    /// Status of the injected error for plain HTTP requests.
    pub http_status: StatusCode,
    /// Code of the injected error for gRPC requests.
    pub grpc_code: tonic::Code,
    /// Where the injected gRPC status goes.
    pub grpc_delivery: GrpcStatusDelivery,
    /// Delay added to every request before it is answered or queued (a latency spike).
    pub added_latency: Duration,
    /// Hold every request (new and waiting) until a fault without `stall` is set.
    pub stall: bool,
}

impl Default for Fault {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            http_status: StatusCode::SERVICE_UNAVAILABLE,
            grpc_code: tonic::Code::Unavailable,
            grpc_delivery: GrpcStatusDelivery::Headers,
            added_latency: Duration::ZERO,
            stall: false,
        }
    }
}

impl Fault {
    /// No fault: the healthy state.
    pub fn none() -> Self {
        Self::default()
    }

    /// Answer `rate` of plain HTTP requests with `status` (gRPC requests get the default `UNAVAILABLE`).
    pub fn http_error(rate: f64, status: StatusCode) -> Self {
        Self {
            error_rate: rate,
            http_status: status,
            ..Self::default()
        }
    }

    /// Answer `rate` of gRPC requests with `code`, delivered as `delivery` says.
    pub fn grpc_error(rate: f64, code: tonic::Code, delivery: GrpcStatusDelivery) -> Self {
        Self {
            error_rate: rate,
            grpc_code: code,
            grpc_delivery: delivery,
            ..Self::default()
        }
    }

    /// Add `delay` to every request.
    pub fn latency(delay: Duration) -> Self {
        Self {
            added_latency: delay,
            ..Self::default()
        }
    }

    /// Hold every request until the fault is replaced.
    pub fn stall() -> Self {
        Self {
            stall: true,
            ..Self::default()
        }
    }
}

/// Configuration of one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Name sent back in [`UPSTREAM_NAME_HEADER`] and in gRPC replies; must be a valid header value.
    pub name: String,
    /// Loopback address to listen on (127.0.0.1 by default; others let upstreams share a port
    /// number or stand apart by address, as services behind their own host names do).
    pub ip: Ipv4Addr,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// Requests served concurrently; more wait in a FIFO queue.
    pub workers: usize,
    /// Time a request holds its worker.
    pub service_time: ServiceTime,
    /// Most requests allowed to wait for a worker; beyond it requests are rejected at once. `None`: unbounded.
    pub max_queue: Option<usize>,
    /// Fault in force from the start.
    pub fault: Fault,
    /// Answer a gRPC call of any method as `Echo/Get` (a stand-in for a real service's API);
    /// otherwise methods outside `mesh.test.v1.Echo` get UNIMPLEMENTED.
    pub any_grpc_method: bool,
}

impl UpstreamConfig {
    /// An upstream named `name` on a free port, with 64 workers, zero service time and no queue bound.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ip: Ipv4Addr::LOCALHOST,
            port: 0,
            workers: 64,
            service_time: ServiceTime::Constant(Duration::ZERO),
            max_queue: None,
            fault: Fault::none(),
            any_grpc_method: false,
        }
    }
}

/// A snapshot of an upstream's counters. Cumulative since start or the last reset, except `in_flight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct UpstreamCounters {
    /// Requests that reached the upstream (every attempt counts).
    pub received: u64,
    /// Requests answered (any status, including injected errors and queue rejections).
    pub completed: u64,
    /// Received requests that were retries (`x-envoy-attempt-count` > 1 or `grpc-previous-rpc-attempts` >= 1).
    pub retries: u64,
    /// Requests rejected because the queue was full.
    pub rejected: u64,
    /// Requests answered with the fault's injected error.
    pub injected_errors: u64,
    /// Requests received and not yet answered, now.
    pub in_flight: u64,
    /// Highest `in_flight` seen.
    pub peak_in_flight: u64,
}

impl UpstreamCounters {
    /// The counts accumulated between `earlier` and `self` (gauges `in_flight`/`peak_in_flight` are `self`'s).
    pub fn since(&self, earlier: &UpstreamCounters) -> UpstreamCounters {
        UpstreamCounters {
            received: self.received.saturating_sub(earlier.received),
            completed: self.completed.saturating_sub(earlier.completed),
            retries: self.retries.saturating_sub(earlier.retries),
            rejected: self.rejected.saturating_sub(earlier.rejected),
            injected_errors: self.injected_errors.saturating_sub(earlier.injected_errors),
            in_flight: self.in_flight,
            peak_in_flight: self.peak_in_flight,
        }
    }
}

/// Why an upstream could not start or restart.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The configuration cannot be served (message says which field).
    #[error("invalid upstream config: {0}")]
    InvalidConfig(String),
    /// Binding the address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address that could not be bound.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Entry point: starts upstreams.
pub struct Upstream;

impl Upstream {
    /// Binds `config.ip`:`config.port` and serves on the current tokio runtime until the handle is dropped or
    /// killed.
    pub async fn start(config: UpstreamConfig) -> Result<UpstreamHandle, UpstreamError> {
        if config.workers == 0 {
            return Err(UpstreamError::InvalidConfig(
                "workers must be at least 1".into(),
            ));
        }
        let sampler = Sampler::new(config.service_time)?;
        let shared = Arc::new(Shared::new(&config, sampler)?);
        let addr = SocketAddr::from((config.ip, config.port));
        let listener = bind(addr)?;
        let addr = listener
            .local_addr()
            .map_err(|source| UpstreamError::Bind { addr, source })?;
        let server = spawn_server(listener, Arc::clone(&shared));
        Ok(UpstreamHandle {
            addr,
            shared,
            server: Some(server),
        })
    }
}

/// A running (or killed) upstream. Dropping it stops the server and closes its connections.
pub struct UpstreamHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<RunningServer>,
}

struct RunningServer {
    /// Cancels the run (listener, connections, HTTP/2 stream tasks) when dropped.
    stop: DropGuard,
    task: JoinHandle<()>,
}

impl UpstreamHandle {
    /// The listening address (kept across restarts).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://<ip>:<port>`, for HTTP clients and tonic endpoints.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// Replaces the fault in force; requests already stalled re-check it at once.
    pub fn set_fault(&self, fault: Fault) {
        self.shared.set_fault(fault);
    }

    /// Back to healthy: same as `set_fault(Fault::none())`.
    pub fn clear_fault(&self) {
        self.set_fault(Fault::none());
    }

    /// From now on, answers plain HTTP requests for `path` (path and query, exactly) with 200 and
    /// `body` as `application/json` instead of the echo (faults and the capacity model still apply).
    pub fn set_document(&self, path: &str, body: impl Into<Bytes>) {
        self.shared.set_document(path, body.into());
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> UpstreamCounters {
        self.shared.counters()
    }

    /// Zeroes the cumulative counters; `peak_in_flight` restarts from the current `in_flight`.
    pub fn reset_counters(&self) {
        self.shared.reset_counters();
    }

    /// Whether the upstream is currently accepting connections.
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Abrupt kill: closes the listener and every open connection (in-flight requests are dropped without a
    /// response). Returns once the port is free. Counters and fault are kept for a later [`Self::restart`].
    pub async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            drop(server.stop);
            // The task only ends by returning; a join error would mean it panicked, and then it is gone too.
            let _ = server.task.await;
        }
    }

    /// Listens again on the same port (killing first if still running).
    pub async fn restart(&mut self) -> Result<(), UpstreamError> {
        self.kill().await;
        let listener = bind(self.addr)?;
        self.server = Some(spawn_server(listener, Arc::clone(&self.shared)));
        Ok(())
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener, UpstreamError> {
    let bind_error = |source| UpstreamError::Bind { addr, source };
    let socket = TcpSocket::new_v4().map_err(bind_error)?;
    // Restarting on the same port must not wait for the killed connections' TIME_WAIT.
    socket.set_reuseaddr(true).map_err(bind_error)?;
    socket.bind(addr).map_err(bind_error)?;
    socket.listen(1024).map_err(bind_error)
}

fn spawn_server(listener: TcpListener, shared: Arc<Shared>) -> RunningServer {
    let stopped = CancellationToken::new();
    let task = tokio::spawn(serve(listener, shared, stopped.clone()));
    RunningServer {
        stop: stopped.drop_guard(),
        task,
    }
}

/// Spawns hyper's background futures (HTTP/2 streams run the service there) so that they end with the run.
#[derive(Clone)]
struct RunExecutor {
    stopped: CancellationToken,
}

impl<F> hyper::rt::Executor<F> for RunExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        let stopped = self.stopped.clone();
        tokio::spawn(async move { stopped.run_until_cancelled(future).await });
    }
}

/// Accepts connections until told to stop, then drops the listener and aborts every connection.
async fn serve(listener: TcpListener, shared: Arc<Shared>, stopped: CancellationToken) {
    let mut builder = auto::Builder::new(RunExecutor {
        stopped: stopped.clone(),
    });
    // Overload must queue in the capacity model, not be refused by an HTTP/2 stream limit.
    builder.http2().max_concurrent_streams(None);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped.cancelled() => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    // Out of file descriptors and the like: keep listening, without spinning.
                    Err(_) => {
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                let builder = builder.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        service::handle(Arc::clone(&shared), request)
                    });
                    // A connection error (client reset, protocol error) ends only this connection.
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}
