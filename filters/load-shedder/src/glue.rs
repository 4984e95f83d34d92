//! The proxy-wasm glue of load_shedder.wasm: the root context (configuration, shared-data key,
//! metrics, tick) and the HTTP context (classify, admit or shed, release at the end of the
//! stream). Every host access goes through meshkit's trap-free wrappers; nothing here panics.
//!
//! Per request:
//! - `on_http_request_headers` classifies the request from header bytes; a bypass path is left
//!   alone. Otherwise one compare-and-swap read-modify-write of the [`SharedState`] cell admits
//!   (or, in dry run, would shed) or sheds it. A shed request gets the local rejection reply. If
//!   the update cannot complete (contention beyond [`CAS_RETRIES`], host or decode error) the
//!   request passes uncounted (fail open) and `admission_failed_open` counts it.
//! - The first of `on_done` / `on_log` of an admitted stream — every stream end, whether
//!   completed, reset, answered locally or abandoned by the client — releases its slot exactly
//!   once with its latency and outcome. A release whose update fails is kept in the worker's
//!   pending list and applied with the next update (admission, release or tick), so in-flight
//!   never leaks.

use crate::classify::{classify, Criticality, Rank, RequestClass};
use crate::config::ShedderConfig;
use crate::policy::{Admission, Outcome, Policy, SharedState, WindowClosed};
use crate::reject::{RejectionReply, HTTP_STATUS, MESSAGE};
use meshkit::clock::{set_tick_period, Clock, HostClock, Timestamp};
use meshkit::config::load_plugin_config;
use meshkit::grpc::{is_grpc, parse_grpc_status, GrpcStatus};
use meshkit::headers::{header_bytes, HeaderMapKind};
use meshkit::metrics::{Counter, Gauge};
use meshkit::properties::property;
use meshkit::reply::{http_status_of, send_grpc_error, send_http_error};
use meshkit::shared::{HostSharedStore, KeySpace, SharedCell, UpdateError};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Filter name in logs and metric names (`mesh.load_shedder.*`).
const FILTER: &str = "load-shedder";
/// Retries of one shared-state update after a CAS mismatch before giving up.
const CAS_RETRIES: u32 = 32;
/// How often each worker flushes pending releases and refreshes the gauges.
const TICK_PERIOD: Duration = Duration::from_secs(1);
/// Name of the shared-data cell within the plugin's key space.
const STATE_KEY: &str = "state";

proxy_wasm::main! {{
    meshkit::panic_hook::init_logging(log::LevelFilter::Info);
    proxy_wasm::set_root_context(|_| Box::new(ShedderRoot { worker: Rc::default() }));
}}

/// The worker state a root context and its HTTP contexts share (one VM per worker thread).
type SharedWorker = Rc<RefCell<Option<Worker>>>;

/// Runs `f` on the configured worker state; `None` before a successful configuration.
fn with_worker<T>(worker: &SharedWorker, f: impl FnOnce(&mut Worker) -> T) -> Option<T> {
    match worker.try_borrow_mut() {
        Ok(mut guard) => guard.as_mut().map(f),
        Err(_) => {
            log::error!("{FILTER}: worker state re-entered; skipping");
            None
        }
    }
}

struct ShedderRoot {
    worker: SharedWorker,
}

impl Context for ShedderRoot {}

