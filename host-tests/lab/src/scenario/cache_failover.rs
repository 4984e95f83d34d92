//! The `cache-failover` scenario and the egress topology it shares with the entity cache's
//! real-Envoy tests: a caller's egress Envoy in front of an entity cache and its origin, both lab
//! upstreams serving `mesh.test.v1.Echo`. `Echo/Get` is cacheable, `Echo/Slow` is not.
//!
//! The topology ([`egress_bootstrap`]): an aggregate cluster [`CACHE_CLUSTER`] = [cache hosts,
//! origin] whose route retries once with the `previous_priorities` retry priority on connect
//! failures, resets, 5xx and the gRPC statuses Envoy reads in response headers
//! ([`fallback_retries`]): a cache attempt that fails is answered by the origin in the same call.
//! Envoy 1.40 decides retries on response headers only (envoyproxy/envoy#17629): a trailers-only
//! UNAVAILABLE is retried on the origin, but a `grpc-status` in trailers reaches the client
//! unless something moves it into the headers first.
//! Side by side ([`Steering`]):
//! - `outlier-detection` (Envoy-native): the route sends `Echo/Get` to the aggregate cluster and
//!   the cache hosts have outlier detection (consecutive 5xx, ejection time = our cool-down);
//! - `entity-cache`: entity_cache.wasm picks the cluster per call (routing header read by the
//!   route's `cluster_header`), the aggregate while its breaker is closed, the origin while open;
//!   the aggregate's upstream filter ([`HttpFilter::grpc_trailer_status_to_headers`], Envoy's
//!   Lua filter) holds each steered response until its trailers and copies a failure status
//!   into the headers, so the route's retry moves that call to the origin too.
//!
//! The timeline: steady gRPC load (400 rps, three cacheable calls for one other); the cache is
//! killed at 10 s, restarted at 20 s, turns slow (200 ms) at 30 s, answers UNAVAILABLE in trailers
//! at 40 s, until 50 s. Each stretch is its own load run (the next starts once the previous one's
//! calls have finished); its event is applied at its start. Reported per variant and stretch:
//! failed RPCs (target 0), p99, what the cache and the origin received, and the time from the
//! event until the sidecar steered away from the cache (kill: breaker open / host ejected; target
//! <= 1 s) or back to it (restart: breaker closed / host back, and calls reach the cache; target
//! <= cool-down + 1 s).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use envoy_configs::{
    Bootstrap, Cluster, HeaderMatcher, HttpFilter, Listener, OutlierDetection, RetryOn,
    RetryPolicy, RetryPriority, Route, Thresholds, WasmFilter,
};
use mesh_catalog::ModuleError;
use mesh_envoy_harness::{EnvoyOptions, EnvoyProcess};
use serde::Serialize;
use serde_json::{json, Value};

use super::{ExpectationResult, Report, RunMode, ScenarioError};
use crate::load::{self, GrpcMethod, LoadConfig, LoadReport, Protocol, RequestClass};
use crate::upstream::{
    Fault, GrpcStatusDelivery, Upstream, UpstreamConfig, UpstreamCounters, UpstreamHandle,
};

/// Name of the scenario.
pub const NAME: &str = "cache-failover";
/// The egress listener the caller sends to.
pub const EGRESS_LISTENER: &str = "egress";
/// The aggregate cluster [cache hosts, origin]: the rule's `cache_cluster`.
pub const CACHE_CLUSTER: &str = "entity-cache";
/// The cluster of the cache's own hosts (priority 0 of [`CACHE_CLUSTER`]).
pub const CACHE_HOSTS_CLUSTER: &str = "entity-cache-hosts";
/// The origin's cluster.
pub const ORIGIN_CLUSTER: &str = "origin";
/// The request header the entity cache sets and the route's `cluster_header` reads.
pub const ROUTING_HEADER: &str = "x-entity-cache-cluster";
/// The cacheable gRPC method.
pub const CACHEABLE_METHOD: &str = "mesh.test.v1.Echo/Get";
/// The entity cache's breaker-state gauge of [`CACHE_CLUSTER`] (0 closed, 1 open, 2 half-open).
pub const BREAKER_STATE_STAT: &str = "wasmcustom.mesh.entity_cache.breaker_state.entity_cache";
/// Active ejections of the cache hosts (Envoy's outlier detection).
pub const EJECTIONS_STAT: &str = "cluster.entity-cache-hosts.outlier_detection.ejections_active";
/// How often the run reads the steering stat.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Who steers cacheable calls away from a degraded cache.
#[derive(Debug, Clone)]
pub enum Steering {
    /// Envoy alone: `Echo/Get` goes to the aggregate cluster; the cache hosts have outlier
    /// detection.
    OutlierDetection(OutlierDetection),
    /// entity_cache.wasm with this configuration picks the cluster of each call.
    EntityCache(Value),
    /// The same, inside mesh_suite.wasm (the suite's only filter; same metrics).
    Suite(Value),
}

