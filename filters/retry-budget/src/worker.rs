//! [`RetryBudget`]: one Envoy worker's retry budget on the filter kit, plain Rust over the kit's
//! [`Host`], so it is tested natively against the fake host and runs unchanged in
//! `retry_budget.wasm` and `mesh_suite.wasm`.
//!
//! **Where budgets live.** Each budget key (the route's cluster, or `:authority`) owns one of
//! `max_keys` shared-data slots; keys past them, and keys longer than
//! [`MAX_KEY_LEN`](crate::policy::MAX_KEY_LEN), share one overflow slot. A slot records its
//! owner; an idle slot (no request for a ttl) is free for the next new key. A worker finds a
//! key's slot once (reading every slot: its own, else claiming the first free one) and
//! remembers it; the owner check in every update notices a slot that changed hands.
//!
//! **Per request: one shared-data read-modify-write** (compare-and-swap, retried up to
//! [`CAS_RETRIES`]) of the key's slot.
//! - Client role: the client's `x-envoy-max-retries` is removed; the update applies this
//!   worker's pending refunds for the key, deposits, and reserves; the request leaves with
//!   `x-envoy-max-retries: <reserved>`. When the update fails the request gets no retries (the
//!   budget is never overspent). At the end of the stream, the retries Envoy did not make
//!   (`x-envoy-attempt-count` − 1 of the response; unknown: all made) become a pending refund,
//!   written with the key's next update or the next tick. A response with pushback
//!   (`grpc-retry-pushback-ms`, `retry-after` on 429/5xx, `x-mesh-shed: 1`) is written at once.
//! - Server role: a retry (`x-envoy-attempt-count` > 1, `grpc-previous-rpc-attempts` > 0, or the
//!   configured `retry_header` > 1) withdraws a token or is rejected with a local reply (503 with
//!   `retry-after`, or gRPC UNAVAILABLE with `grpc-retry-pushback-ms: -1`); a first attempt
//!   deposits. When the update fails the request passes.

use crate::config::{KeySource, RetryBudgetConfig, Role};
use crate::policy::{
    parse_count, pushback, Budget, BudgetState, PushbackLimits, PushbackSignals, Refund,
    Reservation, MAX_KEY_LEN,
};
use meshkit::clock::Timestamp;
use meshkit::config::{ConfigError, HeaderName};
use meshkit::grpc::GrpcStatus;
use meshkit::headers::HeaderMapKind;
use meshkit::kit::{Counter, Filter, Gauge, Host, Outcome, Request, Setup, Verdict};
use meshkit::shared::{SharedCell, UpdateError};
use std::collections::HashMap;
use std::time::Duration;

/// Filter name in logs and metric names (`mesh.retry_budget.*`).
const FILTER: &str = "retry-budget";
/// Retries of one shared-data update after a CAS mismatch before giving up.
pub const CAS_RETRIES: u32 = 32;
/// How often each worker writes its pending refunds.
const TICK_PERIOD: Duration = Duration::from_secs(1);
/// The header that caps the router's retries of one request.
pub const MAX_RETRIES_HEADER: &str = "x-envoy-max-retries";
/// The attempt number Envoy's router puts on requests and (with
/// `include_attempt_count_in_response`) on responses.
pub const ATTEMPT_COUNT_HEADER: &str = "x-envoy-attempt-count";
/// How many earlier attempts a gRPC client made of this call.
pub const GRPC_PREVIOUS_ATTEMPTS_HEADER: &str = "grpc-previous-rpc-attempts";
/// Body of the reply to a rejected retry, and its `grpc-message`.
pub const REJECTION_MESSAGE: &str = "retry rejected by the sidecar: the retry budget is spent";
/// The property naming the cluster the route picked.
const CLUSTER_PROPERTY: &[&str] = &["xds", "cluster_name"];
/// The gauge name segment of the overflow budget.
const OVERFLOW_SEGMENT: &str = "_overflow";

/// The metrics one worker updates (Envoy shares a stat between the workers defining it).
struct Metrics {
    requests: Counter,
    retries_observed: Counter,
    retries_allowed: Counter,
    retries_denied: Counter,
    pushbacks_sent: Counter,
    pushbacks_honoured: Counter,
    overflow_requests: Counter,
    update_failed: Counter,
    /// `budget_available.<key>` gauges, by budget key; at most `max_keys + 1`.
    available: HashMap<Vec<u8>, Gauge>,
    available_prefix: String,
}

