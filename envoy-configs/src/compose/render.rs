//! A [`ServiceSpec`] rendered into a sidecar [`Bootstrap`]: the ingress and egress listeners with
//! the spec's filters in chain order, a cluster per dependency, and the mesh's defaults (see the
//! README's "The rendered sidecar" for the reason behind each).

use super::chain::{on_both_sides, Side, Slot, CHAIN};
use super::spec::{Dependency, FilterSection, Protocol, ServiceSpec, SpecError};
use super::steering;
use crate::{
    Bootstrap, Cluster, FailurePolicy, HealthCheck, Listener, OutlierDetection, OverloadManager,
    RetryPolicy, Route, StatsConfig, StrictDnsCluster, StringMatcher, Thresholds, TrafficDirection,
    UpstreamHttpProtocol, VirtualHost, WasmFilter,
};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where Dockerfile.envoy puts the modules: the default `--wasm-dir`.
pub const DEFAULT_WASM_DIR: &str = "/etc/envoy/wasm";
/// The VM id of every fail-open mesh plugin: Envoy scopes shared data by VM id, so those filters'
/// instances (and both listeners' suite plugins, which then share one VM per worker) see the same
/// shared data; keys are namespaced per filter and instance (`mesh/<filter>.<instance>/…`).
pub const MESH_VM_ID: &str = "mesh";
/// The VM id of every fail-closed mesh plugin: their own VM per worker, so a trap in a fail-open
/// filter's VM never turns into refused requests, and a trap in theirs only refuses what must be.
pub const MESH_FAIL_CLOSED_VM_ID: &str = "mesh-fail-closed";
/// The cluster of the local app.
pub const APP_CLUSTER: &str = "local_app";
/// The cluster pointing at this Envoy's admin interface (drain-signal calls `/drain_listeners`
/// through it; the name is drain-signal's default `admin_cluster`).
pub const ADMIN_CLUSTER: &str = "envoy_admin";
/// The listener exposing only the admin interface's Prometheus endpoint to scrapers.
pub const PROMETHEUS_LISTENER: &str = "prometheus";
/// Envoy's Prometheus endpoint (admin), the only path the `prometheus` listener serves.
pub const PROMETHEUS_PATH: &str = "/stats/prometheus";
/// The suite module's file.
const SUITE_MODULE: &str = "mesh_suite.wasm";

/// How the filters are packaged into wasm plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Modules {
    /// One `mesh_suite.wasm` plugin per listener running its filters in order (the default: one
    /// VM, one filter-chain hop and one HTTP context per request instead of one per filter).
    #[default]
    Suite,
    /// One plugin per filter, each its own module.
    Separate,
}

/// Render settings that are not the service's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Directory holding the `.wasm` modules, as the sidecar sees it.
    pub wasm_dir: PathBuf,
    /// Suite or separate modules.
    pub modules: Modules,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            wasm_dir: PathBuf::from(DEFAULT_WASM_DIR),
            modules: Modules::Suite,
        }
    }
}

/// One wasm plugin of the rendered sidecar.
#[derive(Debug, Clone, PartialEq)]
pub struct Plugin {
    /// Plugin (and root) name.
    pub name: String,
    /// Its listener.
    pub side: Side,
    /// The module file it runs.
    pub module: &'static str,
    /// The filters it runs, in order.
    pub filters: Vec<&'static Slot>,
    /// What requests get while its VM is dead.
    pub failure_policy: FailurePolicy,
    /// Why.
    pub failure_reason: String,
}

/// The rendered sidecar and what the renderer decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The bootstrap (run it with `--drain-strategy immediate`).
    pub bootstrap: Bootstrap,
    /// The wasm plugins, ingress first, each listener's in request order.
    pub plugins: Vec<Plugin>,
    /// Filters of the spec left out or changed in packaging, each with the reason.
    pub notes: Vec<String>,
}

