//! The `sandbox` scenario, and the sandbox topology it shares with the real-Envoy tests of
//! sandbox_router.wasm.
//!
//! **Topology** ([`bootstrap`]): a baseline deployment and sandbox deployments, each its own
//! cluster; each sandbox is reached through an aggregate cluster `[sandbox, baseline]`
//! ([`fallback_cluster`]) on a route retrying once with the `previous_priorities` retry priority
//! ([`fallback_retry`]), so a sandbox that refuses connections, resets or answers 5xx is served by
//! the baseline within the same client request. The listener picks the sandbox either with
//! sandbox_router.wasm, whose routing header a `cluster_header` route reads, or Envoy-natively with
//! one header-match route per sandbox on the key header ([`Routing`]). Every other request takes
//! the baseline route. Attempt counts are reported on responses.
//!
//! **Scenario.** 400 rps over HTTP/1.1, one request in ten keyed to sandbox `alpha` (`x-sandbox:
//! alpha`), for each variant on the same timeline (each phase its own load run; its event happens
//! once the previous phase's requests have all finished):
//! - `steady` 5 s;
//! - `sandbox-down` 5 s: `alpha`'s deployment is killed (refuses connections);
//! - `recovered` 2 s: `alpha` is back on the same port;
//! - `registered` 3 s: sandbox `beta` is added to the dynamic registry (served by a lab upstream,
//!   refreshed every second); a probe sends `x-sandbox: beta` every 20 ms until `beta`'s deployment
//!   answers: the registry pick-up time.
//!
//! Variants: `envoy-header-route` (bare Envoy, a native header-match route for `alpha`: no
//! baggage, no trust, and a new sandbox needs a config push) and `sandbox-router`.
//!
//! Reported per variant and phase: requests served by the right deployment (a keyed request by
//! its sandbox while it is up and by the baseline while it is down, every other request by the
//! baseline; target 100 %), client errors (target 0), the keyed requests the baseline served
//! (fallbacks), p50/p99 and the p99 the filter adds over the native route; and the pick-up time
//! (target: one refresh interval plus one tick of the filter, i.e. 1.25 intervals).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_configs::{
    Bootstrap, Cluster, HeaderMatcher, Listener, RetryOn, RetryPolicy, RetryPriority, Route,
    Thresholds, WasmFilter,
};
use http::Request;
use http_body_util::Empty;
use mesh_catalog::ModuleError;
use serde::Serialize;
use serde_json::{json, Value};

use super::{ExpectationResult, Report, RunMode, ScenarioError, INGRESS_LISTENER};
use crate::keepalive::exchange;
use crate::load::{self, LoadConfig, LoadReport, Protocol, RequestClass};
use crate::upstream::{
    ServiceTime, Upstream, UpstreamConfig, UpstreamHandle, UPSTREAM_NAME_HEADER,
};
use mesh_envoy_harness::{EnvoyOptions, EnvoyProcess};

/// Name of the scenario.
pub const NAME: &str = "sandbox";
/// The baseline deployment's cluster (and upstream name).
pub const BASELINE: &str = "baseline";
/// The cluster serving the dynamic registry.
pub const REGISTRY_CLUSTER: &str = "sandbox_registry";
/// The dynamic registry's path.
pub const REGISTRY_PATH: &str = "/sandboxes";
/// The header carrying the sandbox key (the filter's default).
pub const KEY_HEADER: &str = "x-sandbox";
/// The header the filter sets to the chosen cluster (the filter's default).
pub const ROUTING_HEADER: &str = "x-mesh-sandbox-cluster";
/// The whole-request timeout of every route.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster (and upstream name) of sandbox `name`'s deployment.
pub fn sandbox_cluster(name: &str) -> String {
    format!("sandbox-{name}")
}

/// The aggregate cluster `[sandbox, baseline]` a request for sandbox `name` is routed to.
pub fn fallback_cluster(name: &str) -> String {
    format!("sandbox-{name}-or-baseline")
}

