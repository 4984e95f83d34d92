//! Load generator for loopback targets. Open loop ([`Arrival::Open`], the default): requests are launched at
//! a fixed rate on a schedule fixed at the start (request `i` is due at `start + i / rate`), whatever the
//! system under test does, so an overloaded target cannot slow the offered load. Latency is measured from
//! the scheduled send time to the final outcome (no coordinated omission) into HDR histograms; [`run`]
//! returns a serializable [`LoadReport`]. Closed loop ([`Arrival::Closed`]): a fixed number of clients each
//! send their next request the moment the previous one ended, so a refused request is followed at once by
//! another (`hey -c N`, or clients that resend as soon as they are refused: the retry storm of real
//! overload).
//!
//! Protocols: HTTP/1.1 keep-alive, HTTP/2 (h2c prior knowledge) and gRPC unary `mesh.test.v1.Echo/Get`
//! or `Slow` (tonic; the method is the request class's [`GrpcMethod`]), each over a pool of
//! [`LoadConfig::connections`] connections used round robin.
//!
//! **HTTP/1.1 needs enough connections.** An HTTP/1.1 connection carries one request at a time; a request
//! assigned to a busy connection waits for it, and that wait counts toward its latency (as it would for a
//! real client). By Little's law a pool needs about `rate × latency` connections plus headroom: 2,000 rps at
//! 5 ms needs 10; at 200 ms, 400. Too few connections shows up as client-side queueing, not as server load.
//!
//! Sends are paced by tokio's timer (1 ms resolution): above 1,000 rps several requests leave together, and
//! the report's `send_lag` (typically ~1 ms) is part of every measured latency.
//!
//! Safety bounds: runs end after [`LoadConfig::duration`] or [`LoadConfig::max_requests`], only loopback
//! targets are accepted, and at most [`LoadConfig::max_outstanding`] requests are outstanding; a request due
//! while the cap is reached is not sent and is counted as `client_dropped`.

mod client;
mod report;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use report::{ErrorCounts, LatencySummary, LoadReport, OutcomeStats};

use client::{Client, RequestPlan};
use report::Tally;

/// Response header by which a sidecar marks a request it shed; such responses count as `shed_by_sidecar`.
pub const SHED_HEADER: &str = "x-mesh-shed";

/// Request header carrying the client-side attempt number (1 for the first try, 2 for the first retry, ...).
pub const CLIENT_ATTEMPT_HEADER: &str = "x-client-attempt";

/// Wire protocol of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 keep-alive, one request at a time per connection.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge, requests multiplexed per connection.
    Http2,
    /// gRPC unary calls (each class's [`GrpcMethod`]) through tonic channels (one HTTP/2
    /// connection each).
    Grpc,
}

/// The `mesh.test.v1.Echo` method a gRPC request class calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GrpcMethod {
    /// `Echo/Get`.
    #[default]
    Get,
    /// `Echo/Slow` asking for no extra delay: a second method, e.g. one a sidecar treats
    /// differently from `Get`.
    Slow,
}

/// A share of the requests carrying extra headers (gRPC: metadata), reported separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestClass {
    /// Name in the report's `classes`.
    pub name: String,
    /// Relative share: with weights 1 and 4, exactly every fifth request belongs to the first class.
    pub weight: u32,
    /// Extra request headers, e.g. `("x-request-criticality", "critical")`.
    pub headers: Vec<(String, String)>,
    /// The method the class calls (gRPC only; default `Echo/Get`).
    pub grpc_method: GrpcMethod,
}

impl RequestClass {
    /// A class named `name` with relative `weight` and the given extra headers.
    pub fn new(name: impl Into<String>, weight: u32, headers: &[(&str, &str)]) -> Self {
        Self {
            name: name.into(),
            weight,
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            grpc_method: GrpcMethod::Get,
        }
    }

    /// The same class calling `method` (gRPC runs).
    pub fn calling(mut self, method: GrpcMethod) -> Self {
        self.grpc_method = method;
        self
    }
}

/// Client-side retries, modelling an aggressive client: every failed attempt (timeout, connect or transport
/// error, 5xx, 429, shed, gRPC non-OK) is retried after `backoff` until `max_retries` retries were made.
/// Retries are extra upstream attempts of one client request; latency covers all its attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retries.
    pub max_retries: u32,
    /// Pause before each retry.
    pub backoff: Duration,
}

/// How a run launches its requests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// Open loop: requests due on a fixed schedule of this many per second, whatever the target does.
    Open {
        /// Offered load, requests per second.
        rate_per_sec: f64,
    },
    /// Closed loop: this many clients, each sending its next request as soon as its previous one ended
    /// (any outcome); the class weights split the clients (weights 1 and 4: every fifth client is of the
    /// first class).
    Closed {
        /// Concurrent clients.
        clients: usize,
    },
}

