//! Property tests of the budget: it is never overspent, the per-second minimum is honoured,
//! deposits expire after the ttl, reservation plus settlement conserve tokens; and the parsers
//! of client bytes (attempt counts, pushback, the shared-data encoding) never panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshkit::clock::Timestamp;
use meshkit::config::load_config;
use meshkit::shared::SharedValue;
use proptest::prelude::*;
use retry_budget::config::RetryBudgetConfig;
use retry_budget::policy::{
    parse_count, parse_retry_after, pushback, Budget, BudgetState, PushbackLimits, PushbackSignals,
};
use std::time::Duration;

fn budget(json: &str) -> Budget {
    Budget::new(&load_config::<RetryBudgetConfig>(Some(json.as_bytes())).unwrap())
}

/// One event on a budget, after `gap_ms` more milliseconds.
#[derive(Debug, Clone)]
enum Event {
    Reserve { gap_ms: u64, used: u32 },
    FirstAttempt { gap_ms: u64 },
    Retry { gap_ms: u64 },
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        prop_oneof![
            (0u64..700, 0u32..5).prop_map(|(gap_ms, used)| Event::Reserve { gap_ms, used }),
            (0u64..300).prop_map(|gap_ms| Event::FirstAttempt { gap_ms }),
            (0u64..300).prop_map(|gap_ms| Event::Retry { gap_ms }),
        ],
        1..300,
    )
}

fn configs() -> impl Strategy<Value = String> {
    (0u32..=100, 0u32..20, 1u64..20, 1u32..=12, 1u32..=5).prop_filter_map(
        "a budget allowing no retry is refused",
        |(ratio_pct, min, ttl_s, buckets, max_retries)| {
            (ratio_pct > 0 || min > 0).then(|| {
                format!(
                    r#"{{"ratio": {}, "min_retries_per_second": {min}, "ttl_ms": {},
                        "buckets": {buckets}, "max_retries": {max_retries}}}"#,
                    f64::from(ratio_pct) / 100.0,
                    ttl_s * 1000
                )
            })
        },
    )
}

