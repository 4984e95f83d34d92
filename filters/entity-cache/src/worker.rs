//! [`EntityCache`]: one Envoy worker's entity-cache routing on the filter kit, plain Rust over
//! the kit's [`Host`], so it is tested natively against the fake host and runs unchanged in
//! `entity_cache.wasm` and `mesh_suite.wasm`.
//!
//! **Per request.** The client's routing header is removed first, always (only configured
//! cluster names ever reach the route's `cluster_header`). A request matching a rule goes to
//! the rule's origin cluster when it carries the bypass header, else where its cache's breaker
//! says: the cache cluster (closed, or a half-open probe) or the origin (open). The filter sets
//! the routing header to that cluster and clears the route cache; unmatched requests are left
//! alone.
//!
//! **Observing the cache.** For a call sent to the cache the filter notes `:status`,
//! `grpc-status` (response headers, else trailers) and `x-envoy-attempt-count` (the route needs
//! `include_attempt_count_in_response`: above 1 means the cache attempt failed and Envoy
//! retried the call, on the origin, so the client still got its answer: a fallback). At the end
//! of the stream it classifies the outcome ([`classify`]) and records it in the cache
//! cluster's breaker in shared data: one read-modify-write (compare-and-swap, retried up to
//! [`CAS_RETRIES`]), the only shared-data round trip of the request; calls sent to the origin
//! make none. The state it writes becomes the worker's snapshot, which routes its next
//! requests; the tick refreshes the snapshots of every breaker (so a worker that sends no cache
//! traffic still sees another worker close or open a breaker) and the `breaker_state` gauges.

use crate::config::EntityCacheConfig;
use crate::policy::{
    classify, Breaker, BreakerState, CacheResponse, Destination, ErrorClass, Matcher, Observation,
    Pattern, Phase, ProbeGate, Transition,
};
use meshkit::clock::Timestamp;
use meshkit::config::{ConfigError, HeaderName};
use meshkit::headers::HeaderMapKind;
use meshkit::kit::{Counter, Filter, Gauge, Host, Outcome, Request, Setup, Verdict};
use meshkit::properties::namespace_of;
use meshkit::shared::SharedCell;
use std::time::Duration;

/// Filter name in logs and metric names (`mesh.entity_cache.*`).
const FILTER: &str = "entity-cache";
/// Retries of one shared-data update after a CAS mismatch before giving up.
pub const CAS_RETRIES: u32 = 32;
/// How often each worker refreshes its breaker snapshots and gauges.
pub const TICK_PERIOD: Duration = Duration::from_millis(250);
/// The attempt number Envoy's router puts on responses (`include_attempt_count_in_response`).
pub const ATTEMPT_COUNT_HEADER: &str = "x-envoy-attempt-count";
/// The property holding how Envoy produced the response (e.g. `upstream_response_timeout`).
const CODE_DETAILS_PROPERTY: &[&str] = &["response", "code_details"];

const REQUEST: HeaderMapKind = HeaderMapKind::RequestHeaders;
const RESPONSE: HeaderMapKind = HeaderMapKind::ResponseHeaders;

/// The metrics one worker updates (Envoy shares a stat between the workers defining it).
struct Metrics {
    to_cache: Counter,
    to_origin: Counter,
    fallbacks: Counter,
    breaker_opened: Counter,
    update_failed: Counter,
    cache_errors: Vec<(ErrorClass, Counter)>,
}

impl Metrics {
    fn define(setup: &Setup<'_>) -> Metrics {
        Metrics {
            to_cache: setup.counter("to_cache"),
            to_origin: setup.counter("to_origin"),
            fallbacks: setup.counter("fallbacks"),
            breaker_opened: setup.counter("breaker_opened"),
            update_failed: setup.counter("update_failed"),
            cache_errors: ErrorClass::ALL
                .iter()
                .map(|&class| {
                    let name = format!("cache_errors.{}", class.name());
                    (class, setup.counter(&name))
                })
                .collect(),
        }
    }

    fn cache_error(&self, host: &dyn Host, class: ErrorClass) {
        if let Some((_, counter)) = self.cache_errors.iter().find(|(c, _)| *c == class) {
            counter.increment(host, 1);
        }
    }
}

/// One cache cluster's breaker as this worker sees it.
struct BreakerSlot {
    cluster: String,
    key: String,
    snapshot: Option<BreakerState>,
    gate: ProbeGate,
    state_gauge: Gauge,
}

impl BreakerSlot {
    fn phase(&self, breaker: &Breaker, now: Timestamp) -> Phase {
        self.snapshot
            .as_ref()
            .filter(|state| state.fits(breaker))
            .map_or(Phase::Closed, |state| state.phase(breaker, now))
    }
}

/// Where a rule sends its requests: its cache's breaker, and its origin.
struct Target {
    breaker: usize,
    origin_cluster: String,
}

