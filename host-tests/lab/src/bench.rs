//! `lab bench overhead` (`cargo xtask bench overhead`): what our wasm filters cost Envoy per request.
//!
//! One Envoy (`--concurrency 1`, every thread pinned to one CPU) holds one listener per variant, each
//! routing to the same fast upstream (zero service time):
//!
//! - `bare`: no wasm filter;
//! - `passthrough`: `mesh_suite.wasm` configured with `{}` (the kit's contexts, no filter);
//! - each shipped filter's module alone, on its bench configuration from the catalog (its defaults,
//!   refusing no request: the load-shedder in dry run, so every request is admitted, released and
//!   proxied instead of some getting a cheaper local reply);
//! - the suite running that filter alone, on the same configuration;
//! - with more than one filter, the suite running every filter (the whole chain).
//!
//! The load generator (wrk, closed loop) and the upstream share the other CPU. After a warm-up pass,
//! rounds alternate the variants (bare, passthrough, module, suite, repeat) so that drift on the
//! machine hits every variant alike. A variant's throughput is the median of its rounds; its ratio to
//! bare is the median of its per-round ratios to the bare run of the same round. Each run also
//! measures Envoy's CPU time per request (its ratio to bare is the throughput ratio were Envoy's CPU
//! the only bottleneck, which other processes on the machine barely disturb) and how busy Envoy, its
//! CPU and the load CPU were, so a run shows whether Envoy was the bottleneck as intended.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use envoy_configs::{Bootstrap, Cluster, Listener, Route, Thresholds, WasmFilter};
use mesh_catalog::{Module, ModuleError};
use mesh_envoy_harness::{EnvoyError, EnvoyOptions, EnvoyProcess};
use serde::Serialize;
use serde_json::{json, Value};

use crate::upstream::{Upstream, UpstreamConfig, UpstreamError};

/// The target: the whole chain keeps at least this share of bare Envoy's throughput.
pub const WHOLE_CHAIN_TARGET: f64 = 0.85;
/// Name of the Envoy cluster holding the upstream.
const UPSTREAM_CLUSTER: &str = "service";

/// How the overhead benchmark runs.
#[derive(Debug, Clone)]
pub struct OverheadOptions {
    /// Measured rounds; each runs every variant once.
    pub rounds: u32,
    /// Load per variant and round.
    pub round_time: Duration,
    /// Load per variant in the warm-up pass (V8 tiers up, the shedder's limit settles); not reported.
    pub warmup_time: Duration,
    /// wrk's open connections (requests in flight).
    pub connections: u32,
    /// The CPU every Envoy thread is pinned to.
    pub envoy_cpu: usize,
    /// The CPU the load generator and the upstream are pinned to.
    pub load_cpu: usize,
}