/// A filter of the spec that can run: its slot and its configuration.
struct Placed<'a> {
    slot: &'static Slot,
    section: &'a FilterSection,
    module: &'static str,
    in_suite: bool,
}

/// Renders `spec` into a sidecar bootstrap.
pub fn render(spec: &ServiceSpec, options: &RenderOptions) -> Result<Rendered, SpecError> {
    let mut sections = spec.filters.sections()?;
    let steering = steering::plan(spec, &mut sections)?;
    let mut notes = Vec::new();
    let suite_filters: Vec<&'static str> = mesh_suite::factories()
        .iter()
        .map(|factory| factory.name())
        .collect();
    let mut placed = Vec::new();
    for section in &sections {
        let module = match mesh_catalog::module(section.filter) {
            Ok(module) if module.kind == mesh_catalog::Kind::Filter => module,
            _ => {
                notes.push(format!(
                    "`{}`: {} left out: it has no module in the catalog (filters/catalog) yet, so the \
                     sidecar runs without it",
                    section.field, section.filter
                ));
                continue;
            }
        };
        let in_suite = suite_filters.contains(&section.filter);
        let slots = CHAIN.iter().filter(|slot| {
            slot.filter == section.filter && section.side.is_none_or(|side| side == slot.side)
        });
        for slot in slots {
            placed.push(Placed {
                slot,
                section,
                module: module.file_name,
                in_suite,
            });
        }
    }
    // Chain order, whatever the spec's order.
    placed.sort_by_key(|p| CHAIN.iter().position(|slot| slot == p.slot));

    let mut plugins = Vec::new();
    // Directions: drain-signal's (and the preStop hook's) `/drain_listeners?inboundonly` drains
    // exactly the ingress, so the app's own calls out keep working while it drains.
    let mut ingress = Listener::http(Side::Ingress.as_str(), spec.ingress.port)
        .traffic_direction(TrafficDirection::Inbound)
        .address(SocketAddr::from((Ipv4Addr::UNSPECIFIED, spec.ingress.port)))
        .max_connection_duration(Duration::from_secs(spec.ingress.max_connection_duration_s))
        .max_concurrent_streams(spec.ingress.max_concurrent_streams)
        .drain_timeout(Duration::from_millis(spec.drain.timeout_ms));
    let mut egress = Listener::http(Side::Egress.as_str(), spec.egress.port)
        .traffic_direction(TrafficDirection::Outbound);
    for (side, header) in &steering.stripped {
        match side {
            Side::Ingress => ingress = ingress.strip_request_header(header.clone()),
            Side::Egress => egress = egress.strip_request_header(header.clone()),
        }
    }
    for side in [Side::Ingress, Side::Egress] {
        let on_side: Vec<&Placed> = placed.iter().filter(|p| p.slot.side == side).collect();
        for (plugin, config) in package(&on_side, side, options.modules, &mut notes) {
            let filter = WasmFilter::new(plugin.name.clone(), options.wasm_dir.join(plugin.module))
                .vm_id(match plugin.failure_policy {
                    FailurePolicy::FailClosed => MESH_FAIL_CLOSED_VM_ID,
                    FailurePolicy::FailOpen | FailurePolicy::FailReload => MESH_VM_ID,
                })
                .failure_policy(plugin.failure_policy)
                .typed_configuration(&config)
                .map_err(|err| SpecError {
                    path: "filters".to_owned(),
                    line: None,
                    message: format!("cannot be written as JSON: {err}"),
                })?;
            match side {
                Side::Ingress => ingress = ingress.wasm_filter(filter),
                Side::Egress => egress = egress.wasm_filter(filter),
            }
            plugins.push(plugin);
        }
    }

    for route in steering.ingress_routes {
        ingress = ingress.route(route);
    }
    ingress = ingress.route(
        Route::prefix("/")
            .to_cluster(APP_CLUSTER)
            .timeout(Duration::from_millis(spec.app.timeout_ms)),
    );
    let mut bootstrap = Bootstrap::new(spec.admin.port)
        .node(format!("{}-sidecar", spec.service), spec.service.clone())
        .stats_config(stats_inclusion_list())
        .overload_manager(OverloadManager::protect_proxy(
            spec.overload.max_heap_mb.saturating_mul(1 << 20),
            spec.overload.max_downstream_connections,
        ))
        .admin_cluster(ADMIN_CLUSTER)
        .cluster(
            Cluster::static_cluster(
                APP_CLUSTER,
                [SocketAddr::from((Ipv4Addr::LOCALHOST, spec.app.port))],
            )
            .upstream_protocol(upstream_protocol(spec.app.protocol))
            .circuit_breaker(Thresholds::unlimited()),
        );
    for dependency in &spec.dependencies {
        let cluster = dependency_cluster(&dependency.name);
        let domains = dependency.domains(spec.egress.port);
        let mut route = Route::prefix("/")
            .to_cluster(cluster.clone())
            .timeout(Duration::from_millis(dependency.timeout_ms));
        let retry = &dependency.retry;
        if retry.retries > 0 {
            let mut policy =
                RetryPolicy::new(retry.on.iter().copied(), retry.retries).avoid_previous_hosts(3);
            if let Some(per_try) = retry.per_try_timeout_ms {
                policy = policy.per_try_timeout(Duration::from_millis(per_try));
            }
            route = route.retry_policy(policy);
        }
        let mut host = VirtualHost::new(dependency.name.clone(), domains).include_attempt_counts();
        for (_, steered) in steering
            .egress_routes
            .iter()
            .filter(|(name, _)| *name == dependency.name)
        {
            host = host.route(steered.clone());
        }
        egress = egress.virtual_host(host.route(route));
        bootstrap = bootstrap.cluster(dependency_cluster_of(spec, dependency));
    }
    for cluster in steering.clusters {
        bootstrap = bootstrap.cluster(cluster);
    }
    let prometheus = Listener::http(PROMETHEUS_LISTENER, spec.admin.prometheus_port)
        .address(SocketAddr::from((
            Ipv4Addr::UNSPECIFIED,
            spec.admin.prometheus_port,
        )))
        .route(Route::path(PROMETHEUS_PATH).to_cluster(ADMIN_CLUSTER));
    let bootstrap = bootstrap
        .listener(ingress)
        .listener(egress)
        .listener(prometheus);
    Ok(Rendered {
        bootstrap,
        plugins,
        notes,
    })
}