/// The entity cache's configuration for the topology: `Echo/Get` is cacheable, `breaker` its
/// breaker section.
pub fn entity_cache_config(breaker: &Value) -> Value {
    json!({
        "rules": [{
            "grpc_method": CACHEABLE_METHOD,
            "cache_cluster": CACHE_CLUSTER,
            "origin_cluster": ORIGIN_CLUSTER,
        }],
        "routing_header": ROUTING_HEADER,
        "breaker": breaker,
    })
}

/// The retry policy that falls back from the cache to the origin within one call: one retry on
/// the next priority of the aggregate cluster, on connect failures, resets, 5xx and the gRPC
/// statuses of a degraded cache (read from response headers: trailers-only answers).
pub fn fallback_retries() -> RetryPolicy {
    RetryPolicy::new(
        [
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::RefusedStream,
            RetryOn::FiveXx,
            RetryOn::Unavailable,
            RetryOn::DeadlineExceeded,
            RetryOn::Internal,
            RetryOn::ResourceExhausted,
        ],
        1,
    )
    .retry_priority(RetryPriority::previous_priorities(1))
}

/// The egress Envoy's bootstrap: listener [`EGRESS_LISTENER`] steered per `steering`, the
/// aggregate [`CACHE_CLUSTER`] over the cache at `cache` and the origin at `origin` (HTTP/2,
/// circuit breakers off), attempt counts on responses.
pub fn egress_bootstrap(
    steering: &Steering,
    cache: SocketAddr,
    origin: SocketAddr,
) -> Result<Bootstrap, ModuleError> {
    let timeout = Duration::from_secs(10);
    let to_origin = Route::prefix("/")
        .to_cluster(ORIGIN_CLUSTER)
        .timeout(timeout);
    let mut cache_hosts = Cluster::static_cluster(CACHE_HOSTS_CLUSTER, [cache])
        .http2()
        .circuit_breaker(Thresholds::unlimited());
    let listener = Listener::http(EGRESS_LISTENER, 0).include_attempt_counts();
    let listener = match steering {
        Steering::OutlierDetection(detection) => {
            cache_hosts = cache_hosts.outlier_detection(detection.clone());
            listener.route(
                Route::path(format!("/{CACHEABLE_METHOD}"))
                    .to_cluster(CACHE_CLUSTER)
                    .timeout(timeout)
                    .retry_policy(fallback_retries()),
            )
        }
        Steering::EntityCache(config) => {
            let module = mesh_catalog::built("entity-cache")?;
            listener
                .wasm_filter(WasmFilter::new("entity-cache", module).configuration(config))
                .route(steered_route(timeout))
        }
        Steering::Suite(config) => {
            let module = mesh_catalog::built("mesh-suite")?;
            let suite = json!({"filters": [{"filter": "entity-cache", "config": config}]});
            listener
                .wasm_filter(WasmFilter::new("mesh-suite", module).configuration(&suite))
                .route(steered_route(timeout))
        }
    };
    Ok(Bootstrap::new(0)
        .listener(listener.route(to_origin))
        .cluster({
            let aggregate =
                Cluster::aggregate(CACHE_CLUSTER, [CACHE_HOSTS_CLUSTER, ORIGIN_CLUSTER])
                    .circuit_breaker(Thresholds::unlimited());
            match steering {
                // Envoy-native: the aggregate's calls as the router sees them.
                Steering::OutlierDetection(_) => aggregate,
                Steering::EntityCache(_) | Steering::Suite(_) => {
                    aggregate.upstream_http_filter(HttpFilter::grpc_trailer_status_to_headers())
                }
            }
        })
        .cluster(cache_hosts)
        .cluster(
            Cluster::static_cluster(ORIGIN_CLUSTER, [origin])
                .http2()
                .circuit_breaker(Thresholds::unlimited()),
        ))
}

