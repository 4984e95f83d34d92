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

/// Spends every token `state` holds at `at` (server-role retries).
fn drain(budget: &Budget, state: &mut BudgetState, at: Timestamp) {
    while state.admit_retry(budget, at) {}
    assert_eq!(state.available(budget, at), 0);
}

#[test]
fn a_new_budget_starts_full_at_its_cap() {
    let budget = budget("{}");
    let state = BudgetState::new(&budget, b"payments", at_ms(0));
    assert_eq!(budget.cap_tokens(), 10, "one second of 10 retries/s");
    assert_eq!(state.available(&budget, at_ms(0)), 10);
    assert_eq!(state.owner(), b"payments");
    assert_eq!(
        budget_cap(r#"{"min_retries_per_second": 1, "max_retries": 5}"#),
        5,
        "at least one request's retries"
    );
}

fn budget_cap(json: &str) -> u64 {
    budget(json).cap_tokens()
}

#[test]
fn first_attempts_deposit_the_ratio_and_retries_withdraw_one() {
    let budget = budget(r#"{"min_retries_per_second": 0, "ratio": 0.2, "max_retries": 10}"#);
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    drain(&budget, &mut state, at_ms(0));
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
fn the_per_second_minimum_is_a_floor_under_the_ratio_not_an_addition() {
    // 10 retries/s: by any moment, a bucket (1 s) has been credited max(20 % of its first
    // attempts, 10 × its time so far).
    let budget = budget(r#"{"ratio": 0.2, "min_retries_per_second": 10, "max_retries": 3}"#);
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    drain(&budget, &mut state, at_ms(0));
    // A quiet key's floor accrues with time.
    assert_eq!(state.available(&budget, at_ms(1_000)), 10);
    drain(&budget, &mut state, at_ms(1_000));
    for _ in 0..5 {
        state.first_attempt(&budget, at_ms(1_000));
    }
    assert_eq!(
        state.available(&budget, at_ms(1_000)),
        1,
        "the ratio's share"
    );
    // 100 ms of floor is one token: the share already paid it.
    assert_eq!(state.available(&budget, at_ms(1_100)), 1);
    // Past the share, the floor accrues again.
    assert_eq!(state.available(&budget, at_ms(1_200)), 2);
    // And first attempts deposit only above the floor: 21 of them have earned 4.2 tokens.
    for _ in 0..16 {
        state.first_attempt(&budget, at_ms(1_200));
    }
    assert_eq!(state.balance_milli(&budget, at_ms(1_200)), 4_200);
}

#[test]
fn the_balance_never_exceeds_the_cap() {
    let budget = budget(r#"{"ratio": 1, "min_retries_per_second": 5, "max_retries": 3}"#);
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    for millis in 0..10_000 {
        state.first_attempt(&budget, at_ms(millis));
    }
    assert_eq!(budget.cap_tokens(), 5);
    assert_eq!(state.available(&budget, at_ms(10_000)), 5);
    // Refunds count against the cap too.
    let reservation = state.reserve(&budget, at_ms(10_000));
    assert_eq!(reservation.retries, 3);
    for _ in 0..10 {
        state.first_attempt(&budget, at_ms(10_000));
    }
    state.refund(&budget, at_ms(10_000), reservation.settle(0));
    assert_eq!(state.available(&budget, at_ms(10_000)), 5);
}

#[test]
fn a_long_healthy_spell_banks_no_burst_for_the_fault_that_follows() {
    // The defaults at 200 rps: 10 s of healthy traffic, then every reserved retry is used.
    let budget = budget("{}");
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    for tick in 0..2_000 {
        let at = at_ms(tick * 5);
        let reservation = state.reserve(&budget, at);
        state.refund(&budget, at, reservation.settle(0));
    }
    let mut used = 0;
    for tick in 2_000..2_200 {
        used += state.reserve(&budget, at_ms(tick * 5)).retries;
    }
    // 200 first attempts in the fault's first second deposit 40 retries (20 %); the bank adds
    // at most the cap.
    assert!(used <= 40 + 10, "{used} retries for 200 first attempts");
    assert!(used >= 40, "{used}: the ratio still holds");
}

#[test]
fn a_reservation_is_capped_by_max_retries_and_by_the_balance() {
    let budget = budget(r#"{"min_retries_per_second": 0, "ratio": 1, "max_retries": 3}"#);
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    drain(&budget, &mut state, at_ms(0));
    let first = state.reserve(&budget, at_ms(0));
    assert_eq!(first.retries, 1, "its own deposit is all there is");
    for _ in 0..10 {
        state.first_attempt(&budget, at_ms(0));
    }
    assert_eq!(state.available(&budget, at_ms(0)), 3, "the cap");
    assert_eq!(state.reserve(&budget, at_ms(0)).retries, 3);
    assert_eq!(
        state.available(&budget, at_ms(0)),
        0,
        "its deposit found the balance at the cap"
    );
}

#[test]
fn unused_reserved_retries_are_refunded_and_used_ones_stay_spent() {
    let budget = budget(r#"{"min_retries_per_second": 0, "ratio": 1, "max_retries": 5}"#);
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    let reservation = state.reserve(&budget, at_ms(0));
    assert_eq!(reservation.retries, 5, "the cap, its deposit dropped");
    assert_eq!(state.available(&budget, at_ms(0)), 0);
    state.refund(&budget, at_ms(500), reservation.settle(1));
    assert_eq!(state.available(&budget, at_ms(500)), 4);
    // More retries than reserved counts as all of them; nothing is refunded twice.
    assert_eq!(reservation.settle(7).retries, 0);
}

#[test]
fn a_refund_into_an_expired_bucket_gives_nothing_back() {
    let budget = budget(
        r#"{"min_retries_per_second": 0, "ratio": 1, "ttl_ms": 1000, "buckets": 2, "max_retries": 1}"#,
    );
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    drain(&budget, &mut state, at_ms(0));
    let reservation = state.reserve(&budget, at_ms(0));
    assert_eq!(reservation.retries, 1);
    state.first_attempt(&budget, at_ms(600));
    state.refund(&budget, at_ms(1_000), reservation.settle(0));
    assert_eq!(state.balance_milli(&budget, at_ms(1_000)), 1_000);
    // A refund never returns more than its bucket withdrew.
    state.refund(
        &budget,
        at_ms(1_000),
        Reservation {
            bucket: 2,
            retries: 5,
        }
        .settle(0),
    );
    assert_eq!(state.balance_milli(&budget, at_ms(1_000)), 1_000);
}

#[test]
fn unspent_credit_expires_a_bucket_at_a_time_after_the_ttl() {
    let budget =
        budget(r#"{"min_retries_per_second": 0, "ratio": 1, "ttl_ms": 10000, "max_retries": 20}"#);
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    drain(&budget, &mut state, at_ms(0));
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
fn spending_takes_the_oldest_credit_first_and_a_spent_token_never_comes_back() {
    let budget = budget(
        r#"{"min_retries_per_second": 0, "ratio": 1, "ttl_ms": 2000, "buckets": 2, "max_retries": 10}"#,
    );
    let mut state = BudgetState::new(&budget, b"k", at_ms(0));
    drain(&budget, &mut state, at_ms(0));
    for _ in 0..5 {
        state.first_attempt(&budget, at_ms(0));
    }
    for _ in 0..3 {
        state.first_attempt(&budget, at_ms(1_000));
    }
    for _ in 0..5 {
        assert!(state.admit_retry(&budget, at_ms(1_500)));
    }
    // The 0 s bucket paid for the five retries; the 1 s bucket's three tokens outlive it.
    assert_eq!(state.available(&budget, at_ms(2_000)), 3);
    assert_eq!(state.available(&budget, at_ms(3_000)), 0);
    assert_eq!(state.reserve(&budget, at_ms(3_000)).retries, 1);
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
