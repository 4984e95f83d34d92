//! Behaviour of the limit controller and admission, window by window.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use load_shedder::classify::{Criticality, Rank};
use load_shedder::config::ShedderConfig;
use load_shedder::policy::{Admission, Outcome, Policy, SharedState, WindowClosed};
use meshkit::clock::Timestamp;
use meshkit::config::{DurationMs, Fraction};
use meshkit::shared::SharedValue;
use std::time::Duration;

const CRITICAL_PLUS: Rank = Rank {
    criticality: Criticality::CriticalPlus,
    first_attempt: true,
};
const CRITICAL: Rank = Rank {
    criticality: Criticality::Critical,
    first_attempt: true,
};

/// Whether `latency` is `millis` within the histogram's bucket precision (12.5 %).
fn about(latency: Option<Duration>, millis: u64) -> bool {
    let expected = millis as f64 * 1_000.0;
    latency.is_some_and(|got| (got.as_micros() as f64 - expected).abs() <= expected / 8.0)
}

/// A test rig: default windows (100 ms) on a virtual clock, one window per [`Rig::burst`].
struct Rig {
    policy: Policy,
    state: SharedState,
    now: u64,
}

const WINDOW_NANOS: u64 = 100_000_000;

impl Rig {
    fn new(tweak: impl FnOnce(&mut ShedderConfig)) -> Rig {
        let mut config = pinned_config();
        tweak(&mut config);
        let policy = Policy::new(&config);
        let state = SharedState::new(&policy, Timestamp::EPOCH);
        Rig {
            policy,
            state,
            now: 0,
        }
    }

    fn limit(&self) -> u32 {
        self.state.limit(&self.policy)
    }

    /// One window: admits up to `count` critical-plus requests at once and releases every
    /// admitted one with `latency_ms`, the last of them when the window is due. Returns the
    /// window update.
    fn burst(&mut self, count: u32, latency_ms: u64) -> Option<WindowClosed> {
        let admitted = (0..count)
            .filter(|_| self.state.admit(&self.policy, CRITICAL_PLUS).is_admitted())
            .count();
        let latency = Duration::from_millis(latency_ms);
        let early = Timestamp::from_nanos(self.now + 1);
        for _ in 1..admitted {
            let closed = self
                .state
                .release(&self.policy, early, latency, Outcome::Success);
            assert_eq!(closed, None, "the window is not due yet");
        }
        self.now += WINDOW_NANOS;
        let due = Timestamp::from_nanos(self.now);
        self.state
            .release(&self.policy, due, latency, Outcome::Success)
    }

    /// A window that fills the limit, at `latency_ms`.
    fn saturated(&mut self, latency_ms: u64) -> WindowClosed {
        let limit = self.limit();
        self.burst(limit, latency_ms).expect("a full window closes")
    }
}

/// The defaults with the two parameters the expected limits below are computed from pinned
/// (25 % tolerance, at most halving per window), so retuning a default does not change what
/// these tests check.
fn pinned_config() -> ShedderConfig {
    let mut config = ShedderConfig::default();
    config.limit.tolerance = Fraction::new(0.25).unwrap();
    config.limit.max_decrease = Fraction::new(0.5).unwrap();
    config
}

#[test]
fn fresh_state_admits_each_criticality_up_to_its_share() {
    let policy = Policy::new(&ShedderConfig::default());
    let mut state = SharedState::new(&policy, Timestamp::EPOCH);
    assert_eq!(state.limit(&policy), 20);
    let admitted = |state: &mut SharedState, rank| {
        (0..100)
            .filter(|_| state.admit(&policy, rank).is_admitted())
            .count()
    };
    // critical: 0.9 of 20.
    assert_eq!(admitted(&mut state, CRITICAL), 18);
    assert_eq!(admitted(&mut state, CRITICAL_PLUS), 2);
    assert_eq!(state.in_flight(), 20);
    assert_eq!(state.admit(&policy, CRITICAL_PLUS), Admission::Shed);
    assert_eq!(state.in_flight(), 20, "a shed request is not counted");
}