/// The dynamic registry's answer listing `names`, each served by its [`fallback_cluster`].
pub fn registry_document(names: &[&str]) -> String {
    let entries: Vec<Value> = names
        .iter()
        .map(|name| json!({"name": name, "cluster": fallback_cluster(name)}))
        .collect();
    Value::Array(entries).to_string()
}

/// The retry policy of sandbox routes: one retry on a 5xx, a reset or a connect failure, to the
/// next priority level of the aggregate cluster (the baseline).
pub fn fallback_retry() -> RetryPolicy {
    RetryPolicy::new([RetryOn::FiveXx], 1).retry_priority(RetryPriority::previous_priorities(1))
}

/// How the ingress listener picks a sandbox.
#[derive(Debug, Clone)]
pub enum Routing {
    /// sandbox_router.wasm (plugin `sandbox-router`) with this configuration; a route sends
    /// requests carrying [`ROUTING_HEADER`] to the cluster it names.
    Filter(Value),
    /// Envoy-native: a route per listed sandbox matching [`KEY_HEADER`] exactly.
    HeaderMatch(Vec<String>),
}

/// Where the deployments listen.
#[derive(Debug, Clone)]
pub struct Deployments {
    /// The baseline.
    pub baseline: SocketAddr,
    /// Each sandbox's name and deployment.
    pub sandboxes: Vec<(String, SocketAddr)>,
    /// The dynamic registry, if any.
    pub registry: Option<SocketAddr>,
}

/// The Envoy bootstrap of the topology (see the module doc); the listener is
/// [`INGRESS_LISTENER`]. Fails when sandbox_router.wasm is needed and not built or stale.
pub fn bootstrap(deployments: &Deployments, routing: &Routing) -> Result<Bootstrap, ModuleError> {
    let mut listener = Listener::http(INGRESS_LISTENER, 0);
    match routing {
        Routing::Filter(config) => {
            let module = mesh_catalog::built("sandbox-router")?;
            listener = listener
                .wasm_filter(WasmFilter::new("sandbox-router", module).configuration(config))
                .route(
                    Route::prefix("/")
                        .header(HeaderMatcher::present(ROUTING_HEADER))
                        .to_cluster_header(ROUTING_HEADER)
                        .timeout(ROUTE_TIMEOUT)
                        .retry_policy(fallback_retry()),
                );
        }
        Routing::HeaderMatch(names) => {
            for name in names {
                listener = listener.route(
                    Route::prefix("/")
                        .header(HeaderMatcher::exact(KEY_HEADER, name))
                        .to_cluster(fallback_cluster(name))
                        .timeout(ROUTE_TIMEOUT)
                        .retry_policy(fallback_retry()),
                );
            }
        }
    }
    let listener = listener
        .route(
            Route::prefix("/")
                .to_cluster(BASELINE)
                .timeout(ROUTE_TIMEOUT),
        )
        .include_attempt_counts();
    let deployment = |name: &str, address: SocketAddr| {
        Cluster::static_cluster(name, [address]).circuit_breaker(Thresholds::unlimited())
    };
    let mut bootstrap = Bootstrap::new(0)
        .listener(listener)
        .cluster(deployment(BASELINE, deployments.baseline));
    for (name, address) in &deployments.sandboxes {
        bootstrap = bootstrap
            .cluster(deployment(&sandbox_cluster(name), *address))
            .cluster(
                Cluster::aggregate(
                    fallback_cluster(name),
                    [sandbox_cluster(name), BASELINE.into()],
                )
                .circuit_breaker(Thresholds::unlimited()),
            );
    }
    if let Some(registry) = deployments.registry {
        bootstrap = bootstrap.cluster(deployment(REGISTRY_CLUSTER, registry));
    }
    Ok(bootstrap)
}

/// The sandbox the load is keyed to (static in the filter's configuration), killed and restored.
const KEYED_SANDBOX: &str = "alpha";
/// The sandbox registered at run time.
const NEW_SANDBOX: &str = "beta";
/// Our variant's name.
const OURS: &str = "sandbox-router";
/// The Envoy-native alternative's variant name.
const NATIVE: &str = "envoy-header-route";