impl RootContext for ShedderRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Ok(config) = load_plugin_config::<ShedderConfig>(FILTER) else {
            return false;
        };
        let namespace = format!("{FILTER}.{}", plugin_name());
        let key = match KeySpace::new(namespace, 1).key(STATE_KEY) {
            Ok(key) => key,
            Err(err) => {
                log::error!("{FILTER}: {err}");
                return false;
            }
        };
        if let Err(err) = set_tick_period(TICK_PERIOD) {
            log::warn!(
                "{FILTER}: cannot set the tick period ({err}); gauges refresh on window close only"
            );
        }
        let policy = Policy::new(&config);
        log::info!(
            "{FILTER}: configured: shared state {key}, limit {}..{} starting at {}, dry_run {}",
            config.limit.min_limit,
            config.limit.max_limit,
            config.limit.initial_limit,
            config.dry_run
        );
        let mut slot = match self.worker.try_borrow_mut() {
            Ok(slot) => slot,
            Err(_) => {
                log::error!("{FILTER}: worker state busy during configuration");
                return false;
            }
        };
        // Releases still pending from a previous configuration stay owed to the shared state.
        let pending = slot.take().map(|old| old.pending).unwrap_or_default();
        *slot = Some(Worker {
            reply: RejectionReply::new(&config.rejection),
            config,
            policy,
            key,
            metrics: Metrics::define(),
            pending,
        });
        true
    }

    fn on_tick(&mut self) {
        with_worker(&self.worker, |worker| worker.refresh(HostClock.now()));
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ShedderStream {
            worker: Rc::clone(&self.worker),
            admitted_at: None,
            grpc: false,
            response_status: None,
            grpc_status: None,
            response_complete: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The plugin's name (`plugin_name`, else `plugin_root_id`, else `default`), restricted to
/// ASCII letters, digits, '.', '_' and '-' so it can name a shared-data namespace.
fn plugin_name() -> String {
    let name = ["plugin_name", "plugin_root_id"]
        .into_iter()
        .find_map(|path| match property(&[path]) {
            Ok(Some(value)) if !value.is_empty() => Some(value),
            Ok(_) => None,
            Err(err) => {
                log::debug!("{FILTER}: cannot read property {path}: {err}");
                None
            }
        })
        .unwrap_or_else(|| b"default".to_vec());
    name.iter()
        .map(|&byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' => char::from(byte),
            _ => '_',
        })
        .collect()
}

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
    fn define() -> Metrics {
        Metrics {
            limit: Gauge::define(FILTER, "limit"),
            in_flight: Gauge::define(FILTER, "in_flight"),
            baseline_latency_us: Gauge::define(FILTER, "baseline_latency_us"),
            window_latency_us: Gauge::define(FILTER, "window_latency_us"),
            admitted: Counter::define(FILTER, "admitted"),
            shed: Criticality::ALL.map(|criticality| {
                Counter::define(
                    FILTER,
                    &format!("shed_{}", criticality.name().replace('-', "_")),
                )
            }),
            would_shed: Counter::define(FILTER, "would_shed"),
            admission_failed_open: Counter::define(FILTER, "admission_failed_open"),
            release_deferred: Counter::define(FILTER, "release_deferred"),
        }
    }
}

/// A release whose shared-state update failed, applied with the next successful update.
struct PendingRelease {
    now: Timestamp,
    latency: Duration,
    outcome: Outcome,
}

/// One worker's configured state.
struct Worker {
    config: ShedderConfig,
    policy: Policy,
    reply: RejectionReply,
    /// The shared-data key of the [`SharedState`] all workers update.
    key: String,
    metrics: Metrics,
    pending: Vec<PendingRelease>,
}

impl Worker {
    /// One CAS read-modify-write of the shared state: applies the pending releases, then `step`.
    /// On success the pending list is cleared and a closed window refreshes the gauges.
    fn update(
        &mut self,
        now: Timestamp,
        mut step: impl FnMut(&mut SharedState, &Policy) -> Option<WindowClosed>,
    ) -> Result<SharedState, UpdateError> {
        let policy = &self.policy;
        let pending = &self.pending;
        let mut closed = None;
        let cell =
            SharedCell::<SharedState, _, _>::new(HostSharedStore, self.key.as_str(), CAS_RETRIES);
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
            self.publish(&state);
            self.metrics
                .window_latency_us
                .set(u64::try_from(window.latency.as_micros()).unwrap_or(u64::MAX));
        }
        Ok(state)
    }

    /// Sets the limit, in-flight and baseline gauges from `state`.
    fn publish(&self, state: &SharedState) {
        self.metrics.limit.set(u64::from(state.limit(&self.policy)));
        self.metrics.in_flight.set(u64::from(state.in_flight()));
        if let Some(baseline) = state.baseline() {
            let micros = u64::try_from(baseline.as_micros()).unwrap_or(u64::MAX);
            self.metrics.baseline_latency_us.set(micros);
        }
    }

    /// Decides on a request of `rank` arriving at `now` and counts it in the metrics.
    fn admit(&mut self, rank: Rank, now: Timestamp) -> Result<Admission, UpdateError> {
        let mut decision = Admission::Shed;
        self.update(now, |state, policy| {
            decision = state.admit(policy, rank);
            None
        })?;
        match decision {
            Admission::Admitted => self.metrics.admitted.increment(1),
            Admission::WouldShed => {
                self.metrics.admitted.increment(1);
                self.metrics.would_shed.increment(1);
            }
            Admission::Shed => {
                if let Some(counter) = self.metrics.shed.get(rank.criticality as usize) {
                    counter.increment(1);
                }
            }
        }
        Ok(decision)
    }

    /// Ends a request admitted at `admitted_at`; keeps the release pending if the update fails.
    fn release(&mut self, admitted_at: Timestamp, outcome: Outcome) {
        let now = HostClock.now();
        let latency = now.saturating_duration_since(admitted_at);
        let result = self.update(now, |state, policy| {
            state.release(policy, now, latency, outcome)
        });
        if let Err(err) = result {
            log::debug!("{FILTER}: release deferred: {err}");
            self.metrics.release_deferred.increment(1);
            self.pending.push(PendingRelease {
                now,
                latency,
                outcome,
            });
        }
    }

    /// The tick: applies pending releases and refreshes the gauges.
    fn refresh(&mut self, now: Timestamp) {
        let state = if self.pending.is_empty() {
            SharedCell::<SharedState, _, _>::new(HostSharedStore, self.key.as_str(), CAS_RETRIES)
                .read()
        } else {
            self.update(now, |_, _| None).map(Some)
        };
        match state {
            Ok(Some(state)) => self.publish(&state),
            Ok(None) => {}
            Err(err) => log::debug!("{FILTER}: tick cannot read the shared state: {err}"),
        }
    }

    /// Replies to a shed request: HTTP 503, or a trailers-only gRPC error for gRPC requests.
    fn send_rejection(&self, grpc: bool) {
        let result = if grpc {
            send_grpc_error(
                self.reply.grpc_status(),
                MESSAGE,
                &self.reply.grpc_headers(),
            )
        } else {
            send_http_error(HTTP_STATUS, &self.reply.http_headers(), MESSAGE.as_bytes())
        };
        if let Err(err) = result {
            log::warn!("{FILTER}: cannot send the rejection: {err}");
        }
    }
}

