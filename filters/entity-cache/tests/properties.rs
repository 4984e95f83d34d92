//! Property tests: matching and classification on arbitrary bytes never panic and agree with a
//! plain reading of the rules; the breaker in virtual time never leaves its documented phases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use entity_cache::config::BreakerConfig;
use entity_cache::policy::{
    classify, Breaker, BreakerState, CacheResponse, Matcher, Pattern, Phase, Transition,
};
use meshkit::clock::Timestamp;
use meshkit::config::{DurationMs, Fraction};
use meshkit::kit::Outcome;
use meshkit::shared::SharedValue;
use proptest::prelude::*;
use std::time::Duration;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn outcome() -> impl Strategy<Value = Option<Outcome>> {
    proptest::option::of(prop_oneof![
        Just(Outcome::Success),
        Just(Outcome::Error),
        Just(Outcome::Reset),
        Just(Outcome::LocalReply),
    ])
}

proptest! {
    #[test]
    fn matching_arbitrary_bytes_never_panics_and_follows_the_rules(
        path in bytes(64),
        method in bytes(8),
        grpc in any::<bool>(),
    ) {
        let matcher = Matcher::new(vec![
            Pattern::grpc("a.B/Get"),
            Pattern::grpc("a.C/*"),
            Pattern::Http { method: None, path_prefix: b"/x/".to_vec() },
        ]);
        let found = matcher.find(&path, &method, grpc);
        let exact = grpc && path == b"/a.B/Get";
        let service = grpc
            && path.starts_with(b"/a.C/")
            && path.len() > 5
            && !path[5..].iter().any(|b| b"/?#".contains(b));
        let http = (method == b"GET" || method == b"HEAD") && path.starts_with(b"/x/");
        let expected = if exact { Some(0) } else if service { Some(1) } else if http { Some(2) } else { None };
        prop_assert_eq!(found, expected);
    }

    #[test]
    fn every_method_of_a_service_rule_matches(method in "[A-Za-z0-9_]{1,20}") {
        let matcher = Matcher::new(vec![Pattern::grpc("pkg.Svc/*")]);
        let path = format!("/pkg.Svc/{method}");
        prop_assert_eq!(matcher.find(path.as_bytes(), b"POST", true), Some(0));
        let exact = Matcher::new(vec![Pattern::grpc(&format!("pkg.Svc/{method}"))]);
        prop_assert_eq!(exact.find(path.as_bytes(), b"POST", true), Some(0));
        prop_assert_eq!(exact.find(format!("{path}x").as_bytes(), b"POST", true), None);
    }

    #[test]
    fn classifying_arbitrary_bytes_never_panics(
        status in proptest::option::of(bytes(8)),
        grpc_status in proptest::option::of(bytes(8)),
        attempt_count in proptest::option::of(bytes(8)),
        code_details in proptest::option::of(bytes(40)),
        outcome in outcome(),
        latency_ms in 0u64..5_000,
    ) {
        let response = CacheResponse {
            outcome,
            status: status.as_deref(),
            grpc_status: grpc_status.as_deref(),
            attempt_count: attempt_count.as_deref(),
            code_details: code_details.as_deref(),
            latency: Duration::from_millis(latency_ms),
        };
        let _ = classify(&response, Some(Duration::from_millis(100)));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(raw in bytes(200)) {
        if let Ok(state) = BreakerState::decode(&raw) {
            prop_assert_eq!(BreakerState::decode(&state.encode()).unwrap(), state);
        }
    }

    /// Outcomes at random times: the breaker opens only on a failure, closes only after a
    /// cool-down and only on a success, counts nothing beyond the window, and is open exactly
    /// for the cool-down after each opening.
    #[test]
    fn breaker_transitions_in_virtual_time(
        events in proptest::collection::vec((0u64..400, any::<bool>()), 1..300),
        consecutive in 1u32..6,
        min_requests in 1u32..20,
    ) {
        let breaker = Breaker::new(&BreakerConfig {
            window_ms: DurationMs(1_000),
            min_requests,
            error_rate: Fraction::new(0.5).unwrap(),
            consecutive_failures: consecutive,
            latency_threshold_ms: None,
            cool_down_ms: DurationMs(1_000),
            half_open_share: Fraction::new(0.5).unwrap(),
            successes_to_close: 2,
        });
        let mut state = BreakerState::new(&breaker, Timestamp::EPOCH);
        let mut now = 0u64;
        let mut opened_at: Option<u64> = None;
        let mut run = 0u32;
        for (step, failure) in events {
            now += step;
            let at = Timestamp::from_millis(now);
            let before = state.phase(&breaker, at);
            if let Some(opened) = opened_at {
                let expected = if now >= opened + 1_000 { Phase::HalfOpen } else { Phase::Open };
                prop_assert_eq!(before, expected);
            } else {
                prop_assert_eq!(before, Phase::Closed);
            }
            let (requests, _) = state.window(&breaker, at);
            prop_assert!(requests <= 300);
            run = if before == Phase::Closed && failure { run + 1 } else if before == Phase::Closed { 0 } else { run };
            match state.record(&breaker, at, failure) {
                Transition::Opened => {
                    prop_assert!(failure);
                    prop_assert_ne!(before, Phase::Open);
                    opened_at = Some(now);
                    run = 0;
                }
                Transition::Closed => {
                    prop_assert!(!failure);
                    prop_assert_eq!(before, Phase::HalfOpen);
                    opened_at = None;
                }
                Transition::None => {
                    if before == Phase::Closed {
                        prop_assert!(run < consecutive, "{} failures in a row stayed closed", run);
                    }
                    if before == Phase::HalfOpen {
                        prop_assert!(!failure, "a failed probe reopens");
                    }
                }
            }
            prop_assert_eq!(BreakerState::decode(&state.encode()).unwrap(), state.clone());
        }
    }
}
