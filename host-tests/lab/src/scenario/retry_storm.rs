//! The `retry-storm` scenario: retries must never multiply an outage. Clients send 200 rps with 3
//! retries and a 200 ms per-try timeout to a 64-worker service (5 ms); the service's latency jumps
//! to 500 ms for 10 s (every attempt times out), then recovers; later 5 % of requests fail with
//! 503 at normal load.
//!
//! Variants (the first three retry in Envoy's router: route `retry_policy` 5xx/reset, 3 retries,
//! 200 ms per try; the client waits up to 1 s):
//! - `no-budget`: Envoy's retries unbounded by any budget;
//! - `envoy-retry-budget`: Envoy's native `retry_budget` (`budget_percent` 20, at least 3
//!   concurrent retries) on the upstream cluster;
//! - `retry-budget-client`: retry_budget.wasm in the client role with the defaults (ratio
//!   0.2, at least 10 retries/s, so a balance capped at 10 tokens);
//! - `retry-budget-server`: no retries in Envoy; the load generator's clients retry on their own
//!   (3 retries, 200 ms per attempt, 10 ms backoff, attempt number in `x-client-attempt`) and
//!   retry_budget.wasm in the server role (same budget) rejects retries past it.
//!
//! Phases: `steady` 3 s healthy, `outage` 10 s of 500 ms latency, `recovery` 2 s healthy (its
//! success rate is the "recovered within 2 s" figure), `transient` 5 s with 5 % 503s (success
//! must stay >= 99.5 %: the budget must not stop useful retries). Read `ampl` (upstream requests
//! per client request) in `outage` for the amplification; the expectations check the targets.

use std::time::Duration;

use envoy_configs::{Percent, RetryBudget, RetryOn, Thresholds};
use http::StatusCode;
use serde_json::json;

use super::{ClientSide, Expectation, Measured, Phase, Scenario, Variant};
use crate::load::{Protocol, RetryPolicy, CLIENT_ATTEMPT_HEADER};
use crate::upstream::{Fault, ServiceTime, UpstreamConfig};

/// Name of the scenario.
pub const NAME: &str = "retry-storm";

/// Offered load, requests per second (well under the lab's ~2,800 rps even at 4x amplification).
const RATE: f64 = 200.0;
/// Timeout of each attempt, in Envoy's router or in the client.
const PER_TRY_TIMEOUT: Duration = Duration::from_millis(200);
/// Retries after the first attempt.
const RETRIES: u32 = 3;

/// Envoy's retry policy of the Envoy-retrying variants.
fn route_retries() -> envoy_configs::RetryPolicy {
    envoy_configs::RetryPolicy::new([RetryOn::FiveXx, RetryOn::Reset], RETRIES)
        .per_try_timeout(PER_TRY_TIMEOUT)
}

/// Our budget's configuration, in `role`: the defaults (ratio 0.2, at least 10 retries/s).
fn budget(role: &str) -> serde_json::Value {
    json!({
        "role": role,
        "max_retries": RETRIES,
        "retry_header": (role == "server").then_some(CLIENT_ATTEMPT_HEADER),
    })
}

/// The scenario (see the module doc).
pub fn retry_storm() -> Scenario {
    let client_retries = ClientSide {
        timeout: PER_TRY_TIMEOUT,
        retry: RetryPolicy {
            max_retries: RETRIES,
            backoff: Duration::from_millis(10),
        },
    };
    Scenario {
        name: NAME.into(),
        description: format!(
            "{RATE:.0} rps, {RETRIES} retries, {} ms per try, to a 64-worker service (5 ms): \
             3 s steady, 10 s of 500 ms latency, 2 s recovery, 5 s of 5 % 503s",
            PER_TRY_TIMEOUT.as_millis()
        ),
        upstream: UpstreamConfig {
            workers: 64,
            service_time: ServiceTime::Constant(Duration::from_millis(5)),
            ..UpstreamConfig::new("service")
        },
        protocol: Protocol::Http2,
        connections: 16,
        // Envoy's four tries of 200 ms fit.
        timeout: Duration::from_secs(1),
        classes: Vec::new(),
        retry: RetryPolicy::default(),
        envoy_concurrency: 2,
        phases: vec![
            Phase::new("steady", Duration::from_secs(3), RATE),
            Phase::new("outage", Duration::from_secs(10), RATE)
                .with_fault(Fault::latency(Duration::from_millis(500))),
            Phase::new("recovery", Duration::from_secs(2), RATE),
            Phase::new("transient", Duration::from_secs(5), RATE)
                .with_fault(Fault::http_error(0.05, StatusCode::SERVICE_UNAVAILABLE)),
        ],
        variants: vec![
            Variant::bare_envoy()
                .named("no-budget")
                .with_route_retries(route_retries()),
            Variant::bare_envoy()
                .named("envoy-retry-budget")
                .with_route_retries(route_retries())
                .with_upstream_thresholds(Thresholds {
                    retry_budget: Some(RetryBudget {
                        budget_percent: Percent { value: 20.0 },
                        min_retry_concurrency: 3,
                    }),
                    ..Thresholds::unlimited()
                }),
            Variant::wasm_filter_configured(
                "retry-budget-client",
                "retry-budget",
                budget("client"),
            )
            .with_route_retries(route_retries()),
            Variant::wasm_filter_configured(
                "retry-budget-server",
                "retry-budget",
                budget("server"),
            )
            .with_client(client_retries),
        ],
        expectations: expectations(),
    }
}

/// Our two variants.
const OURS: [&str; 2] = ["retry-budget-client", "retry-budget-server"];

/// The targets (amplification at most 1.2x and below native's in the outage, success back
/// within the 2 s recovery phase, at least 99.5 % success under 5 % transient errors) and the
/// directions a smoke run shows (less amplification than no budget).
fn expectations() -> Vec<Expectation> {
    let mut expectations = vec![
        Expectation::lower_amplification("outage", OURS[0], "no-budget"),
        Expectation::lower_amplification("outage", OURS[1], "no-budget"),
    ];
    for variant in OURS {
        expectations.push(Expectation::target(
            format!("outage: {variant} amplifies less than Envoy's native retry_budget"),
            move |report| {
                let ours = report.result(variant, "outage")?.amplification;
                let native = report.result("envoy-retry-budget", "outage")?.amplification;
                Some(Measured {
                    holds: ours < native,
                    figures: format!("{ours:.3}x vs {native:.3}x"),
                })
            },
        ));
        expectations.push(Expectation::target(
            format!("outage: {variant} amplification <= 1.2x"),
            move |report| {
                let amplification = report.result(variant, "outage")?.amplification;
                Some(Measured {
                    holds: amplification <= 1.2,
                    figures: format!("{amplification:.3}x"),
                })
            },
        ));
        expectations.push(success_target(variant, "recovery", 99.0));
        expectations.push(success_target(variant, "transient", 99.5));
    }
    expectations
}

/// In `phase`, `variant`'s client-visible success is at least `percent`.
fn success_target(variant: &'static str, phase: &'static str, percent: f64) -> Expectation {
    Expectation::target(
        format!("{phase}: {variant} success >= {percent} %"),
        move |report| {
            let success = report.result(variant, phase)?.success_percent();
            Some(Measured {
                holds: success >= percent,
                figures: format!("{success:.2} %"),
            })
        },
    )
}