/// One HTTP stream.
struct ShedderStream {
    worker: SharedWorker,
    /// When the request was admitted (and counted); taken by the release.
    admitted_at: Option<Timestamp>,
    grpc: bool,
    response_status: Option<u32>,
    grpc_status: Option<GrpcStatus>,
    response_complete: bool,
}

/// A header of `kind` as bytes; absent or unreadable headers are `None`.
fn header(kind: HeaderMapKind, name: &str) -> Option<Vec<u8>> {
    header_bytes(kind, name).unwrap_or_else(|err| {
        log::debug!("{FILTER}: cannot read {kind:?} {name}: {err}");
        None
    })
}

/// A decimal HTTP status code.
fn parse_status(value: &[u8]) -> Option<u32> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

impl ShedderStream {
    /// How the admitted request ended, from what the response showed so far.
    fn outcome(&self) -> Outcome {
        let Some(status) = self.response_status else {
            return Outcome::Reset;
        };
        if !self.response_complete {
            return Outcome::Reset;
        }
        if status >= 500 {
            return Outcome::Error;
        }
        if !self.grpc {
            return Outcome::Success;
        }
        match self.grpc_status {
            Some(grpc_status) if http_status_of(grpc_status) >= 500 => Outcome::Error,
            Some(_) => Outcome::Success,
            None => Outcome::Reset,
        }
    }

    /// Releases the request's slot if it holds one (at most once).
    fn end(&mut self) {
        if let Some(admitted_at) = self.admitted_at.take() {
            let outcome = self.outcome();
            with_worker(&self.worker, |worker| worker.release(admitted_at, outcome));
        }
    }

    fn note_grpc_status(&mut self, kind: HeaderMapKind) {
        if self.grpc && self.grpc_status.is_none() {
            self.grpc_status =
                header(kind, "grpc-status").and_then(|value| parse_grpc_status(&value));
        }
    }
}

impl Context for ShedderStream {
    fn on_done(&mut self) -> bool {
        self.end();
        true
    }
}

impl HttpContext for ShedderStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let request = HeaderMapKind::RequestHeaders;
        let decided = with_worker(&self.worker, |worker| {
            let criticality = &worker.config.criticality;
            let claimed = criticality
                .header
                .as_ref()
                .and_then(|name| header(request, name.as_str()));
            let attempt = criticality
                .attempt_header
                .as_ref()
                .and_then(|name| header(request, name.as_str()));
            let path = header(request, ":path").unwrap_or_default();
            let rank = match classify(
                claimed.as_deref(),
                &path,
                attempt.as_deref(),
                &worker.config,
            ) {
                RequestClass::Bypass => return None,
                RequestClass::Ranked(rank) => rank,
            };
            let now = HostClock.now();
            match worker.admit(rank, now) {
                Ok(decision) => Some((decision, now)),
                Err(err) => {
                    log::debug!("{FILTER}: admission failed open: {err}");
                    worker.metrics.admission_failed_open.increment(1);
                    None
                }
            }
        })
        .flatten();
        let Some((decision, now)) = decided else {
            return Action::Continue;
        };
        self.grpc = header(request, "content-type").is_some_and(|value| is_grpc(&value));
        if decision.is_admitted() {
            self.admitted_at = Some(now);
            return Action::Continue;
        }
        let grpc = self.grpc;
        with_worker(&self.worker, |worker| worker.send_rejection(grpc));
        Action::Pause
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if self.admitted_at.is_some() {
            let response = HeaderMapKind::ResponseHeaders;
            self.response_status = header(response, ":status").and_then(|v| parse_status(&v));
            self.response_complete = end_of_stream;
            self.note_grpc_status(response);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            self.response_complete = true;
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.response_complete = true;
        if self.admitted_at.is_some() {
            self.note_grpc_status(HeaderMapKind::ResponseTrailers);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        self.end();
    }
}
