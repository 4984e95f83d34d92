//! `cargo xtask test`: every test tier, with a summary of counts and wall time per step.

use crate::build::build_modules;
use crate::lint::lint;
use crate::shell::run_streaming;
use crate::toolchain::{bootstrap, WASM_UNIT_TEST_TARGET};
use crate::workspace::Workspace;
use anyhow::{bail, Result};
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

/// Runs lint, the wasm build, native tests (unit, emulated host, real Envoy) and the wasm32 unit
/// tests; every step runs even when an earlier one failed, and the summary names the failures.
pub fn test_all(ws: &Workspace) -> Result<()> {
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
    step("lint", &mut |_| lint(ws));
    step("build wasm modules", &mut |_| build_modules(ws, None));
    step(
        "native tests (unit, emulated host, real Envoy)",
        &mut |counts| {
            run_streaming(
                ws.root(),
                Command::new("cargo").args(["test", "--workspace", "--no-fail-fast"]),
                |line| counts.absorb(line),
            )
        },
    );
    step(
        "wasm32 unit tests (wasm-bindgen-test, node)",
        &mut |counts| {
            run_streaming(
                ws.root(),
                Command::new("cargo")
                    // The SDK's exports keep its `env.proxy_*` imports in the test module; node
                    // resolves them to a stub that throws if a pure test ever reaches the host.
                    .env(
                        "NODE_PATH",
                        ws.root().join("filters/common/tests/node_stub"),
                    )
                    .env(
                        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
                        "wasm-bindgen-test-runner",
                    )
                    .args([
                        "test",
                        "-p",
                        "meshkit",
                        "--target",
                        WASM_UNIT_TEST_TARGET,
                        "--test",
                        "wasm32",
                    ]),
                |line| counts.absorb(line),
            )
        },
    );

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
