//! The entity cache's pure core: no hostcalls, time passed in.
//!
//! - [`Matcher`]: which rule a request matches, from its `:path` and `:method` bytes. gRPC
//!   rules (`package.Service/Method`, `package.Service/*`) match gRPC requests whose path is
//!   exactly `/package.Service/Method`; HTTP rules match a path prefix and a method (absent:
//!   `GET` or `HEAD`). First match wins; hostile bytes simply match nothing.
//! - [`classify`]: what a cache response says about the cache ([`Observation`]): a success, a
//!   failure of an [`ErrorClass`], or nothing (the client went away, a filter answered).
//! - [`BreakerState`]: one cache cluster's breaker, as every worker sees it in shared data.
//!
//! **The breaker.** Closed, it counts cache outcomes in a sliding window of [`BUCKETS`] time
//! buckets and a run of consecutive failures; it opens when the window holds at least
//! `min_requests` outcomes with an error rate above `error_rate`, or after
//! `consecutive_failures` failures in a row (both checked on a failure, so only a failure opens
//! it). Open, cacheable calls go to the origin. After
//! `cool_down` it is half-open (a function of the time it opened, so no write is needed):
//! each worker lets `half_open_share` of cacheable calls probe the cache ([`ProbeGate`]); a
//! failed probe opens it again (a new cool-down), `successes_to_close` successful probes close
//! it with an empty window. Outcomes reported while open (calls sent before it opened) change
//! nothing.

use crate::config::BreakerConfig;
use meshkit::bytes::{ByteReader, ByteWriter};
use meshkit::clock::Timestamp;
use meshkit::grpc::{parse_grpc_status, GrpcStatus};
use meshkit::kit::Outcome;
use meshkit::shared::{DecodeError, SharedValue};
use std::time::Duration;

/// Time buckets of the breaker's window.
pub const BUCKETS: usize = 10;

/// A rule's request pattern, compiled from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// gRPC: the path `/<service>/<method>` exactly, or any method of `service` when `method`
    /// is `None`.
    Grpc {
        /// `package.Service`.
        service: Vec<u8>,
        /// The method; `None` for `*`.
        method: Option<Vec<u8>>,
    },
    /// HTTP: a path prefix, and a method (`None`: `GET` or `HEAD`).
    Http {
        /// The method the request must have.
        method: Option<Vec<u8>>,
        /// The prefix the path must start with.
        path_prefix: Vec<u8>,
    },
}

impl Pattern {
    /// The pattern of a validated gRPC method rule (`package.Service/Method` or `.../*`).
    pub fn grpc(rule: &str) -> Pattern {
        let (service, method) = rule.split_once('/').unwrap_or((rule, "*"));
        Pattern::Grpc {
            service: service.as_bytes().to_vec(),
            method: (method != "*").then(|| method.as_bytes().to_vec()),
        }
    }

    /// Whether a request with `path`, `method` (HTTP method) and gRPC-ness matches.
    pub fn matches(&self, path: &[u8], method: &[u8], grpc: bool) -> bool {
        match self {
            Pattern::Grpc {
                service,
                method: rpc,
            } => {
                if !grpc {
                    return false;
                }
                let Some(rest) = path
                    .strip_prefix(b"/")
                    .and_then(|rest| rest.strip_prefix(service.as_slice()))
                    .and_then(|rest| rest.strip_prefix(b"/"))
                else {
                    return false;
                };
                match rpc {
                    Some(rpc) => rest == rpc.as_slice(),
                    None => !rest.is_empty() && !rest.iter().any(|b| b"/?#".contains(b)),
                }
            }
            Pattern::Http {
                method: wanted,
                path_prefix,
            } => {
                let method_ok = match wanted {
                    Some(wanted) => method == wanted.as_slice(),
                    None => method == b"GET" || method == b"HEAD",
                };
                method_ok && path.starts_with(path_prefix)
            }
        }
    }
}

/// The rules, in order: which one a request matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

impl Matcher {
    /// A matcher over `patterns`, in rule order.
    pub fn new(patterns: Vec<Pattern>) -> Matcher {
        Matcher { patterns }
    }

