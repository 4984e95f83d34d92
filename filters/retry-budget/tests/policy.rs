//! The pure budget: deposits, withdrawals, reserve and refund, expiry, pushback, the server
//! role's admission, the shared-data encoding, and the parsers of attempt counts and pushback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshkit::clock::Timestamp;
use meshkit::config::load_config;
use meshkit::shared::SharedValue;
use retry_budget::config::RetryBudgetConfig;
use retry_budget::policy::{
    is_shed, parse_count, parse_grpc_pushback, parse_retry_after, pushback, Budget, BudgetState,
    PushbackLimits, PushbackSignals, Reservation,
};
use std::time::Duration;

const SECOND: u64 = 1_000_000_000;

fn budget(json: &str) -> Budget {
    Budget::new(&load_config::<RetryBudgetConfig>(Some(json.as_bytes())).unwrap())
}

fn at_ms(millis: u64) -> Timestamp {
    Timestamp::from_millis(millis)
}

#[test]
fn an_empty_budget_holds_the_per_second_minimum_over_the_ttl() {
    let budget = budget("{}");
    let state = BudgetState::new(&budget, b"payments", at_ms(0));
    assert_eq!(budget.reserve_tokens(), 100, "10 retries/s over 10 s");
    assert_eq!(state.available(&budget, at_ms(0)), 100);
    assert_eq!(state.owner(), b"payments");
}

