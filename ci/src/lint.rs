//! `cargo xtask lint`: formatting and clippy, natively and for the wasm target.

use crate::shell::run;
use crate::toolchain::{ensure_rust_component, ensure_rust_target};
use crate::workspace::Workspace;
use anyhow::Result;
use mesh_catalog::{MODULES, WASM_TARGET};
use std::process::Command;

/// Fails on unformatted code or any clippy warning. Filter crates deny unwrap/expect/panic
/// outside tests through the workspace lint table.
pub fn lint(ws: &Workspace) -> Result<()> {
    ensure_rust_component("rustfmt")?;
    ensure_rust_component("clippy")?;
    ensure_rust_target(WASM_TARGET)?;
    run(
        ws.root(),
        Command::new("cargo").args(["fmt", "--all", "--", "--check"]),
    )?;
    run(
        ws.root(),
        Command::new("cargo").args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    let mut wasm = Command::new("cargo");
    wasm.args(["clippy", "--target", WASM_TARGET, "-p", "meshkit"]);
    for m in MODULES {
        wasm.args(["-p", m.crate_name]);
    }
    wasm.args(["--", "-D", "warnings"]);
    run(ws.root(), &mut wasm)
}