    /// The index of the first rule the request matches.
    pub fn find(&self, path: &[u8], method: &[u8], grpc: bool) -> Option<usize> {
        self.patterns
            .iter()
            .position(|pattern| pattern.matches(path, method, grpc))
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// Why a cache call counts as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The cache answered HTTP 5xx.
    Status5xx,
    /// The cache answered a gRPC status that says it is degraded (UNAVAILABLE,
    /// DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, RESOURCE_EXHAUSTED), in headers or trailers.
    Grpc(GrpcStatus),
    /// Envoy could not connect to the cache (refused, no healthy host).
    ConnectFailure,
    /// The stream was reset before the response completed.
    Reset,
    /// Envoy's upstream timeout fired.
    Timeout,
    /// The response came, but slower than the latency threshold.
    Slow,
    /// The cache attempt failed and Envoy retried the call (on the origin): the response's
    /// `x-envoy-attempt-count` is above 1.
    Retried,
}

impl ErrorClass {
    /// Every class, in metric order.
    pub const ALL: [ErrorClass; 11] = [
        ErrorClass::Status5xx,
        ErrorClass::Grpc(GrpcStatus::Unavailable),
        ErrorClass::Grpc(GrpcStatus::DeadlineExceeded),
        ErrorClass::Grpc(GrpcStatus::Internal),
        ErrorClass::Grpc(GrpcStatus::Unknown),
        ErrorClass::Grpc(GrpcStatus::ResourceExhausted),
        ErrorClass::ConnectFailure,
        ErrorClass::Reset,
        ErrorClass::Timeout,
        ErrorClass::Slow,
        ErrorClass::Retried,
    ];

    /// The metric segment: `cache_errors.<name>`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Status5xx => "status_5xx",
            ErrorClass::Grpc(GrpcStatus::Unavailable) => "grpc_unavailable",
            ErrorClass::Grpc(GrpcStatus::DeadlineExceeded) => "grpc_deadline_exceeded",
            ErrorClass::Grpc(GrpcStatus::Internal) => "grpc_internal",
            ErrorClass::Grpc(GrpcStatus::Unknown) => "grpc_unknown",
            ErrorClass::Grpc(_) => "grpc_resource_exhausted",
            ErrorClass::ConnectFailure => "connect_failure",
            ErrorClass::Reset => "reset",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Slow => "slow",
            ErrorClass::Retried => "retried",
        }
    }
}

/// Whether a gRPC status says the cache is degraded.
pub fn is_cache_failure(status: GrpcStatus) -> bool {
    matches!(
        status,
        GrpcStatus::Unavailable
            | GrpcStatus::DeadlineExceeded
            | GrpcStatus::Internal
            | GrpcStatus::Unknown
            | GrpcStatus::ResourceExhausted
    )
}

/// What a cache call's response showed, as the glue collected it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheResponse<'a> {
    /// The kit's outcome of the stream.
    pub outcome: Option<Outcome>,
    /// The response's `:status`.
    pub status: Option<&'a [u8]>,
    /// `grpc-status` from the response headers, else the trailers.
    pub grpc_status: Option<&'a [u8]>,
    /// The response's `x-envoy-attempt-count`.
    pub attempt_count: Option<&'a [u8]>,
    /// Envoy's `response.code_details`, for responses Envoy made itself.
    pub code_details: Option<&'a [u8]>,
    /// Time from the request headers to the end of the stream.
    pub latency: Duration,
}

/// What one cache call says about the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The cache answered well and in time.
    Success,
    /// The cache failed the call.
    Failure(ErrorClass),
    /// Nothing about the cache (the client went away, another filter answered).
    Neutral,
}

/// Classifies a cache call's response; `latency_threshold` (if any) makes slow successes
/// failures. Every input is bytes from the wire: nothing here can panic.
pub fn classify(response: &CacheResponse<'_>, latency_threshold: Option<Duration>) -> Observation {
    let attempts = response
        .attempt_count
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if attempts.is_some_and(|attempts| attempts > 1) {
        return Observation::Failure(ErrorClass::Retried);
    }
    let details = response.code_details.unwrap_or_default();
    let mentions = |needle: &[u8]| details.windows(needle.len()).any(|w| w == needle);
    match response.outcome {
        Some(Outcome::Reset) => {
            return if mentions(b"downstream") {
                Observation::Neutral
            } else {
                Observation::Failure(ErrorClass::Reset)
            };
        }
        Some(Outcome::LocalReply) => {
            return if mentions(b"timeout") {
                Observation::Failure(ErrorClass::Timeout)
            } else if mentions(b"connection_failure")
                || mentions(b"no_healthy_upstream")
                || mentions(b"connect")
            {
                Observation::Failure(ErrorClass::ConnectFailure)
            } else if mentions(b"upstream_reset") {
                Observation::Failure(ErrorClass::Reset)
            } else {
                Observation::Neutral
            };
        }
        _ => {}
    }
    let status = response
        .status
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| value.trim().parse::<u32>().ok());
    if status.is_some_and(|status| status >= 500) {
        return Observation::Failure(ErrorClass::Status5xx);
    }
    if let Some(grpc) = response.grpc_status.and_then(parse_grpc_status) {
        if is_cache_failure(grpc) {
            return Observation::Failure(ErrorClass::Grpc(grpc));
        }
    }
    if latency_threshold.is_some_and(|threshold| response.latency > threshold) {
        return Observation::Failure(ErrorClass::Slow);
    }
    Observation::Success
}