#[test]
fn first_attempts_deposit_the_ratio_and_retries_withdraw_one() {
    let budget = budget(r#"{"min_retries_per_second": 0, "ratio": 0.2}"#);
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    for _ in 0..14 {
        state.first_attempt(&budget, at_ms(10));
    }
    assert_eq!(state.balance_milli(&budget, at_ms(10)), 2_800);
    assert_eq!(state.available(&budget, at_ms(10)), 2, "whole tokens only");
    assert!(state.admit_retry(&budget, at_ms(20)));
    assert!(state.admit_retry(&budget, at_ms(20)));
    assert!(
        !state.admit_retry(&budget, at_ms(20)),
        "0.8 of a token left"
    );
    assert_eq!(state.balance_milli(&budget, at_ms(20)), 800);
}

#[test]
fn a_reservation_is_capped_by_max_retries_and_by_the_balance() {
    let budget = budget(r#"{"min_retries_per_second": 0, "ratio": 1, "max_retries": 3}"#);
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    let first = state.reserve(&budget, at_ms(0));
    assert_eq!(first.retries, 1, "its own deposit is all there is");
    for _ in 0..10 {
        state.first_attempt(&budget, at_ms(0));
    }
    assert_eq!(state.reserve(&budget, at_ms(0)).retries, 3);
    // Twelve deposits (both reservations made one), four withdrawals.
    assert_eq!(state.available(&budget, at_ms(0)), 12 - 1 - 3);
}

#[test]
fn unused_reserved_retries_are_refunded_and_used_ones_stay_spent() {
    let budget = budget(r#"{"min_retries_per_second": 1, "ratio": 0}"#);
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    let reservation = state.reserve(&budget, at_ms(0));
    assert_eq!(reservation.retries, 3);
    assert_eq!(state.available(&budget, at_ms(0)), 7);
    state.refund(&budget, at_ms(500), reservation.settle(1));
    assert_eq!(state.available(&budget, at_ms(500)), 9);
    // More retries than reserved counts as all of them; nothing is refunded twice.
    assert_eq!(reservation.settle(7).retries, 0);
}

#[test]
fn a_refund_into_an_expired_bucket_gives_nothing_back() {
    let budget = budget(r#"{"min_retries_per_second": 1, "ratio": 0, "ttl_ms": 1000}"#);
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    let reservation = state.reserve(&budget, at_ms(0));
    assert_eq!(reservation.retries, 1);
    state.refund(&budget, at_ms(1_000), reservation.settle(0));
    assert_eq!(state.balance_milli(&budget, at_ms(1_000)), 1_000);
    // A refund never lifts withdrawals below zero.
    state.refund(
        &budget,
        at_ms(1_000),
        Reservation {
            bucket: 10,
            retries: 5,
        }
        .settle(0),
    );
    assert_eq!(state.balance_milli(&budget, at_ms(1_000)), 1_000);
}

#[test]
fn deposits_and_withdrawals_expire_a_bucket_at_a_time_after_the_ttl() {
    let budget = budget(r#"{"min_retries_per_second": 0, "ratio": 1, "ttl_ms": 10000}"#);
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    for second in 0..10 {
        state.first_attempt(&budget, at_ms(second * 1_000));
    }
    assert_eq!(state.available(&budget, at_ms(9_999)), 10);
    assert_eq!(state.available(&budget, at_ms(10_000)), 9);
    assert_eq!(state.available(&budget, at_ms(15_500)), 4);
    // The last deposit, at 9 s, counts until exactly one ttl later.
    assert_eq!(state.available(&budget, at_ms(18_999)), 1);
    assert_eq!(state.available(&budget, at_ms(19_000)), 0);
    assert!(state.is_idle(&budget, at_ms(19_000)));
    assert!(!state.is_idle(&budget, at_ms(18_999)));
}

#[test]
fn withdrawals_outliving_their_deposits_never_make_the_budget_spendable_below_zero() {
    let budget =
        budget(r#"{"min_retries_per_second": 0, "ratio": 1, "ttl_ms": 2000, "buckets": 2}"#);
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    for _ in 0..5 {
        state.first_attempt(&budget, at_ms(0));
    }
    for _ in 0..5 {
        assert!(state.admit_retry(&budget, at_ms(1_500)));
    }
    // The deposits expired, the withdrawals have not: the balance is negative, nothing spendable.
    assert_eq!(state.balance_milli(&budget, at_ms(2_000)), -5_000);
    assert_eq!(state.available(&budget, at_ms(2_000)), 0);
    assert_eq!(state.reserve(&budget, at_ms(2_000)).retries, 0);
}

#[test]
fn a_pushback_stops_reservations_until_it_ends() {
    let budget = budget("{}");
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    state.push_back(at_ms(0), Duration::from_secs(2));
    state.push_back(at_ms(100), Duration::from_millis(500));
    assert!(state.pushed_back(at_ms(1_999)));
    assert_eq!(state.reserve(&budget, at_ms(1_999)).retries, 0);
    assert!(!state.pushed_back(at_ms(2_000)));
    assert_eq!(state.reserve(&budget, at_ms(2_000)).retries, 3);
}

#[test]
fn a_state_of_another_window_shape_does_not_fit() {
    let state = BudgetState::new(&budget("{}"), b"k", at_ms(0));
    assert!(state.fits(&budget("{}")));
    assert!(!state.fits(&budget(r#"{"buckets": 5}"#)));
    assert!(!state.fits(&budget(r#"{"ttl_ms": 5000}"#)));
}

#[test]
fn the_state_round_trips_through_its_encoding_and_garbage_is_an_error() {
    let budget = budget("{}");
    let mut state = BudgetState::new(&budget, b"payments", at_ms(3));
    state.first_attempt(&budget, at_ms(4));
    let _ = state.reserve(&budget, at_ms(1_500));
    state.push_back(at_ms(5), Duration::from_secs(1));
    assert_eq!(BudgetState::decode(&state.encode()), Ok(state.clone()));
    let encoded = state.encode();
    assert!(BudgetState::decode(&encoded[..encoded.len() - 1]).is_err());
    assert!(BudgetState::decode(b"").is_err());
    assert!(BudgetState::decode(&[255, 255, 255, 255]).is_err());
}

#[test]
fn attempt_counts_are_plain_decimals() {
    assert_eq!(parse_count(b"2"), Some(2));
    assert_eq!(parse_count(b" 10 "), Some(10));
    assert_eq!(parse_count(b"007"), Some(7));
    for bad in [
        &b""[..],
        b"-1",
        b"+1",
        b"1.5",
        b"0x2",
        b"2 3",
        b"\xff",
        b"9999999999999999999",
    ] {
        assert_eq!(parse_count(bad), None, "{bad:?}");
    }
}

#[test]
fn grpc_pushback_is_a_delay_or_a_stop() {
    assert_eq!(
        parse_grpc_pushback(b"250"),
        Some(Duration::from_millis(250))
    );
    assert_eq!(parse_grpc_pushback(b"-1"), None);
    assert_eq!(parse_grpc_pushback(b"soon"), None);
}

#[test]
fn retry_after_is_seconds_or_an_http_date() {
    let now = Timestamp::from_nanos(1_445_412_480 * SECOND); // Wed, 21 Oct 2015 07:28:00 GMT
    assert_eq!(parse_retry_after(b"3", now), Some(Duration::from_secs(3)));
    assert_eq!(
        parse_retry_after(b"Wed, 21 Oct 2015 07:28:05 GMT", now),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        parse_retry_after(b"Wed, 21 Oct 2015 07:27:00 GMT", now),
        Some(Duration::ZERO),
        "a date in the past"
    );
    assert_eq!(parse_retry_after(b"tomorrow", now), None);
    assert_eq!(parse_retry_after(b"\xff\xfe", now), None);
}

#[test]
fn only_a_shed_marker_of_one_counts() {
    assert!(is_shed(b"1"));
    assert!(is_shed(b" 1 "));
    assert!(!is_shed(b"0"));
    assert!(!is_shed(b"true"));
}

const LIMITS: PushbackLimits = PushbackLimits {
    default: Duration::from_secs(1),
    max: Duration::from_secs(30),
};

fn pushback_of(signals: PushbackSignals<'_>) -> Option<Duration> {
    pushback(&signals, at_ms(0), LIMITS)
}

#[test]
fn a_response_pushes_back_for_its_longest_signal_capped() {
    let unavailable = PushbackSignals {
        status: Some(503),
        ..PushbackSignals::default()
    };
    assert_eq!(pushback_of(unavailable), None);
    assert_eq!(
        pushback_of(PushbackSignals {
            retry_after: Some(b"2"),
            ..unavailable
        }),
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        pushback_of(PushbackSignals {
            retry_after: Some(b"2"),
            status: Some(200),
            ..unavailable
        }),
        None,
        "retry-after on a success is not about retries"
    );
    assert_eq!(
        pushback_of(PushbackSignals {
            retry_after: Some(b"2"),
            status: Some(429),
            grpc_retry_pushback_ms: Some(b"5000"),
            ..unavailable
        }),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        pushback_of(PushbackSignals {
            grpc_retry_pushback_ms: Some(b"-1"),
            ..PushbackSignals::default()
        }),
        Some(LIMITS.default),
        "negative: stop, for the default pause"
    );
    assert_eq!(
        pushback_of(PushbackSignals {
            grpc_retry_pushback_ms: Some(b"0"),
            ..PushbackSignals::default()
        }),
        None,
        "zero: retry at once"
    );
    assert_eq!(
        pushback_of(PushbackSignals {
            mesh_shed: Some(b"1"),
            ..unavailable
        }),
        Some(LIMITS.default)
    );
    assert_eq!(
        pushback_of(PushbackSignals {
            mesh_shed: Some(b"1"),
            retry_after: Some(b"4"),
            ..unavailable
        }),
        Some(Duration::from_secs(4))
    );
    assert_eq!(
        pushback_of(PushbackSignals {
            retry_after: Some(b"86400"),
            ..unavailable
        }),
        Some(LIMITS.max)
    );
}