/// The route of calls the entity cache steered: to the cluster its routing header names, with
/// the fallback retries.
fn steered_route(timeout: Duration) -> Route {
    Route::prefix("/")
        .header(HeaderMatcher::present(ROUTING_HEADER))
        .to_cluster_header(ROUTING_HEADER)
        .timeout(timeout)
        .retry_policy(fallback_retries())
}

/// Whether `steering`'s sidecar currently keeps cacheable calls away from the cache (breaker
/// open or half-open; cache host ejected), from its stat; `None` while the stat is unknown.
pub fn steered_away(envoy: &EnvoyProcess, steering: &Steering) -> Option<bool> {
    let (stat, away): (&str, fn(u64) -> bool) = match steering {
        Steering::OutlierDetection(_) => (EJECTIONS_STAT, |ejections| ejections > 0),
        Steering::EntityCache(_) | Steering::Suite(_) => (BREAKER_STATE_STAT, |state| state != 0),
    };
    let path = format!("/stats?format=json&filter=^{stat}$");
    let stats: Value = serde_json::from_str(&envoy.admin_get(&path).ok()?).ok()?;
    let value = stats["stats"]
        .as_array()?
        .iter()
        .find(|entry| entry["name"] == stat)?["value"]
        .as_u64()?;
    Some(away(value))
}

/// What happens to the cache at the start of a stretch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CacheEvent {
    /// Nothing: it keeps its state.
    None,
    /// Killed: listener and connections closed.
    Kill,
    /// Listening again on its port, healthy.
    Restart,
    /// This fault from now on.
    Fault(Fault),
}

/// One stretch of the timeline.
#[derive(Debug, Clone)]
pub struct Stretch {
    /// Shown in the report.
    pub name: &'static str,
    /// Its length.
    pub duration: Duration,
    /// Applied at its start.
    pub event: CacheEvent,
}

/// One column of the comparison.
#[derive(Debug, Clone)]
pub struct FailoverVariant {
    /// Shown in the report.
    pub name: &'static str,
    /// Who steers.
    pub steering: Steering,
}

/// The scenario's data.
#[derive(Debug, Clone)]
pub struct CacheFailoverScenario {
    /// What it shows.
    pub description: String,
    /// Offered gRPC calls per second.
    pub rate_per_sec: f64,
    /// Client connections.
    pub connections: usize,
    /// Client timeout per call.
    pub timeout: Duration,
    /// Envoy worker threads.
    pub envoy_concurrency: u32,
    /// The entity cache's cool-down (and the outlier detection's ejection time).
    pub cool_down: Duration,
    /// The timeline, in order.
    pub stretches: Vec<Stretch>,
    /// The variants, run one after another.
    pub variants: Vec<FailoverVariant>,
}

/// Calls of the cacheable class (`Echo/Get`) per call of the other class (`Echo/Slow`).
const CACHEABLE_WEIGHT: u32 = 3;
/// The cache's added latency in the `slow` stretch.
const SLOW_CACHE: Duration = Duration::from_millis(200);

/// The scenario (see the module doc).
pub fn cache_failover() -> CacheFailoverScenario {
    let cool_down = Duration::from_secs(5);
    let ten = Duration::from_secs(10);
    let stretch = |name, event| Stretch {
        name,
        duration: ten,
        event,
    };
    CacheFailoverScenario {
        description: format!(
            "400 gRPC calls/s (3 cacheable Echo/Get : 1 Echo/Slow), cache killed at 10 s, restarted at 20 s, \
             slow ({} ms) at 30 s, UNAVAILABLE in trailers at 40 s; outlier detection vs entity_cache.wasm, \
             cool-down {} s",
            SLOW_CACHE.as_millis(),
            cool_down.as_secs()
        ),
        rate_per_sec: 400.0,
        connections: 8,
        timeout: Duration::from_secs(1),
        envoy_concurrency: 2,
        cool_down,
        stretches: vec![
            stretch("steady", CacheEvent::None),
            stretch("killed", CacheEvent::Kill),
            stretch("restarted", CacheEvent::Restart),
            stretch("slow", CacheEvent::Fault(Fault::latency(SLOW_CACHE))),
            stretch(
                "unavailable-trailers",
                CacheEvent::Fault(Fault::grpc_error(
                    1.0,
                    tonic::Code::Unavailable,
                    GrpcStatusDelivery::Trailers,
                )),
            ),
        ],
        variants: vec![
            FailoverVariant {
                name: "outlier-detection",
                steering: Steering::OutlierDetection(OutlierDetection::consecutive_5xx(
                    5,
                    Duration::from_secs(1),
                    cool_down,
                )),
            },
            FailoverVariant {
                name: "entity-cache",
                steering: Steering::EntityCache(filter_config(cool_down)),
            },
        ],
    }
}

