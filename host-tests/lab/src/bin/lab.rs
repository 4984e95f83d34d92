//! The lab's command line, run by `cargo xtask up` and `cargo xtask scenario <name>`.
//!
//! - `lab up [--spec FILE] [--check]`: a service spec (default: the payment-service example)
//!   rendered into a sidecar, run in a real Envoy with lab upstreams standing in for the app, its
//!   dependencies and sandboxes; checks each filter acting, prints the results and the commands
//!   that show each filter at work, and runs until Ctrl-C (`--check`: exits after the checks).
//! - `lab scenario <name> [--smoke]`: runs a named scenario, prints its table and writes its JSON under
//!   `target/scenarios/`.
//! - `lab bench overhead`: bare Envoy vs a pass-through wasm filter vs each module vs the suite, on one
//!   pinned worker; prints the table and writes `target/bench/overhead.json`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mesh_envoy_harness::EnvoyProcess;
use mesh_lab::bench::{self, OverheadOptions};
use mesh_lab::scenario::{self, RunMode};
use mesh_lab::spec_demo::{Ports, SpecDemo};

#[derive(Parser)]
#[command(
    name = "lab",
    about = "mesh-filters lab: demo sidecar and scenario benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a service's sidecar locally: the spec rendered as `mesh-bootstrap render` renders it,
    /// in a real Envoy, with lab upstreams for its app, dependencies and sandboxes; until Ctrl-C.
    Up {
        /// The service spec (YAML or JSON); relative to the workspace root.
        #[arg(long, default_value = mesh_lab::spec_demo::DEFAULT_SPEC)]
        spec: std::path::PathBuf,
        /// Exit after checking each filter (non-zero when a check fails) instead of serving.
        #[arg(long)]
        check: bool,
        /// Listen on free ports instead of the spec's.
        #[arg(long)]
        free_ports: bool,
    },
    /// Run a named scenario benchmark.
    Scenario {
        /// Scenario name (`all` runs every one).
        name: String,
        /// About two seconds of load in total: proves the scenario runs, its figures mean nothing.
        #[arg(long)]
        smoke: bool,
    },
    /// Run a benchmark.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum Bench {
    /// Requests per second through one pinned Envoy worker: bare, a pass-through wasm filter, each
    /// module alone, the suite running it; alternating rounds; ratios to bare.
    Overhead {
        /// Measured rounds (each runs every variant once).
        #[arg(long, default_value_t = OverheadOptions::default().rounds)]
        rounds: u32,
        /// Seconds of load per variant and round.
        #[arg(long, default_value_t = OverheadOptions::default().round_time.as_secs())]
        seconds: u64,
        /// wrk connections.
        #[arg(long, default_value_t = OverheadOptions::default().connections)]
        connections: u32,
        /// CPU for Envoy's threads.
        #[arg(long, default_value_t = OverheadOptions::default().envoy_cpu)]
        envoy_cpu: usize,
        /// CPU for wrk and the upstream.
        #[arg(long, default_value_t = OverheadOptions::default().load_cpu)]
        load_cpu: usize,
    },
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Up {
            spec,
            check,
            free_ports,
        } => up(&spec, check, free_ports),
        Command::Scenario { name, smoke } => run_scenarios(&name, smoke),
        Command::Bench(Bench::Overhead {
            rounds,
            seconds,
            connections,
            envoy_cpu,
            load_cpu,
        }) => overhead(&OverheadOptions {
            rounds,
            round_time: Duration::from_secs(seconds),
            connections,
            envoy_cpu,
            load_cpu,
            ..OverheadOptions::default()
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("lab: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_scenarios(name: &str, smoke: bool) -> Result<(), String> {
    let scenarios = if name == "all" {
        scenario::catalog()
    } else if scenario::SCRIPTED.contains(&name) {
        Vec::new()
    } else {
        vec![scenario::by_name(name)
            .ok_or_else(|| scenario::ScenarioError::Unknown(name.to_owned()).to_string())?]
    };
    let mode = if smoke {
        RunMode::Smoke {
            total: Duration::from_secs(2),
        }
    } else {
        RunMode::Full
    };
    let out_dir = mesh_catalog::target_dir().join("scenarios");
    let print = |table: String, written: std::io::Result<std::path::PathBuf>| {
        println!("{table}");
        let path = written.map_err(|e| format!("writing {}: {e}", out_dir.display()))?;
        println!("JSON: {}\n", path.display());
        Ok::<(), String>(())
    };
    if name == scenario::drain::NAME || name == "all" {
        eprintln!("lab: running scenario `{}` ...", scenario::drain::NAME);
        let report = scenario::drain::run(&scenario::drain::drain(), mode)
            .map_err(|e| format!("scenario `{}`: {e}", scenario::drain::NAME))?;
        print(report.table(), report.write_json(&out_dir))?;
    }
    if name == scenario::cache_failover::NAME || name == "all" {
        let failover = scenario::cache_failover::NAME;
        eprintln!("lab: running scenario `{failover}` ...");
        let report =
            scenario::cache_failover::run(&scenario::cache_failover::cache_failover(), mode)
                .map_err(|e| format!("scenario `{failover}`: {e}"))?;
        print(report.table(), report.write_json(&out_dir))?;
    }
    if name == scenario::sandbox::NAME || name == "all" {
        eprintln!("lab: running scenario `{}` ...", scenario::sandbox::NAME);
        let report = scenario::sandbox::run(&scenario::sandbox::sandbox(), mode)
            .map_err(|e| format!("scenario `{}`: {e}", scenario::sandbox::NAME))?;
        print(report.table(), report.write_json(&out_dir))?;
    }
    for s in &scenarios {
        eprintln!("lab: running scenario `{}` ...", s.name);
        let report = scenario::run(s, mode).map_err(|e| format!("scenario `{}`: {e}", s.name))?;
        print(report.table(), report.write_json(&out_dir))?;
    }
    Ok(())
}

fn overhead(options: &OverheadOptions) -> Result<(), String> {
    let report = bench::run_overhead(options).map_err(|e| format!("bench overhead: {e}"))?;
    println!("{}", report.table());
    let dir = mesh_catalog::target_dir().join("bench");
    let path = report
        .write_json(&dir)
        .map_err(|e| format!("writing {}: {e}", dir.display()))?;
    println!("JSON: {}", path.display());
    Ok(())
}

fn up(spec: &std::path::Path, check_only: bool, free_ports: bool) -> Result<(), String> {
    let runtime =
        mesh_lab::runtime().map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let spec = mesh_catalog::workspace_root().join(spec);
    let ports = if free_ports { Ports::Free } else { Ports::Spec };
    let demo = runtime
        .block_on(SpecDemo::start(&spec, ports))
        .map_err(|e| e.to_string())?;
    let envoy = EnvoyProcess::start(&demo.rendered.bootstrap, SpecDemo::envoy_options())
        .map_err(|e| format!("envoy: {e}"))?;
    let checks = runtime.block_on(demo.check());
    println!("{}", demo.guide(&checks));
    let failed = checks.iter().filter(|check| check.outcome.is_err()).count();
    if check_only {
        envoy.shutdown();
        return match failed {
            0 => Ok(()),
            n => Err(format!("{n} of {} checks failed", checks.len())),
        };
    }
    println!(
        "Envoy log: {}\nCtrl-C stops everything.",
        envoy.log_path().display()
    );
    runtime
        .block_on(tokio::signal::ctrl_c())
        .map_err(|e| format!("waiting for Ctrl-C: {e}"))?;
    println!("\nlab: stopping Envoy and the upstreams");
    envoy.shutdown();
    drop(demo);
    Ok(())
}
