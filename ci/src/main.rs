//! `cargo xtask`: the project's automation. Every command that needs a tool installs it first
//! (idempotently), so a fresh machine with only rustup, cargo and python3 can run any of them.

mod build;
mod lab;
mod lint;
mod shell;
mod test;
mod toolchain;
mod workspace;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// The project's automation commands.
#[derive(Parser)]
#[command(name = "cargo xtask", about = "mesh-filters automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the other commands need: wasm targets, the pinned Envoy, the wasm test runner.
    Bootstrap,
    /// Build every wasm module of the catalog (filters and test modules) in release and print their sizes.
    Build {
        /// Also copy the shipped filters into this directory (Dockerfile.envoy bakes it into the image).
        #[arg(long, value_name = "DIR")]
        ship: Option<std::path::PathBuf>,
    },
    /// rustfmt check and clippy with warnings denied, natively and for wasm32-wasip1.
    Lint,
    /// Every test: lint, native unit tests, wasm32 unit tests, emulated-host and real-Envoy tests.
    /// `--tier` runs only some tiers (no lint) while a change is in progress.
    Test {
        /// Run only this tier (repeatable): unit (native + wasm32), emulated (the emulated host),
        /// envoy (real Envoy and the lab). Default: everything, as CI runs it.
        #[arg(long, value_enum)]
        tier: Vec<test::Tier>,
    },
    /// The payment-service example's rendered sidecar in a real Envoy, with lab upstreams for
    /// its app, dependencies and sandbox, until Ctrl-C. Arguments go to the lab
    /// (`cargo xtask up -- --help`).
    Up {
        /// Passed to `lab up` (e.g. `--spec envoy-configs/examples/notification-service/spec.yaml`,
        /// `--free-ports`, `--check`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a scenario benchmark (`all` for every one); prints a table, writes target/scenarios/<name>.json.
    Scenario {
        /// Passed to `lab scenario`: the scenario name or `all`, and `--smoke` for a 2-second run.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Run a benchmark: `overhead` (requests per second through one pinned Envoy worker: bare, a
    /// pass-through wasm filter, each module alone, the suite running it; ratios to bare), printed and
    /// written to target/bench/overhead.json.
    Bench {
        /// Passed to `lab bench`: the benchmark name, then its options (`cargo xtask bench overhead --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let outcome = workspace::Workspace::locate().and_then(|ws| match Cli::parse().command {
        Command::Bootstrap => toolchain::bootstrap(&ws).map(|_| ()),
        Command::Build { ship } => build::build_modules(&ws, ship.as_deref()),
        Command::Lint => lint::lint(&ws),
        Command::Test { tier } => test::test(&ws, &tier),
        Command::Up { args } => lab::run_lab(&ws, "up", &args),
        Command::Scenario { args } => lab::run_lab(&ws, "scenario", &args),
        Command::Bench { args } => lab::run_lab(&ws, "bench", &args),
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