/// What happens to the deployments when a phase starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Event {
    /// The keyed sandbox's deployment is killed: it refuses connections.
    KillSandbox,
    /// The keyed sandbox's deployment listens again on the same port.
    RestoreSandbox,
    /// A new sandbox is added to the dynamic registry.
    RegisterSandbox,
}

/// One stretch of the timeline.
#[derive(Debug, Clone)]
pub struct SandboxPhase {
    /// Shown in the report.
    pub name: &'static str,
    /// How long its load runs.
    pub duration: Duration,
    /// What happens when it starts.
    pub event: Option<Event>,
}

/// How a variant picks the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VariantKind {
    /// A native header-match route per sandbox known at configuration time.
    HeaderMatch,
    /// sandbox_router.wasm with the dynamic registry.
    Filter,
}

/// One column of the comparison.
#[derive(Debug, Clone)]
pub struct SandboxVariant {
    /// Shown in the report.
    pub name: &'static str,
    /// How it routes.
    pub kind: VariantKind,
}

/// The scenario's data.
#[derive(Debug, Clone)]
pub struct SandboxScenario {
    /// What it shows.
    pub description: String,
    /// Offered load, requests per second.
    pub rate: f64,
    /// One request in this many is keyed to the sandbox.
    pub keyed_one_in: u32,
    /// Every deployment's service time.
    pub service_time: Duration,
    /// Client connections (HTTP/1.1).
    pub connections: usize,
    /// Client timeout.
    pub timeout: Duration,
    /// The filter's dynamic registry refresh interval.
    pub refresh_interval: Duration,
    /// The pick-up probe's period.
    pub probe_interval: Duration,
    /// The timeline.
    pub phases: Vec<SandboxPhase>,
    /// Envoy worker threads.
    pub envoy_concurrency: u32,
    /// The variants, run one after another.
    pub variants: Vec<SandboxVariant>,
}

/// The scenario (see the module doc).
pub fn sandbox() -> SandboxScenario {
    SandboxScenario {
        description: "400 rps over HTTP/1.1, 10 % keyed to sandbox alpha; alpha killed at 5 s, back at 10 s; \
                      sandbox beta registered at 12 s (registry refreshed every 1 s); \
                      native header-match route vs sandbox_router.wasm"
            .into(),
        rate: 400.0,
        keyed_one_in: 10,
        service_time: Duration::from_millis(2),
        connections: 16,
        timeout: Duration::from_secs(1),
        refresh_interval: Duration::from_secs(1),
        probe_interval: Duration::from_millis(20),
        phases: vec![
            SandboxPhase {
                name: "steady",
                duration: Duration::from_secs(5),
                event: None,
            },
            SandboxPhase {
                name: "sandbox-down",
                duration: Duration::from_secs(5),
                event: Some(Event::KillSandbox),
            },
            SandboxPhase {
                name: "recovered",
                duration: Duration::from_secs(2),
                event: Some(Event::RestoreSandbox),
            },
            SandboxPhase {
                name: "registered",
                duration: Duration::from_secs(3),
                event: Some(Event::RegisterSandbox),
            },
        ],
        envoy_concurrency: 2,
        variants: vec![
            SandboxVariant {
                name: NATIVE,
                kind: VariantKind::HeaderMatch,
            },
            SandboxVariant {
                name: OURS,
                kind: VariantKind::Filter,
            },
        ],
    }
}

/// The filter's lowest refresh interval.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// The shortest phase of a smoke run.
const MIN_SMOKE_PHASE: Duration = Duration::from_millis(100);