/// One worker's entity-cache routing for one configuration.
pub struct EntityCache {
    matcher: Matcher,
    targets: Vec<Target>,
    slots: Vec<BreakerSlot>,
    breaker: Breaker,
    latency_threshold: Option<Duration>,
    routing_header: HeaderName,
    bypass: Option<(HeaderName, Vec<u8>)>,
    metrics: Metrics,
}

/// One stream's state: the breaker of the cache it was sent to, and what the response showed.
#[derive(Debug, Default)]
pub struct CacheStream {
    /// The breaker (index) and the time the call was sent, for calls sent to the cache.
    sent: Option<(usize, Timestamp)>,
    status: Option<Vec<u8>>,
    grpc_status: Option<Vec<u8>>,
    attempt_count: Option<Vec<u8>>,
}

impl EntityCache {
    /// The shared-data key of the breaker of cache cluster `cluster`, if it is configured.
    pub fn breaker_key(&self, cluster: &str) -> Option<&str> {
        self.slots
            .iter()
            .find(|slot| slot.cluster == cluster)
            .map(|slot| slot.key.as_str())
    }

    /// The matched rule's destination for the current request, at `now`.
    fn destination(&mut self, host: &dyn Host, target: usize, now: Timestamp) -> Destination {
        let bypassed = self.bypass.as_ref().is_some_and(|(name, value)| {
            host.header(REQUEST, name.as_str())
                .is_some_and(|sent| sent.trim_ascii() == value.as_slice())
        });
        if bypassed {
            return Destination::Origin;
        }
        let share = self.breaker.half_open_share();
        let breaker = &self.breaker;
        let slot = &mut self.slots[self.targets[target].breaker];
        let phase = slot.phase(breaker, now);
        slot.gate.route(phase, share)
    }

    /// Records a cache call's observation in its breaker (one read-modify-write).
    fn record(&mut self, host: &dyn Host, index: usize, now: Timestamp, failure: bool) {
        let breaker = self.breaker;
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let cell = SharedCell::<BreakerState, _, _>::new(
            host.shared_store(),
            slot.key.as_str(),
            CAS_RETRIES,
        );
        let mut transition = Transition::None;
        let result = cell.update(|current| {
            let mut state = current
                .filter(|state| state.fits(&breaker))
                .unwrap_or_else(|| BreakerState::new(&breaker, now));
            transition = state.record(&breaker, now, failure);
            state
        });
        match result {
            Ok(state) => {
                slot.state_gauge
                    .set(host, state.phase(&breaker, now) as u64);
                slot.snapshot = Some(state);
                match transition {
                    Transition::Opened => {
                        self.metrics.breaker_opened.increment(host, 1);
                        log::info!(
                            "{FILTER}: breaker of cache cluster {} opened: cacheable calls go to the origin",
                            slot.cluster
                        );
                    }
                    Transition::Closed => log::info!(
                        "{FILTER}: breaker of cache cluster {} closed: cacheable calls go to the cache",
                        slot.cluster
                    ),
                    Transition::None => {}
                }
            }
            Err(err) => {
                log::debug!(
                    "{FILTER}: outcome for cache cluster {} not recorded: {err}",
                    slot.cluster
                );
                self.metrics.update_failed.increment(host, 1);
            }
        }
    }
}

impl Filter for EntityCache {
    const NAME: &'static str = FILTER;
    type Config = EntityCacheConfig;
    type Stream = CacheStream;

    fn configure(config: EntityCacheConfig, setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        let version = u32::from(BreakerState::FORMAT_VERSION);
        let mut slots = Vec::new();
        for cluster in config.cache_clusters() {
            let key = setup
                .shared_key(
                    &format!("breaker.{}", namespace_of(cluster.as_bytes())),
                    version,
                )
                .map_err(|err| ConfigError::root(err.to_string()))?;
            let state_gauge = setup.gauge(&format!("breaker_state.{}", metric_segment(cluster)));
            state_gauge.set(setup.host(), Phase::Closed as u64);
            slots.push(BreakerSlot {
                cluster: cluster.to_owned(),
                key,
                snapshot: None,
                gate: ProbeGate::default(),
                state_gauge,
            });
        }
        let mut patterns = Vec::with_capacity(config.rules.len());
        let mut targets = Vec::with_capacity(config.rules.len());
        for rule in &config.rules {
            patterns.push(match (&rule.grpc_method, &rule.path_prefix) {
                (Some(method), _) => Pattern::grpc(method),
                (None, prefix) => Pattern::Http {
                    method: rule.http_method.as_ref().map(|m| m.as_bytes().to_vec()),
                    path_prefix: prefix.as_deref().unwrap_or("/").as_bytes().to_vec(),
                },
            });
            targets.push(Target {
                breaker: slots
                    .iter()
                    .position(|slot| slot.cluster == rule.cache_cluster)
                    .unwrap_or_default(),
                origin_cluster: rule.origin_cluster.clone(),
            });
        }
        let Some(routing_header) = config.routing_header else {
            return Err(ConfigError::invalid(
                "routing_header",
                "null",
                "must be a header name",
            ));
        };
        setup.tick_every(TICK_PERIOD);
        log::info!(
            "{FILTER}: configured: {} rules, {} cache clusters, routing header {routing_header}",
            config.rules.len(),
            slots.len()
        );
        Ok(EntityCache {
            matcher: Matcher::new(patterns),
            targets,
            slots,
            breaker: Breaker::new(&config.breaker),
            latency_threshold: config
                .breaker
                .latency_threshold_ms
                .map(|threshold| threshold.as_duration()),
            routing_header,
            bypass: config
                .bypass_header
                .map(|name| (name, config.bypass_value.into_bytes())),
            metrics: Metrics::define(setup),
        })
    }