impl CacheFailoverScenario {
    /// The scenario squeezed into about `total` of load: every stretch an equal share (at least
    /// 100 ms), the cool-down and ejection time 100 ms; its figures mean nothing.
    fn smoke(&self, total: Duration) -> CacheFailoverScenario {
        let stretches = u32::try_from(self.stretches.len() * self.variants.len()).unwrap_or(1);
        let share = (total / stretches.max(1)).max(Duration::from_millis(100));
        let cool_down = Duration::from_millis(100);
        CacheFailoverScenario {
            cool_down,
            stretches: self
                .stretches
                .iter()
                .map(|stretch| Stretch {
                    duration: share,
                    ..stretch.clone()
                })
                .collect(),
            variants: self
                .variants
                .iter()
                .map(|variant| FailoverVariant {
                    steering: match &variant.steering {
                        Steering::OutlierDetection(detection) => {
                            Steering::OutlierDetection(OutlierDetection {
                                interval: Some(cool_down),
                                base_ejection_time: Some(cool_down),
                                ..detection.clone()
                            })
                        }
                        Steering::EntityCache(_) => Steering::EntityCache(filter_config(cool_down)),
                        Steering::Suite(_) => Steering::Suite(filter_config(cool_down)),
                    },
                    ..variant.clone()
                })
                .collect(),
            ..self.clone()
        }
    }
}

/// The entity cache's configuration in the scenario: `cool_down`, answers slower than three
/// quarters of the slow cache's added latency count as failures (a loaded 2-core machine has
/// a p99 near 100 ms by itself).
fn filter_config(cool_down: Duration) -> Value {
    entity_cache_config(&json!({
        "cool_down_ms": millis(cool_down),
        "latency_threshold_ms": millis(SLOW_CACHE * 3 / 4),
    }))
}

/// What one variant did in one stretch.
#[derive(Debug, Clone, Serialize)]
pub struct StretchResult {
    /// The variant.
    pub variant: String,
    /// The stretch.
    pub stretch: String,
    /// Calls sent.
    pub sent: u64,
    /// Calls that failed (any non-OK status, timeout or connection failure).
    pub failed: u64,
    /// Cacheable calls sent.
    pub cacheable_sent: u64,
    /// p99 latency of all calls (ms).
    pub p99_ms: f64,
    /// What the cache received.
    pub cache: UpstreamCounters,
    /// What the origin received.
    pub origin: UpstreamCounters,
    /// From the stretch's event until the sidecar steered away from the cache (kill) or back to
    /// it (restart: no longer steering away, and calls reach the cache), in ms; `None`: not in
    /// the stretch.
    pub steered_after_ms: Option<u64>,
    /// The load generator's report.
    pub load: LoadReport,
}

/// The breaker timing the cache-failover table and targets refer to.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CacheFailoverParameters {
    /// The cool-down (ms).
    pub cool_down_ms: u64,
}

/// The run's rows (one per variant and stretch) and targets.
pub type CacheFailoverReport = Report<StretchResult, CacheFailoverParameters>;

impl Report<StretchResult, CacheFailoverParameters> {
    /// The row of `variant` in `stretch`.
    pub fn result(&self, variant: &str, stretch: &str) -> Option<&StretchResult> {
        self.results
            .iter()
            .find(|r| r.variant == variant && r.stretch == stretch)
    }

    /// A fixed-width table with the targets.
    pub fn table(&self) -> String {
        let mut out = self.heading();
        let _ = writeln!(
            out,
            "targets: 0 failed RPCs, kill-to-open <= 1000 ms, restart-to-traffic-back <= {} ms",
            self.parameters.cool_down_ms + 1_000
        );
        let _ = writeln!(
            out,
            "{:<18} {:<21} {:>7} {:>7} {:>9} {:>9} {:>10} {:>11}",
            "variant", "stretch", "sent", "failed", "p99_ms", "cache_rx", "origin_rx", "steered_ms"
        );
        for r in &self.results {
            let _ = writeln!(
                out,
                "{:<18} {:<21} {:>7} {:>7} {:>9.1} {:>9} {:>10} {:>11}",
                r.variant,
                r.stretch,
                r.sent,
                r.failed,
                r.p99_ms,
                r.cache.received,
                r.origin.received,
                r.steered_after_ms
                    .map_or("-".to_owned(), |ms| ms.to_string()),
            );
        }
        self.write_expectations(&mut out);
        out
    }
}