/// A breaker's phase, as the `breaker_state` gauge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Calls go to the cache.
    Closed = 0,
    /// Calls go to the origin.
    Open = 1,
    /// A share of calls probes the cache.
    HalfOpen = 2,
}

/// A change of phase an outcome caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// No change.
    None,
    /// The breaker opened (from closed, or again from half-open).
    Opened,
    /// Enough probes succeeded: the breaker closed.
    Closed,
}

/// The breaker parameters, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Breaker {
    bucket_nanos: u64,
    min_requests: u32,
    error_rate: f64,
    consecutive_failures: u32,
    cool_down: Duration,
    half_open_share: f64,
    successes_to_close: u32,
}

impl Breaker {
    /// The breaker of a validated configuration.
    pub fn new(config: &BreakerConfig) -> Breaker {
        let window = u64::try_from(config.window_ms.as_duration().as_nanos()).unwrap_or(u64::MAX);
        Breaker {
            bucket_nanos: (window / BUCKETS as u64).max(1),
            min_requests: config.min_requests,
            error_rate: config.error_rate.get(),
            consecutive_failures: config.consecutive_failures,
            cool_down: config.cool_down_ms.as_duration(),
            half_open_share: config.half_open_share.get(),
            successes_to_close: config.successes_to_close,
        }
    }

    fn bucket_of(&self, now: Timestamp) -> u64 {
        now.as_nanos() / self.bucket_nanos
    }

    /// The share of calls a half-open breaker lets probe the cache.
    pub fn half_open_share(&self) -> f64 {
        self.half_open_share
    }
}

/// One window bucket: cache outcomes and failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    requests: u32,
    failures: u32,
}

/// One cache cluster's breaker, stored in shared data and updated by every worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerState {
    /// When it (last) opened, in nanoseconds; 0 while closed.
    opened_at: u64,
    open: bool,
    consecutive_failures: u32,
    probe_successes: u32,
    bucket_nanos: u64,
    newest_bucket: u64,
    buckets: [Bucket; BUCKETS],
}

impl BreakerState {
    /// The layout version of the encoding (part of the shared-data key).
    pub const FORMAT_VERSION: u8 = 1;