/// The cluster of dependency `name`.
pub fn dependency_cluster(name: &str) -> String {
    format!("{DEPENDENCY_CLUSTER_PREFIX}{name}")
}

/// What every dependency's cluster name starts with.
const DEPENDENCY_CLUSTER_PREFIX: &str = "egress_";

/// Local-origin failures (connect failures, resets, timeouts) in a row that eject an endpoint of
/// a dependency.
pub const EJECT_AFTER_LOCAL_FAILURES: u32 = 5;

/// A dependency's cluster: STRICT_DNS over its address, speaking its protocol, connections
/// retired before the server's limit, circuit breakers off, endpoints that keep failing
/// connections ejected, and its active health check if the spec declares one.
fn dependency_cluster_of(spec: &ServiceSpec, dependency: &Dependency) -> StrictDnsCluster {
    let mut cluster = Cluster::strict_dns(
        dependency_cluster(&dependency.name),
        [(dependency.address.clone(), dependency.port)],
    )
    .upstream_protocol(upstream_protocol(dependency.protocol))
    .max_connection_duration(Duration::from_secs(spec.egress.max_connection_duration_s))
    .circuit_breaker(Thresholds::unlimited())
    .outlier_detection(OutlierDetection::local_origin_failures(
        EJECT_AFTER_LOCAL_FAILURES,
    ));
    if let Some(check) = &dependency.health_check {
        let interval = Duration::from_millis(check.interval_ms);
        let timeout = Duration::from_millis(check.timeout_ms);
        let check = match &check.path {
            Some(path) => HealthCheck::http(path.clone(), interval, timeout),
            None => HealthCheck::grpc("", interval, timeout),
        };
        // The first checks start while Envoy's main thread still compiles the wasm modules and
        // often time out: checked only every 60 s while the app has not called yet (Envoy's
        // default), the dependency would then stay unhealthy for a minute.
        cluster = cluster.health_check(check.no_traffic_interval(interval));
    }
    cluster
}

