//! Property tests of the budget: it is never overspent and never holds more than its cap, the
//! per-second minimum is honoured, deposits expire after the ttl, reservation plus settlement
//! conserve tokens, and over any interval the retries stay within `ratio` of its first attempts
//! plus the floor, the cap and the loans outstanding when it began (the bound of the module doc);
//! and the parsers of client bytes (attempt counts, pushback, the shared-data encoding) never
//! panic.
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

/// A budget's parameters, as the test reads them back.
#[derive(Debug, Clone, Copy)]
struct Params {
    ratio_pct: u32,
    min: u32,
    ttl_s: u64,
    buckets: u32,
    max_retries: u32,
}

impl Params {
    fn json(&self) -> String {
        format!(
            r#"{{"ratio": {}, "min_retries_per_second": {}, "ttl_ms": {},
                "buckets": {}, "max_retries": {}}}"#,
            f64::from(self.ratio_pct) / 100.0,
            self.min,
            self.ttl_s * 1000,
            self.buckets,
            self.max_retries
        )
    }
}

fn params() -> impl Strategy<Value = Params> {
    (0u32..=100, 0u32..20, 1u64..20, 1u32..=12, 1u32..=5).prop_filter_map(
        "a budget allowing no retry is refused",
        |(ratio_pct, min, ttl_s, buckets, max_retries)| {
            (ratio_pct > 0 || min > 0).then_some(Params {
                ratio_pct,
                min,
                ttl_s,
                buckets,
                max_retries,
            })
        },
    )
}

fn configs() -> impl Strategy<Value = String> {
    params().prop_map(|params| params.json())
}

