//! [`LoadShedder`]: one Envoy worker's load shedder on the filter kit, plain Rust over the kit's
//! [`Host`], so it is tested natively against the fake host and runs unchanged in
//! `load_shedder.wasm` and `mesh_suite.wasm`.
//!
//! Per request:
//! - The request headers are classified from header bytes; a bypass path is left alone.
//!   Otherwise one compare-and-swap read-modify-write of the [`SharedState`] cell admits (or, in
//!   dry run, would shed) or sheds it. A shed request gets the local rejection reply. If the
//!   update cannot complete (contention beyond [`CAS_RETRIES`], host or decode error) the
//!   request passes uncounted (fail open) and `admission_failed_open` counts it.
//! - The end of an admitted stream (the kit ends every stream exactly once, whatever ended it)
//!   releases its slot with its latency and outcome. A release whose update fails is kept in
//!   the worker's pending list and applied with the next update (admission, release or tick),
//!   so in-flight never leaks. A replaced configuration keeps being ticked by the kit until its
//!   pending releases are applied, always to the key they were admitted under.

use crate::classify::{classify, Criticality, Rank, RequestClass};
use crate::config::ShedderConfig;
use crate::policy::{Admission, Outcome, Policy, SharedState, WindowClosed};
use crate::reject::{RejectionReply, HTTP_STATUS, MESSAGE};
use meshkit::clock::Timestamp;
use meshkit::config::ConfigError;
use meshkit::headers::HeaderMapKind;
use meshkit::kit::{Counter, Filter, Gauge, Host, Request, Setup, Verdict};
use meshkit::shared::{SharedCell, UpdateError};
use std::time::Duration;

/// Filter name in logs and metric names (`mesh.load_shedder.*`).
const FILTER: &str = "load-shedder";
/// Retries of one shared-state update after a CAS mismatch before giving up.
pub const CAS_RETRIES: u32 = 32;
/// How often each worker flushes pending releases and refreshes the gauges.
const TICK_PERIOD: Duration = Duration::from_secs(1);
/// Name of the shared-data cell within the instance's key space (its layout version is added).
const STATE_KEY: &str = "state";

/// The metrics one worker updates (Envoy shares a stat between the workers defining it).
struct Metrics {
    limit: Gauge,
    in_flight: Gauge,
    baseline_latency_us: Gauge,
    window_latency_us: Gauge,
    admitted: Counter,
    /// Shed requests by criticality, indexed by `Criticality as usize`.
    shed: [Counter; 4],
    would_shed: Counter,
    admission_failed_open: Counter,
    release_deferred: Counter,
}

impl Metrics {
    fn define(setup: &Setup<'_>) -> Metrics {
        Metrics {
            limit: setup.gauge("limit"),
            in_flight: setup.gauge("in_flight"),
            baseline_latency_us: setup.gauge("baseline_latency_us"),
            window_latency_us: setup.gauge("window_latency_us"),
            admitted: setup.counter("admitted"),
            shed: Criticality::ALL.map(|criticality| {
                setup.counter(&format!("shed_{}", criticality.name().replace('-', "_")))
            }),
            would_shed: setup.counter("would_shed"),
            admission_failed_open: setup.counter("admission_failed_open"),
            release_deferred: setup.counter("release_deferred"),
        }
    }
}

/// A release whose shared-state update failed, applied with the next successful update.
struct PendingRelease {
    now: Timestamp,
    latency: Duration,
    outcome: Outcome,
}

/// One worker's load shedder for one configuration.
pub struct LoadShedder {
    config: ShedderConfig,
    policy: Policy,
    reply: RejectionReply,
    /// The shared-data key of the [`SharedState`] all workers update.
    key: String,
    metrics: Metrics,
    pending: Vec<PendingRelease>,
}