/// Packs one listener's placed filters into plugins with their configuration documents.
fn package(
    placed: &[&Placed],
    side: Side,
    modules: Modules,
    notes: &mut Vec<String>,
) -> Vec<(Plugin, serde_json::Value)> {
    let mut plugins: Vec<(Plugin, serde_json::Value)> = Vec::new();
    let mut suite_run: Vec<&Placed> = Vec::new();
    let mut suites = 0;
    let mut flush = |run: &mut Vec<&Placed>, plugins: &mut Vec<(Plugin, serde_json::Value)>| {
        if run.is_empty() {
            return;
        }
        suites += 1;
        let name = match suites {
            1 => format!("mesh-{}", side.as_str()),
            n => format!("mesh-{}-{n}", side.as_str()),
        };
        let sections: Vec<serde_json::Value> = run
            .iter()
            .map(|p| {
                let mut section =
                    serde_json::json!({"filter": p.slot.filter, "config": p.section.config});
                if on_both_sides(p.slot.filter) {
                    section["name"] = instance_name(p.slot).into();
                }
                section
            })
            .collect();
        let slots: Vec<&'static Slot> = run.iter().map(|p| p.slot).collect();
        let (failure_policy, failure_reason) = suite_failure_policy(&slots);
        plugins.push((
            Plugin {
                name,
                side,
                module: SUITE_MODULE,
                filters: slots,
                failure_policy,
                failure_reason,
            },
            serde_json::json!({ "filters": sections }),
        ));
        run.clear();
    };
    for &p in placed {
        if modules == Modules::Suite && p.in_suite {
            // A suite plugin's filters share one failure policy (and VM), so a filter that must
            // fail closed never takes fail-open ones down with it, nor the other way round.
            if suite_run
                .last()
                .is_some_and(|last| last.slot.failure_policy != p.slot.failure_policy)
            {
                flush(&mut suite_run, &mut plugins);
            }
            suite_run.push(p);
            continue;
        }
        flush(&mut suite_run, &mut plugins);
        if modules == Modules::Suite {
            notes.push(format!(
                "{} runs as its own module on the {} listener: mesh_suite.wasm does not include it yet",
                p.slot.filter,
                side.as_str()
            ));
        }
        plugins.push((
            Plugin {
                name: instance_name(p.slot),
                side,
                module: p.module,
                filters: vec![p.slot],
                failure_policy: p.slot.failure_policy,
                failure_reason: p.slot.failure_reason.to_owned(),
            },
            p.section.config.clone(),
        ));
    }
    flush(&mut suite_run, &mut plugins);
    plugins
}

/// A filter instance's name: the filter's (so its metrics are `mesh.<filter>.*`), or the listener's
/// when the filter runs on both (`mesh.<filter>.ingress.*` / `.egress.*`: the two roles keep apart
/// metrics and shared data).
fn instance_name(slot: &Slot) -> String {
    if on_both_sides(slot.filter) {
        slot.side.as_str().to_owned()
    } else {
        slot.filter.to_owned()
    }
}

