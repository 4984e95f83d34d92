//! The named scenarios of `cargo xtask scenario <name>`.

use std::time::Duration;

use super::{Expectation, Phase, Scenario, Variant};
use crate::load::{Protocol, RetryPolicy};
use crate::upstream::{ServiceTime, UpstreamConfig};

/// Names of every scenario, in catalog order.
pub const NAMES: &[&str] = &[
    "baseline",
    "overload",
    super::load_shedding::NAME,
    super::retry_storm::NAME,
];

/// Every scenario.
pub fn catalog() -> Vec<Scenario> {
    NAMES.iter().filter_map(|name| by_name(name)).collect()
}

/// The scenario called `name`.
pub fn by_name(name: &str) -> Option<Scenario> {
    match name {
        "baseline" => Some(baseline()),
        "overload" => Some(overload()),
        super::load_shedding::NAME => Some(super::load_shedding::load_shedding()),
        super::retry_storm::NAME => Some(super::retry_storm::retry_storm()),
        _ => None,
    }
}

/// A service with `workers` concurrent workers and a constant service time.
fn service(workers: usize, service_time: Duration) -> UpstreamConfig {
    UpstreamConfig {
        workers,
        service_time: ServiceTime::Constant(service_time),
        ..UpstreamConfig::new("service")
    }
}

/// Bare Envoy proxying at a comfortable load, beside the same load sent straight to the service:
/// the cost of the proxy hop.
fn baseline() -> Scenario {
    Scenario {
        name: "baseline".into(),
        description:
            "1,000 rps over HTTP/1.1 to a 64-worker service (5 ms), direct vs through bare Envoy"
                .into(),
        upstream: service(64, Duration::from_millis(5)),
        protocol: Protocol::Http1,
        connections: 32,
        timeout: Duration::from_secs(1),
        classes: Vec::new(),
        retry: RetryPolicy::default(),
        envoy_concurrency: 2,
        phases: vec![Phase::new("steady", Duration::from_secs(10), 1_000.0)],
        variants: vec![Variant::direct(), Variant::bare_envoy()],
        expectations: vec![Expectation::no_connection_failures(&[
            "direct",
            "bare-envoy",
        ])],
    }
}

/// Bare Envoy in front of a service offered three times its capacity: goodput and latency collapse
/// because the service queues everything and clients time out (the seed outage's first act).
fn overload() -> Scenario {
    // 16 workers x 20 ms = 800 rps of capacity.
    let capacity = 800.0;
    Scenario {
        name: "overload".into(),
        description: "service of 800 rps capacity (16 workers x 20 ms): 0.5x, then 3x, then 0.5x, client timeout 1 s"
            .into(),
        upstream: service(16, Duration::from_millis(20)),
        protocol: Protocol::Http2,
        connections: 16,
        timeout: Duration::from_secs(1),
        classes: Vec::new(),
        retry: RetryPolicy::default(),
        envoy_concurrency: 2,
        phases: vec![
            Phase::new("steady", Duration::from_secs(5), 0.5 * capacity),
            Phase::new("overload", Duration::from_secs(10), 3.0 * capacity),
            Phase::new("recovery", Duration::from_secs(5), 0.5 * capacity),
        ],
        variants: vec![Variant::bare_envoy()],
        // Bare Envoy is expected to collapse here: no expectation beyond running.
        expectations: Vec::new(),
    }
}
