//! Behaviour of the limit controller and admission, window by window.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use load_shedder::classify::{Criticality, Rank};
use load_shedder::config::ShedderConfig;
use load_shedder::policy::{Admission, LimitAction, Outcome, Policy, SharedState, WindowClosed};
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
const SHEDDABLE: Rank = Rank {
    criticality: Criticality::Sheddable,
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

    /// One window: admits up to `count` critical-plus requests at once at its start and
    /// releases every admitted one with `latency_ms` (within the window), the last of them when
    /// the window is due. Returns the window update.
    fn burst(&mut self, count: u32, latency_ms: u64) -> Option<WindowClosed> {
        self.burst_of(CRITICAL_PLUS, count, latency_ms)
    }

    /// [`Rig::burst`] of requests of `rank`.
    fn burst_of(&mut self, rank: Rank, count: u32, latency_ms: u64) -> Option<WindowClosed> {
        let admitted = (0..count)
            .filter(|_| self.state.admit(&self.policy, rank).is_admitted())
            .count();
        let latency = Duration::from_millis(latency_ms);
        let early =
            Timestamp::from_nanos(self.now + (latency.as_nanos() as u64).min(WINDOW_NANOS - 1));
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

    /// A window that fills the limit in front of a service of `workers` workers taking
    /// `service_ms` per request: the requests queue for the workers, so their latency grows
    /// with the limit once it exceeds `workers`.
    fn queueing(&mut self, workers: u32, service_ms: u64) -> WindowClosed {
        let limit = self.limit();
        let latency = service_ms * u64::from(limit.max(workers)) / u64::from(workers);
        self.burst(limit, latency).expect("a full window closes")
    }

    /// Ends the slow start with one cut: a window at 10 ms, then one at 20 ms.
    fn past_slow_start(&mut self) {
        self.saturated(10);
        assert_eq!(self.saturated(20).action, LimitAction::Cut);
        assert!(!self.state.in_slow_start());
    }
}

/// The defaults with the two parameters the expected limits below are computed from pinned
/// (25 % tolerance, at most halving per window), and windows that close on time only, so
/// retuning a default does not change what these tests check.
fn pinned_config() -> ShedderConfig {
    let mut config = ShedderConfig::default();
    config.limit.tolerance = Fraction::new(0.25).unwrap();
    config.limit.max_decrease = Fraction::new(0.5).unwrap();
    config.limit.window_max_samples = u32::from(u16::MAX);
    config
}

/// Admits `count` requests of `rank`; returns how many were admitted.
fn admit(rig: &mut Rig, rank: Rank, count: u32) -> u32 {
    (0..count)
        .filter(|_| rig.state.admit(&rig.policy, rank).is_admitted())
        .count() as u32
}

#[test]
fn slow_start_lets_sheddable_work_fill_the_limit_doubles_it_on_demand_and_keeps_rank_order() {
    let policy = Policy::new(&ShedderConfig::default());
    let mut state = SharedState::new(&policy, Timestamp::EPOCH);
    assert!(state.in_slow_start());
    assert_eq!(state.limit(&policy), 20);
    let mut admit = |rank| {
        (0..100)
            .filter(|_| state.admit(&policy, rank).is_admitted())
            .count()
    };
    // Before any cut the limit is only a starting guess: meeting it doubles it once per window
    // rather than refusing, and each rank may fill its share of twice the limit (sheddable:
    // 0.5 of 80), ...
    assert_eq!(admit(SHEDDABLE), 40);
    // ... so higher ranks keep their headroom: critical up to 0.9 of 80, critical-plus to 80.
    assert_eq!(admit(CRITICAL), 32);
    assert_eq!(admit(CRITICAL_PLUS), 8);
    assert_eq!(state.limit(&policy), 40);
    assert_eq!(state.in_flight(), 80);
    assert_eq!(state.admit(&policy, CRITICAL_PLUS), Admission::Shed);
    assert_eq!(state.in_flight(), 80, "a shed request is not counted");
}

#[test]
fn after_the_first_cut_each_criticality_fills_its_share_of_the_limit() {
    let mut rig = Rig::new(|_| {});
    rig.past_slow_start();
    assert_eq!(rig.limit(), 20);
    // sheddable: 0.5 of 20; critical: 0.9 of 20; critical-plus: all of it.
    assert_eq!(admit(&mut rig, SHEDDABLE, 100), 10);
    assert_eq!(admit(&mut rig, CRITICAL, 100), 8);
    assert_eq!(admit(&mut rig, CRITICAL_PLUS, 100), 2);
    assert_eq!(rig.state.in_flight(), 20);
    assert_eq!(rig.state.admit(&rig.policy, CRITICAL_PLUS), Admission::Shed);
    assert_eq!(rig.state.in_flight(), 20, "a shed request is not counted");
}

#[test]
fn dry_run_admits_and_counts_everything_but_reports_would_shed() {
    let mut rig = Rig::new(|config| config.dry_run = true);
    rig.past_slow_start();
    let decisions: Vec<Admission> = (0..25)
        .map(|_| rig.state.admit(&rig.policy, CRITICAL_PLUS))
        .collect();
    assert!(decisions[..20].iter().all(|&d| d == Admission::Admitted));
    assert!(decisions[20..].iter().all(|&d| d == Admission::WouldShed));
    assert!(decisions.iter().all(|d| d.is_admitted()));
    assert_eq!(rig.state.in_flight(), 25);
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
fn a_slow_start_window_that_grew_on_demand_and_queued_takes_the_growth_back() {
    let mut rig = Rig::new(|_| {});
    rig.saturated(10);
    let limit = rig.limit();
    assert_eq!(limit, 40);
    // Demand beyond the limit doubles it on the spot to 80; the window queues at twice the
    // no-load latency: the cut applies to the 40 the window started with.
    let closed = rig.burst_of(SHEDDABLE, limit + 1, 20).unwrap();
    assert_eq!((closed.previous_limit, closed.limit), (80, 20));
    assert_eq!(closed.action, LimitAction::Cut);
}

#[test]
fn the_first_window_closes_on_the_first_requests_so_a_flood_cannot_inflate_the_baseline() {
    let mut rig = Rig::new(|_| {});
    // A flood arrives with the first request: the first 20 (the initial limit) start on an idle
    // service and take 10 ms; they close the first window at once, before the queued ones end.
    let first = admit(&mut rig, CRITICAL_PLUS, 20);
    let mut closed = None;
    for _ in 0..first {
        let end = Timestamp::from_millis(10);
        closed = rig.state.release(
            &rig.policy,
            end,
            Duration::from_millis(10),
            Outcome::Success,
        );
    }
    assert!(closed.is_some(), "the 20th sample closes the first window");
    assert!(about(rig.state.baseline(), 10));
    // Later windows close on time as usual.
    rig.state.admit(&rig.policy, CRITICAL_PLUS);
    let end = Timestamp::from_millis(20);
    let later = rig.state.release(
        &rig.policy,
        end,
        Duration::from_millis(10),
        Outcome::Success,
    );
    assert_eq!(later, None);
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
fn queueing_at_the_service_is_cut_down_to_its_capacity_and_every_cut_lowers_latency() {
    // 16 workers at 10 ms: any limit above 16 queues, and latency grows with it.
    let mut rig = Rig::new(|config| config.limit.initial_limit = 60);
    rig.saturated(10);
    let windows: Vec<WindowClosed> = (0..60).map(|_| rig.queueing(16, 10)).collect();
    let actions: Vec<LimitAction> = windows.iter().map(|w| w.action).collect();
    assert!(
        !actions.contains(&LimitAction::UndoCut),
        "queueing latency falls with every cut: {actions:?}"
    );
    // Settled around the 16 workers: 25 % tolerance lets it grow to 20 and one more step
    // (24) before a cut brings it back to about 16.
    let settled: Vec<u32> = windows[20..].iter().map(|w| w.limit).collect();
    assert!(
        settled.iter().all(|&limit| (15..=24).contains(&limit)),
        "{settled:?}"
    );
}

#[test]
fn a_cut_that_does_not_lower_latency_is_undone_and_not_repeated() {
    // The proxy's own latency (a busy host) triples and stays: not queueing we cause.
    let mut rig = Rig::new(|_| {});
    rig.past_slow_start();
    for _ in 0..5 {
        rig.saturated(10);
    }
    let before = rig.limit();
    let cut = rig.saturated(30);
    assert_eq!(cut.action, LimitAction::Cut);
    assert_eq!(cut.limit, before / 2);
    // Two windows at the halved limit show the same latency at half the throughput: ...
    let judged = rig.saturated(30);
    assert_eq!(
        (judged.action, judged.limit),
        (LimitAction::Hold, before / 2)
    );
    let undone = rig.saturated(30);
    assert_eq!(undone.action, LimitAction::UndoCut);
    assert_eq!(undone.limit, before, "the cut is undone");
    assert!(about(rig.state.baseline(), 30), "30 ms is taken as no-load");
    // The same latency no longer cuts; a used limit grows again.
    for _ in 0..10 {
        assert_eq!(rig.saturated(30).action, LimitAction::Grow);
    }
    // The latency being known to vary for reasons of its own, a single slow window is not
    // enough to cut...
    assert_eq!(rig.saturated(60).action, LimitAction::Hold);
    assert_eq!(rig.saturated(30).action, LimitAction::Grow);
    // ... but queueing on top of it, which persists, is still cut.
    assert_eq!(rig.saturated(60).action, LimitAction::Hold);
    let cut = rig.saturated(60);
    assert_eq!(cut.action, LimitAction::Cut);
    assert!(cut.limit < cut.previous_limit);
}

#[test]
fn a_cut_stands_while_the_service_keeps_its_throughput_even_if_latency_still_rises() {
    // An overload's onset: the queue at the service still grows for a while after a cut (the
    // requests already queued are served first), so latency keeps rising, but the service
    // keeps completing 16 requests a window: it, not the limit, is the bottleneck.
    let mut rig = Rig::new(|config| config.limit.initial_limit = 200);
    rig.past_slow_start();
    rig.saturated(10);
    let mut actions = Vec::new();
    for latency_ms in [30, 40, 50, 60] {
        let limit = rig.limit();
        admit(&mut rig, CRITICAL_PLUS, limit + 1);
        let latency = Duration::from_millis(latency_ms);
        let early = Timestamp::from_nanos(rig.now + latency.as_nanos() as u64);
        for _ in 1..16 {
            rig.state
                .release(&rig.policy, early, latency, Outcome::Success);
        }
        rig.now += WINDOW_NANOS;
        let due = Timestamp::from_nanos(rig.now);
        let closed = rig
            .state
            .release(&rig.policy, due, latency, Outcome::Success);
        actions.push(closed.unwrap().action);
    }
    assert!(
        actions.iter().all(|&a| a == LimitAction::Cut),
        "{actions:?}"
    );
}

#[test]
fn latency_not_caused_by_the_limit_is_retested_once_per_baseline_window() {
    let mut rig = Rig::new(|config| config.limit.max_limit = 100);
    rig.past_slow_start();
    rig.saturated(10);
    let mut actions = Vec::new();
    // 25 s at a latency the limit does not cause; the baseline window is 10 s.
    for _ in 0..250 {
        actions.push(rig.saturated(30).action);
    }
    let cuts = actions
        .iter()
        .filter(|&&a| a == LimitAction::Cut || a == LimitAction::Retest)
        .count();
    let undone = actions
        .iter()
        .filter(|&&a| a == LimitAction::UndoCut)
        .count();
    // One test at the start and one when its result expires 10 s later: each cut, then
    // undone. By the next expiry the smallest window latency of the last 10 s is 30 ms too.
    assert_eq!((cuts, undone), (2, 2), "{actions:?}");
    assert!(about(rig.state.baseline(), 30));
    assert!(rig.limit() >= 90, "the limit stays up: {}", rig.limit());
}

#[test]
fn latency_taken_as_not_queueing_holds_for_the_baseline_window() {
    let mut rig = Rig::new(|config| config.limit.max_limit = 100);
    rig.past_slow_start();
    rig.saturated(10);
    rig.saturated(30);
    // The cut did not lower 30 ms (the two windows after it took 36 ms): 30 ms is taken as
    // latency not caused by the limit.
    assert_eq!(rig.saturated(36).action, LimitAction::Hold);
    let undone = rig.saturated(36);
    assert_eq!(undone.action, LimitAction::UndoCut);
    assert!(about(rig.state.baseline(), 30));
    // Latency falls back, then returns within the baseline window (10 s): still no queueing.
    for _ in 0..50 {
        rig.saturated(10);
    }
    assert_eq!(rig.saturated(36).action, LimitAction::Grow);
    // Once the window is over, the no-load latency is the smallest recent window latency again.
    for _ in 0..50 {
        rig.saturated(10);
    }
    assert!(about(rig.state.baseline(), 10));
    assert_eq!(rig.saturated(36).action, LimitAction::Cut);
}

#[test]
fn only_requests_admitted_after_a_cut_judge_it() {
    let mut rig = Rig::new(|_| {});
    rig.past_slow_start();
    rig.saturated(10);
    // 10 requests admitted before the cut are still waiting when it happens.
    let admitted_before = rig.now;
    let early = admit(&mut rig, CRITICAL_PLUS, 10);
    assert_eq!(rig.saturated(30).action, LimitAction::Cut);
    // They end slowly in the next window: they say nothing about the cut, and close nothing.
    let now = rig.now + 2 * WINDOW_NANOS;
    let slow = Duration::from_nanos(now - admitted_before);
    for _ in 0..early {
        let end = Timestamp::from_nanos(now);
        let closed = rig.state.release(&rig.policy, end, slow, Outcome::Success);
        assert_eq!(closed, None);
    }
    // Requests admitted after it do, and at 10 ms they show the cut worked.
    let closed = rig.burst(rig.limit(), 10).unwrap();
    assert_eq!(closed.action, LimitAction::Grow, "{closed:?}");
    assert!(about(Some(closed.latency), 10));
}

#[test]
fn a_service_that_queues_even_at_the_floor_does_not_lock_the_limit_there() {
    // 6 workers at 10 ms behind a floor of 10: the floor itself queues (16.7 ms).
    let mut rig = Rig::new(|config| config.limit.min_limit = 10);
    rig.saturated(10);
    let windows: Vec<WindowClosed> = (0..40).map(|_| rig.queueing(6, 10)).collect();
    let floor = windows
        .iter()
        .position(|w| w.action == LimitAction::Cut && w.previous_limit == 10 && w.limit == 10)
        .expect("a window at the floor wants a cut");
    // A cut being impossible, that latency is taken as the no-load latency ...
    assert_eq!(windows[floor + 1].action, LimitAction::Grow);
    // ... and the limit keeps probing above the floor rather than staying pinned to it.
    let above = windows[floor..].iter().filter(|w| w.limit > 10).count();
    assert!(above * 3 >= windows.len() - floor, "{windows:?}");
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
    // The operator's target is absolute: its cuts are not undone when latency stays.
    let again = rig.saturated(100);
    assert_eq!((again.action, again.limit), (LimitAction::Cut, 5));
    // Without a target the same steady latency grows the limit.
    let mut untargeted = Rig::new(|_| {});
    assert_eq!(untargeted.saturated(100).limit, 40);
}

#[test]
fn app_limited_slowdown_shrinks_no_lower_than_demand() {
    let mut rig = Rig::new(|config| config.limit.initial_limit = 100);
    rig.burst(10, 10).unwrap();
    // The limit is not what holds the service's 10 requests back, so cutting it neither
    // lowers their latency nor their throughput: the limit shrinks towards the demand, ...
    for _ in 0..20 {
        rig.burst(10, 40).unwrap();
    }
    // ... 10 in flight at utilization 0.8 keeps 13, and the service is never refused.
    assert_eq!(rig.limit(), 13);
    assert_eq!(admit(&mut rig, CRITICAL, 10), 10);
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
fn a_zero_latency_from_a_clock_step_is_no_sample() {
    // The glue measures latency on the host's wall clock: a clock stepping back between
    // admission and release yields zero. Such a sample would pin the baseline at ~1 µs and the
    // limit at its floor for the whole baseline window.
    let mut rig = Rig::new(|_| {});
    rig.saturated(10);
    let limit = rig.limit();
    let admitted = admit(&mut rig, CRITICAL_PLUS, limit);
    let end = Timestamp::from_nanos(rig.now + 5_000_000);
    for _ in 0..admitted {
        let closed = rig
            .state
            .release(&rig.policy, end, Duration::ZERO, Outcome::Success);
        assert_eq!(closed, None, "zero latencies are no samples");
    }
    assert_eq!(rig.state.in_flight(), 0, "but they end their requests");
    let next = rig.saturated(10);
    assert_eq!(next.action, LimitAction::Grow);
    assert!(about(rig.state.baseline(), 10));
}

#[test]
fn windows_keep_closing_after_the_clock_steps_back_an_hour() {
    let policy = Policy::new(&pinned_config());
    let hour = 3_600_000_000_000u64;
    let mut state = SharedState::new(&policy, Timestamp::from_nanos(2 * hour));
    let mut closed = 0;
    // One window before the step, five after it.
    for start in [2 * hour, hour, hour + WINDOW_NANOS, hour + 2 * WINDOW_NANOS]
        .into_iter()
        .chain([3, 4].map(|k| hour + k * WINDOW_NANOS))
    {
        for _ in 0..10 {
            state.admit(&policy, CRITICAL_PLUS);
        }
        let end = Timestamp::from_nanos(start + WINDOW_NANOS);
        for _ in 0..10 {
            let window = state.release(&policy, end, Duration::from_millis(10), Outcome::Success);
            closed += usize::from(window.is_some());
        }
    }
    // The first window after the step restarts the window clock; every later one closes.
    assert_eq!(closed, 5);
    assert!(about(state.baseline(), 10));
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
    let mut rig = Rig::new(|config| config.limit.max_limit = 100);
    rig.past_slow_start();
    rig.saturated(10);
    // 15 s of 100 ms windows at 30 ms: longer than the baseline window (10 s, up to 13.3 s).
    for _ in 0..150 {
        rig.saturated(30);
    }
    assert!(about(rig.state.baseline(), 30));
    // Its latency not being queueing, the slower service kept a high limit all along.
    assert!(rig.limit() >= 90, "{}", rig.limit());
}

#[test]
fn state_round_trips_through_its_fixed_encoding() {
    let mut rig = Rig::new(|_| {});
    rig.past_slow_start();
    rig.saturated(10);
    rig.saturated(30);
    rig.state.admit(&rig.policy, CRITICAL);
    let bytes = rig.state.encode();
    assert_eq!(bytes.len(), SharedState::ENCODED_LEN);
    assert_eq!(bytes[0], SharedState::FORMAT_VERSION);
    assert_eq!(SharedState::decode(&bytes), Ok(rig.state.clone()));
    // With a cut being judged and an unqueued latency set.
    rig.saturated(30);
    let bytes = rig.state.encode();
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
    flags[1] = 16;
    assert!(SharedState::decode(&flags).is_err());
}