proptest! {
    /// Whatever the traffic, spending never takes more than the balance holds, and the balance
    /// never exceeds the cap: every reservation and every admitted retry is paid for.
    #[test]
    fn the_budget_is_never_overspent_and_never_above_its_cap(config in configs(), events in events()) {
        let budget = budget(&config);
        let cap = budget.cap_tokens() * 1000;
        let mut now = 1_000_000u64;
        let mut state = BudgetState::new(&budget, b"k", Timestamp::from_millis(now));
        let mut outstanding = Vec::new();
        for event in events {
            match event {
                Event::Reserve { gap_ms, used } => {
                    now += gap_ms;
                    let at = Timestamp::from_millis(now);
                    let mut deposited = state.clone();
                    deposited.first_attempt(&budget, at);
                    let affordable = deposited.available(&budget, at);
                    let reservation = state.reserve(&budget, at);
                    prop_assert_eq!(
                        u64::from(reservation.retries),
                        affordable.min(u64::from(budget.max_retries()))
                    );
                    prop_assert_eq!(
                        state.balance_milli(&budget, at),
                        deposited.balance_milli(&budget, at) - 1000 * u64::from(reservation.retries)
                    );
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
                    let before = state.balance_milli(&budget, at);
                    let admitted = state.admit_retry(&budget, at);
                    prop_assert_eq!(admitted, before >= 1000);
                    if admitted {
                        prop_assert_eq!(state.balance_milli(&budget, at), before - 1000);
                    }
                }
            }
            prop_assert!(state.balance_milli(&budget, Timestamp::from_millis(now)) <= cap);
        }
    }

    /// Over any interval, the retries made by the requests that reserved in it, and the retries
    /// admitted in it, are at most `ratio` of its first attempts, plus the per-second minimum
    /// over it, plus the cap, plus what the reservations made before it still had to refund when
    /// it began.
    #[test]
    fn retries_over_any_interval_stay_within_the_ratio_of_its_first_attempts(
        params in params(),
        events in events(),
    ) {
        let budget = budget(&params.json());
        let mut now = 1_000_000u64;
        let mut state = BudgetState::new(&budget, b"k", Timestamp::from_millis(now));
        // Per event: its time, whether it was a first attempt, the retries it used (reservations:
        // the reserved ones not refunded; admitted retries: 1).
        let mut times = Vec::new();
        let mut first = Vec::new();
        let mut used = Vec::new();
        // Per reservation: event index, retries reserved, refund, and the event index it was
        // settled at.
        let mut loans: Vec<(usize, u64, u64, usize)> = Vec::new();
        let mut outstanding: Vec<(usize, retry_budget::policy::Reservation, u32)> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let (is_first, spent) = match *event {
                Event::Reserve { gap_ms, used } => {
                    now += gap_ms;
                    let at = Timestamp::from_millis(now);
                    let reservation = state.reserve(&budget, at);
                    outstanding.push((index, reservation, used));
                    if outstanding.len() > 3 {
                        let (made, reservation, used) = outstanding.remove(0);
                        let refund = reservation.settle(used);
                        state.refund(&budget, at, refund);
                        loans.push((made, u64::from(reservation.retries), u64::from(refund.retries), index));
                    }
                    (true, 0)
                }
                Event::FirstAttempt { gap_ms } => {
                    now += gap_ms;
                    state.first_attempt(&budget, Timestamp::from_millis(now));
                    (true, 0)
                }
                Event::Retry { gap_ms } => {
                    now += gap_ms;
                    let admitted = state.admit_retry(&budget, Timestamp::from_millis(now));
                    (false, u64::from(admitted))
                }
            };
            times.push(now);
            first.push(u64::from(is_first));
            used.push(spent);
        }
        // Reservations still outstanding at the end are settled after it.
        for (made, reservation, retries) in outstanding {
            let refund = reservation.settle(retries).retries;
            loans.push((made, u64::from(reservation.retries), u64::from(refund), events.len()));
        }
        for &(made, reserved, refund, _) in &loans {
            used[made] = reserved - refund;
        }
        let ratio = u64::from(params.ratio_pct) * 10;
        let cap = budget.cap_tokens() * 1000;
        // Interval (times[i], times[j]]: the events after i, up to j.
        for i in 0..times.len() {
            let mut first_attempts = 0u64;
            let mut retries = 0u64;
            let owed: u64 = loans
                .iter()
                .filter(|&&(made, _, _, settled)| made <= i && settled > i)
                .map(|&(_, _, refund, _)| refund)
                .sum();
            for j in i + 1..times.len() {
                first_attempts += first[j];
                retries += used[j];
                let span_ms = (times[j] - times[i]) as f64;
                let floor = f64::from(params.min) * span_ms;
                let bound = (ratio * first_attempts + cap + owed * 1000) as f64 + floor + 1.0;
                prop_assert!(
                    (retries * 1000) as f64 <= bound,
                    "events {}..={}: {} retries for {} first attempts over {} ms (cap {}, owed {})",
                    i + 1, j, retries, first_attempts, span_ms, cap / 1000, owed
                );
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

    /// Unspent deposits stop counting one ttl after their bucket began, and count until the
    /// bucket after it starts leaving the window.
    #[test]
    fn deposits_expire_after_the_ttl(
        ttl_ms in 100u64..20_000,
        buckets in 1u32..=60,
        deposits in 1u32..=100,
        at_ms in 0u64..1_000_000,
    ) {
        let budget = budget(&format!(
            r#"{{"ratio": 1, "min_retries_per_second": 0, "ttl_ms": {ttl_ms}, "buckets": {buckets},
                "max_retries": 100}}"#
        ));
        let start = Timestamp::from_millis(at_ms);
        let mut state = BudgetState::new(&budget, b"k", start);
        while state.admit_retry(&budget, start) {}
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

    /// Below the cap, reserving and settling neither creates nor loses tokens: the balance is
    /// the deposits minus exactly the retries used.
    #[test]
    fn reservation_and_settlement_conserve_tokens(
        ratio_pct in 1u32..=100,
        ttl_s in 1u64..20,
        buckets in 1u32..=12,
        requests in prop::collection::vec(0u32..6, 1..100),
    ) {
        // No floor, and a cap of 100 tokens that 100 deposits of at most one token never reach.
        let budget = budget(&format!(
            r#"{{"ratio": {}, "min_retries_per_second": 0, "ttl_ms": {}, "buckets": {buckets},
                "max_retries": 100}}"#,
            f64::from(ratio_pct) / 100.0,
            ttl_s * 1000
        ));
        let start = Timestamp::from_millis(5_000_000);
        let mut state = BudgetState::new(&budget, b"k", start);
        while state.admit_retry(&budget, start) {}
        let mut reservations = Vec::new();
        for (index, used) in requests.iter().enumerate() {
            // Within the first 80 ms: with a ttl of at least 1 s in at most 12 buckets, nothing
            // expires before the end.
            let at = start.saturating_add(Duration::from_millis(index as u64 % 80));
            reservations.push((state.reserve(&budget, at), *used));
        }
        let end = start.saturating_add(Duration::from_millis(80));
        let mut used_total = 0u64;
        for (reservation, used) in reservations {
            let refund = reservation.settle(used);
            used_total += u64::from(reservation.retries - refund.retries);
            state.refund(&budget, end, refund);
        }
        prop_assert_eq!(
            state.balance_milli(&budget, end),
            budget.deposit_milli() * requests.len() as u64 - used_total * 1000
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
