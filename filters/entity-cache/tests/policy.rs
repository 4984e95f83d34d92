//! The pure core: rule matching, the classification of cache responses, and the breaker's
//! transitions in virtual time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use entity_cache::config::BreakerConfig;
use entity_cache::policy::{
    classify, Breaker, BreakerState, CacheResponse, Destination, ErrorClass, Matcher, Observation,
    Pattern, Phase, ProbeGate, Transition,
};
use meshkit::clock::Timestamp;
use meshkit::config::{DurationMs, Fraction};
use meshkit::grpc::GrpcStatus;
use meshkit::kit::Outcome;
use meshkit::shared::SharedValue;
use std::time::Duration;

fn matcher() -> Matcher {
    Matcher::new(vec![
        Pattern::grpc("users.Users/GetUser"),
        Pattern::grpc("catalog.Catalog/*"),
        Pattern::Http {
            method: None,
            path_prefix: b"/v1/items/".to_vec(),
        },
        Pattern::Http {
            method: Some(b"PUT".to_vec()),
            path_prefix: b"/v1/idempotent/".to_vec(),
        },
    ])
}

#[test]
fn grpc_rules_match_exact_methods_and_whole_services_of_grpc_requests_only() {
    let m = matcher();
    assert_eq!(m.find(b"/users.Users/GetUser", b"POST", true), Some(0));
    assert_eq!(m.find(b"/users.Users/DeleteUser", b"POST", true), None);
    assert_eq!(m.find(b"/users.Users/GetUserX", b"POST", true), None);
    assert_eq!(m.find(b"/users.UsersX/GetUser", b"POST", true), None);
    assert_eq!(
        m.find(b"/catalog.Catalog/GetProduct", b"POST", true),
        Some(1)
    );
    assert_eq!(m.find(b"/catalog.Catalog/", b"POST", true), None);
    assert_eq!(m.find(b"/catalog.Catalog/A/B", b"POST", true), None);
    assert_eq!(m.find(b"/catalog.CatalogAdmin/Get", b"POST", true), None);
    // Not gRPC (content-type): gRPC rules do not apply.
    assert_eq!(m.find(b"/users.Users/GetUser", b"POST", false), None);
}

#[test]
fn http_rules_match_a_prefix_and_a_method() {
    let m = matcher();
    assert_eq!(m.find(b"/v1/items/7", b"GET", false), Some(2));
    assert_eq!(m.find(b"/v1/items/7", b"HEAD", false), Some(2));
    assert_eq!(m.find(b"/v1/items/7", b"POST", false), None);
    assert_eq!(m.find(b"/v1/items", b"GET", false), None);
    assert_eq!(m.find(b"/v1/idempotent/1", b"PUT", false), Some(3));
    assert_eq!(m.find(b"/v1/idempotent/1", b"GET", false), None);
    assert_eq!(m.find(b"", b"", false), None);
}

