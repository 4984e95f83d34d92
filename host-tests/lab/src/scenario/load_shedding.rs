//! The `load-shedding` scenario: load_shedder.wasm (default configuration) beside bare Envoy and
//! Envoy's native adaptive concurrency filter, in front of a service of 32 concurrent workers at
//! 10 ms (3,200 rps of capacity), client timeout 1 s, 20 % of requests `critical` and 80 %
//! `sheddable` (`x-request-criticality`).
//!
//! Phases, each its own load run (the next starts once the previous one's requests finished):
//! - `unloaded`: 0.5x capacity for 5 s, the reference p99;
//! - `overload`: 3x capacity for 20 s; the overload and criticality scenarios in one
//!   run, because the scenario framework fixes the request classes per scenario: read totals for
//!   goodput and p99 of admitted requests, the `critical` class for critical success;
//! - `stall`: 1.5x capacity while the service stalls every request for the phase's 2 s (the stall
//!   is lifted when the next phase starts, i.e. once the stalled requests timed out);
//! - `recovery`: 1.5x capacity for 3 s right after the stall (its p99 is the "back to normal
//!   within 3 s" figure), then `after`: 1.5x for 5 s more.

use std::time::Duration;

use super::{Phase, Scenario, Variant};
use crate::load::{Protocol, RequestClass, RetryPolicy};
use crate::upstream::{Fault, ServiceTime, UpstreamConfig};

/// Name of the scenario.
pub const NAME: &str = "load-shedding";

/// Concurrent requests the service serves.
const SERVICE_WORKERS: usize = 32;
/// Time each request holds a service worker.
const SERVICE_TIME: Duration = Duration::from_millis(10);

/// The scenario (see the module doc).
pub fn load_shedding() -> Scenario {
    let capacity = SERVICE_WORKERS as f64 / SERVICE_TIME.as_secs_f64();
    Scenario {
        name: NAME.into(),
        description: format!(
            "service of {capacity:.0} rps capacity ({SERVICE_WORKERS} workers x {} ms), 20 % critical / 80 % sheddable: \
             0.5x, 3x for 20 s, 1.5x with a 2 s stall, 1.5x recovery; client timeout 1 s",
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
            Phase::new("stall", Duration::from_secs(2), 1.5 * capacity).with_fault(Fault::stall()),
            Phase::new("recovery", Duration::from_secs(3), 1.5 * capacity),
            Phase::new("after", Duration::from_secs(5), 1.5 * capacity),
        ],
        variants: vec![
            Variant::bare_envoy(),
            Variant::native_adaptive_concurrency(),
            Variant::wasm_filter("load-shedder", "load-shedder"),
        ],
        expectations: Vec::new(),
    }
}