impl Default for OverheadOptions {
    fn default() -> Self {
        Self {
            rounds: 5,
            round_time: Duration::from_secs(5),
            warmup_time: Duration::from_secs(2),
            connections: 64,
            envoy_cpu: 0,
            load_cpu: 1,
        }
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The options cannot be run (the message names the option).
    #[error("{0}")]
    Options(String),
    /// The tokio runtime could not start.
    #[error("async runtime: {0}")]
    Runtime(std::io::Error),
    /// The upstream could not start.
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    /// Envoy could not start or answer.
    #[error("envoy: {0}")]
    Envoy(#[from] EnvoyError),
    /// A wasm module is missing or stale.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// A filter's bench configuration in the catalog is missing or not JSON.
    #[error("bench configuration of `{crate_name}` in the catalog: {why}")]
    BenchConfig {
        /// The filter's crate.
        crate_name: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// Pinning this process to the load CPU failed.
    #[error("pinning the load generator and upstream to CPU {cpu}: {source}")]
    Pin {
        /// The CPU asked for.
        cpu: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// wrk could not run or its output was not understood.
    #[error("wrk: {0}")]
    Wrk(String),
}

/// One listener of the benchmark's Envoy.
struct Variant {
    name: String,
    /// The wasm filter: plugin (and VM) name, module, configuration. Each variant has its own VM, as
    /// each sidecar would.
    filter: Option<(String, &'static Module, Value)>,
}

impl Variant {
    fn listener(&self, index: usize) -> Result<Listener, ModuleError> {
        let mut listener = Listener::http(format!("variant{index}"), 0);
        if let Some((plugin, module, config)) = &self.filter {
            listener = listener
                .wasm_filter(WasmFilter::new(plugin, module.built()?).configuration(config));
        }
        Ok(listener.route(
            Route::prefix("/")
                .to_cluster(UPSTREAM_CLUSTER)
                .timeout(Duration::from_secs(30)),
        ))
    }
}

/// A filter's bench configuration from the catalog.
fn bench_config(filter: &Module) -> Result<Value, BenchError> {
    let error = |why: String| BenchError::BenchConfig {
        crate_name: filter.crate_name,
        why,
    };
    let text = filter
        .bench_config
        .ok_or_else(|| error("missing".to_owned()))?;
    serde_json::from_str(text).map_err(|e| error(e.to_string()))
}

/// The suite's configuration running `filters` (by the suite's filter name, which is the crate name),
/// each on its bench configuration.
fn suite_config(filters: &[(&Module, Value)]) -> Value {
    let sections: Vec<Value> = filters
        .iter()
        .map(|(m, config)| json!({"filter": m.crate_name, "config": config}))
        .collect();
    json!({ "filters": sections })
}

/// Bare, passthrough, then per shipped filter its module alone and the suite running it, then the
/// suite running every filter when there is more than one (see the module docs).
fn variants() -> Result<Vec<Variant>, BenchError> {
    let suite = mesh_catalog::module("mesh-suite")?;
    let filters = mesh_catalog::filters()
        .map(|m| Ok((m, bench_config(m)?)))
        .collect::<Result<Vec<_>, BenchError>>()?;
    let mut variants = vec![
        Variant {
            name: "bare".to_owned(),
            filter: None,
        },
        Variant {
            name: "passthrough".to_owned(),
            filter: Some(("passthrough".to_owned(), suite, json!({}))),
        },
    ];
    for &(filter, ref config) in &filters {
        variants.push(Variant {
            name: filter.file_name.to_owned(),
            filter: Some((filter.crate_name.to_owned(), filter, config.clone())),
        });
        variants.push(Variant {
            name: format!("suite[{}]", filter.crate_name),
            filter: Some((
                format!("suite-{}", filter.crate_name),
                suite,
                suite_config(&[(filter, config.clone())]),
            )),
        });
    }
    if filters.len() > 1 {
        variants.push(Variant {
            name: "suite[all]".to_owned(),
            filter: Some(("suite-all".to_owned(), suite, suite_config(&filters))),
        });
    }
    Ok(variants)
}

/// What wrk reported for one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WrkRun {
    /// Requests completed.
    pub requests: u64,
    /// Requests completed per second.
    pub rps: f64,
    /// Responses with a status outside 2xx and 3xx (a shed request would count here).
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors.
    pub socket_errors: u64,
}

/// Reads the figures of wrk's summary (`Requests/sec:`, `Non-2xx or 3xx responses:`, `Socket errors:`).
pub fn parse_wrk(output: &str) -> Result<WrkRun, BenchError> {
    let mut rps = None;
    let mut requests = None;
    let mut non_2xx = 0;
    let mut socket_errors = 0;
    for line in output.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("Requests/sec:") {
            rps = value.trim().parse::<f64>().ok();
        } else if let Some((count, _)) = line.split_once(" requests in ") {
            requests = count.trim().parse::<u64>().ok();
        } else if let Some(value) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = value
                .trim()
                .parse()
                .map_err(|_| BenchError::Wrk(format!("unreadable line {line:?}")))?;
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in errors.split(',') {
                let count = part
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse::<u64>().ok());
                socket_errors +=
                    count.ok_or_else(|| BenchError::Wrk(format!("unreadable line {line:?}")))?;
            }
        }
    }
    let (Some(rps), Some(requests)) = (rps, requests) else {
        return Err(BenchError::Wrk(format!(
            "no request count or Requests/sec in:\n{output}"
        )));
    };
    Ok(WrkRun {
        requests,
        rps,
        non_2xx,
        socket_errors,
    })
}

/// Runs wrk (one thread, closed loop) against `target` for `time`; it inherits this process's CPU.
fn wrk(target: SocketAddr, time: Duration, connections: u32) -> Result<WrkRun, BenchError> {
    let output = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}")])
        .arg(format!("-d{}s", time.as_secs().max(1)))
        .arg(format!("http://{target}/"))
        .output()
        .map_err(|e| {
            BenchError::Wrk(format!(
                "cannot run wrk (`cargo xtask bench` installs it): {e}"
            ))
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(BenchError::Wrk(format!(
            "exited with {}:\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    parse_wrk(&stdout)
}

/// One variant's run in one round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Run {
    /// What wrk reported.
    #[serde(flatten)]
    pub wrk: WrkRun,
    /// Envoy's CPU time over the run's wall time, in percent: near 100 when Envoy is the
    /// bottleneck, as the benchmark intends.
    pub envoy_busy_percent: f64,
    /// How busy Envoy's CPU was with anything (Envoy and whatever else runs there), in percent: well
    /// above `envoy_busy_percent` means other processes took Envoy's CPU and the run is not clean.
    pub envoy_cpu_busy_percent: f64,
    /// How busy the load CPU (wrk and the upstream) was, in percent: near 100 means the load side,
    /// not Envoy, limited the run.
    pub load_cpu_busy_percent: f64,
    /// Envoy's CPU time per completed request, in microseconds: what a request costs Envoy, whatever
    /// else ran on the machine or limited the run.
    pub envoy_us_per_request: f64,
}

/// The CPU time every thread of process `pid` has used so far (`/proc/<pid>/stat`).
fn process_cpu_time(pid: u32) -> Result<Duration, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)
        .map_err(|e| BenchError::Options(format!("reading {path}: {e}")))?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err(BenchError::Options(format!("unreadable {path}: {stat}")));
    };
    Ok(from_ticks(user + system))
}

/// Busy and total time of CPU `cpu` since boot (`/proc/stat`; idle and iowait are not busy).
fn cpu_times(cpu: usize) -> Result<(Duration, Duration), BenchError> {
    let stat = std::fs::read_to_string("/proc/stat")
        .map_err(|e| BenchError::Options(format!("reading /proc/stat: {e}")))?;
    let label = format!("cpu{cpu}");
    let ticks: Vec<u64> = stat
        .lines()
        .find_map(|line| {
            line.strip_prefix(&label)?
                .strip_prefix(' ')
                .map(str::split_whitespace)
        })
        .ok_or_else(|| BenchError::Options(format!("no {label} in /proc/stat")))?
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok((from_ticks(total - idle), from_ticks(total)))
}

fn from_ticks(ticks: u64) -> Duration {
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// Busy share of CPU `cpu` between two [`cpu_times`] samples, in percent.
fn busy_percent(before: (Duration, Duration), after: (Duration, Duration)) -> f64 {
    let total = after.1.saturating_sub(before.1).as_secs_f64();
    if total == 0.0 {
        return 0.0;
    }
    100.0 * after.0.saturating_sub(before.0).as_secs_f64() / total
}

/// Runs wrk against `target` and measures how busy Envoy (process `envoy_pid`) and both CPUs were
/// meanwhile.
fn measured_run(
    envoy_pid: u32,
    options: &OverheadOptions,
    target: SocketAddr,
    time: Duration,
) -> Result<Run, BenchError> {
    let envoy_before = process_cpu_time(envoy_pid)?;
    let cpus_before = (cpu_times(options.envoy_cpu)?, cpu_times(options.load_cpu)?);
    let wall = std::time::Instant::now();
    let wrk = wrk(target, time, options.connections)?;
    let envoy = process_cpu_time(envoy_pid)?.saturating_sub(envoy_before);
    let wall = wall.elapsed();
    Ok(Run {
        wrk,
        envoy_busy_percent: 100.0 * envoy.as_secs_f64() / wall.as_secs_f64(),
        envoy_us_per_request: envoy.as_secs_f64() * 1e6 / wrk.requests.max(1) as f64,
        envoy_cpu_busy_percent: busy_percent(cpus_before.0, cpu_times(options.envoy_cpu)?),
        load_cpu_busy_percent: busy_percent(cpus_before.1, cpu_times(options.load_cpu)?),
    })
}

/// Pins the calling thread, and so every thread and process it starts later, to `cpu`.
fn pin_to(cpu: usize) -> Result<(), BenchError> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).map_err(|e| BenchError::Pin {
        cpu,
        source: e.into(),
    })
}