/// One load run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// Where to send; must be a loopback address.
    pub target: SocketAddr,
    /// Wire protocol.
    pub protocol: Protocol,
    /// Open loop at a rate, or closed loop with a number of clients.
    pub arrival: Arrival,
    /// Length of the sending schedule (closed loop: no request starts after it).
    pub duration: Duration,
    /// Upper bound on the requests scheduled, if lower than `rate_per_sec × duration` (open loop only).
    pub max_requests: Option<u64>,
    /// Connections in the pool (see the module docs on HTTP/1.1 sizing).
    pub connections: usize,
    /// Client timeout of each attempt, from its scheduled (first attempt) or actual (retries) send time.
    pub timeout: Duration,
    /// Cap on outstanding requests; requests due beyond it are dropped and counted as `client_dropped`.
    pub max_outstanding: usize,
    /// Client-side retries.
    pub retry: RetryPolicy,
    /// Request classes; empty means one class named `default` without extra headers.
    pub classes: Vec<RequestClass>,
    /// HTTP method (HTTP protocols only).
    pub method: Method,
    /// Path and query (HTTP protocols only; gRPC calls each class's [`GrpcMethod`]).
    pub path: String,
    /// Host / `:authority` to send; `None` sends the target address.
    pub authority: Option<String>,
}

impl LoadConfig {
    /// `rate_per_sec` requests per second (open loop) to `target` for `duration`, with defaults: 64
    /// connections, 1 s timeout, at most 10,000 outstanding, no retries, one class, `GET /`.
    pub fn new(
        target: SocketAddr,
        protocol: Protocol,
        rate_per_sec: f64,
        duration: Duration,
    ) -> Self {
        Self::with_arrival(target, protocol, Arrival::Open { rate_per_sec }, duration)
    }

    /// `clients` closed-loop clients sending to `target` for `duration`, with the defaults of [`Self::new`].
    pub fn closed_loop(
        target: SocketAddr,
        protocol: Protocol,
        clients: usize,
        duration: Duration,
    ) -> Self {
        Self::with_arrival(target, protocol, Arrival::Closed { clients }, duration)
    }

    /// A run with `arrival` and the defaults of [`Self::new`].
    pub fn with_arrival(
        target: SocketAddr,
        protocol: Protocol,
        arrival: Arrival,
        duration: Duration,
    ) -> Self {
        Self {
            target,
            protocol,
            arrival,
            duration,
            max_requests: None,
            connections: 64,
            timeout: Duration::from_secs(1),
            max_outstanding: 10_000,
            retry: RetryPolicy::default(),
            classes: Vec::new(),
            method: Method::GET,
            path: "/".to_owned(),
            authority: None,
        }
    }