impl SandboxScenario {
    /// The scenario squeezed into about `total` of load across variants and phases: the timeline
    /// and the refresh interval scaled down alike; its figures mean nothing.
    fn smoke(&self, total: Duration) -> SandboxScenario {
        let timeline: Duration = self.phases.iter().map(|p| p.duration).sum();
        let per_variant = total / u32::try_from(self.variants.len().max(1)).unwrap_or(1);
        let scale = per_variant.as_secs_f64() / timeline.as_secs_f64().max(f64::EPSILON);
        let scaled = |duration: Duration, floor: Duration| duration.mul_f64(scale).max(floor);
        SandboxScenario {
            refresh_interval: scaled(self.refresh_interval, MIN_REFRESH_INTERVAL),
            phases: self
                .phases
                .iter()
                .map(|phase| SandboxPhase {
                    duration: scaled(phase.duration, MIN_SMOKE_PHASE),
                    ..phase.clone()
                })
                .collect(),
            ..self.clone()
        }
    }

    /// The tick period of the filter's registry refresh: a quarter of the interval, at most 1 s.
    fn tick(&self) -> Duration {
        (self.refresh_interval / 4).min(Duration::from_secs(1))
    }

    /// The pick-up target: one refresh interval plus one tick.
    fn pickup_target(&self) -> Duration {
        self.refresh_interval + self.tick()
    }

    /// The filter's configuration: `alpha` static, the dynamic registry, 127.0.0.1 trusted.
    fn filter_config(&self) -> Value {
        json!({
            "sandboxes": {KEYED_SANDBOX: fallback_cluster(KEYED_SANDBOX)},
            "trusted_sources": ["127.0.0.1/32"],
            "registry": {
                "cluster": REGISTRY_CLUSTER,
                "path": REGISTRY_PATH,
                "refresh_interval_ms": millis(self.refresh_interval),
                "timeout_ms": millis(self.refresh_interval / 2),
            },
        })
    }
}

/// One variant in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxRow {
    /// The variant.
    pub variant: String,
    /// The phase.
    pub phase: String,
    /// Whether the keyed sandbox's deployment was up during the phase.
    pub sandbox_up: bool,
    /// Client requests sent.
    pub sent: u64,
    /// Of them, keyed to the sandbox.
    pub keyed: u64,
    /// Keyed requests their sandbox served.
    pub keyed_by_sandbox: u64,
    /// Keyed requests the baseline served.
    pub keyed_by_baseline: u64,
    /// Requests served by the right deployment, in percent of those sent.
    pub right_percent: f64,
    /// Failed client requests (any status >= 400, timeout, connection failure).
    pub errors: u64,
    /// Median latency of successes (ms).
    pub p50_ms: f64,
    /// 99th percentile latency of successes (ms).
    pub p99_ms: f64,
    /// This p99 minus the native variant's in the same phase (ms; our variant only).
    pub p99_added_ms: Option<f64>,
    /// The load generator's report.
    pub load: LoadReport,
}

/// One variant's registry pick-up.
#[derive(Debug, Clone, Serialize)]
pub struct Pickup {
    /// The variant.
    pub variant: String,
    /// From the registry change until a probe keyed to the new sandbox was served by it (ms);
    /// `None`: not within the probe's deadline.
    pub after_ms: Option<u64>,
}

/// The registry timing the sandbox table and targets refer to, and each variant's pick-up.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxParameters {
    /// The registry refresh interval (ms).
    pub refresh_interval_ms: u64,
    /// The pick-up target (ms).
    pub pickup_target_ms: u64,
    /// One pick-up per variant.
    pub pickups: Vec<Pickup>,
}

/// The run's rows (one per variant and phase, in run order) and targets.
pub type SandboxReport = Report<SandboxRow, SandboxParameters>;

impl Report<SandboxRow, SandboxParameters> {
    /// The row of `variant` in `phase`.
    pub fn result(&self, variant: &str, phase: &str) -> Option<&SandboxRow> {
        self.results
            .iter()
            .find(|r| r.variant == variant && r.phase == phase)
    }