/// One variant's results.
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    /// `bare`, `passthrough`, a module file name, or `suite[<filters>]`.
    pub name: String,
    /// The module the listener runs (`None`: bare).
    pub module: Option<&'static str>,
    /// The plugin configuration.
    pub config: Option<Value>,
    /// One run per round.
    pub rounds: Vec<Run>,
    /// Median requests per second over the rounds.
    pub median_rps: f64,
    /// Median over the rounds of this variant's rps over bare's rps in the same round.
    pub ratio_to_bare: f64,
    /// Median Envoy CPU time per request, in microseconds.
    pub median_envoy_us_per_request: f64,
    /// Median over the rounds of bare's Envoy CPU time per request over this variant's: its
    /// throughput relative to bare when Envoy's CPU is the bottleneck, unaffected by other
    /// processes taking that CPU.
    pub cpu_ratio_to_bare: f64,
}

impl VariantResult {
    fn non_2xx(&self) -> u64 {
        self.rounds.iter().map(|r| r.wrk.non_2xx).sum()
    }

    fn socket_errors(&self) -> u64 {
        self.rounds.iter().map(|r| r.wrk.socket_errors).sum()
    }

    /// The median over the rounds of `figure`.
    fn median_of(&self, figure: impl Fn(&Run) -> f64) -> f64 {
        median(&mut self.rounds.iter().map(figure).collect::<Vec<_>>())
    }
}

