//! `cargo xtask`: the project's automation. Every command that needs a tool installs it first
//! (idempotently), so a fresh machine with only rustup, cargo and python3 can run any of them.

mod build;
mod lab;
mod lint;
mod shell;
mod test;
mod toolchain;
mod workspace;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
    /// Build every wasm module (filters and test fixtures) in release and print their sizes.
    Build,
    /// rustfmt check and clippy with warnings denied, natively and for wasm32-wasip1.
    Lint,
    /// Every test: lint, native unit tests, wasm32 unit tests, emulated-host and real-Envoy tests.
    Test,
    /// The local sidecar demo: a demo service behind Envoy with every filter, until Ctrl-C.
    Up {
        /// Port of the sidecar's ingress listener.
        #[arg(long, default_value_t = 10000)]
        port: u16,
        /// Port of Envoy's admin interface.
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
    },
    /// Run a scenario benchmark (`all` for every one); prints a table, writes target/scenarios/<name>.json.
    Scenario {
        /// Scenario name, or `all`.
        name: String,
        /// About two seconds of load: proves the scenario runs; its figures mean nothing.
        #[arg(long)]
        smoke: bool,
    },
}

fn main() -> Result<()> {
    let ws = workspace::Workspace::locate()?;
    match Cli::parse().command {
        Command::Bootstrap => toolchain::bootstrap(&ws).map(|_| ()),
        Command::Build => build::build_modules(&ws).map(|_| ()),
        Command::Lint => lint::lint(&ws),
        Command::Test => test::test_all(&ws),
        Command::Up { port, admin_port } => lab::run_lab(
            &ws,
            &[
                "up",
                "--port",
                &port.to_string(),
                "--admin-port",
                &admin_port.to_string(),
            ],
        ),
        Command::Scenario { name, smoke } => {
            let mut args = vec!["scenario", name.as_str()];
            if smoke {
                args.push("--smoke");
            }
            lab::run_lab(&ws, &args)
        }
    }
}
