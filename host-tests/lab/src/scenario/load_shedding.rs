//! The `load-shedding` scenario: load_shedder.wasm (default configuration) beside bare Envoy and
//! Envoy's native adaptive concurrency filter, in front of a service of 16 concurrent workers at
//! 25 ms (640 rps of capacity: even 3x of it stays under the lab's ~2,800 rps ceiling through
//! Envoy on two cores, so the algorithms, not the machine, set the figures), client timeout 1 s,
//! 20 % of requests `critical` and 80 % `sheddable` (`x-request-criticality`).
//!
//! Phases, each its own load run (the next starts once the previous one's requests finished):
//! - `unloaded`: 0.5x capacity for 5 s: nothing may be shed;
//! - `overload`: 3x capacity, open loop, for 20 s: goodput and p99 of admitted requests;
//! - `flood`: 100 closed-loop clients (20 critical, 80 sheddable) for 10 s, each resending the
//!   moment its previous request ended: refused clients come straight back, as in a retry storm
//!   (and as `hey -c` in the demo's guide), so the proxy is busy answering refusals;
//! - `stall`: 1.5x capacity while the service stalls every request for the phase's 2 s (the stall
//!   is lifted when the next phase starts, i.e. once the stalled requests timed out);
//! - `recovery`: 1.5x capacity for 3 s right after the stall (its p99 is the "back to normal
//!   within 3 s" figure), then `after`: 1.5x for 5 s more.
//!
//! Expectations: the targets of the load-shedder issue (flood: critical success of at least 99 % and
//! goodput at least native adaptive concurrency's; 3x: goodput of at least 90 % of capacity; unloaded:
//! nothing shed) and, in smoke runs too, the directions (nothing shed unloaded, sheds in overload, critical served
//! above sheddable, no connection failures).

use std::time::Duration;

use super::{Expectation, Measured, Phase, Scenario, ScenarioReport, Variant};
use crate::load::{Protocol, RequestClass, RetryPolicy};
use crate::upstream::{Fault, ServiceTime, UpstreamConfig};

/// Name of the scenario.
pub const NAME: &str = "load-shedding";

/// Concurrent requests the service serves.
const SERVICE_WORKERS: usize = 16;
/// Time each request holds a service worker.
const SERVICE_TIME: Duration = Duration::from_millis(25);
/// Closed-loop clients of the flood phase.
const FLOOD_CLIENTS: usize = 100;
/// Our variant's name.
const OURS: &str = "load-shedder";
/// Envoy's native alternative's variant name.
const NATIVE: &str = "envoy-adaptive-concurrency";

/// The scenario (see the module doc).
pub fn load_shedding() -> Scenario {
    let capacity = SERVICE_WORKERS as f64 / SERVICE_TIME.as_secs_f64();
    Scenario {
        name: NAME.into(),
        description: format!(
            "service of {capacity:.0} rps capacity ({SERVICE_WORKERS} workers x {} ms), 20 % critical / 80 % sheddable: \
             0.5x, 3x for 20 s, a {FLOOD_CLIENTS}-client closed-loop flood for 10 s, 1.5x with a 2 s stall, \
             1.5x recovery; client timeout 1 s",
            SERVICE_TIME.as_millis()
        ),
        upstream: UpstreamConfig {
            workers: SERVICE_WORKERS,
            service_time: ServiceTime::Constant(SERVICE_TIME),
            ..UpstreamConfig::new("service")
        },
        protocol: Protocol::Http2,
        connections: 16,
        timeout: Duration::from_secs(1),
        classes: vec![
            RequestClass::new("critical", 1, &[("x-request-criticality", "critical")]),
            RequestClass::new("sheddable", 4, &[("x-request-criticality", "sheddable")]),
        ],
        retry: RetryPolicy::default(),
        envoy_concurrency: 2,
        phases: vec![
            Phase::new("unloaded", Duration::from_secs(5), 0.5 * capacity),
            Phase::new("overload", Duration::from_secs(20), 3.0 * capacity),
            Phase::closed_loop("flood", Duration::from_secs(10), FLOOD_CLIENTS),
            Phase::new("stall", Duration::from_secs(2), 1.5 * capacity).with_fault(Fault::stall()),
            Phase::new("recovery", Duration::from_secs(3), 1.5 * capacity),
            Phase::new("after", Duration::from_secs(5), 1.5 * capacity),
        ],
        variants: vec![
            Variant::bare_envoy(),
            Variant::native_adaptive_concurrency(),
            Variant::wasm_filter(OURS, "load-shedder"),
        ],
        expectations: expectations(capacity),
    }
}

fn expectations(capacity: f64) -> Vec<Expectation> {
    vec![
        Expectation::direction("unloaded: load-shedder sheds nothing", |report| {
            let shed = report
                .result(OURS, "unloaded")?
                .load
                .totals
                .errors
                .shed_by_sidecar;
            Some(Measured {
                holds: shed == 0,
                figures: format!("{shed} shed"),
            })
        }),
        Expectation::direction("overload (3x): load-shedder sheds", |report| {
            let shed = report
                .result(OURS, "overload")?
                .load
                .totals
                .errors
                .shed_by_sidecar;
            Some(Measured {
                holds: shed > 0,
                figures: format!("{shed} shed"),
            })
        }),
        Expectation::direction(
            "overload (3x) and flood: load-shedder serves critical above sheddable",
            |report| {
                let mut figures = Vec::new();
                let mut holds = true;
                for phase in ["overload", "flood"] {
                    let row = report.result(OURS, phase)?;
                    let critical = row.class_success_percent("critical")?;
                    let sheddable = row.class_success_percent("sheddable")?;
                    holds &= critical >= sheddable;
                    figures.push(format!(
                        "{phase}: critical {critical:.1} % vs sheddable {sheddable:.1} %"
                    ));
                }
                Some(Measured {
                    holds,
                    figures: figures.join(", "),
                })
            },
        ),
        Expectation::no_connection_failures(&[OURS]),
        Expectation::target("flood: load-shedder critical success >= 99 %", |report| {
            let critical = report
                .result(OURS, "flood")?
                .class_success_percent("critical")?;
            Some(Measured {
                holds: critical >= 99.0,
                figures: format!("{critical:.2} %"),
            })
        }),
        Expectation::target(
            "flood: load-shedder goodput >= native adaptive concurrency's",
            |report| goodput_at_least_native(report, "flood"),
        ),
        Expectation::target(
            "overload (3x): load-shedder goodput >= 90 % of capacity",
            move |report| {
                let goodput = report.result(OURS, "overload")?.load.totals.goodput_rps;
                Some(Measured {
                    holds: goodput >= 0.9 * capacity,
                    figures: format!(
                        "{goodput:.0} rps = {:.0} % of {capacity:.0}",
                        100.0 * goodput / capacity
                    ),
                })
            },
        ),
    ]
}

fn goodput_at_least_native(report: &ScenarioReport, phase: &str) -> Option<Measured> {
    let ours = report.result(OURS, phase)?.load.totals.goodput_rps;
    let native = report.result(NATIVE, phase)?.load.totals.goodput_rps;
    Some(Measured {
        holds: ours >= native,
        figures: format!("{ours:.0} rps vs native {native:.0} rps"),
    })
}