/// A target of the issue, checked on this run.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// What is compared.
    pub what: String,
    /// The least ratio that meets the target.
    pub target: f64,
    /// The ratio of requests per second (paired by round).
    pub rps_ratio: f64,
    /// The inverse ratio of Envoy CPU time per request (paired by round): the throughput ratio with
    /// Envoy's CPU the bottleneck, robust to other load on the machine.
    pub cpu_ratio: f64,
}

/// The outcome of one overhead benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadReport {
    /// Measured rounds.
    pub rounds: u32,
    /// Seconds of load per variant and round.
    pub round_seconds: u64,
    /// wrk's connections.
    pub connections: u32,
    /// The CPU Envoy ran on.
    pub envoy_cpu: usize,
    /// The CPU wrk and the upstream ran on.
    pub load_cpu: usize,
    /// Every variant, in round order.
    pub variants: Vec<VariantResult>,
    /// The targets.
    pub targets: Vec<TargetCheck>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Median over the rounds of `a`'s rps over `b`'s rps in the same round.
fn paired_ratio(a: &[Run], b: &[Run]) -> f64 {
    paired(a, b, |run| run.wrk.rps)
}

/// Median over the rounds of `b`'s Envoy CPU time per request over `a`'s in the same round.
fn paired_cpu_ratio(a: &[Run], b: &[Run]) -> f64 {
    paired(a, b, |run| 1.0 / run.envoy_us_per_request)
}

/// Median over the rounds of `figure(a) / figure(b)` in the same round.
fn paired(a: &[Run], b: &[Run], figure: impl Fn(&Run) -> f64) -> f64 {
    let mut ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(a, b)| figure(a) / figure(b))
        .filter(|ratio| ratio.is_finite())
        .collect();
    median(&mut ratios)
}

