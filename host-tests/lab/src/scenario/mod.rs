//! Scenario benchmarks: a real Envoy between the open-loop load generator and a scriptable upstream,
//! driven through phases (e.g. steady, fault, recovery), for several variants side by side in one run
//! (no Envoy, bare Envoy, Envoy's native equivalent, our filter). A run yields a [`ScenarioReport`]: a
//! printable table and a JSON file under `target/scenarios/<name>.json`.
//!
//! Scenarios are benchmarks, not tests: their figures depend on the machine. The test suite only runs each
//! one in [`RunMode::Smoke`] (about two seconds of load) so none of them rots.
//!
//! The [`SCRIPTED`] scenarios script events, not only a load shape: each has its own data, runner
//! and report (`cargo xtask scenario drain`, `cargo xtask scenario cache-failover`, `cargo xtask
//! scenario sandbox`; `all` runs them before the load scenarios): [`drain`] (a sidecar's shutdown
//! reaching keep-alive clients), [`cache_failover`] (a scripted timeline over two upstreams) and
//! [`sandbox`] (a sandbox killed, restored and registered under steady load).
//!
//! Each phase is its own load run: a phase starts once the previous one's requests have all finished (at
//! most one client timeout later), and the upstream fault of the phase is in force for its whole run.
//!
//! A scenario carries its [`Expectation`]s: the targets (checked in full runs) and the directions
//! that hold even in a smoke run (e.g. "our filter sheds in overload, never when unloaded"). Every run
//! reports each one as held or missed with the figure it measured; the tests assert the smoke ones.

pub mod cache_failover;
mod catalog;
pub mod drain;
mod load_shedding;
mod report;
mod retry_storm;
pub mod sandbox;

pub use catalog::{by_name, catalog, NAMES};

/// The scenarios with their own runner ([`drain`], [`cache_failover`], [`sandbox`]), outside
/// [`NAMES`].
pub const SCRIPTED: &[&str] = &[drain::NAME, cache_failover::NAME, sandbox::NAME];
pub(crate) use report::write_json;
pub use report::{ExpectationResult, NoParameters, PhaseResult, Report, ScenarioReport};

use std::sync::Arc;
use std::time::Duration;

use envoy_configs::{Bootstrap, Cluster, Listener, Route, Thresholds, WasmFilter};
use mesh_catalog::ModuleError;

use crate::load::{self, Arrival, LoadConfig, LoadError, Protocol, RequestClass, RetryPolicy};
use crate::upstream::{Fault, Upstream, UpstreamConfig, UpstreamError};
use mesh_envoy_harness::{EnvoyError, EnvoyOptions, EnvoyProcess};

/// Name of the Envoy listener the load is sent to.
pub const INGRESS_LISTENER: &str = "ingress";
/// Name of the Envoy cluster holding the scenario's upstream.
pub const UPSTREAM_CLUSTER: &str = "service";

/// One stretch of a scenario: a load (open-loop rate or closed-loop clients) and an upstream fault held
/// for a duration.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Shown in the report, e.g. `steady`, `overload`, `recovery`.
    pub name: String,
    /// How long the load runs.
    pub duration: Duration,
    /// How requests are launched.
    pub arrival: Arrival,
    /// Upstream fault in force during the phase.
    pub fault: Fault,
}

impl Phase {
    /// A phase named `name` offering `rate_per_sec` (open loop) for `duration` to a healthy upstream.
    pub fn new(name: impl Into<String>, duration: Duration, rate_per_sec: f64) -> Self {
        Self {
            name: name.into(),
            duration,
            arrival: Arrival::Open { rate_per_sec },
            fault: Fault::none(),
        }
    }