    /// A fixed-width table with the targets.
    pub fn table(&self) -> String {
        let mut out = self.heading();
        let _ = writeln!(
            out,
            "targets: 100 % served by the right deployment, 0 client errors, registry pick-up <= {} ms",
            self.parameters.pickup_target_ms
        );
        let _ = writeln!(
            out,
            "{:<20} {:<13} {:>6} {:>6} {:>8} {:>7} {:>9} {:>7} {:>7} {:>8}",
            "variant",
            "phase",
            "sent",
            "keyed",
            "right%",
            "errors",
            "fallback",
            "p50ms",
            "p99ms",
            "p99+ms"
        );
        for r in &self.results {
            let added = r
                .p99_added_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:+.2}"));
            let _ = writeln!(
                out,
                "{:<20} {:<13} {:>6} {:>6} {:>8.2} {:>7} {:>9} {:>7.2} {:>7.2} {:>8}",
                r.variant,
                r.phase,
                r.sent,
                r.keyed,
                r.right_percent,
                r.errors,
                r.keyed_by_baseline,
                r.p50_ms,
                r.p99_ms,
                added,
            );
        }
        for pickup in &self.parameters.pickups {
            let _ = writeln!(
                out,
                "{}: new sandbox picked up {}",
                pickup.variant,
                pickup
                    .after_ms
                    .map_or_else(|| "never".to_owned(), |ms| format!("after {ms} ms"))
            );
        }
        self.write_expectations(&mut out);
        out
    }
}

/// Runs every variant of `scenario`.
pub fn run(scenario: &SandboxScenario, mode: RunMode) -> Result<SandboxReport, ScenarioError> {
    let scenario = match mode {
        RunMode::Full => scenario.clone(),
        RunMode::Smoke { total } => scenario.smoke(total),
    };
    let runtime = crate::runtime().map_err(ScenarioError::Runtime)?;
    let mut results = Vec::new();
    let mut pickups = Vec::new();
    for variant in &scenario.variants {
        let (rows, pickup) = runtime.block_on(run_variant(&scenario, variant))?;
        results.extend(rows);
        pickups.push(pickup);
    }
    let native_p99: BTreeMap<String, f64> = results
        .iter()
        .filter(|r| r.variant == NATIVE)
        .map(|r| (r.phase.clone(), r.p99_ms))
        .collect();
    for row in results.iter_mut().filter(|r| r.variant == OURS) {
        row.p99_added_ms = native_p99.get(&row.phase).map(|native| row.p99_ms - native);
    }
    let mut report = SandboxReport {
        name: NAME.into(),
        description: scenario.description.clone(),
        smoke: mode != RunMode::Full,
        parameters: SandboxParameters {
            refresh_interval_ms: millis(scenario.refresh_interval),
            pickup_target_ms: millis(scenario.pickup_target()),
            pickups,
        },
        results,
        expectations: Vec::new(),
    };
    report.expectations = expectations(&scenario, &report);
    Ok(report)
}

/// The deployments of one variant's run.
struct Lab {
    baseline: UpstreamHandle,
    keyed: UpstreamHandle,
    new: UpstreamHandle,
    registry: UpstreamHandle,
}