/// The name of our variant in the report.
const OURS: &str = "entity-cache";
/// The name of the Envoy-native variant in the report.
const NATIVE: &str = "outlier-detection";

/// Runs every variant of `scenario`.
pub fn run(
    scenario: &CacheFailoverScenario,
    mode: RunMode,
) -> Result<CacheFailoverReport, ScenarioError> {
    let scenario = match mode {
        RunMode::Full => scenario.clone(),
        RunMode::Smoke { total } => scenario.smoke(total),
    };
    let runtime = crate::runtime().map_err(ScenarioError::Runtime)?;
    let mut results = Vec::new();
    for variant in &scenario.variants {
        results.extend(run_variant(&runtime, &scenario, variant)?);
    }
    let expectations = expectations(&scenario, &results);
    Ok(CacheFailoverReport {
        name: NAME.into(),
        description: scenario.description.clone(),
        smoke: mode != RunMode::Full,
        parameters: CacheFailoverParameters {
            cool_down_ms: millis(scenario.cool_down),
        },
        results,
        expectations,
    })
}

fn run_variant(
    runtime: &tokio::runtime::Runtime,
    scenario: &CacheFailoverScenario,
    variant: &FailoverVariant,
) -> Result<Vec<StretchResult>, ScenarioError> {
    let mut cache = runtime.block_on(Upstream::start(UpstreamConfig::new("cache")))?;
    let origin = runtime.block_on(Upstream::start(UpstreamConfig::new("origin")))?;
    let steering = &variant.steering;
    let bootstrap = egress_bootstrap(steering, cache.addr(), origin.addr())?;
    let options = EnvoyOptions {
        concurrency: scenario.envoy_concurrency,
        ..EnvoyOptions::default()
    };
    let envoy = EnvoyProcess::start(&bootstrap, options)?;
    let target = envoy.listener_addr(EGRESS_LISTENER)?;
    let mut rows = Vec::with_capacity(scenario.stretches.len());
    for stretch in &scenario.stretches {
        // Steering away after a kill, back after a restart.
        let awaited = match stretch.event {
            CacheEvent::Kill => Some(true),
            CacheEvent::Restart => Some(false),
            CacheEvent::None | CacheEvent::Fault(_) => None,
        };
        apply(runtime, &mut cache, stretch.event)?;
        let event_at = Instant::now();
        let (cache_before, origin_before) = (cache.counters(), origin.counters());
        let mut config = LoadConfig::new(
            target,
            Protocol::Grpc,
            scenario.rate_per_sec,
            stretch.duration,
        );
        config.connections = scenario.connections;
        config.timeout = scenario.timeout;
        config.classes = vec![
            RequestClass::new("cacheable", CACHEABLE_WEIGHT, &[]),
            RequestClass::new("other", 1, &[]).calling(GrpcMethod::Slow),
        ];
        let done = AtomicBool::new(false);
        let (load, steered_at) = std::thread::scope(|scope| {
            let watcher = awaited.map(|away| {
                let (envoy, cache, done) = (&envoy, &cache, &done);
                scope.spawn(move || {
                    while !done.load(Ordering::SeqCst) {
                        // Back means the sidecar stopped steering away and calls reach the cache.
                        let reached = away || cache.counters().received > cache_before.received;
                        if reached && steered_away(envoy, steering) == Some(away) {
                            return Some(Instant::now());
                        }
                        std::thread::sleep(POLL_INTERVAL);
                    }
                    None
                })
            });
            let load = runtime.block_on(load::run(&config));
            done.store(true, Ordering::SeqCst);
            let steered_at = watcher.and_then(|watcher| watcher.join().ok().flatten());
            (load, steered_at)
        });
        let load = load?;
        let cacheable_sent = load
            .classes
            .get("cacheable")
            .map_or(0, |stats| stats.requests - stats.errors.client_dropped);
        rows.push(StretchResult {
            variant: variant.name.into(),
            stretch: stretch.name.into(),
            sent: load.sent_requests(),
            failed: load.sent_requests().saturating_sub(load.totals.successes),
            cacheable_sent,
            p99_ms: load.totals.latency_all.p99_ms,
            cache: cache.counters().since(&cache_before),
            origin: origin.counters().since(&origin_before),
            steered_after_ms: steered_at.map(|at| millis(at.saturating_duration_since(event_at))),
            load,
        });
    }
    envoy.shutdown();
    Ok(rows)
}