/// One stream's state: when it was admitted (and counted), taken by the release.
#[derive(Debug, Default)]
pub struct ShedderStream {
    admitted_at: Option<Timestamp>,
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl LoadShedder {
    /// The shared-data key of the shared state.
    pub fn state_key(&self) -> &str {
        &self.key
    }

    /// One CAS read-modify-write of the shared state: applies the pending releases, then `step`.
    /// On success the pending list is cleared and a closed window refreshes the gauges.
    fn update(
        &mut self,
        host: &dyn Host,
        now: Timestamp,
        mut step: impl FnMut(&mut SharedState, &Policy) -> Option<WindowClosed>,
    ) -> Result<SharedState, UpdateError> {
        let policy = &self.policy;
        let pending = &self.pending;
        let mut closed = None;
        let cell = SharedCell::<SharedState, _, _>::new(
            host.shared_store(),
            self.key.as_str(),
            CAS_RETRIES,
        );
        let state = cell.try_update(|current| {
            let mut state = current.unwrap_or_else(|| SharedState::new(policy, now));
            closed = None;
            for release in pending {
                let window = state.release(policy, release.now, release.latency, release.outcome);
                closed = window.or(closed);
            }
            closed = step(&mut state, policy).or(closed);
            Ok(state)
        })?;
        self.pending.clear();
        if let Some(window) = closed {
            log::debug!("{FILTER}: window closed: {window:?}");
            self.publish(host, &state);
            self.metrics
                .window_latency_us
                .set(host, micros(window.latency));
        }
        Ok(state)
    }

    /// Sets the limit, in-flight and baseline gauges from `state`.
    fn publish(&self, host: &dyn Host, state: &SharedState) {
        let metrics = &self.metrics;
        metrics
            .limit
            .set(host, u64::from(state.limit(&self.policy)));
        metrics.in_flight.set(host, u64::from(state.in_flight()));
        if let Some(baseline) = state.baseline() {
            metrics.baseline_latency_us.set(host, micros(baseline));
        }
    }

    /// Decides on a request of `rank` arriving at `now` and counts it in the metrics.
    fn admit(
        &mut self,
        host: &dyn Host,
        rank: Rank,
        now: Timestamp,
    ) -> Result<Admission, UpdateError> {
        let mut decision = Admission::Shed;
        self.update(host, now, |state, policy| {
            decision = state.admit(policy, rank);
            None
        })?;
        let metrics = &self.metrics;
        match decision {
            Admission::Admitted => metrics.admitted.increment(host, 1),
            Admission::WouldShed => {
                metrics.admitted.increment(host, 1);
                metrics.would_shed.increment(host, 1);
            }
            Admission::Shed => {
                if let Some(counter) = metrics.shed.get(rank.criticality as usize) {
                    counter.increment(host, 1);
                }
            }
        }
        Ok(decision)
    }

    /// Ends a request admitted at `admitted_at`; keeps the release pending if the update fails.
    fn release(&mut self, host: &dyn Host, admitted_at: Timestamp, outcome: Outcome) {
        let now = host.now();
        let latency = now.saturating_duration_since(admitted_at);
        let result = self.update(host, now, |state, policy| {
            state.release(policy, now, latency, outcome)
        });
        if let Err(err) = result {
            log::debug!("{FILTER}: release deferred: {err}");
            self.metrics.release_deferred.increment(host, 1);
            self.pending.push(PendingRelease {
                now,
                latency,
                outcome,
            });
        }
    }

    /// Replies to a shed request: HTTP 503, or a trailers-only gRPC error for gRPC requests.
    fn send_rejection(&self, host: &dyn Host, grpc: bool) {
        let result = if grpc {
            host.send_grpc_reply(
                self.reply.grpc_status(),
                MESSAGE,
                &self.reply.grpc_headers(),
            )
        } else {
            host.send_http_reply(HTTP_STATUS, &self.reply.http_headers(), MESSAGE.as_bytes())
        };
        if let Err(err) = result {
            log::warn!("{FILTER}: cannot send the rejection: {err}");
        }
    }

    /// The request's rank, or `None` for a bypass path.
    fn rank(&self, host: &dyn Host) -> Option<Rank> {
        let request = HeaderMapKind::RequestHeaders;
        let criticality = &self.config.criticality;
        let claimed = criticality
            .header
            .as_ref()
            .and_then(|name| host.header(request, name.as_str()));
        let attempt = criticality
            .attempt_header
            .as_ref()
            .and_then(|name| host.header(request, name.as_str()));
        let path = host.header(request, ":path").unwrap_or_default();
        match classify(claimed.as_deref(), &path, attempt.as_deref(), &self.config) {
            RequestClass::Bypass => None,
            RequestClass::Ranked(rank) => Some(rank),
        }
    }
}

impl Filter for LoadShedder {
    const NAME: &'static str = FILTER;
    type Config = ShedderConfig;
    type Stream = ShedderStream;

    fn configure(config: ShedderConfig, setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        let key = setup
            .shared_key(STATE_KEY, u32::from(SharedState::FORMAT_VERSION))
            .map_err(|err| ConfigError::root(err.to_string()))?;
        setup.tick_every(TICK_PERIOD);
        log::info!(
            "{FILTER}: configured: shared state {key}, limit {}..{} starting at {}, dry_run {}",
            config.limit.min_limit,
            config.limit.max_limit,
            config.limit.initial_limit,
            config.dry_run
        );
        Ok(LoadShedder {
            policy: Policy::new(&config),
            reply: RejectionReply::new(&config.rejection),
            metrics: Metrics::define(setup),
            config,
            key,
            pending: Vec::new(),
        })
    }

    fn on_request_headers(
        &mut self,
        host: &dyn Host,
        request: &Request,
        stream: &mut ShedderStream,
    ) -> Verdict {
        let Some(rank) = self.rank(host) else {
            return Verdict::Continue;
        };
        let now = host.now();
        match self.admit(host, rank, now) {
            Ok(decision) if decision.is_admitted() => {
                stream.admitted_at = Some(now);
                Verdict::Continue
            }
            Ok(_) => {
                self.send_rejection(host, request.is_grpc());
                Verdict::Replied
            }
            Err(err) => {
                log::debug!("{FILTER}: admission failed open: {err}");
                self.metrics.admission_failed_open.increment(host, 1);
                Verdict::Continue
            }
        }
    }

    fn on_stream_end(&mut self, host: &dyn Host, stream: ShedderStream, outcome: Outcome) {
        if let Some(admitted_at) = stream.admitted_at {
            self.release(host, admitted_at, outcome);
        }
    }

    /// Applies pending releases and refreshes the gauges.
    fn on_tick(&mut self, host: &dyn Host) {
        let state = if self.pending.is_empty() {
            SharedCell::<SharedState, _, _>::new(host.shared_store(), self.key.as_str(), 0).read()
        } else {
            self.update(host, host.now(), |_, _| None).map(Some)
        };
        match state {
            Ok(Some(state)) => self.publish(host, &state),
            Ok(None) => {}
            Err(err) => log::debug!("{FILTER}: tick cannot read the shared state: {err}"),
        }
    }

    fn has_pending_work(&self) -> bool {
        !self.pending.is_empty()
    }
}
