//! Tallying finished requests into HDR histograms and error counts, and the serializable [`LoadReport`].

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::{CreationError, Histogram};
use serde::Serialize;
use tokio::task::JoinError;

use super::client::{Finished, Outcome};
use super::{Arrival, LoadConfig, PreparedClass, Protocol};
use crate::upstream::UpstreamCounters;

/// Largest latency recorded exactly, in microseconds (one hour); longer ones are recorded as this.
const MAX_RECORDED_MICROS: u64 = 3_600_000_000;

/// Latency percentiles in milliseconds (HDR histogram, 3 significant digits).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LatencySummary {
    /// Requests measured.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl LatencySummary {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: histogram.len(),
            mean_ms: histogram.mean() / 1000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// Failed client requests by class of failure (each request counted once, by its final outcome).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ErrorCounts {
    /// No complete response within the client timeout.
    pub timeout: u64,
    /// Connection refused or handshake failed.
    pub connect: u64,
    /// Connection broke mid-request (reset, closed, protocol error).
    pub transport: u64,
    /// HTTP 5xx responses by status (shed responses excluded).
    pub http_5xx: BTreeMap<u16, u64>,
    /// HTTP 4xx responses by status (shed responses excluded).
    pub http_4xx: BTreeMap<u16, u64>,
    /// gRPC non-OK statuses by code name, e.g. `Unavailable` (shed responses excluded).
    pub grpc: BTreeMap<String, u64>,
    /// Responses carrying the sidecar's shed header (`x-mesh-shed`), whatever their status.
    pub shed_by_sidecar: u64,
    /// Requests not sent because `max_outstanding` requests were outstanding.
    pub client_dropped: u64,
}

impl ErrorCounts {
    /// All failed requests.
    pub fn total(&self) -> u64 {
        self.timeout
            + self.connect
            + self.transport
            + self.http_5xx.values().sum::<u64>()
            + self.http_4xx.values().sum::<u64>()
            + self.grpc.values().sum::<u64>()
            + self.shed_by_sidecar
            + self.client_dropped
    }
}

/// Outcomes of a set of client requests (the whole run, or one class).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct OutcomeStats {
    /// Client requests scheduled (client drops included, retries not).
    pub requests: u64,
    /// Requests whose final attempt got a response (any status).
    pub responses: u64,
    /// Requests that succeeded (HTTP status < 400 or gRPC OK, not shed).
    pub successes: u64,
    /// Successes per second of the run.
    pub goodput_rps: f64,
    /// Failed requests by class.
    pub errors: ErrorCounts,
    /// Latency of successful requests, from scheduled send to final response.
    pub latency_success: LatencySummary,
    /// Latency of all sent requests (timeouts count as their time to the timeout; drops are excluded).
    pub latency_all: LatencySummary,
    /// Successful requests by the upstream that answered them (the response's `x-upstream-name`);
    /// successes without that header are not counted here.
    pub responders: BTreeMap<String, u64>,
}

/// Result of a load run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// Wire protocol used.
    pub protocol: Protocol,
    /// How the requests were launched.
    pub arrival: Arrival,
    /// Offered load, requests per second: the configured rate (open loop), or the client requests sent
    /// per second (closed loop).
    pub offered_rps: f64,
    /// Responses (any status) per second, over `elapsed_secs`.
    pub achieved_rps: f64,
    /// From the schedule's start until the last request finished.
    pub elapsed_secs: f64,
    /// Attempts sent, retries included.
    pub attempts: u64,
    /// Client-side retries (attempts beyond the first).
    pub client_retries: u64,
    /// How late requests were launched relative to their schedule (generator health: should stay ~1 ms).
    pub send_lag: LatencySummary,
    /// Outcomes of all requests.
    #[serde(flatten)]
    pub totals: OutcomeStats,
    /// Outcomes per request class.
    pub classes: BTreeMap<String, OutcomeStats>,
}

impl LoadReport {
    /// Client requests actually sent (scheduled minus client drops).
    pub fn sent_requests(&self) -> u64 {
        self.totals.requests - self.totals.errors.client_dropped
    }

    /// Upstream amplification: requests the upstreams received per client request sent. The counters
    /// must cover this run only (take them after [`crate::upstream::UpstreamHandle::reset_counters`], or use
    /// [`UpstreamCounters::since`]). 0.0 when nothing was sent.
    pub fn upstream_amplification<'a>(
        &self,
        upstreams: impl IntoIterator<Item = &'a UpstreamCounters>,
    ) -> f64 {
        let received: u64 = upstreams
            .into_iter()
            .map(|counters| counters.received)
            .sum();
        match self.sent_requests() {
            0 => 0.0,
            sent => received as f64 / sent as f64,
        }
    }
}

struct OutcomeTally {
    requests: u64,
    responses: u64,
    successes: u64,
    errors: ErrorCounts,
    responders: BTreeMap<String, u64>,
    success: Histogram<u64>,
    all: Histogram<u64>,
}