async fn run_variant(
    scenario: &SandboxScenario,
    variant: &SandboxVariant,
) -> Result<(Vec<SandboxRow>, Pickup), ScenarioError> {
    let deployment = |name: String| UpstreamConfig {
        service_time: ServiceTime::Constant(scenario.service_time),
        ..UpstreamConfig::new(name)
    };
    let mut lab = Lab {
        baseline: Upstream::start(deployment(BASELINE.into())).await?,
        keyed: Upstream::start(deployment(sandbox_cluster(KEYED_SANDBOX))).await?,
        new: Upstream::start(deployment(sandbox_cluster(NEW_SANDBOX))).await?,
        registry: Upstream::start(UpstreamConfig::new("sandbox-registry")).await?,
    };
    lab.registry
        .set_document(REGISTRY_PATH, registry_document(&[]));
    let routing = match variant.kind {
        VariantKind::HeaderMatch => Routing::HeaderMatch(vec![KEYED_SANDBOX.into()]),
        VariantKind::Filter => Routing::Filter(scenario.filter_config()),
    };
    let deployments = Deployments {
        baseline: lab.baseline.addr(),
        sandboxes: vec![
            (KEYED_SANDBOX.into(), lab.keyed.addr()),
            (NEW_SANDBOX.into(), lab.new.addr()),
        ],
        registry: Some(lab.registry.addr()),
    };
    let options = EnvoyOptions {
        concurrency: scenario.envoy_concurrency,
        ..EnvoyOptions::default()
    };
    let envoy = EnvoyProcess::start(&bootstrap(&deployments, &routing)?, options)?;
    let ingress = envoy.listener_addr(INGRESS_LISTENER)?;
    let mut rows = Vec::new();
    let mut sandbox_up = true;
    let mut probe = None;
    for phase in &scenario.phases {
        match phase.event {
            None => {}
            Some(Event::KillSandbox) => {
                lab.keyed.kill().await;
                sandbox_up = false;
            }
            Some(Event::RestoreSandbox) => {
                lab.keyed.restart().await?;
                sandbox_up = true;
            }
            Some(Event::RegisterSandbox) => {
                lab.registry
                    .set_document(REGISTRY_PATH, registry_document(&[NEW_SANDBOX]));
                probe = Some(tokio::spawn(probe_pickup(
                    ingress,
                    Instant::now(),
                    scenario.probe_interval,
                    3 * scenario.refresh_interval,
                )));
            }
        }
        let mut config = LoadConfig::new(ingress, Protocol::Http1, scenario.rate, phase.duration);
        config.connections = scenario.connections;
        config.timeout = scenario.timeout;
        config.classes = vec![
            RequestClass::new("keyed", 1, &[(KEY_HEADER, KEYED_SANDBOX)]),
            RequestClass::new(
                "unkeyed",
                scenario.keyed_one_in.saturating_sub(1).max(1),
                &[],
            ),
        ];
        let load = load::run(&config).await?;
        rows.push(row(variant.name, phase.name, sandbox_up, load));
    }
    let pickup = match probe {
        Some(probe) => probe.await.ok().flatten(),
        None => None,
    };
    envoy.shutdown();
    Ok((
        rows,
        Pickup {
            variant: variant.name.into(),
            after_ms: pickup.map(millis),
        },
    ))
}

/// A phase's row: which deployment served what, errors and latency.
fn row(variant: &str, phase: &str, sandbox_up: bool, load: LoadReport) -> SandboxRow {
    let served = |class: &str, upstream: &str| {
        load.classes
            .get(class)
            .and_then(|stats| stats.responders.get(upstream))
            .copied()
            .unwrap_or(0)
    };
    let keyed = load.classes.get("keyed").map_or(0, |stats| stats.requests);
    let keyed_by_sandbox = served("keyed", &sandbox_cluster(KEYED_SANDBOX));
    let keyed_by_baseline = served("keyed", BASELINE);
    let keyed_right = if sandbox_up {
        keyed_by_sandbox
    } else {
        keyed_by_baseline
    };
    let right = keyed_right + served("unkeyed", BASELINE);
    let sent = load.sent_requests();
    let totals = &load.totals;
    SandboxRow {
        variant: variant.into(),
        phase: phase.into(),
        sandbox_up,
        sent,
        keyed,
        keyed_by_sandbox,
        keyed_by_baseline,
        right_percent: percent(right, sent),
        errors: totals.errors.total(),
        p50_ms: totals.latency_success.p50_ms,
        p99_ms: totals.latency_success.p99_ms,
        p99_added_ms: None,
        load,
    }
}

/// Sends a request keyed to the new sandbox every `interval` from `registered_at` until its
/// deployment answers one (how long after `registered_at`) or `deadline` has passed (`None`).
async fn probe_pickup(
    ingress: SocketAddr,
    registered_at: Instant,
    interval: Duration,
    deadline: Duration,
) -> Option<Duration> {
    let new = sandbox_cluster(NEW_SANDBOX);
    let mut ticker = tokio::time::interval(interval);
    while registered_at.elapsed() < deadline {
        ticker.tick().await;
        let request = Request::get("/")
            .header(KEY_HEADER, NEW_SANDBOX)
            .header("host", "service")
            .body(Empty::<Bytes>::new())
            .unwrap_or_default();
        let sent_at = Instant::now();
        if let Ok((_, headers, _)) = exchange(Ipv4Addr::LOCALHOST, ingress, request).await {
            if headers
                .get(UPSTREAM_NAME_HEADER)
                .is_some_and(|name| name.as_bytes() == new.as_bytes())
            {
                return Some(sent_at.saturating_duration_since(registered_at));
            }
        }
    }
    None
}