#[test]
fn dry_run_admits_and_counts_everything_but_reports_would_shed() {
    let config = ShedderConfig {
        dry_run: true,
        ..ShedderConfig::default()
    };
    let policy = Policy::new(&config);
    let mut state = SharedState::new(&policy, Timestamp::EPOCH);
    let decisions: Vec<Admission> = (0..25)
        .map(|_| state.admit(&policy, CRITICAL_PLUS))
        .collect();
    assert!(decisions[..20].iter().all(|&d| d == Admission::Admitted));
    assert!(decisions[20..].iter().all(|&d| d == Admission::WouldShed));
    assert!(decisions.iter().all(|d| d.is_admitted()));
    assert_eq!(state.in_flight(), 25);
}

#[test]
fn slow_start_doubles_while_latency_is_flat_then_adds_sqrt_after_a_decrease() {
    let mut rig = Rig::new(|_| {});
    let limits: Vec<u32> = [10, 10, 20, 10, 10]
        .map(|ms| rig.saturated(ms).limit)
        .to_vec();
    // Doubling, then latency doubles: decrease by 1/ratio and slow start ends; then + sqrt.
    assert_eq!(limits, [40, 80, 40, 46, 52]);
}

#[test]
fn app_limited_windows_never_grow_the_limit() {
    let mut rig = Rig::new(|_| {});
    for _ in 0..200 {
        let closed = rig.burst(5, 10).unwrap();
        assert_eq!(closed.limit, 20, "5 in flight of 20 is not using the limit");
    }
}

#[test]
fn rising_latency_shrinks_the_limit_and_recovery_grows_it_back() {
    let mut rig = Rig::new(|_| {});
    rig.saturated(10);
    let mut limits = Vec::new();
    for latency in [30, 40, 60, 80] {
        let limit = rig.limit();
        let closed = rig.burst(limit, latency).unwrap();
        limits.push(closed.limit);
        assert!(
            closed.limit < closed.previous_limit,
            "{latency} ms: {closed:?}"
        );
    }
    assert_eq!(
        *limits.last().unwrap(),
        4,
        "clamped at min_limit: {limits:?}"
    );
}

#[test]
fn latency_target_forces_a_shrink_even_when_latency_is_steady() {
    let mut rig = Rig::new(|config| config.limit.latency_target_ms = Some(DurationMs(50)));
    let closed = rig.saturated(100);
    assert!(
        about(Some(closed.baseline), 100),
        "steady: latency is the baseline"
    );
    assert_eq!(
        closed.limit, 10,
        "halved (max_decrease) towards the 50 ms target"
    );
    let again = rig.saturated(100);
    assert_eq!(again.limit, 5);
    // Without a target the same steady latency grows the limit.
    let mut untargeted = Rig::new(|_| {});
    assert_eq!(untargeted.saturated(100).limit, 40);
}

#[test]
fn app_limited_slowdown_shrinks_no_lower_than_demand() {
    let mut rig = Rig::new(|config| config.limit.initial_limit = 100);
    rig.burst(10, 10).unwrap();
    for _ in 0..20 {
        rig.burst(10, 40).unwrap();
    }
    // 10 in flight at utilization 0.8 keeps 13 admitted; the service is never refused.
    assert_eq!(rig.limit(), 13);
    assert!((0..10).all(|_| rig.state.admit(&rig.policy, CRITICAL).is_admitted()));
}