fn response(status: &'static [u8]) -> CacheResponse<'static> {
    CacheResponse {
        outcome: Some(Outcome::Success),
        status: Some(status),
        ..CacheResponse::default()
    }
}

#[test]
fn degraded_grpc_statuses_fail_from_headers_or_trailers_alike() {
    for (code, class) in [
        (&b"14"[..], GrpcStatus::Unavailable),
        (b"4", GrpcStatus::DeadlineExceeded),
        (b"13", GrpcStatus::Internal),
        (b"2", GrpcStatus::Unknown),
        (b"8", GrpcStatus::ResourceExhausted),
    ] {
        let r = CacheResponse {
            grpc_status: Some(code),
            outcome: Some(Outcome::Error),
            ..response(b"200")
        };
        assert_eq!(
            classify(&r, None),
            Observation::Failure(ErrorClass::Grpc(class))
        );
    }
    for fine in [&b"0"[..], b"5", b"3", b"7"] {
        let r = CacheResponse {
            grpc_status: Some(fine),
            ..response(b"200")
        };
        assert_eq!(classify(&r, None), Observation::Success, "{fine:?}");
    }
}

#[test]
fn http_errors_envoy_replies_and_resets_are_classified() {
    assert_eq!(
        classify(&response(b"503"), None),
        Observation::Failure(ErrorClass::Status5xx)
    );
    assert_eq!(classify(&response(b"404"), None), Observation::Success);
    let local = |details: &'static [u8]| CacheResponse {
        outcome: Some(Outcome::LocalReply),
        code_details: Some(details),
        ..response(b"503")
    };
    assert_eq!(
        classify(&local(b"upstream_response_timeout"), None),
        Observation::Failure(ErrorClass::Timeout)
    );
    assert_eq!(
        classify(
            &local(b"upstream_reset_before_response_started{connection_failure}"),
            None
        ),
        Observation::Failure(ErrorClass::ConnectFailure)
    );
    assert_eq!(
        classify(&local(b"no_healthy_upstream"), None),
        Observation::Failure(ErrorClass::ConnectFailure)
    );
    // A reply another filter made says nothing about the cache.
    assert_eq!(
        classify(&local(b"wasm_fail_stream"), None),
        Observation::Neutral
    );
    let reset = |details: Option<&'static [u8]>| CacheResponse {
        outcome: Some(Outcome::Reset),
        code_details: details,
        ..CacheResponse::default()
    };
    assert_eq!(
        classify(&reset(None), None),
        Observation::Failure(ErrorClass::Reset)
    );
    assert_eq!(
        classify(&reset(Some(b"downstream_remote_disconnect")), None),
        Observation::Neutral
    );
}

#[test]
fn a_retried_call_is_a_failed_cache_attempt_and_slow_successes_fail() {
    let retried = CacheResponse {
        attempt_count: Some(b"2"),
        ..response(b"200")
    };
    assert_eq!(
        classify(&retried, None),
        Observation::Failure(ErrorClass::Retried)
    );
    let first = CacheResponse {
        attempt_count: Some(b"1"),
        latency: Duration::from_millis(250),
        ..response(b"200")
    };
    let threshold = Some(Duration::from_millis(200));
    assert_eq!(
        classify(&first, threshold),
        Observation::Failure(ErrorClass::Slow)
    );
    assert_eq!(classify(&first, None), Observation::Success);
    assert_eq!(
        classify(&first, Some(Duration::from_millis(300))),
        Observation::Success
    );
}

