//! The outcome of a scenario run: one row per variant and phase, as a table and as JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Expectation, Measured};
use crate::load::{LoadReport, OutcomeStats};
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
        success_percent(&self.load.totals)
    }

    /// Share of the sent requests of class `class` that succeeded, in percent (`None`: no such class).
    pub fn class_success_percent(&self, class: &str) -> Option<f64> {
        self.load.classes.get(class).map(success_percent)
    }
}

fn success_percent(stats: &OutcomeStats) -> f64 {
    match stats.requests - stats.errors.client_dropped {
        0 => 0.0,
        sent => 100.0 * stats.successes as f64 / sent as f64,
    }
}

/// How one expectation fared in a run.
#[derive(Debug, Clone, Serialize)]
pub struct ExpectationResult {
    /// What was expected.
    pub description: String,
    /// Whether it must hold in smoke runs too.
    pub in_smoke: bool,
    /// Whether it held.
    pub holds: bool,
    /// The figures compared, or why they could not be read.
    pub figures: String,
}

impl ExpectationResult {
    /// Checks `expectation` against `report`; a missing row counts as not held.
    pub fn of(expectation: &Expectation, report: &ScenarioReport) -> Self {
        let Measured { holds, figures } = (expectation.check)(report).unwrap_or(Measured {
            holds: false,
            figures: "a row it needs is missing".into(),
        });
        Self {
            description: expectation.description.clone(),
            in_smoke: expectation.in_smoke,
            holds,
            figures,
        }
    }
}

/// One scenario run: its rows, the scenario parameters its table names (`P`, flattened into the
/// JSON), and its expectations as the run met them. Every scenario's report is one of these.
#[derive(Debug, Clone, Serialize)]
pub struct Report<R, P = NoParameters> {
    /// Scenario name.
    pub name: String,
    /// What the scenario shows.
    pub description: String,
    /// True for a smoke run, whose figures mean nothing.
    pub smoke: bool,
    /// The scenario's parameters the table and the targets refer to.
    #[serde(flatten)]
    pub parameters: P,
    /// One row per variant (and phase), in run order.
    pub results: Vec<R>,
    /// The scenario's expectations as this run met them.
    pub expectations: Vec<ExpectationResult>,
}

/// A report without parameters of its own.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct NoParameters {}

impl<R: Serialize, P: Serialize> Report<R, P> {
    /// The expectations that must hold in this kind of run (all in a full run, the directions in
    /// a smoke run) and did not.
    pub fn missed(&self) -> Vec<&ExpectationResult> {
        self.expectations
            .iter()
            .filter(|e| !e.holds && (e.in_smoke || !self.smoke))
            .collect()
    }

    /// Writes the report as pretty JSON to `<dir>/<name>.json` and returns the path.
    pub fn write_json(&self, dir: &Path) -> std::io::Result<PathBuf> {
        write_json(dir, &self.name, self)
    }

    /// The first line of the table.
    pub(crate) fn heading(&self) -> String {
        let smoke = if self.smoke { " (smoke run)" } else { "" };
        format!("scenario {}{smoke}: {}\n", self.name, self.description)
    }

    /// Ends the table with one line per expectation: held, missed, or not applicable (a target
    /// in a smoke run).
    pub(crate) fn write_expectations(&self, out: &mut String) {
        for e in &self.expectations {
            let verdict = match (e.holds, self.smoke && !e.in_smoke) {
                (true, _) => "held",
                (false, true) => "n/a (smoke)",
                (false, false) => "MISSED",
            };
            let _ = writeln!(out, "  [{verdict}] {}: {}", e.description, e.figures);
        }
    }
}

/// All rows of one load-shaped scenario run.
pub type ScenarioReport = Report<PhaseResult>;

impl ScenarioReport {
    /// The row of `variant` in `phase`.
    pub fn result(&self, variant: &str, phase: &str) -> Option<&PhaseResult> {
        self.results
            .iter()
            .find(|r| r.variant == variant && r.phase == phase)
    }

    /// A fixed-width table: offered and achieved load, goodput, success, latency of successes, errors,
    /// success per request class; then each expectation, held or missed.
    pub fn table(&self) -> String {
        let mut out = self.heading();
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
            let classes: Vec<String> = r
                .load
                .classes
                .iter()
                .map(|(name, stats)| format!("{name} {:.1}", success_percent(stats)))
                .collect();
            if r.load.classes.len() > 1 {
                let _ = writeln!(out, "{:>40}{}", "", classes.join("  "));
            }
        }
        self.write_expectations(&mut out);
        out
    }
}

/// Writes `report` as pretty JSON to `<dir>/<name>.json` and returns the path.
pub(crate) fn write_json(
    dir: &Path,
    name: &str,
    report: &impl Serialize,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.json"));
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(&path, json)?;
    Ok(path)
}