impl Metrics {
    fn define(setup: &Setup<'_>) -> Metrics {
        Metrics {
            requests: setup.counter("requests"),
            retries_observed: setup.counter("retries_observed"),
            retries_allowed: setup.counter("retries_allowed"),
            retries_denied: setup.counter("retries_denied"),
            pushbacks_sent: setup.counter("pushbacks_sent"),
            pushbacks_honoured: setup.counter("pushbacks_honoured"),
            overflow_requests: setup.counter("overflow_requests"),
            update_failed: setup.counter("update_failed"),
            available: HashMap::new(),
            available_prefix: setup.metric_name("budget_available"),
        }
    }
}

/// Where a key's budget is: slot index, or the overflow slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Slot(usize),
    /// The overflow slot, since the given time (the slots are searched again after a ttl).
    Overflow(Timestamp),
}

/// One worker's retry budget for one configuration.
pub struct RetryBudget {
    role: Role,
    key_source: KeySource,
    retry_header: Option<HeaderName>,
    budget: Budget,
    ttl: Duration,
    max_keys: usize,
    pushback_limits: PushbackLimits,
    retry_after: String,
    /// Shared-data keys of the slots, then of the overflow slot.
    slot_keys: Vec<String>,
    overflow_key: String,
    /// Where each key's budget was last found.
    places: HashMap<Vec<u8>, Place>,
    /// Refunds not yet written, by budget key (empty: the overflow budget).
    pending: HashMap<Vec<u8>, Vec<Refund>>,
    metrics: Metrics,
}

/// One stream's state (client role): the budget it reserved from and what its response showed.
#[derive(Debug, Default)]
pub struct RetryStream {
    /// The budget key (empty: overflow) and the reservation, when one was made.
    reserved: Option<(Vec<u8>, Reservation)>,
    /// Retries made, from the response's attempt count.
    retries_made: Option<u32>,
    /// The pushback the response asked for.
    pushback: Option<Duration>,
}

/// Whether an update found the slot (and applied its step) or found it owned by another key.
enum Slotted {
    Mine(BudgetState),
    Taken,
}

impl RetryBudget {
    /// The shared-data key of slot `index` (the overflow slot's for `index >= max_keys`).
    pub fn slot_key(&self, index: usize) -> &str {
        self.slot_keys.get(index).unwrap_or(&self.overflow_key)
    }

    /// The budget key of the current request: its cluster or `:authority`. `None` (overflow)
    /// when absent, empty or longer than [`MAX_KEY_LEN`].
    fn budget_key(&self, host: &dyn Host) -> Option<Vec<u8>> {
        let cluster = match self.key_source {
            KeySource::Cluster => host.property(CLUSTER_PROPERTY),
            KeySource::Authority => None,
        };
        cluster
            .filter(|key| !key.is_empty())
            .or_else(|| host.header(HeaderMapKind::RequestHeaders, ":authority"))
            .filter(|key| !key.is_empty() && key.len() <= MAX_KEY_LEN)
    }

    /// One read-modify-write of the slot `slot_key` for budget key `owner`: applies the
    /// worker's pending refunds for `owner`, then `step`. A slot owned by another key that is
    /// not idle is left alone ([`Slotted::Taken`]).
    fn update_slot(
        &self,
        host: &dyn Host,
        slot_key: &str,
        owner: &[u8],
        now: Timestamp,
        step: &mut dyn FnMut(&mut BudgetState, &Budget),
    ) -> Result<Slotted, UpdateError> {
        let budget = &self.budget;
        let refunds = self.pending.get(owner).map(Vec::as_slice).unwrap_or(&[]);
        let mut taken = false;
        let cell = SharedCell::<BudgetState, _, _>::new(host.shared_store(), slot_key, CAS_RETRIES);
        let state = cell.try_update(|current| {
            taken = false;
            let mut state = match current {
                Some(state) if state.fits(budget) && state.owner() == owner => state,
                Some(state) if state.fits(budget) && !state.is_idle(budget, now) => {
                    taken = true;
                    return Ok(state);
                }
                _ => BudgetState::new(budget, owner, now),
            };
            for refund in refunds {
                state.refund(budget, now, *refund);
            }
            step(&mut state, budget);
            Ok(state)
        })?;
        Ok(if taken {
            Slotted::Taken
        } else {
            Slotted::Mine(state)
        })
    }