/// Applies `event` to the cache.
fn apply(
    runtime: &tokio::runtime::Runtime,
    cache: &mut UpstreamHandle,
    event: CacheEvent,
) -> Result<(), ScenarioError> {
    match event {
        CacheEvent::None => {}
        CacheEvent::Kill => runtime.block_on(cache.kill()),
        CacheEvent::Restart => {
            cache.clear_fault();
            runtime.block_on(cache.restart())?;
        }
        CacheEvent::Fault(fault) => cache.set_fault(fault),
    }
    Ok(())
}

/// The targets for the entity cache, and the directions both variants show in any run.
fn expectations(
    scenario: &CacheFailoverScenario,
    results: &[StretchResult],
) -> Vec<ExpectationResult> {
    let rows = |variant: &str| -> Vec<&StretchResult> {
        results.iter().filter(|r| r.variant == variant).collect()
    };
    let row = |variant: &str, event: fn(&CacheEvent) -> bool| {
        let stretch = scenario.stretches.iter().find(|s| event(&s.event))?;
        results
            .iter()
            .find(|r| r.variant == variant && r.stretch == stretch.name)
    };
    let ms = |value: Option<u64>| value.map_or("never".to_owned(), |v| format!("{v} ms"));
    let check = |description: String, in_smoke: bool, outcome: Option<(bool, String)>| {
        let (holds, figures) = outcome.unwrap_or((false, "a row it needs is missing".to_owned()));
        ExpectationResult {
            description,
            in_smoke,
            holds,
            figures,
        }
    };
    let back_target = millis(scenario.cool_down) + 1_000;
    let ours = rows(OURS);
    let steady = |variant: &str| results.iter().find(|r| r.variant == variant);
    vec![
        check(
            format!("{OURS}: 0 failed RPCs in every stretch"),
            false,
            (!ours.is_empty()).then(|| {
                let failed: u64 = ours.iter().map(|r| r.failed).sum();
                let figures: Vec<String> = ours
                    .iter()
                    .map(|r| format!("{} {}", r.stretch, r.failed))
                    .collect();
                (failed == 0, figures.join(", "))
            }),
        ),
        check(
            format!("{OURS}: kill-to-open <= 1000 ms"),
            false,
            row(OURS, |e| *e == CacheEvent::Kill).map(|r| {
                let within = r.steered_after_ms.is_some_and(|ms| ms <= 1_000);
                (within, ms(r.steered_after_ms))
            }),
        ),
        check(
            format!("{OURS}: restart-to-traffic-back <= cool-down + 1 s ({back_target} ms)"),
            false,
            row(OURS, |e| *e == CacheEvent::Restart).map(|r| {
                let within = r.steered_after_ms.is_some_and(|ms| ms <= back_target);
                (within, ms(r.steered_after_ms))
            }),
        ),
        check(
            format!("slow cache: {OURS} p99 below {NATIVE} p99"),
            false,
            row(
                OURS,
                |e| matches!(e, CacheEvent::Fault(f) if !f.added_latency.is_zero()),
            )
            .zip(row(
                NATIVE,
                |e| matches!(e, CacheEvent::Fault(f) if !f.added_latency.is_zero()),
            ))
            .map(|(o, n)| {
                (
                    o.p99_ms < n.p99_ms,
                    format!("{:.1} ms vs {:.1} ms", o.p99_ms, n.p99_ms),
                )
            }),
        ),
        check(
            "steady: no call fails, the cache serves cacheable calls only (both variants)".into(),
            true,
            steady(NATIVE).zip(steady(OURS)).map(|(n, o)| {
                let holds = |r: &StretchResult| {
                    r.failed == 0 && r.cache.received > 0 && r.cache.received <= r.cacheable_sent
                };
                let figures = |r: &StretchResult| {
                    format!(
                        "{}: cache {} of {} cacheable calls, origin {}, {} failed",
                        r.variant, r.cache.received, r.cacheable_sent, r.origin.received, r.failed
                    )
                };
                (
                    holds(n) && holds(o),
                    format!("{}; {}", figures(n), figures(o)),
                )
            }),
        ),
    ]
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