    /// A phase named `name` of `clients` closed-loop clients (each resends the moment its previous
    /// request ended, refused or not) for `duration`, to a healthy upstream.
    pub fn closed_loop(name: impl Into<String>, duration: Duration, clients: usize) -> Self {
        Self {
            name: name.into(),
            duration,
            arrival: Arrival::Closed { clients },
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
    /// Envoy's retries of the route to the upstream (the route then also reports
    /// `x-envoy-attempt-count` on requests and responses); `None`: Envoy does not retry.
    pub route_retries: Option<envoy_configs::RetryPolicy>,
    /// The upstream cluster's circuit-breaker thresholds (default: unlimited, as a mesh runs).
    pub upstream_thresholds: Thresholds,
    /// The load generator's per-attempt timeout and retries, when this variant's differ from the
    /// scenario's.
    pub client: Option<ClientSide>,
}

/// How the load generator's client behaves: per-attempt timeout and its own retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientSide {
    /// Client timeout per attempt.
    pub timeout: Duration,
    /// Client-side retries.
    pub retry: RetryPolicy,
}

impl Variant {
    /// The load goes straight to the upstream.
    pub fn direct() -> Self {
        Self {
            name: "direct".into(),
            path: Path::Direct,
            route_retries: None,
            upstream_thresholds: Thresholds::unlimited(),
            client: None,
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

    /// Envoy with the module of crate `crate_name`, configured with `config`, as the first HTTP
    /// filter (plugin name = the variant's name).
    pub fn wasm_filter_configured(
        name: &str,
        crate_name: &'static str,
        config: serde_json::Value,
    ) -> Self {
        let plugin = name.to_owned();
        Self::envoy(name, move |listener| {
            let module = mesh_catalog::built(crate_name)?;
            Ok(listener.wasm_filter(WasmFilter::new(&plugin, module).configuration(&config)))
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
            route_retries: None,
            upstream_thresholds: Thresholds::unlimited(),
            client: None,
        }
    }

    /// The same variant under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same variant with Envoy retrying the route per `policy`.
    pub fn with_route_retries(mut self, policy: envoy_configs::RetryPolicy) -> Self {
        self.route_retries = Some(policy);
        self
    }

    /// The same variant with these thresholds on the upstream cluster.
    pub fn with_upstream_thresholds(mut self, thresholds: Thresholds) -> Self {
        self.upstream_thresholds = thresholds;
        self
    }

    /// The same variant with its own client side.
    pub fn with_client(mut self, client: ClientSide) -> Self {
        self.client = Some(client);
        self
    }
}

/// What an expectation measured in a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Whether the expectation held.
    pub holds: bool,
    /// The figures it compared, e.g. `critical 99.7 % >= 99 %`.
    pub figures: String,
}

/// Reads an expectation off a report; `None` when a row it needs is missing.
pub type ExpectationCheck = Arc<dyn Fn(&ScenarioReport) -> Option<Measured> + Send + Sync>;

/// A target or a direction a scenario's report is expected to show.
#[derive(Clone)]
pub struct Expectation {
    /// What is expected, e.g. `flood: load-shedder critical success >= 99 %`.
    pub description: String,
    /// True for a direction that holds even in a smoke run; false for a target only a full run can show.
    pub in_smoke: bool,
    /// Reads it off the report.
    pub check: ExpectationCheck,
}

impl Expectation {
    /// A target only a full run can show.
    pub fn target(
        description: impl Into<String>,
        check: impl Fn(&ScenarioReport) -> Option<Measured> + Send + Sync + 'static,
    ) -> Self {
        Self {
            description: description.into(),
            in_smoke: false,
            check: Arc::new(check),
        }
    }

    /// No request of `variants` (in any phase) is lost to a connection failure (refused, reset or broken
    /// connections): overload must show as statuses and timeouts. (Bare Envoy itself breaks connections
    /// under overload: its premature-reset protection closes HTTP/2 connections whose streams the
    /// timing-out clients keep cancelling.)
    pub fn no_connection_failures(variants: &'static [&'static str]) -> Self {
        Self::direction(
            format!("no connection failures ({})", variants.join(", ")),
            move |report| {
                let failures: Vec<String> = report
                    .results
                    .iter()
                    .filter(|r| variants.contains(&r.variant.as_str()))
                    .filter(|r| r.load.totals.errors.connect + r.load.totals.errors.transport > 0)
                    .map(|r| {
                        let errors = &r.load.totals.errors;
                        format!(
                            "{}/{}: {} connect, {} transport",
                            r.variant, r.phase, errors.connect, errors.transport
                        )
                    })
                    .collect();
                Some(Measured {
                    holds: failures.is_empty(),
                    figures: if failures.is_empty() {
                        "none".into()
                    } else {
                        failures.join("; ")
                    },
                })
            },
        )
    }

    /// In `phase`, variant `lower` amplifies requests to the upstream (upstream requests per client
    /// request) less than variant `than`: a direction, checked in smoke runs too.
    pub fn lower_amplification(
        phase: &'static str,
        lower: &'static str,
        than: &'static str,
    ) -> Self {
        Self::direction(
            format!("{phase}: {lower} amplifies less than {than}"),
            move |report| {
                let ours = report.result(lower, phase)?.amplification;
                let theirs = report.result(than, phase)?.amplification;
                Some(Measured {
                    holds: ours < theirs,
                    figures: format!("{ours:.2}x vs {theirs:.2}x"),
                })
            },
        )
    }

    /// A direction that holds in smoke runs too.
    pub fn direction(
        description: impl Into<String>,
        check: impl Fn(&ScenarioReport) -> Option<Measured> + Send + Sync + 'static,
    ) -> Self {
        Self {
            in_smoke: true,
            ..Self::target(description, check)
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
    /// Targets and directions its reports are checked against.
    pub expectations: Vec<Expectation>,
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
    #[error("unknown scenario `{0}`; known: {load}, {scripted}", load = NAMES.join(", "), scripted = SCRIPTED.join(", "))]
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
    let runtime = crate::runtime().map_err(ScenarioError::Runtime)?;
    let phase_count = scenario.variants.len() * scenario.phases.len();
    let mut results = Vec::with_capacity(phase_count);
    for variant in &scenario.variants {
        let upstream = runtime.block_on(Upstream::start(scenario.upstream.clone()))?;
        let envoy = match &variant.path {
            Path::Direct => None,
            Path::Envoy(shape) => {
                let bootstrap = bootstrap_for(shape, variant, upstream.addr())?;
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
                LoadConfig::with_arrival(target, scenario.protocol, phase.arrival, duration);
            let client = variant.client.unwrap_or(ClientSide {
                timeout: scenario.timeout,
                retry: scenario.retry,
            });
            config.connections = scenario.connections;
            config.timeout = client.timeout;
            config.classes = scenario.classes.clone();
            config.retry = client.retry;
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
    let mut report = ScenarioReport {
        name: scenario.name.clone(),
        description: scenario.description.clone(),
        smoke: mode != RunMode::Full,
        parameters: NoParameters::default(),
        results,
        expectations: Vec::new(),
    };
    report.expectations = scenario
        .expectations
        .iter()
        .map(|expectation| ExpectationResult::of(expectation, &report))
        .collect();
    Ok(report)
}

/// The bootstrap of an Envoy variant: one ingress listener routing everything to the upstream (retried
/// per the variant's route retries), with the variant's circuit breakers on the upstream cluster
/// (unlimited by default: the mesh relies on its own protections, not Envoy's defaults).
fn bootstrap_for(
    shape: &ListenerShape,
    variant: &Variant,
    upstream: std::net::SocketAddr,
) -> Result<Bootstrap, ModuleError> {
    let mut route = Route::prefix("/")
        .to_cluster(UPSTREAM_CLUSTER)
        .timeout(Duration::from_secs(30));
    let mut listener = shape(Listener::http(INGRESS_LISTENER, 0))?;
    if let Some(policy) = &variant.route_retries {
        route = route.retry_policy(policy.clone());
        listener = listener.include_attempt_counts();
    }
    let listener = listener.route(route);
    Ok(Bootstrap::new(0).listener(listener).cluster(
        Cluster::static_cluster(UPSTREAM_CLUSTER, [upstream])
            .circuit_breaker(variant.upstream_thresholds.clone()),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_scenario_the_module_catalog_names_exists() {
        for module in mesh_catalog::MODULES {
            if let Some(scenario) = module.scenario {
                assert!(
                    super::NAMES.contains(&scenario) || super::SCRIPTED.contains(&scenario),
                    "{}: no scenario `{scenario}`",
                    module.crate_name
                );
            }
        }
    }
}
