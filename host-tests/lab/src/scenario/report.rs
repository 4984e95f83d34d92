//! The outcome of a scenario run: one row per variant and phase, as a table and as JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::load::LoadReport;
use crate::upstream::UpstreamCounters;

/// What one variant did in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    /// Variant name, e.g. `bare-envoy`.
    pub variant: String,
    /// Phase name, e.g. `overload`.
    pub phase: String,
    /// Upstream requests per client request sent (retries by client or proxy push it above 1).
    pub amplification: f64,
    /// The upstream's counters over the phase.
    pub upstream: UpstreamCounters,
    /// The load generator's report.
    pub load: LoadReport,
}

impl PhaseResult {
    /// Combines a phase's load report with the upstream counters it caused.
    pub fn new(variant: &str, phase: &str, load: LoadReport, upstream: UpstreamCounters) -> Self {
        Self {
            variant: variant.to_owned(),
            phase: phase.to_owned(),
            amplification: load.upstream_amplification([&upstream]),
            upstream,
            load,
        }
    }

    /// Share of sent client requests that succeeded, in percent.
    pub fn success_percent(&self) -> f64 {
        match self.load.sent_requests() {
            0 => 0.0,
            sent => 100.0 * self.load.totals.successes as f64 / sent as f64,
        }
    }
}

/// All rows of one scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// What the scenario shows.
    pub description: String,
    /// True for a smoke run, whose figures mean nothing.
    pub smoke: bool,
    /// One row per variant and phase, in run order.
    pub results: Vec<PhaseResult>,
}

impl ScenarioReport {
    /// The row of `variant` in `phase`.
    pub fn result(&self, variant: &str, phase: &str) -> Option<&PhaseResult> {
        self.results
            .iter()
            .find(|r| r.variant == variant && r.phase == phase)
    }

    /// A fixed-width table: offered and achieved load, goodput, success, latency of successes, errors.
    pub fn table(&self) -> String {
        let mut out = format!(
            "scenario {}{}: {}\n",
            self.name,
            if self.smoke { " (smoke run)" } else { "" },
            self.description
        );
        let _ = writeln!(
            out,
            "{:<28} {:<10} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>6}",
            "variant",
            "phase",
            "offered",
            "goodput",
            "success%",
            "p50ms",
            "p99ms",
            "p999ms",
            "timeouts",
            "5xx",
            "shed",
            "ampl"
        );
        for r in &self.results {
            let t = &r.load.totals;
            let lat = &t.latency_success;
            let _ = writeln!(
                out,
                "{:<28} {:<10} {:>8.0} {:>9.0} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>9} {:>8} {:>8} {:>6.2}",
                r.variant,
                r.phase,
                r.load.offered_rps,
                t.goodput_rps,
                r.success_percent(),
                lat.p50_ms,
                lat.p99_ms,
                lat.p999_ms,
                t.errors.timeout,
                t.errors.http_5xx.values().sum::<u64>(),
                t.errors.shed_by_sidecar,
                r.amplification,
            );
        }
        out
    }

    /// Writes the report as pretty JSON to `<dir>/<name>.json` and returns the path.
    pub fn write_json(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.json", self.name));
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&path, json)?;
        Ok(path)
    }
}