    /// A closed breaker with an empty window.
    pub fn new(breaker: &Breaker, now: Timestamp) -> BreakerState {
        BreakerState {
            opened_at: 0,
            open: false,
            consecutive_failures: 0,
            probe_successes: 0,
            bucket_nanos: breaker.bucket_nanos,
            newest_bucket: breaker.bucket_of(now),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    /// Whether the state was made for `breaker`'s window (a reconfigured window starts afresh).
    pub fn fits(&self, breaker: &Breaker) -> bool {
        self.bucket_nanos == breaker.bucket_nanos
    }

    /// The phase at `now`: half-open once the cool-down since opening has passed.
    pub fn phase(&self, breaker: &Breaker, now: Timestamp) -> Phase {
        if !self.open {
            Phase::Closed
        } else if now >= Timestamp::from_nanos(self.opened_at).saturating_add(breaker.cool_down) {
            Phase::HalfOpen
        } else {
            Phase::Open
        }
    }

    /// Outcomes and failures in the window at `now`.
    pub fn window(&self, breaker: &Breaker, now: Timestamp) -> (u64, u64) {
        let current = breaker.bucket_of(now);
        let oldest_live = current.saturating_sub(BUCKETS as u64 - 1);
        let mut totals = (0u64, 0u64);
        if self.newest_bucket < oldest_live {
            return totals;
        }
        let live = (self.newest_bucket - oldest_live + 1).min(BUCKETS as u64);
        for offset in 0..live {
            let index = self.newest_bucket - offset;
            let bucket = self.buckets[(index % BUCKETS as u64) as usize];
            totals.0 += u64::from(bucket.requests);
            totals.1 += u64::from(bucket.failures);
        }
        totals
    }

    /// Moves the window to `now`, emptying the buckets that expired.
    fn advance(&mut self, breaker: &Breaker, now: Timestamp) {
        let current = breaker.bucket_of(now);
        if current <= self.newest_bucket {
            return;
        }
        let stale = (current - self.newest_bucket).min(BUCKETS as u64);
        for step in 1..=stale {
            let index = (self.newest_bucket + step) % BUCKETS as u64;
            self.buckets[index as usize] = Bucket::default();
        }
        self.newest_bucket = current;
    }

    /// Records one cache call's outcome at `now`.
    pub fn record(&mut self, breaker: &Breaker, now: Timestamp, failure: bool) -> Transition {
        match self.phase(breaker, now) {
            Phase::Open => Transition::None,
            Phase::HalfOpen if failure => {
                self.opened_at = now.as_nanos();
                self.probe_successes = 0;
                Transition::Opened
            }
            Phase::HalfOpen => {
                self.probe_successes = self.probe_successes.saturating_add(1);
                if self.probe_successes < breaker.successes_to_close {
                    return Transition::None;
                }
                *self = BreakerState::new(breaker, now);
                Transition::Closed
            }
            Phase::Closed => {
                self.advance(breaker, now);
                let bucket = &mut self.buckets[(self.newest_bucket % BUCKETS as u64) as usize];
                bucket.requests = bucket.requests.saturating_add(1);
                if failure {
                    bucket.failures = bucket.failures.saturating_add(1);
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                } else {
                    self.consecutive_failures = 0;
                }
                let (requests, failures) = self.window(breaker, now);
                #[allow(clippy::cast_precision_loss)]
                let rate_exceeded = failure
                    && requests >= u64::from(breaker.min_requests)
                    && failures as f64 > breaker.error_rate * requests as f64;
                if self.consecutive_failures >= breaker.consecutive_failures || rate_exceeded {
                    self.open = true;
                    self.opened_at = now.as_nanos();
                    self.probe_successes = 0;
                    self.consecutive_failures = 0;
                    Transition::Opened
                } else {
                    Transition::None
                }
            }
        }
    }
}

impl SharedValue for BreakerState {
    fn encode(&self) -> Vec<u8> {
        let mut out = ByteWriter::with_capacity(38 + 8 * BUCKETS);
        out.u8(u8::from(self.open))
            .u64(self.opened_at)
            .u32(self.consecutive_failures)
            .u32(self.probe_successes)
            .u64(self.bucket_nanos)
            .u64(self.newest_bucket);
        for bucket in &self.buckets {
            out.u32(bucket.requests).u32(bucket.failures);
        }
        out.into_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        const WHAT: &str = "BreakerState";
        let mut input = ByteReader::new(bytes, WHAT);
        let open = match input.u8()? {
            0 => false,
            1 => true,
            other => return Err(DecodeError::new(WHAT, format!("open flag {other}"))),
        };
        let opened_at = input.u64()?;
        let consecutive_failures = input.u32()?;
        let probe_successes = input.u32()?;
        let bucket_nanos = input.u64()?;
        if bucket_nanos == 0 {
            return Err(DecodeError::new(WHAT, "zero bucket length"));
        }
        let newest_bucket = input.u64()?;
        let mut buckets = [Bucket::default(); BUCKETS];
        for bucket in &mut buckets {
            bucket.requests = input.u32()?;
            bucket.failures = input.u32()?;
        }
        input.finish()?;
        Ok(BreakerState {
            opened_at,
            open,
            consecutive_failures,
            probe_successes,
            bucket_nanos,
            newest_bucket,
            buckets,
        })
    }
}

/// Where a cacheable call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The cache cluster (as a probe when the breaker is half-open).
    Cache {
        /// Whether the call probes a half-open breaker.
        probe: bool,
    },
    /// The origin cluster.
    Origin,
}

/// One worker's share of half-open probes for one breaker: every call adds the share to a
/// credit, and a call that brings it to 1 probes (so exactly `share` of calls probe, spread
/// evenly).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProbeGate {
    credit: f64,
}

impl ProbeGate {
    /// Where a cacheable call goes in `phase`.
    pub fn route(&mut self, phase: Phase, share: f64) -> Destination {
        match phase {
            Phase::Closed => {
                self.credit = 0.0;
                Destination::Cache { probe: false }
            }
            Phase::Open => Destination::Origin,
            Phase::HalfOpen => {
                self.credit += share;
                if self.credit >= 1.0 - 1e-9 {
                    self.credit = (self.credit - 1.0).max(0.0);
                    Destination::Cache { probe: true }
                } else {
                    Destination::Origin
                }
            }
        }
    }
}