/// A suite plugin's failure policy (that of all its filters) and the reasons of its filters.
fn suite_failure_policy(slots: &[&'static Slot]) -> (FailurePolicy, String) {
    let policy = slots
        .first()
        .map_or(FailurePolicy::FailOpen, |slot| slot.failure_policy);
    let reasons: Vec<String> = slots
        .iter()
        .map(|slot| format!("{}: {}", slot.filter, slot.failure_reason))
        .collect();
    (policy, reasons.join("; "))
}

/// The upstream HTTP version of a cluster speaking `protocol`.
pub(super) fn upstream_protocol(protocol: Protocol) -> UpstreamHttpProtocol {
    match protocol {
        Protocol::Http1 => UpstreamHttpProtocol::Http1,
        Protocol::Http2 | Protocol::Grpc => UpstreamHttpProtocol::Http2,
    }
}

/// The stats of a cluster that exist (see [`stats_inclusion_list`]).
const CLUSTER_STATS: &[&str] = &[
    "upstream_rq_",
    "upstream_cx_connect_fail",
    "membership_healthy",
    "outlier_detection.ejections_active",
];

/// The stats that exist: request, connection and health stats of both listeners, of the app's
/// cluster and of every dependency's (by pattern, so a dependency added later through
/// `mesh-bootstrap xds` has them too), the mesh filters' metrics, configuration updates (a
/// rejected one is a failed rollout), and the proxy's own health. Everything else (per-listener,
/// per-worker, per-codec detail) is never created.
fn stats_inclusion_list() -> StatsConfig {
    let mut patterns: Vec<StringMatcher> = Vec::new();
    for side in [Side::Ingress, Side::Egress] {
        patterns.push(StringMatcher::Prefix(format!(
            "http.{}.downstream_rq_",
            side.as_str()
        )));
        patterns.push(StringMatcher::Prefix(format!(
            "http.{}.downstream_cx_active",
            side.as_str()
        )));
    }
    for stat in CLUSTER_STATS {
        patterns.push(StringMatcher::Prefix(format!(
            "cluster.{APP_CLUSTER}.{stat}"
        )));
    }
    let dependency_stats: Vec<String> = CLUSTER_STATS
        .iter()
        .map(|stat| stat.replace('.', r"\."))
        .collect();
    // Envoy's regex matchers match the whole name.
    patterns.push(StringMatcher::regex(format!(
        r"cluster\.{DEPENDENCY_CLUSTER_PREFIX}[a-z0-9-]+\.({}).*",
        dependency_stats.join("|")
    )));
    patterns.extend(
        [
            "wasmcustom.mesh.",
            "server.live",
            "server.memory_allocated",
            "server.uptime",
            "overload.",
            "cluster_manager.cds.update_",
            "cluster_manager.warming_clusters",
            "listener_manager.lds.update_",
            "listener_manager.total_listeners_warming",
        ]
        .map(|prefix| StringMatcher::Prefix(prefix.to_owned())),
    );
    StatsConfig::inclusion_list(patterns)
}

/// Why a spec does not render with this checkout's modules.
#[derive(Debug)]
pub enum LocalRenderError {
    /// The spec does not render.
    Spec(SpecError),
    /// A module it loads is not built, or older than its sources.
    Module(mesh_catalog::ModuleError),
}

impl std::fmt::Display for LocalRenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spec(err) => err.fmt(f),
            Self::Module(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for LocalRenderError {}

/// Renders `spec` to load the modules of this checkout's build (`target/wasm32-wasip1/release`),
/// after checking that every module it loads is built and fresh: what `mesh-bootstrap validate`
/// and `cargo xtask up` run.
pub fn render_local(spec: &ServiceSpec, modules: Modules) -> Result<Rendered, LocalRenderError> {
    let probe = render(
        spec,
        &RenderOptions {
            modules,
            ..RenderOptions::default()
        },
    )
    .map_err(LocalRenderError::Spec)?;
    for plugin in &probe.plugins {
        if let Some(module) = mesh_catalog::MODULES
            .iter()
            .find(|module| module.file_name == plugin.module)
        {
            module.built().map_err(LocalRenderError::Module)?;
        }
    }
    let suite = mesh_catalog::module("mesh-suite")
        .map_err(LocalRenderError::Module)?
        .path();
    let wasm_dir = suite.parent().map(Path::to_path_buf).unwrap_or_default();
    render(spec, &RenderOptions { wasm_dir, modules }).map_err(LocalRenderError::Spec)
}