    /// Finds the slot of `key` (its own, else the first free one) and updates it with `step`;
    /// the overflow slot when every slot is taken. Reads every slot once per new key.
    fn find_and_update(
        &mut self,
        host: &dyn Host,
        key: &[u8],
        now: Timestamp,
        step: &mut dyn FnMut(&mut BudgetState, &Budget),
    ) -> Result<(Place, BudgetState), UpdateError> {
        let owned = (0..self.max_keys).find(|&index| {
            SharedCell::<BudgetState, _, _>::new(host.shared_store(), self.slot_key(index), 0)
                .read()
                .ok()
                .flatten()
                .is_some_and(|state| state.owner() == key)
        });
        let candidates = owned.into_iter().chain(0..self.max_keys);
        for index in candidates {
            let slot_key = self.slot_key(index).to_owned();
            if let Slotted::Mine(state) = self.update_slot(host, &slot_key, key, now, step)? {
                return Ok((Place::Slot(index), state));
            }
        }
        log::info!(
            "{FILTER}: all {} budget slots are in use; {:?} shares the overflow budget",
            self.max_keys,
            String::from_utf8_lossy(key)
        );
        self.update_overflow(host, now, step)
            .map(|state| (Place::Overflow(now), state))
    }

    fn update_overflow(
        &self,
        host: &dyn Host,
        now: Timestamp,
        step: &mut dyn FnMut(&mut BudgetState, &Budget),
    ) -> Result<BudgetState, UpdateError> {
        match self.update_slot(host, &self.overflow_key, b"", now, step)? {
            Slotted::Mine(state) => Ok(state),
            // The overflow slot only ever holds the overflow budget; another shape or owner is
            // replaced by `update_slot`, so this is not reached.
            Slotted::Taken => Err(UpdateError::Contended { attempts: 0 }),
        }
    }

    /// Updates the budget of `key` (`None`: overflow) with `step`, applying this worker's
    /// pending refunds for it. Returns the budget key charged (empty: overflow) and the state.
    /// A request charged to the overflow budget is counted by [`Self::charge`].
    fn update(
        &mut self,
        host: &dyn Host,
        key: Option<Vec<u8>>,
        now: Timestamp,
        step: &mut dyn FnMut(&mut BudgetState, &Budget),
    ) -> Result<(Vec<u8>, BudgetState), UpdateError> {
        let Some(key) = key else {
            let state = self.update_overflow(host, now, step)?;
            self.pending.remove(&b""[..]);
            return Ok((Vec::new(), state));
        };
        let place = self.places.get(&key).copied();
        let state = match place {
            Some(Place::Slot(index)) => {
                let slot_key = self.slot_key(index).to_owned();
                match self.update_slot(host, &slot_key, &key, now, step)? {
                    Slotted::Mine(state) => Some(state),
                    Slotted::Taken => None,
                }
            }
            Some(Place::Overflow(since)) if now.saturating_duration_since(since) < self.ttl => {
                let state = self.update_overflow(host, now, step)?;
                self.pending.remove(&b""[..]);
                return Ok((Vec::new(), state));
            }
            _ => None,
        };
        let state = match state {
            Some(state) => state,
            None => {
                let (place, state) = self.find_and_update(host, &key, now, step)?;
                if self.places.len() >= 4 * self.max_keys {
                    self.places.clear();
                }
                self.places.insert(key.clone(), place);
                if let Place::Overflow(_) = place {
                    self.pending.remove(&b""[..]);
                    return Ok((Vec::new(), state));
                }
                state
            }
        };
        self.pending.remove(&key);
        Ok((key, state))
    }

    /// [`Self::update`] for a request: also counts a request charged to the overflow budget and
    /// publishes the key's gauge.
    fn charge(
        &mut self,
        host: &dyn Host,
        key: Option<Vec<u8>>,
        now: Timestamp,
        step: &mut dyn FnMut(&mut BudgetState, &Budget),
    ) -> Result<Vec<u8>, UpdateError> {
        let (key, state) = self.update(host, key, now, step)?;
        if key.is_empty() {
            self.metrics.overflow_requests.increment(host, 1);
        }
        self.publish(host, &key, &state, now);
        Ok(key)
    }

    /// Sets the `budget_available` gauge of `key` (bounded: at most `max_keys + 1` gauges).
    fn publish(&mut self, host: &dyn Host, key: &[u8], state: &BudgetState, now: Timestamp) {
        let metrics = &mut self.metrics;
        if !metrics.available.contains_key(key) {
            if metrics.available.len() > self.max_keys {
                return;
            }
            let segment = if key.is_empty() {
                OVERFLOW_SEGMENT.to_owned()
            } else {
                metric_segment(key)
            };
            let name = format!("{}.{segment}", metrics.available_prefix);
            metrics
                .available
                .insert(key.to_vec(), Gauge::define(host, &name));
        }
        if let Some(gauge) = metrics.available.get(key) {
            gauge.set(host, state.available(&self.budget, now));
        }
    }