/// Runs the overhead benchmark (see the module docs).
pub fn run_overhead(options: &OverheadOptions) -> Result<OverheadReport, BenchError> {
    if options.rounds == 0 || options.connections == 0 || options.round_time.as_secs() == 0 {
        return Err(BenchError::Options(
            "rounds, connections and seconds must be at least 1".to_owned(),
        ));
    }
    if options.envoy_cpu == options.load_cpu {
        return Err(BenchError::Options(format!(
            "envoy-cpu and load-cpu must differ (both {})",
            options.envoy_cpu
        )));
    }
    pin_to(options.load_cpu)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    let upstream = runtime.block_on(Upstream::start(UpstreamConfig::new("bench")))?;
    let variants = variants()?;
    let mut bootstrap = Bootstrap::new(0).cluster(
        Cluster::static_cluster(UPSTREAM_CLUSTER, [upstream.addr()])
            .circuit_breaker(Thresholds::unlimited()),
    );
    for (index, variant) in variants.iter().enumerate() {
        bootstrap = bootstrap.listener(variant.listener(index)?);
    }
    let envoy = EnvoyProcess::start(
        &bootstrap,
        EnvoyOptions {
            concurrency: 1,
            cpus: vec![options.envoy_cpu],
            log_level: "warn".to_owned(),
            ..EnvoyOptions::default()
        },
    )?;
    let targets = (0..variants.len())
        .map(|index| envoy.listener_addr(&format!("variant{index}")))
        .collect::<Result<Vec<_>, _>>()?;

    for (variant, &target) in variants.iter().zip(&targets) {
        eprintln!("bench: warming up {}", variant.name);
        wrk(target, options.warmup_time, options.connections)?;
    }
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); variants.len()];
    for round in 1..=options.rounds {
        for ((variant, &target), runs) in variants.iter().zip(&targets).zip(&mut runs) {
            let run = measured_run(envoy.pid(), options, target, options.round_time)?;
            eprintln!(
                "bench: round {round}/{}: {:<24} {:>9.0} rps; busy: Envoy {:.0} %, its CPU {:.0} %, load CPU {:.0} %",
                options.rounds,
                variant.name,
                run.wrk.rps,
                run.envoy_busy_percent,
                run.envoy_cpu_busy_percent,
                run.load_cpu_busy_percent
            );
            runs.push(run);
        }
    }
    envoy.shutdown();

    let bare = runs[0].clone();
    let results: Vec<VariantResult> = variants
        .into_iter()
        .zip(runs)
        .map(|(variant, rounds)| VariantResult {
            median_rps: median(&mut rounds.iter().map(|r| r.wrk.rps).collect::<Vec<_>>()),
            ratio_to_bare: paired_ratio(&rounds, &bare),
            median_envoy_us_per_request: median(
                &mut rounds
                    .iter()
                    .map(|r| r.envoy_us_per_request)
                    .collect::<Vec<_>>(),
            ),
            cpu_ratio_to_bare: paired_cpu_ratio(&rounds, &bare),
            module: variant.filter.as_ref().map(|(_, m, _)| m.file_name),
            config: variant.filter.map(|(_, _, config)| config),
            name: variant.name,
            rounds,
        })
        .collect();
    Ok(OverheadReport {
        rounds: options.rounds,
        round_seconds: options.round_time.as_secs(),
        connections: options.connections,
        envoy_cpu: options.envoy_cpu,
        load_cpu: options.load_cpu,
        targets: target_checks(&results),
        variants: results,
    })
}

/// The whole chain (the last suite variant) against [`WHOLE_CHAIN_TARGET`], and per filter the suite
/// running it alone against its module alone (the suite must cost no more).
fn target_checks(results: &[VariantResult]) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    let bare = results.first().map(|r| r.rounds.as_slice()).unwrap_or(&[]);
    if let Some(chain) = results.iter().rev().find(|r| r.name.starts_with("suite[")) {
        checks.push(TargetCheck {
            what: format!("whole chain ({}) / bare", chain.name),
            target: WHOLE_CHAIN_TARGET,
            rps_ratio: paired_ratio(&chain.rounds, bare),
            cpu_ratio: paired_cpu_ratio(&chain.rounds, bare),
        });
    }
    for filter in mesh_catalog::filters() {
        let by_name = |name: &str| results.iter().find(|r| r.name == name);
        if let (Some(module), Some(suite)) = (
            by_name(filter.file_name),
            by_name(&format!("suite[{}]", filter.crate_name)),
        ) {
            checks.push(TargetCheck {
                what: format!("{} / {}", suite.name, module.name),
                target: 1.0,
                rps_ratio: paired_ratio(&suite.rounds, &module.rounds),
                cpu_ratio: paired_cpu_ratio(&suite.rounds, &module.rounds),
            });
        }
    }
    checks
}

