//! `cargo xtask test`: every test tier (or the tiers asked for), with a summary of counts and wall
//! time per step.

use crate::build::build_modules;
use crate::lint::lint;
use crate::shell::run_streaming;
use crate::toolchain::{bootstrap, WASM_UNIT_TEST_TARGET};
use crate::workspace::Workspace;
use anyhow::{bail, Result};
use mesh_catalog::{MODULES, WASM_TARGET};
use std::process::Command;
use std::time::{Duration, Instant};

/// Test counts read off libtest's `test result:` lines.
#[derive(Default, Clone, Copy)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Counts {
    /// Adds the counts of one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
    fn absorb(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split([';', '.']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next()) {
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    "ignored" => self.ignored += n,
                    _ => {}
                }
            }
        }
    }
}

struct Step {
    name: &'static str,
    elapsed: Duration,
    outcome: Result<()>,
    counts: Counts,
}

/// A part of the test suite that can run alone while a change is in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Tier {
    /// Native tests of every crate but the host-test crates, and the wasm32 unit tests.
    Unit,
    /// The real modules in the emulated proxy-wasm host (crate `mesh-emulator`).
    Emulated,
    /// The real modules in the real Envoy, and the lab (crates `mesh-envoy-harness`, `mesh-lab`).
    Envoy,
}

/// Crates whose tests run the modules in the emulated host.
const EMULATED_CRATES: &[&str] = &["mesh-emulator"];
/// Crates whose tests run the real Envoy (and the lab's traffic pieces).
const ENVOY_CRATES: &[&str] = &["mesh-envoy-harness", "mesh-lab"];

/// Runs `tiers` (every tier, after lint, when empty: what CI runs): the wasm build first when a tier
/// loads the modules. Every step runs even when an earlier one failed, and the summary names the
/// failures and counts the tests.
pub fn test(ws: &Workspace, tiers: &[Tier]) -> Result<()> {
    let everything = tiers.is_empty();
    let wants = |tier: Tier| everything || tiers.contains(&tier);
    let started = Instant::now();
    let mut steps = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut(&mut Counts) -> Result<()>| {
        let t = Instant::now();
        let mut counts = Counts::default();
        let outcome = f(&mut counts);
        if let Err(e) = &outcome {
            eprintln!("xtask: step `{name}` failed: {e:#}");
        }
        steps.push(Step {
            name,
            elapsed: t.elapsed(),
            outcome,
            counts,
        });
    };

    step("bootstrap", &mut |_| bootstrap(ws).map(|_| ()));
    if everything {
        step("lint", &mut |_| lint(ws));
    }
    if wants(Tier::Emulated) || wants(Tier::Envoy) {
        step("build wasm modules", &mut |_| build_modules(ws, None));
    }
    if wants(Tier::Unit) {
        step("unit tests (native)", &mut |counts| {
            let mut cmd = cargo_test();
            cmd.arg("--workspace");
            for krate in EMULATED_CRATES.iter().chain(ENVOY_CRATES) {
                cmd.args(["--exclude", krate]);
            }
            run_streaming(ws.root(), &mut cmd, |line| counts.absorb(line))
        });
        step(
            "unit tests (wasm32: meshkit under wasm-bindgen-test, filters under WASI)",
            &mut |counts| wasm32_unit_tests(ws, counts),
        );
    }
    if wants(Tier::Emulated) {
        step("emulated host tests", &mut |counts| {
            run_streaming(ws.root(), &mut packages(EMULATED_CRATES), |line| {
                counts.absorb(line)
            })
        });
    }
    if wants(Tier::Envoy) {
        step("real Envoy and lab tests", &mut |counts| {
            run_streaming(ws.root(), &mut packages(ENVOY_CRATES), |line| {
                counts.absorb(line)
            })
        });
    }

    let mut total = Counts::default();
    println!("\n== cargo xtask test summary ==");
    for s in &steps {
        total.passed += s.counts.passed;
        total.failed += s.counts.failed;
        total.ignored += s.counts.ignored;
        let verdict = if s.outcome.is_ok() { "ok" } else { "FAILED" };
        let counts = if s.counts.passed + s.counts.failed > 0 {
            format!("  ({} passed, {} failed)", s.counts.passed, s.counts.failed)
        } else {
            String::new()
        };
        println!(
            "{verdict:>6}  {:>6.1}s  {}{counts}",
            s.elapsed.as_secs_f64(),
            s.name
        );
    }
    println!("wall time {:.1}s", started.elapsed().as_secs_f64());
    let failed_steps: Vec<_> = steps
        .iter()
        .filter(|s| s.outcome.is_err())
        .map(|s| s.name)
        .collect();
    println!(
        "xtask: {} passed, {} failed, {} skipped",
        total.passed, total.failed, total.ignored
    );
    if !failed_steps.is_empty() {
        bail!("failed steps: {}", failed_steps.join(", "));
    }
    Ok(())
}

/// `cargo test --no-fail-fast`.
fn cargo_test() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(["test", "--no-fail-fast"]);
    cmd
}

/// `cargo test --no-fail-fast -p <crate>...`.
fn packages(crates: &[&str]) -> Command {
    let mut cmd = cargo_test();
    for krate in crates {
        cmd.args(["-p", krate]);
    }
    cmd
}

/// meshkit's wasm32 tests (`tests/wasm32.rs`, wasm-bindgen-test on wasm32-unknown-unknown under node),
/// then every module crate's tests built for wasm32-wasip1 and run under node's WASI
/// (`ci/wasm32/wasi_runner.mjs`): the filters' pure code on a 32-bit target, unchanged `#[test]`s.
fn wasm32_unit_tests(ws: &Workspace, counts: &mut Counts) -> Result<()> {
    let meshkit = run_streaming(
        ws.root(),
        cargo_test()
            // The SDK's exports keep its `env.proxy_*` imports in the test module; node resolves them
            // to a stub that throws if a pure test ever reaches the host.
            .env(
                "NODE_PATH",
                ws.root().join("filters/common/tests/node_stub"),
            )
            .env(
                "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
                "wasm-bindgen-test-runner",
            )
            .args([
                "-p",
                "meshkit",
                "--target",
                WASM_UNIT_TEST_TARGET,
                "--test",
                "wasm32",
            ]),
        |line| counts.absorb(line),
    );
    let runner = ws.root().join("ci/wasm32/wasi_runner.mjs");
    let mut filters = cargo_test();
    filters
        .env(
            "CARGO_TARGET_WASM32_WASIP1_RUNNER",
            format!("node {}", runner.display()),
        )
        .args(["--target", WASM_TARGET]);
    for m in MODULES {
        filters.args(["-p", m.crate_name]);
    }
    let filters = run_streaming(ws.root(), &mut filters, |line| counts.absorb(line));
    meshkit.and(filters)
}

#[cfg(test)]
mod tests {
    use super::Counts;

    #[test]
    fn libtest_result_lines_are_summed() {
        let mut c = Counts::default();
        c.absorb("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        c.absorb("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        c.absorb("running 5 tests");
        assert_eq!((c.passed, c.failed, c.ignored), (15, 2, 1));
    }
}
