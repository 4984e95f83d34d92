//! `cargo xtask build`: every wasm module in release, with its size.

use crate::shell::run;
use crate::toolchain::ensure_rust_target;
use crate::workspace::{WasmModule, Workspace, WASM_TARGET};
use anyhow::{Context, Result};
use std::process::Command;

/// Builds every wasm module of the workspace and prints each with its size.
pub fn build_modules(ws: &Workspace) -> Result<Vec<WasmModule>> {
    ensure_rust_target(WASM_TARGET)?;
    let modules = ws.wasm_modules();
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--release", "--target", WASM_TARGET]);
    for m in &modules {
        cmd.args(["-p", &m.package]);
    }
    run(ws.root(), &mut cmd)?;
    println!("{:<24} {:>10}  path", "module", "bytes");
    for m in &modules {
        let size = std::fs::metadata(&m.path)
            .with_context(|| format!("module {} was not produced", m.path.display()))?
            .len();
        println!("{:<24} {:>10}  {}", m.package, size, m.path.display());
    }
    Ok(modules)
}
