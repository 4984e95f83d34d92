//! Scenario benchmarks: a real Envoy between the open-loop load generator and a scriptable upstream,
//! driven through phases (e.g. steady, fault, recovery), for several variants side by side in one run
//! (no Envoy, bare Envoy, Envoy's native equivalent, our filter). A run yields a [`ScenarioReport`]: a
//! printable table and a JSON file under `target/scenarios/<name>.json`.
//!
//! Scenarios are benchmarks, not tests: their figures depend on the machine. The test suite only runs each
//! one in [`RunMode::Smoke`] (about two seconds of load) so none of them rots.
//!
//! The [`drain`] scenario is an event, not a load shape: it has its own data, runner and report
//! (`cargo xtask scenario drain`; `all` runs it after the load scenarios).
//!
//! Each phase is its own load run: a phase starts once the previous one's requests have all finished (at
//! most one client timeout later), and the upstream fault of the phase is in force for its whole run.

mod catalog;
pub mod drain;
mod load_shedding;
mod report;

pub use catalog::{by_name, catalog, NAMES};
pub use report::{PhaseResult, ScenarioReport};

use std::sync::Arc;
use std::time::Duration;

use envoy_configs::{Bootstrap, Cluster, Listener, Route, Thresholds, WasmFilter};
use mesh_catalog::ModuleError;

use crate::load::{self, LoadConfig, LoadError, Protocol, RequestClass, RetryPolicy};
use crate::upstream::{Fault, Upstream, UpstreamConfig, UpstreamError};
use mesh_envoy_harness::{EnvoyError, EnvoyOptions, EnvoyProcess};

/// Name of the Envoy listener the load is sent to.
pub const INGRESS_LISTENER: &str = "ingress";
/// Name of the Envoy cluster holding the scenario's upstream.
pub const UPSTREAM_CLUSTER: &str = "service";

/// One stretch of a scenario: an offered rate and an upstream fault held for a duration.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Shown in the report, e.g. `steady`, `overload`, `recovery`.
    pub name: String,
    /// How long the load runs.
    pub duration: Duration,
    /// Offered load, requests per second.
    pub rate_per_sec: f64,
    /// Upstream fault in force during the phase.
    pub fault: Fault,
}

impl Phase {
    /// A phase named `name` offering `rate_per_sec` for `duration` to a healthy upstream.
    pub fn new(name: impl Into<String>, duration: Duration, rate_per_sec: f64) -> Self {
        Self {
            name: name.into(),
            duration,
            rate_per_sec,
            fault: Fault::none(),
        }
    }

    /// The same phase with `fault` injected at the upstream.
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }
}

/// Shapes the ingress listener of a variant (adds HTTP filters); the route to the upstream is already set.
/// Fails when a wasm module it adds is not built or stale.
pub type ListenerShape = Arc<dyn Fn(Listener) -> Result<Listener, ModuleError> + Send + Sync>;

/// What sits between the load generator and the upstream.
#[derive(Clone)]
pub enum Path {
    /// No proxy: the load goes straight to the upstream (the floor the proxies are compared with).
    Direct,
    /// A real Envoy whose ingress listener is shaped by the function.
    Envoy(ListenerShape),
}

/// One column of the side-by-side comparison.
#[derive(Clone)]
pub struct Variant {
    /// Shown in the report, e.g. `bare-envoy`.
    pub name: String,
    /// The request path of this variant.
    pub path: Path,
}

impl Variant {
    /// The load goes straight to the upstream.
    pub fn direct() -> Self {
        Self {
            name: "direct".into(),
            path: Path::Direct,
        }
    }

    /// Envoy proxying with no filter but the router, circuit breakers off (as a mesh runs it).
    pub fn bare_envoy() -> Self {
        Self::envoy("bare-envoy", Ok)
    }

    /// Envoy with its own adaptive concurrency filter (gradient controller, documented defaults).
    pub fn native_adaptive_concurrency() -> Self {
        Self::envoy("envoy-adaptive-concurrency", |listener| {
            Ok(listener.adaptive_concurrency(envoy_configs::AdaptiveConcurrency::default()))
        })
    }

    /// Envoy with the module of crate `crate_name` (default configuration, plugin name = the variant's
    /// name) as the first HTTP filter; the run fails when the module is not built or older than its
    /// sources.
    pub fn wasm_filter(name: &str, crate_name: &'static str) -> Self {
        let plugin = name.to_owned();
        Self::envoy(name, move |listener| {
            let module = mesh_catalog::built(crate_name)?;
            Ok(listener.wasm_filter(WasmFilter::new(&plugin, module)))
        })
    }

    /// Envoy whose ingress listener is shaped by `shape` (e.g. adds one of our wasm filters).
    pub fn envoy(
        name: impl Into<String>,
        shape: impl Fn(Listener) -> Result<Listener, ModuleError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            path: Path::Envoy(Arc::new(shape)),
        }
    }
}