proptest! {
    /// Whatever the traffic, spending never takes the balance below zero: every reservation
    /// and every admitted retry is paid for by the reserve and live deposits, and what may be
    /// spent is never negative.
    #[test]
    fn the_budget_is_never_overspent(config in configs(), events in events()) {
        let budget = budget(&config);
        let mut now = 1_000_000u64;
        let mut state = BudgetState::new(&budget, b"k", Timestamp::from_millis(now));
        let mut outstanding = Vec::new();
        for event in events {
            match event {
                Event::Reserve { gap_ms, used } => {
                    now += gap_ms;
                    let at = Timestamp::from_millis(now);
                    let reservation = state.reserve(&budget, at);
                    prop_assert!(reservation.retries <= budget.max_retries());
                    // (Withdrawals outliving the deposits that paid for them may leave the
                    // balance negative; then nothing is reserved.)
                    if reservation.retries > 0 {
                        prop_assert!(state.balance_milli(&budget, at) >= 0);
                    }
                    outstanding.push((reservation, used));
                    if outstanding.len() > 3 {
                        let (reservation, used) = outstanding.remove(0);
                        state.refund(&budget, at, reservation.settle(used));
                    }
                }
                Event::FirstAttempt { gap_ms } => {
                    now += gap_ms;
                    state.first_attempt(&budget, Timestamp::from_millis(now));
                }
                Event::Retry { gap_ms } => {
                    now += gap_ms;
                    let at = Timestamp::from_millis(now);
                    let before = state.available(&budget, at);
                    let admitted = state.admit_retry(&budget, at);
                    prop_assert_eq!(admitted, before >= 1);
                    if admitted {
                        prop_assert!(state.balance_milli(&budget, at) >= 0);
                    }
                }
            }
        }
    }

    /// Retries at `min_retries_per_second`, with no first attempts at all, are all admitted,
    /// over many ttls.
    #[test]
    fn the_per_second_minimum_is_honoured(
        min in prop::sample::select(vec![1u32, 2, 4, 5, 8, 10, 20, 25, 40, 50]),
        ttl_s in 1u64..10,
        buckets in 1u32..=20,
        offset_ns in 0u64..1_000_000_000,
    ) {
        let budget = budget(&format!(
            r#"{{"ratio": 0, "min_retries_per_second": {min}, "ttl_ms": {}, "buckets": {buckets}}}"#,
            ttl_s * 1000
        ));
        let spacing = 1_000_000_000 / u64::from(min);
        let start = 10_000_000_000 + offset_ns;
        let mut state = BudgetState::new(&budget, b"k", Timestamp::from_nanos(start));
        for k in 0..u64::from(min) * ttl_s * 3 {
            let at = Timestamp::from_nanos(start + k * spacing);
            prop_assert!(state.admit_retry(&budget, at), "retry {} at {:?} refused", k, at);
        }
    }

    /// Deposits stop counting one ttl after their bucket began, and count until the bucket
    /// after it starts leaving the window.
    #[test]
    fn deposits_expire_after_the_ttl(
        ttl_ms in 100u64..20_000,
        buckets in 1u32..=60,
        deposits in 1u32..200,
        at_ms in 0u64..1_000_000,
    ) {
        let budget = budget(&format!(
            r#"{{"ratio": 1, "min_retries_per_second": 0, "ttl_ms": {ttl_ms}, "buckets": {buckets}}}"#
        ));
        let start = Timestamp::from_millis(at_ms);
        let mut state = BudgetState::new(&budget, b"k", start);
        for _ in 0..deposits {
            state.first_attempt(&budget, start);
        }
        prop_assert_eq!(state.available(&budget, start), u64::from(deposits));
        let ttl = Duration::from_millis(ttl_ms);
        let bucket = ttl / buckets;
        // Still counting just under ttl - bucket later (the deposit's bucket is still live).
        let early = start.saturating_add(ttl.saturating_sub(bucket).saturating_sub(Duration::from_nanos(1)));
        prop_assert_eq!(state.available(&budget, early), u64::from(deposits));
        prop_assert_eq!(state.available(&budget, start.saturating_add(ttl)), 0);
        prop_assert!(state.is_idle(&budget, start.saturating_add(ttl)));
    }

    /// Within one window, reserving and settling neither creates nor loses tokens: the balance
    /// is the reserve plus the deposits minus exactly the retries used.
    #[test]
    fn reservation_and_settlement_conserve_tokens(
        config in configs(),
        requests in prop::collection::vec((0u32..6, Just(())), 1..100),
    ) {
        let budget = budget(&config);
        let start = Timestamp::from_millis(5_000_000);
        let empty = BudgetState::new(&budget, b"k", start);
        let reserve = empty.balance_milli(&budget, start);
        let mut one = empty.clone();
        one.first_attempt(&budget, start);
        let deposit = one.balance_milli(&budget, start) - reserve;

        let mut state = empty;
        let mut reservations = Vec::new();
        for (index, (used, _)) in requests.iter().enumerate() {
            // Within the first 80 ms: with a ttl of at least 1 s in at most 12 buckets, nothing
            // expires before the end.
            let at = start.saturating_add(Duration::from_millis(index as u64 % 80));
            reservations.push((state.reserve(&budget, at), *used));
        }
        let end = start.saturating_add(Duration::from_millis(80));
        let mut used_total = 0i128;
        for (reservation, used) in reservations {
            let refund = reservation.settle(used);
            used_total += i128::from(reservation.retries - refund.retries);
            state.refund(&budget, end, refund);
        }
        prop_assert_eq!(
            state.balance_milli(&budget, end),
            reserve + deposit * requests.len() as i128 - used_total * 1000
        );
    }

    #[test]
    fn attempt_counts_parse_only_decimals(bytes in prop::collection::vec(any::<u8>(), 0..24)) {
        if let Some(count) = parse_count(&bytes) {
            let trimmed = String::from_utf8(bytes.trim_ascii().to_vec()).unwrap();
            prop_assert_eq!(trimmed.trim_start_matches('0').to_owned(), if count == 0 { String::new() } else { count.to_string() });
        }
    }

    #[test]
    fn pushback_signals_on_arbitrary_bytes_never_panic_and_stay_capped(
        status in proptest::option::of(0u32..1000),
        grpc in proptest::option::of(prop::collection::vec(any::<u8>(), 0..24)),
        retry_after in proptest::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        shed in proptest::option::of(prop::collection::vec(any::<u8>(), 0..4)),
        now in any::<u64>(),
    ) {
        let limits = PushbackLimits { default: Duration::from_secs(1), max: Duration::from_secs(30) };
        let signals = PushbackSignals {
            status,
            grpc_retry_pushback_ms: grpc.as_deref(),
            retry_after: retry_after.as_deref(),
            mesh_shed: shed.as_deref(),
        };
        if let Some(delay) = pushback(&signals, Timestamp::from_nanos(now), limits) {
            prop_assert!(delay > Duration::ZERO && delay <= limits.max);
        }
        if let Some(value) = &retry_after {
            let _ = parse_retry_after(value, Timestamp::from_nanos(now));
        }
    }

    #[test]
    fn http_dates_in_retry_after_parse_to_their_distance(seconds in 0u64..4_000_000_000, ahead in 0u64..100_000) {
        let now = Timestamp::from_nanos(seconds * 1_000_000_000);
        let date = std::time::UNIX_EPOCH + Duration::from_secs(seconds + ahead);
        let text = httpdate_fmt(date);
        prop_assert_eq!(parse_retry_after(text.as_bytes(), now), Some(Duration::from_secs(ahead)));
    }

    #[test]
    fn arbitrary_shared_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(state) = BudgetState::decode(&bytes) {
            prop_assert_eq!(state.encode(), bytes);
        }
    }
}

fn httpdate_fmt(time: std::time::SystemTime) -> String {
    httpdate::fmt_http_date(time)
}