    fn on_request_headers(
        &mut self,
        host: &dyn Host,
        request: &Request,
        stream: &mut CacheStream,
    ) -> Verdict {
        let routing_header = self.routing_header.as_str();
        if let Err(err) = host.remove_header(REQUEST, routing_header) {
            log::warn!("{FILTER}: cannot remove the client's {routing_header}: {err}");
        }
        if self.matcher.is_empty() {
            return Verdict::Continue;
        }
        let path = host.header(REQUEST, ":path").unwrap_or_default();
        let method = host.header(REQUEST, ":method").unwrap_or_default();
        let Some(target) = self.matcher.find(&path, &method, request.is_grpc()) else {
            return Verdict::Continue;
        };
        let now = host.now();
        let destination = self.destination(host, target, now);
        let breaker = self.targets[target].breaker;
        let cluster = match destination {
            Destination::Cache { .. } => &self.slots[breaker].cluster,
            Destination::Origin => &self.targets[target].origin_cluster,
        };
        if let Err(err) = host.set_header(REQUEST, self.routing_header.as_str(), cluster.as_bytes())
        {
            log::warn!("{FILTER}: cannot set {}: {err}", self.routing_header);
            return Verdict::Continue;
        }
        if let Err(err) = host.clear_route_cache() {
            log::warn!("{FILTER}: cannot clear the route cache: {err}");
        }
        match destination {
            Destination::Cache { .. } => {
                self.metrics.to_cache.increment(host, 1);
                stream.sent = Some((breaker, now));
            }
            Destination::Origin => self.metrics.to_origin.increment(host, 1),
        }
        Verdict::Continue
    }

    fn on_response_headers(&mut self, host: &dyn Host, stream: &mut CacheStream) {
        if stream.sent.is_none() {
            return;
        }
        stream.status = host.header(RESPONSE, ":status");
        stream.grpc_status = host.header(RESPONSE, "grpc-status");
        stream.attempt_count = host.header(RESPONSE, ATTEMPT_COUNT_HEADER);
    }

    fn on_response_trailers(&mut self, host: &dyn Host, stream: &mut CacheStream) {
        if stream.sent.is_some() && stream.grpc_status.is_none() {
            stream.grpc_status = host.header(HeaderMapKind::ResponseTrailers, "grpc-status");
        }
    }

    fn on_stream_end(&mut self, host: &dyn Host, stream: CacheStream, outcome: Outcome) {
        let Some((breaker, sent_at)) = stream.sent else {
            return;
        };
        let now = host.now();
        let code_details = match outcome {
            Outcome::Reset | Outcome::LocalReply => host.property(CODE_DETAILS_PROPERTY),
            Outcome::Success | Outcome::Error => None,
        };
        let response = CacheResponse {
            outcome: Some(outcome),
            status: stream.status.as_deref(),
            grpc_status: stream.grpc_status.as_deref(),
            attempt_count: stream.attempt_count.as_deref(),
            code_details: code_details.as_deref(),
            latency: now.saturating_duration_since(sent_at),
        };
        let failure = match classify(&response, self.latency_threshold) {
            Observation::Neutral => return,
            Observation::Success => false,
            Observation::Failure(class) => {
                self.metrics.cache_error(host, class);
                if class == ErrorClass::Retried && outcome == Outcome::Success {
                    self.metrics.fallbacks.increment(host, 1);
                }
                true
            }
        };
        self.record(host, breaker, now, failure);
    }

    /// Refreshes every breaker's snapshot and gauge.
    fn on_tick(&mut self, host: &dyn Host) {
        let now = host.now();
        for slot in &mut self.slots {
            let cell =
                SharedCell::<BreakerState, _, _>::new(host.shared_store(), slot.key.as_str(), 0);
            match cell.read() {
                Ok(state) => slot.snapshot = state,
                Err(err) => log::debug!("{FILTER}: cannot read breaker {}: {err}", slot.cluster),
            }
            slot.state_gauge
                .set(host, slot.phase(&self.breaker, now) as u64);
        }
    }
}

/// `cluster` as one metric-name segment: ASCII letters and digits kept, everything else '_'.
fn metric_segment(cluster: &str) -> String {
    cluster
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