    /// Client role: reserves the request's retries and hands the count to Envoy's router.
    fn reserve(&mut self, host: &dyn Host, stream: &mut RetryStream) {
        let request = HeaderMapKind::RequestHeaders;
        if let Err(err) = host.remove_header(request, MAX_RETRIES_HEADER) {
            log::warn!("{FILTER}: cannot remove the client's {MAX_RETRIES_HEADER}: {err}");
        }
        let now = host.now();
        let key = self.budget_key(host);
        let mut reservation = Reservation::default();
        let result = self.charge(host, key, now, &mut |state, budget| {
            reservation = state.reserve(budget, now);
        });
        let retries = match result {
            Ok(key) => {
                stream.reserved = Some((key, reservation));
                reservation.retries
            }
            Err(err) => {
                log::debug!("{FILTER}: reservation failed, no retries: {err}");
                self.metrics.update_failed.increment(host, 1);
                0
            }
        };
        let metrics = &self.metrics;
        metrics.retries_allowed.increment(host, u64::from(retries));
        let denied = self.budget.max_retries().saturating_sub(retries);
        metrics.retries_denied.increment(host, u64::from(denied));
        let value = retries.to_string();
        if let Err(err) = host.set_header(request, MAX_RETRIES_HEADER, value.as_bytes()) {
            log::warn!("{FILTER}: cannot set {MAX_RETRIES_HEADER}: {err}");
        }
    }

    /// Whether the current request is a retry (server role).
    fn is_retry(&self, host: &dyn Host) -> bool {
        let request = HeaderMapKind::RequestHeaders;
        let count = |name: &str| host.header(request, name).and_then(|v| parse_count(&v));
        count(ATTEMPT_COUNT_HEADER).is_some_and(|attempt| attempt > 1)
            || count(GRPC_PREVIOUS_ATTEMPTS_HEADER).is_some_and(|previous| previous > 0)
            || self
                .retry_header
                .as_ref()
                .is_some_and(|name| count(name.as_str()).is_some_and(|attempt| attempt > 1))
    }

    /// Server role: admits a first attempt (deposit) or a retry within the budget; rejects the
    /// rest with a local reply.
    fn admit(&mut self, host: &dyn Host, request: &Request) -> Verdict {
        let now = host.now();
        let retry = self.is_retry(host);
        let key = self.budget_key(host);
        let mut admitted = true;
        let result = self.charge(host, key, now, &mut |state, budget| {
            if retry {
                admitted = state.admit_retry(budget, now);
            } else {
                state.first_attempt(budget, now);
            }
        });
        match result {
            Ok(_) => {}
            Err(err) => {
                log::debug!("{FILTER}: admission failed open: {err}");
                self.metrics.update_failed.increment(host, 1);
                admitted = true;
            }
        }
        let metrics = &self.metrics;
        if !retry {
            return Verdict::Continue;
        }
        metrics.retries_observed.increment(host, 1);
        if admitted {
            metrics.retries_allowed.increment(host, 1);
            return Verdict::Continue;
        }
        metrics.retries_denied.increment(host, 1);
        metrics.pushbacks_sent.increment(host, 1);
        let result = if request.is_grpc() {
            host.send_grpc_reply(
                GrpcStatus::Unavailable,
                REJECTION_MESSAGE,
                &[("grpc-retry-pushback-ms", "-1")],
            )
        } else {
            host.send_http_reply(
                503,
                &[("retry-after", &self.retry_after)],
                REJECTION_MESSAGE.as_bytes(),
            )
        };
        match result {
            Ok(()) => Verdict::Replied,
            Err(err) => {
                log::warn!("{FILTER}: cannot reject a retry: {err}");
                Verdict::Continue
            }
        }
    }

    /// Writes every pending refund (one update per key owing some).
    fn flush(&mut self, host: &dyn Host) {
        let now = host.now();
        let keys: Vec<Vec<u8>> = self.pending.keys().cloned().collect();
        for key in keys {
            let key = (!key.is_empty()).then_some(key);
            if let Err(err) = self.update(host, key, now, &mut |_, _| {}) {
                log::debug!("{FILTER}: refunds deferred: {err}");
            }
        }
    }
}

/// `key` as one metric-name segment: ASCII letters and digits kept, everything else '_'.
fn metric_segment(key: &[u8]) -> String {
    key.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect()
}

impl Filter for RetryBudget {
    const NAME: &'static str = FILTER;
    type Config = RetryBudgetConfig;
    type Stream = RetryStream;

