//! `cargo xtask up`, `cargo xtask scenario` and `cargo xtask bench`: build the modules and run the lab binary
//! (`host-tests/lab/src/bin/lab.rs`, crate `mesh-lab`) in the optimised `lab` profile.

use crate::build::build_modules;
use crate::shell::run;
use crate::toolchain::{ensure_debian_tool, ensure_envoy};
use crate::workspace::Workspace;
use anyhow::Result;
use std::process::Command;

/// Installs Envoy, builds every wasm module, then runs `lab <command> <args>`.
pub fn run_lab(ws: &Workspace, command: &str, args: &[String]) -> Result<()> {
    ensure_envoy(ws)?;
    if command == "up" {
        // The demo's guide drives the sidecar with hey.
        ensure_debian_tool("hey", "hey")?;
    }
    if command == "bench" {
        // The overhead benchmark's load generator, and the CPU pinning of Envoy.
        ensure_debian_tool("wrk", "wrk")?;
        ensure_debian_tool("taskset", "util-linux")?;
    }
    build_modules(ws, None)?;
    run(
        ws.root(),
        Command::new("cargo")
            .args([
                "run",
                "--quiet",
                "--profile",
                "lab",
                "-p",
                "mesh-lab",
                "--bin",
                "lab",
                "--",
                command,
            ])
            .args(args),
    )
}