/// A named benchmark: one upstream, a load shape, phases, and the variants to compare.
#[derive(Clone)]
pub struct Scenario {
    /// `cargo xtask scenario <name>`.
    pub name: String,
    /// What it shows, one sentence.
    pub description: String,
    /// The upstream's capacity model (its port is chosen per run).
    pub upstream: UpstreamConfig,
    /// Protocol the client speaks to Envoy (or to the upstream for [`Path::Direct`]).
    pub protocol: Protocol,
    /// Client connections.
    pub connections: usize,
    /// Client timeout per attempt.
    pub timeout: Duration,
    /// Request classes (e.g. criticality shares); empty means one default class.
    pub classes: Vec<RequestClass>,
    /// Client-side retries.
    pub retry: RetryPolicy,
    /// Envoy worker threads.
    pub envoy_concurrency: u32,
    /// Phases, run in order for every variant.
    pub phases: Vec<Phase>,
    /// Variants, run one after another.
    pub variants: Vec<Variant>,
}

/// How long a run lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Every phase for its full duration: the benchmark.
    Full,
    /// All phases of all variants squeezed into about this much load time (at least 100 ms per phase):
    /// proves the scenario still runs end to end; its figures mean nothing.
    Smoke {
        /// Total load time across variants and phases.
        total: Duration,
    },
}

/// Why a scenario could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// No scenario has this name.
    #[error("unknown scenario `{0}`; known: {names}", names = NAMES.join(", "))]
    Unknown(String),
    /// The tokio runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The upstream could not start.
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    /// Envoy could not start or answer.
    #[error("envoy: {0}")]
    Envoy(#[from] EnvoyError),
    /// The load generator refused the run.
    #[error("load: {0}")]
    Load(#[from] LoadError),
    /// A wasm module of a variant is missing or stale.
    #[error(transparent)]
    Module(#[from] ModuleError),
}

/// Runs `scenario` for every variant and phase and reports the results.
pub fn run(scenario: &Scenario, mode: RunMode) -> Result<ScenarioReport, ScenarioError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ScenarioError::Runtime)?;
    let phase_count = scenario.variants.len() * scenario.phases.len();
    let mut results = Vec::with_capacity(phase_count);
    for variant in &scenario.variants {
        let upstream = runtime.block_on(Upstream::start(scenario.upstream.clone()))?;
        let envoy = match &variant.path {
            Path::Direct => None,
            Path::Envoy(shape) => {
                let bootstrap = bootstrap_for(shape, upstream.addr())?;
                let options = EnvoyOptions {
                    concurrency: scenario.envoy_concurrency,
                    ..EnvoyOptions::default()
                };
                Some(EnvoyProcess::start(&bootstrap, options)?)
            }
        };
        let target = match &envoy {
            Some(envoy) => envoy.listener_addr(INGRESS_LISTENER)?,
            None => upstream.addr(),
        };
        for phase in &scenario.phases {
            let duration = match mode {
                RunMode::Full => phase.duration,
                RunMode::Smoke { total } => (total
                    / u32::try_from(phase_count.max(1)).unwrap_or(u32::MAX))
                .max(Duration::from_millis(100)),
            };
            let mut config =
                LoadConfig::new(target, scenario.protocol, phase.rate_per_sec, duration);
            config.connections = scenario.connections;
            config.timeout = scenario.timeout;
            config.classes = scenario.classes.clone();
            config.retry = scenario.retry;
            upstream.set_fault(phase.fault);
            let before = upstream.counters();
            let load = runtime.block_on(load::run(&config))?;
            let counters = upstream.counters().since(&before);
            results.push(PhaseResult::new(&variant.name, &phase.name, load, counters));
        }
        if let Some(envoy) = envoy {
            envoy.shutdown();
        }
    }
    Ok(ScenarioReport {
        name: scenario.name.clone(),
        description: scenario.description.clone(),
        smoke: mode != RunMode::Full,
        results,
    })
}

/// The bootstrap of an Envoy variant: one ingress listener routing everything to the upstream, with the
/// upstream cluster's circuit breakers off (the mesh relies on its own protections, not Envoy's defaults).
fn bootstrap_for(
    shape: &ListenerShape,
    upstream: std::net::SocketAddr,
) -> Result<Bootstrap, ModuleError> {
    let listener = shape(Listener::http(INGRESS_LISTENER, 0))?.route(
        Route::prefix("/")
            .to_cluster(UPSTREAM_CLUSTER)
            .timeout(Duration::from_secs(30)),
    );
    Ok(Bootstrap::new(0).listener(listener).cluster(
        Cluster::static_cluster(UPSTREAM_CLUSTER, [upstream])
            .circuit_breaker(Thresholds::unlimited()),
    ))
}