impl OverheadReport {
    /// The results as a text table, then the targets.
    pub fn table(&self) -> String {
        let mut out = format!(
            "Envoy --concurrency 1 on CPU {}, wrk -t1 -c{} and the upstream on CPU {}; {} rounds of {} s\n\n",
            self.envoy_cpu, self.connections, self.load_cpu, self.rounds, self.round_seconds
        );
        let _ = writeln!(
            out,
            "{:<22} {:>8} {:>7} {:>15} | {:>8} {:>7} | busy: {:>5} {:>7} {:>8} | {:>7} {:>6}",
            "variant",
            "rps",
            "x bare",
            "rps min..max",
            "us/req",
            "x bare",
            "Envoy",
            "its CPU",
            "load CPU",
            "non-2xx",
            "errors"
        );
        for v in &self.variants {
            let rps = || v.rounds.iter().map(|r| r.wrk.rps);
            let min = rps().fold(f64::INFINITY, f64::min);
            let max = rps().fold(0.0, f64::max);
            let _ = writeln!(
                out,
                "{:<22} {:>8.0} {:>6.3}x {:>7.0}..{:<6.0} | {:>8.1} {:>6.3}x | {:>11.0}% {:>6.0}% {:>7.0}% | {:>7} {:>6}",
                v.name,
                v.median_rps,
                v.ratio_to_bare,
                min,
                max,
                v.median_envoy_us_per_request,
                v.cpu_ratio_to_bare,
                v.median_of(|r| r.envoy_busy_percent),
                v.median_of(|r| r.envoy_cpu_busy_percent),
                v.median_of(|r| r.load_cpu_busy_percent),
                v.non_2xx(),
                v.socket_errors()
            );
        }
        let _ = writeln!(
            out,
            "\nrps: medians of the rounds; x bare: medians of per-round ratios, by rps and by Envoy CPU \
             time per request (us/req; the throughput ratio were Envoy's CPU the only bottleneck)\n\ntargets:"
        );
        let verdict = |ratio: f64, target: f64| if ratio >= target { "met" } else { "MISSED" };
        for t in &self.targets {
            let _ = writeln!(
                out,
                "  {:<44} target >= {:.2}: by rps {:.3} ({}), by Envoy CPU {:.3} ({})",
                t.what,
                t.target,
                t.rps_ratio,
                verdict(t.rps_ratio, t.target),
                t.cpu_ratio,
                verdict(t.cpu_ratio, t.target)
            );
        }
        out
    }

    /// Writes the report as `overhead.json` into `dir` and returns its path.
    pub fn write_json(&self, dir: &Path) -> std::io::Result<PathBuf> {
        crate::scenario::write_json(dir, "overhead", self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const WRK_OUTPUT: &str = "Running 5s test @ http://127.0.0.1:4000/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.21ms  310.00us   9.87ms   91.00%
    Req/Sec    13.30k   412.00    13.90k    80.00%
  66181 requests in 5.00s, 12.90MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  13236.20
Transfer/sec:      2.58MB
";

    #[test]
    fn wrk_summary_figures_are_read() {
        assert_eq!(
            parse_wrk(WRK_OUTPUT).unwrap(),
            WrkRun {
                requests: 66181,
                rps: 13236.2,
                non_2xx: 7,
                socket_errors: 3
            }
        );
        let clean = WRK_OUTPUT
            .lines()
            .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            parse_wrk(&clean).unwrap(),
            WrkRun {
                requests: 66181,
                rps: 13236.2,
                non_2xx: 0,
                socket_errors: 0
            }
        );
        assert!(parse_wrk("wrk: connection refused").is_err());
    }

    #[test]
    fn ratios_pair_the_runs_of_one_round() {
        let runs = |rps: &[f64]| -> Vec<Run> {
            rps.iter()
                .map(|&rps| Run {
                    wrk: WrkRun {
                        requests: 0,
                        rps,
                        non_2xx: 0,
                        socket_errors: 0,
                    },
                    envoy_busy_percent: 100.0,
                    envoy_cpu_busy_percent: 100.0,
                    load_cpu_busy_percent: 50.0,
                    envoy_us_per_request: 1e6 / rps,
                })
                .collect()
        };
        // The machine slowed down in round 2: paired, the variant is 0.9x bare in every round.
        let bare = runs(&[10_000.0, 5_000.0, 10_000.0]);
        let variant = runs(&[9_000.0, 4_500.0, 9_000.0]);
        assert!((paired_ratio(&variant, &bare) - 0.9).abs() < 1e-9);
        assert!((paired_cpu_ratio(&variant, &bare) - 0.9).abs() < 1e-9);
        assert_eq!(median(&mut [3.0, 1.0, 2.0, 10.0]), 2.5);
    }

    #[test]
    fn variants_run_bare_passthrough_then_each_module_and_the_suite_running_it() {
        let names: Vec<String> = variants().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names[..2], ["bare", "passthrough"]);
        for filter in mesh_catalog::filters() {
            let module = names.iter().position(|n| n == filter.file_name).unwrap();
            assert_eq!(names[module + 1], format!("suite[{}]", filter.crate_name));
        }
    }
}