impl OutcomeTally {
    fn new() -> Result<Self, CreationError> {
        Ok(Self {
            requests: 0,
            responses: 0,
            successes: 0,
            errors: ErrorCounts::default(),
            responders: BTreeMap::new(),
            success: latency_histogram()?,
            all: latency_histogram()?,
        })
    }

    fn record(&mut self, outcome: Outcome, responder: Option<&str>, latency: Duration) {
        let micros = micros(latency);
        self.requests += 1;
        self.all.saturating_record(micros);
        if outcome.responded() {
            self.responses += 1;
        }
        let errors = &mut self.errors;
        match outcome {
            Outcome::Success => {
                self.successes += 1;
                self.success.saturating_record(micros);
                if let Some(responder) = responder {
                    *self.responders.entry(responder.to_owned()).or_default() += 1;
                }
            }
            Outcome::Timeout => errors.timeout += 1,
            Outcome::Connect => errors.connect += 1,
            Outcome::Transport => errors.transport += 1,
            Outcome::Shed => errors.shed_by_sidecar += 1,
            Outcome::Http(status) if status.is_server_error() || status.as_u16() >= 600 => {
                *errors.http_5xx.entry(status.as_u16()).or_default() += 1;
            }
            Outcome::Http(status) => *errors.http_4xx.entry(status.as_u16()).or_default() += 1,
            Outcome::Grpc(code) => *errors.grpc.entry(format!("{code:?}")).or_default() += 1,
        }
    }

    fn record_client_drop(&mut self) {
        self.requests += 1;
        self.errors.client_dropped += 1;
    }

    fn into_stats(self, elapsed_secs: f64) -> OutcomeStats {
        OutcomeStats {
            requests: self.requests,
            responses: self.responses,
            successes: self.successes,
            goodput_rps: per_second(self.successes, elapsed_secs),
            errors: self.errors,
            responders: self.responders,
            latency_success: LatencySummary::of(&self.success),
            latency_all: LatencySummary::of(&self.all),
        }
    }
}

/// Accumulates a run's outcomes as requests finish.
pub(super) struct Tally {
    classes: Vec<(String, OutcomeTally)>,
    totals: OutcomeTally,
    send_lag: Histogram<u64>,
    attempts: u64,
    finished: u64,
}

impl Tally {
    pub(super) fn new(classes: &[PreparedClass]) -> Result<Self, CreationError> {
        Ok(Self {
            classes: classes
                .iter()
                .map(|class| Ok((class.name.clone(), OutcomeTally::new()?)))
                .collect::<Result<_, CreationError>>()?,
            totals: OutcomeTally::new()?,
            send_lag: latency_histogram()?,
            attempts: 0,
            finished: 0,
        })
    }

    /// Records the requests a task made (one request per open-loop task, a closed-loop client's all).
    pub(super) fn record_task(
        &mut self,
        finished: Result<impl IntoIterator<Item = Finished>, JoinError>,
    ) {
        let Ok(finished) = finished else {
            // Request tasks neither panic nor get aborted; count the impossible as a transport failure
            // rather than lose a request.
            self.totals.record(Outcome::Transport, None, Duration::ZERO);
            return;
        };
        for finished in finished {
            self.record(finished);
        }
    }

    fn record(&mut self, finished: Finished) {
        self.attempts += u64::from(finished.attempts);
        self.finished += 1;
        let responder = finished.responder.as_deref();
        self.totals
            .record(finished.outcome, responder, finished.latency);
        if let Some((_, class)) = self.classes.get_mut(finished.class) {
            class.record(finished.outcome, responder, finished.latency);
        }
    }

    pub(super) fn record_client_drop(&mut self, class: usize) {
        self.totals.record_client_drop();
        if let Some((_, class)) = self.classes.get_mut(class) {
            class.record_client_drop();
        }
    }

    pub(super) fn record_send_lag(&mut self, lag: Duration) {
        self.send_lag.saturating_record(micros(lag));
    }

    pub(super) fn into_report(self, config: &LoadConfig, elapsed: Duration) -> LoadReport {
        let elapsed_secs = elapsed.as_secs_f64();
        let offered_rps = match config.arrival {
            Arrival::Open { rate_per_sec } => rate_per_sec,
            Arrival::Closed { .. } => per_second(self.finished, elapsed_secs),
        };
        LoadReport {
            protocol: config.protocol,
            arrival: config.arrival,
            offered_rps,
            achieved_rps: per_second(self.totals.responses, elapsed_secs),
            elapsed_secs,
            attempts: self.attempts,
            client_retries: self.attempts - self.finished,
            send_lag: LatencySummary::of(&self.send_lag),
            totals: self.totals.into_stats(elapsed_secs),
            classes: self
                .classes
                .into_iter()
                .map(|(name, class)| (name, class.into_stats(elapsed_secs)))
                .collect(),
        }
    }
}

fn latency_histogram() -> Result<Histogram<u64>, CreationError> {
    Histogram::new_with_bounds(1, MAX_RECORDED_MICROS, 3)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_RECORDED_MICROS)
}

fn per_second(count: u64, elapsed_secs: f64) -> f64 {
    if elapsed_secs > 0.0 {
        count as f64 / elapsed_secs
    } else {
        0.0
    }
}