    /// Requests an open-loop schedule holds: `ceil(rate × duration)`, capped by `max_requests`; `None`
    /// for a closed loop, whose count depends on the target.
    pub fn scheduled_requests(&self) -> Option<u64> {
        let Arrival::Open { rate_per_sec } = self.arrival else {
            return None;
        };
        // Float-to-int `as` saturates; the rate and duration were validated finite and positive.
        let by_duration = (self.duration.as_secs_f64() * rate_per_sec).ceil() as u64;
        Some(
            self.max_requests
                .map_or(by_duration, |max| max.min(by_duration)),
        )
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The target is not a loopback address; the generator only loads the local lab.
    #[error("refusing to load non-loopback target {0}")]
    NonLoopbackTarget(SocketAddr),
    /// A configuration field is out of range or malformed (message says which).
    #[error("invalid load config: {0}")]
    InvalidConfig(String),
    /// The latency histograms could not be created.
    #[error("cannot create latency histogram: {0}")]
    Histogram(#[from] hdrhistogram::CreationError),
}

/// A validated request class with parsed headers.
pub(crate) struct PreparedClass {
    name: String,
    /// Cumulative weight up to and including this class.
    weight_end: u64,
    headers: HeaderMap,
    grpc_method: GrpcMethod,
}

/// Runs the load described by `config` on the current tokio runtime and reports once every request has
/// finished (at most `timeout × (max_retries + 1)` plus backoffs after the schedule ends).
pub async fn run(config: &LoadConfig) -> Result<LoadReport, LoadError> {
    validate(config)?;
    let classes = prepare_classes(&config.classes)?;
    let total_weight = classes.last().map_or(1, |class| class.weight_end);
    let plan = Arc::new(RequestPlan::new(config, classes)?);
    let client = Arc::new(Client::connect(config).await?);
    let mut tally = Tally::new(&plan.classes)?;
    let start = Instant::now();
    match config.arrival {
        Arrival::Open { rate_per_sec } => {
            let total = config.scheduled_requests().unwrap_or(0);
            run_open_loop(
                &client,
                &plan,
                &mut tally,
                total,
                rate_per_sec,
                total_weight,
                config,
            )
            .await;
        }
        Arrival::Closed { clients } => {
            run_closed_loop(&client, &plan, &mut tally, clients, total_weight, config).await;
        }
    }
    Ok(tally.into_report(config, start.elapsed()))
}

/// Launches `total` requests on the fixed schedule, then awaits them all.
async fn run_open_loop(
    client: &Arc<Client>,
    plan: &Arc<RequestPlan>,
    tally: &mut Tally,
    total: u64,
    rate_per_sec: f64,
    total_weight: u64,
    config: &LoadConfig,
) {
    let mut running = JoinSet::new();
    let start = Instant::now();
    for index in 0..total {
        let due = start + Duration::from_secs_f64(index as f64 / rate_per_sec);
        tokio::time::sleep_until(due).await;
        while let Some(finished) = running.try_join_next() {
            tally.record_task(finished.map(std::iter::once));
        }
        let class = plan.class_of(index % total_weight);
        if running.len() >= config.max_outstanding {
            tally.record_client_drop(class);
            continue;
        }
        tally.record_send_lag(Instant::now().saturating_duration_since(due));
        running.spawn(client::request(
            Arc::clone(client),
            Arc::clone(plan),
            class,
            due,
        ));
    }
    while let Some(finished) = running.join_next().await {
        tally.record_task(finished.map(std::iter::once));
    }
}

/// Runs `clients` clients, each sending back to back until `config.duration` has passed, then awaits the
/// requests in progress.
async fn run_closed_loop(
    client: &Arc<Client>,
    plan: &Arc<RequestPlan>,
    tally: &mut Tally,
    clients: usize,
    total_weight: u64,
    config: &LoadConfig,
) {
    let end = Instant::now() + config.duration;
    let mut running = JoinSet::new();
    for index in 0..clients {
        let class = plan.class_of(index as u64 % total_weight);
        let (client, plan) = (Arc::clone(client), Arc::clone(plan));
        running.spawn(async move {
            let mut finished = Vec::new();
            while Instant::now() < end {
                let sent = Instant::now();
                finished.push(
                    client::request(Arc::clone(&client), Arc::clone(&plan), class, sent).await,
                );
            }
            finished
        });
    }
    while let Some(finished) = running.join_next().await {
        tally.record_task(finished);
    }
}

fn validate(config: &LoadConfig) -> Result<(), LoadError> {
    let invalid = |why: &str| Err(LoadError::InvalidConfig(why.to_owned()));
    if !config.target.ip().is_loopback() {
        return Err(LoadError::NonLoopbackTarget(config.target));
    }
    match config.arrival {
        Arrival::Open { rate_per_sec } if !(rate_per_sec.is_finite() && rate_per_sec > 0.0) => {
            return invalid("rate_per_sec must be finite and positive");
        }
        Arrival::Closed { clients: 0 } => return invalid("clients must be at least 1"),
        Arrival::Open { .. } | Arrival::Closed { .. } => {}
    }
    if config.duration.is_zero() {
        return invalid("duration must be positive");
    }
    if config.connections == 0 {
        return invalid("connections must be at least 1");
    }
    if config.max_outstanding == 0 {
        return invalid("max_outstanding must be at least 1");
    }
    if config.timeout.is_zero() {
        return invalid("timeout must be positive");
    }
    Ok(())
}

fn prepare_classes(classes: &[RequestClass]) -> Result<Vec<PreparedClass>, LoadError> {
    if classes.is_empty() {
        return Ok(vec![PreparedClass {
            name: "default".to_owned(),
            weight_end: 1,
            headers: HeaderMap::new(),
            grpc_method: GrpcMethod::Get,
        }]);
    }
    let mut names = std::collections::BTreeSet::new();
    let mut weight_end = 0;
    let mut prepared = Vec::with_capacity(classes.len());
    for class in classes {
        if !names.insert(class.name.as_str()) {
            return Err(LoadError::InvalidConfig(format!(
                "class {:?} is defined twice",
                class.name
            )));
        }
        if class.weight == 0 {
            return Err(LoadError::InvalidConfig(format!(
                "class {:?} has weight 0",
                class.name
            )));
        }
        weight_end += u64::from(class.weight);
        let mut headers = HeaderMap::new();
        for (name, value) in &class.headers {
            let bad_header =
                || LoadError::InvalidConfig(format!("class {:?}: bad header {name:?}", class.name));
            let name = HeaderName::try_from(name.as_str()).map_err(|_| bad_header())?;
            let value = HeaderValue::try_from(value.as_str()).map_err(|_| bad_header())?;
            headers.append(name, value);
        }
        prepared.push(PreparedClass {
            name: class.name.clone(),
            weight_end,
            headers,
            grpc_method: class.grpc_method,
        });
    }
    Ok(prepared)
}