/// The targets for our variant, and the directions both variants show in any run.
fn expectations(scenario: &SandboxScenario, report: &SandboxReport) -> Vec<ExpectationResult> {
    let rows = |variant: &str| -> Vec<&SandboxRow> {
        report
            .results
            .iter()
            .filter(|r| r.variant == variant)
            .collect()
    };
    let per_phase = |rows: &[&SandboxRow], figure: &dyn Fn(&SandboxRow) -> String| {
        rows.iter()
            .map(|r| format!("{} {}", r.phase, figure(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let check =
        |description: String, in_smoke: bool, holds: bool, figures: String| ExpectationResult {
            description,
            in_smoke,
            holds: holds && !figures.is_empty(),
            figures,
        };
    let ours = rows(OURS);
    let both: Vec<&SandboxRow> = report.results.iter().collect();
    let target = scenario.pickup_target();
    let pickup = report
        .parameters
        .pickups
        .iter()
        .find(|p| p.variant == OURS)
        .and_then(|p| p.after_ms);
    let native_pickup = report
        .parameters
        .pickups
        .iter()
        .find(|p| p.variant == NATIVE);
    let leaked = |r: &SandboxRow| {
        let unkeyed = r.load.classes.get("unkeyed");
        let served = unkeyed.map_or(0, |stats| stats.successes);
        let by_baseline = unkeyed
            .and_then(|stats| stats.responders.get(BASELINE))
            .copied()
            .unwrap_or(0);
        served.saturating_sub(by_baseline)
    };
    vec![
        check(
            format!("{OURS}: 100 % served by the right deployment in every phase"),
            false,
            ours.iter().all(|r| r.right_percent >= 100.0),
            per_phase(&ours, &|r| format!("{:.2} %", r.right_percent)),
        ),
        check(
            format!("{OURS}: 0 client errors in every phase"),
            false,
            ours.iter().all(|r| r.errors == 0),
            per_phase(&ours, &|r| r.errors.to_string()),
        ),
        check(
            format!(
                "{OURS}: a sandbox registered at run time is picked up within {} ms (interval + tick)",
                millis(target)
            ),
            false,
            pickup.is_some_and(|ms| ms <= millis(target)),
            pickup.map_or_else(|| "never".to_owned(), |ms| format!("{ms} ms")),
        ),
        check(
            "no unkeyed request reaches a sandbox (both variants)".into(),
            true,
            both.iter().all(|r| leaked(r) == 0),
            per_phase(&both, &|r| format!("{} {}", r.variant, leaked(r))),
        ),
        check(
            "steady: every keyed request is served by its sandbox (both variants)".into(),
            true,
            both.iter()
                .filter(|r| r.phase == "steady")
                .all(|r| r.keyed > 0 && r.keyed_by_sandbox == r.keyed),
            both.iter()
                .filter(|r| r.phase == "steady")
                .map(|r| format!("{} {} of {}", r.variant, r.keyed_by_sandbox, r.keyed))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        check(
            format!("{NATIVE}: a sandbox registered at run time is never picked up (needs a config push)"),
            true,
            native_pickup.is_some_and(|p| p.after_ms.is_none()),
            native_pickup.map_or_else(String::new, |p| {
                p.after_ms
                    .map_or_else(|| "never".to_owned(), |ms| format!("after {ms} ms"))
            }),
        ),
    ]
}

fn percent(part: u64, whole: u64) -> f64 {
    match whole {
        0 => 0.0,
        whole => 100.0 * part as f64 / whole as f64,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