fn breaker() -> Breaker {
    Breaker::new(&BreakerConfig {
        window_ms: DurationMs(1_000),
        min_requests: 10,
        error_rate: Fraction::new(0.5).unwrap(),
        consecutive_failures: 3,
        latency_threshold_ms: None,
        cool_down_ms: DurationMs(2_000),
        half_open_share: Fraction::new(0.25).unwrap(),
        successes_to_close: 2,
    })
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

#[test]
fn consecutive_failures_open_and_a_success_resets_the_run() {
    let b = breaker();
    let mut s = BreakerState::new(&b, at(0));
    assert_eq!(s.record(&b, at(1), true), Transition::None);
    assert_eq!(s.record(&b, at(2), true), Transition::None);
    assert_eq!(s.record(&b, at(3), false), Transition::None);
    assert_eq!(s.record(&b, at(4), true), Transition::None);
    assert_eq!(s.record(&b, at(5), true), Transition::None);
    assert_eq!(s.phase(&b, at(5)), Phase::Closed);
    assert_eq!(s.record(&b, at(6), true), Transition::Opened);
    assert_eq!(s.phase(&b, at(6)), Phase::Open);
    // Outcomes of calls sent before it opened change nothing.
    assert_eq!(s.record(&b, at(7), true), Transition::None);
    assert_eq!(s.record(&b, at(8), false), Transition::None);
    assert_eq!(s.phase(&b, at(2_005)), Phase::Open);
    assert_eq!(s.phase(&b, at(2_006)), Phase::HalfOpen);
}

#[test]
fn the_error_rate_opens_only_above_the_minimum_volume() {
    let b = breaker();
    let mut s = BreakerState::new(&b, at(0));
    // Alternating failures never make 3 in a row; 5 of 9 is above 50 % but below the volume.
    for i in 0..9 {
        assert_eq!(s.record(&b, at(i), i % 2 == 0), Transition::None, "{i}");
    }
    assert_eq!(s.window(&b, at(9)), (9, 5));
    // The tenth: 5 of 10 is not above 50 %.
    assert_eq!(s.record(&b, at(9), false), Transition::None);
    assert_eq!(s.record(&b, at(10), true), Transition::Opened);
}

#[test]
fn the_window_forgets_old_outcomes() {
    let b = breaker();
    let mut s = BreakerState::new(&b, at(0));
    for i in 0..9 {
        s.record(&b, at(i), i % 2 == 0);
    }
    assert_eq!(s.window(&b, at(999)), (9, 5));
    assert_eq!(
        s.window(&b, at(1_000)),
        (0, 0),
        "one window later, all expired"
    );
    // A failure after the window: 1 of 1, below the volume; the old ones do not count.
    assert_eq!(s.record(&b, at(1_500), true), Transition::None);
    assert_eq!(s.window(&b, at(1_500)), (1, 1));
}

#[test]
fn half_open_probes_close_on_enough_successes_and_reopen_on_a_failure() {
    let b = breaker();
    let mut s = BreakerState::new(&b, at(0));
    for i in 0..3 {
        s.record(&b, at(i), true);
    }
    assert_eq!(s.phase(&b, at(2)), Phase::Open);
    // After the cool-down: a failed probe opens it again, from then.
    assert_eq!(s.phase(&b, at(2_002)), Phase::HalfOpen);
    assert_eq!(s.record(&b, at(2_100), true), Transition::Opened);
    assert_eq!(s.phase(&b, at(4_099)), Phase::Open);
    assert_eq!(s.phase(&b, at(4_100)), Phase::HalfOpen);
    assert_eq!(s.record(&b, at(4_200), false), Transition::None);
    assert_eq!(s.record(&b, at(4_300), false), Transition::Closed);
    assert_eq!(s.phase(&b, at(4_300)), Phase::Closed);
    assert_eq!(
        s.window(&b, at(4_300)),
        (0, 0),
        "closing starts an empty window"
    );
    // The failure run starts afresh too.
    s.record(&b, at(4_301), true);
    s.record(&b, at(4_302), true);
    assert_eq!(s.phase(&b, at(4_303)), Phase::Closed);
}

#[test]
fn the_probe_gate_lets_the_share_through_only_when_half_open() {
    let mut gate = ProbeGate::default();
    assert_eq!(
        gate.route(Phase::Closed, 0.25),
        Destination::Cache { probe: false }
    );
    assert_eq!(gate.route(Phase::Open, 0.25), Destination::Origin);
    let probes = (0..100)
        .filter(|_| gate.route(Phase::HalfOpen, 0.25) != Destination::Origin)
        .count();
    assert_eq!(probes, 25);
    assert_eq!(
        gate.route(Phase::HalfOpen, 1.0),
        Destination::Cache { probe: true }
    );
}

#[test]
fn the_state_round_trips_and_garbage_is_an_error() {
    let b = breaker();
    let mut s = BreakerState::new(&b, at(0));
    for i in 0..3 {
        s.record(&b, at(i * 300), i != 1);
    }
    assert_eq!(BreakerState::decode(&s.encode()).unwrap(), s);
    assert!(BreakerState::decode(b"").is_err());
    assert!(BreakerState::decode(&s.encode()[1..]).is_err());
    let mut bad_flag = s.encode();
    bad_flag[0] = 7;
    assert!(BreakerState::decode(&bad_flag).is_err());
    let mut longer = s.encode();
    longer.push(0);
    assert!(BreakerState::decode(&longer).is_err());
}