    fn configure(config: RetryBudgetConfig, setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        let version = u32::from(BudgetState::FORMAT_VERSION);
        let max_keys = config.max_keys as usize;
        let slot_keys = (0..max_keys)
            .map(|index| setup.shared_key(&format!("slot{index}"), version))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| ConfigError::root(err.to_string()))?;
        let overflow_key = setup
            .shared_key("overflow", version)
            .map_err(|err| ConfigError::root(err.to_string()))?;
        setup.tick_every(TICK_PERIOD);
        log::info!(
            "{FILTER}: configured: role {:?}, ratio {}, min {} retries/s, ttl {} ms, {} keys",
            config.role,
            config.ratio.get(),
            config.min_retries_per_second,
            config.ttl_ms.as_millis(),
            config.max_keys
        );
        Ok(RetryBudget {
            role: config.role,
            key_source: config.key,
            budget: Budget::new(&config),
            ttl: config.ttl_ms.as_duration(),
            max_keys,
            pushback_limits: PushbackLimits {
                default: config.default_pushback_ms.as_duration(),
                max: config.max_pushback_ms.as_duration(),
            },
            retry_after: config.retry_after_seconds.to_string(),
            retry_header: config.retry_header,
            slot_keys,
            overflow_key,
            places: HashMap::new(),
            pending: HashMap::new(),
            metrics: Metrics::define(setup),
        })
    }

    fn on_request_headers(
        &mut self,
        host: &dyn Host,
        request: &Request,
        stream: &mut RetryStream,
    ) -> Verdict {
        self.metrics.requests.increment(host, 1);
        match self.role {
            Role::Client => {
                self.reserve(host, stream);
                Verdict::Continue
            }
            Role::Server => self.admit(host, request),
        }
    }

    fn on_response_headers(&mut self, host: &dyn Host, stream: &mut RetryStream) {
        if stream.reserved.is_none() {
            return;
        }
        let response = HeaderMapKind::ResponseHeaders;
        stream.retries_made = host
            .header(response, ATTEMPT_COUNT_HEADER)
            .and_then(|value| parse_count(&value))
            .map(|attempts| u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX));
        let status = host.header(response, ":status");
        let grpc = host.header(response, "grpc-retry-pushback-ms");
        let retry_after = host.header(response, "retry-after");
        let shed = host.header(response, "x-mesh-shed");
        let signals = PushbackSignals {
            status: status
                .as_deref()
                .and_then(parse_count)
                .and_then(|s| u32::try_from(s).ok()),
            grpc_retry_pushback_ms: grpc.as_deref(),
            retry_after: retry_after.as_deref(),
            mesh_shed: shed.as_deref(),
        };
        stream.pushback = pushback(&signals, host.now(), self.pushback_limits);
    }

    fn on_response_trailers(&mut self, host: &dyn Host, stream: &mut RetryStream) {
        // A gRPC error's pushback may come in the trailers.
        if stream.reserved.is_none() || stream.pushback.is_some() {
            return;
        }
        let grpc = host.header(HeaderMapKind::ResponseTrailers, "grpc-retry-pushback-ms");
        let signals = PushbackSignals {
            grpc_retry_pushback_ms: grpc.as_deref(),
            ..PushbackSignals::default()
        };
        stream.pushback = pushback(&signals, host.now(), self.pushback_limits);
    }

    fn on_stream_end(&mut self, host: &dyn Host, stream: RetryStream, _outcome: Outcome) {
        let Some((key, reservation)) = stream.reserved else {
            return;
        };
        if let Some(made) = stream.retries_made {
            self.metrics
                .retries_observed
                .increment(host, u64::from(made));
        }
        // Without an attempt count (reset, Envoy's own reply) the reservation counts as spent.
        let refund = reservation.settle(stream.retries_made.unwrap_or(reservation.retries));
        if refund.retries > 0 {
            let pending = self.pending.entry(key.clone()).or_default();
            match pending.iter_mut().find(|p| p.bucket == refund.bucket) {
                Some(same) => same.retries = same.retries.saturating_add(refund.retries),
                None => pending.push(refund),
            }
        }
        if let Some(delay) = stream.pushback {
            let now = host.now();
            let key = (!key.is_empty()).then_some(key);
            match self.update(host, key, now, &mut |state, _| state.push_back(now, delay)) {
                Ok(_) => self.metrics.pushbacks_honoured.increment(host, 1),
                Err(err) => {
                    log::debug!("{FILTER}: pushback not recorded: {err}");
                    self.metrics.update_failed.increment(host, 1);
                }
            }
        }
    }

    /// Writes pending refunds.
    fn on_tick(&mut self, host: &dyn Host) {
        self.flush(host);
    }

    fn has_pending_work(&self) -> bool {
        !self.pending.is_empty()
    }
}