#[test]
fn fast_failures_do_not_count_as_healthy_latency_but_slow_ones_count() {
    let mut rig = Rig::new(|config| config.limit.window_min_samples = 4);
    rig.burst(4, 100).unwrap();
    assert!(about(rig.state.baseline(), 100));
    let mut now = Timestamp::from_nanos(rig.now + 1_000_000_000);
    for outcome in [Outcome::Error, Outcome::Reset, Outcome::LocalReply] {
        for _ in 0..8 {
            rig.state.admit(&rig.policy, CRITICAL_PLUS);
            let closed = rig
                .state
                .release(&rig.policy, now, Duration::from_millis(1), outcome);
            assert_eq!(closed, None, "a fast {outcome:?} is no sample");
        }
    }
    assert!(about(rig.state.baseline(), 100));
    let mut closed = None;
    for _ in 0..4 {
        now = now.saturating_add(Duration::from_millis(1));
        rig.state.admit(&rig.policy, CRITICAL_PLUS);
        closed = rig
            .state
            .release(&rig.policy, now, Duration::from_millis(400), Outcome::Reset);
    }
    let closed = closed.expect("slow resets are samples");
    assert!(about(Some(closed.latency), 400));
    assert!(closed.limit < closed.previous_limit);
}

#[test]
fn one_request_per_second_still_adapts() {
    let mut config = pinned_config();
    config.limit.latency_target_ms = Some(DurationMs(200));
    let policy = Policy::new(&config);
    let mut state = SharedState::new(&policy, Timestamp::EPOCH);
    let mut limits = Vec::new();
    for second in 1..=30u64 {
        let latency = if second <= 10 { 20 } else { 500 };
        assert!(state.admit(&policy, CRITICAL).is_admitted());
        let now = Timestamp::from_millis(second * 1_000 + latency);
        let closed = state.release(
            &policy,
            now,
            Duration::from_millis(latency),
            Outcome::Success,
        );
        assert!(closed.is_some(), "every request closes a window");
        limits.push(state.limit(&policy));
        if second == 12 {
            assert!(about(state.baseline(), 20));
        }
    }
    // Steady at 20 ms: unchanged (app-limited); over the target: down to min_limit in 3 s.
    assert_eq!(limits[..10], [20; 10]);
    assert_eq!(limits[10..14], [10, 5, 4, 4]);
    // Much later the baseline has followed the slower service.
    assert!(about(state.baseline(), 500));
}

#[test]
fn baseline_follows_a_genuinely_slower_service_within_the_baseline_window() {
    let mut rig = Rig::new(|_| {});
    rig.saturated(10);
    assert!(about(rig.state.baseline(), 10));
    // 15 s of 100 ms windows at 30 ms: longer than the baseline window (10 s, up to 13.3 s).
    let mut last = None;
    for _ in 0..150 {
        let limit = rig.limit();
        last = rig.burst(limit, 30);
    }
    assert!(about(rig.state.baseline(), 30));
    let last = last.unwrap();
    assert!(
        last.limit > 4,
        "the limit recovers once the baseline moved: {last:?}"
    );
}

#[test]
fn state_round_trips_through_its_fixed_encoding() {
    let mut rig = Rig::new(|_| {});
    rig.saturated(10);
    rig.state.admit(&rig.policy, CRITICAL);
    let bytes = rig.state.encode();
    assert_eq!(bytes.len(), SharedState::ENCODED_LEN);
    assert_eq!(bytes[0], SharedState::FORMAT_VERSION);
    assert_eq!(SharedState::decode(&bytes), Ok(rig.state.clone()));
}

#[test]
fn garbage_bytes_are_decode_errors() {
    let good = SharedState::new(&Policy::new(&ShedderConfig::default()), Timestamp::EPOCH).encode();
    assert!(SharedState::decode(&[]).is_err());
    assert!(SharedState::decode(&good[..good.len() - 1]).is_err());
    let mut longer = good.clone();
    longer.push(0);
    assert!(SharedState::decode(&longer).is_err());
    let mut version = good.clone();
    version[0] = 9;
    assert!(SharedState::decode(&version).is_err());
    let mut flags = good;
    flags[1] = 2;
    assert!(SharedState::decode(&flags).is_err());
}
