//! Property tests of the policy core over arbitrary valid configurations and event sequences.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use load_shedder::classify::{Criticality, Rank};
use load_shedder::config::ShedderConfig;
use load_shedder::policy::{Admission, LimitAction, Outcome, Policy, SharedState, WindowClosed};
use meshkit::clock::Timestamp;
use meshkit::config::{DurationMs, Fraction, Validate};
use proptest::prelude::*;
use std::time::Duration;

/// One step of a request stream.
#[derive(Debug, Clone)]
enum Event {
    /// A request of this rank arrives.
    Admit(Rank),
    /// The `pick`-th outstanding request (modulo their number) ends.
    Release {
        pick: usize,
        latency_ms: u64,
        outcome: Outcome,
    },
    /// Virtual time passes.
    Advance { ms: u64 },
}

fn rank() -> impl Strategy<Value = Rank> {
    (0..4usize, any::<bool>()).prop_map(|(criticality, first_attempt)| Rank {
        criticality: Criticality::ALL[criticality],
        first_attempt,
    })
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Success),
        1 => Just(Outcome::Error),
        1 => Just(Outcome::Reset),
        1 => Just(Outcome::LocalReply),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => rank().prop_map(Event::Admit),
        4 => (any::<usize>(), 0u64..2_000, outcome()).prop_map(|(pick, latency_ms, outcome)| {
            Event::Release { pick, latency_ms, outcome }
        }),
        1 => (0u64..3_000).prop_map(|ms| Event::Advance { ms }),
    ]
}

fn fraction(range: std::ops::RangeInclusive<f64>) -> impl Strategy<Value = Fraction> {
    range.prop_map(|value| Fraction::new(value).unwrap())
}

/// Arbitrary configurations that pass validation.
fn config() -> impl Strategy<Value = ShedderConfig> {
    (
        (
            1u32..40,
            0u32..100,
            0u32..2_000,
            1u64..1_000,
            1u32..20,
            0u32..500,
        ),
        (
            fraction(0.01..=1.0),
            fraction(0.0..=1.0),
            fraction(0.01..=1.0),
            fraction(0.05..=0.9),
            proptest::option::of(1u64..2_000),
            1u64..30_000,
        ),
        any::<bool>(),
    )
        .prop_map(|(sizes, shape, dry_run)| {
            let (min, initial_extra, max_extra, window_ms, min_samples, max_extra_samples) = sizes;
            let (quantile, tolerance, utilization, max_decrease, target, baseline_ms) = shape;
            let mut config = ShedderConfig {
                dry_run,
                ..ShedderConfig::default()
            };
            let limit = &mut config.limit;
            limit.min_limit = min;
            limit.initial_limit = min + initial_extra;
            limit.max_limit = min + initial_extra + max_extra;
            limit.window_ms = DurationMs(window_ms);
            limit.window_min_samples = min_samples;
            limit.window_max_samples = min_samples + max_extra_samples;
            limit.latency_quantile = quantile;
            limit.tolerance = tolerance;
            limit.utilization = utilization;
            limit.max_decrease = max_decrease;
            limit.latency_target_ms = target.map(DurationMs);
            limit.baseline_window_ms = DurationMs(baseline_ms);
            config.validate().unwrap();
            config
        })
}

/// Runs `events`, releasing only requests that were admitted (as the glue does), calling
/// `check` after every step with the state, the outstanding count and any window update.
fn run(
    config: &ShedderConfig,
    events: &[Event],
    mut check: impl FnMut(&SharedState, usize, Option<WindowClosed>) -> Result<(), TestCaseError>,
) -> Result<SharedState, TestCaseError> {
    let policy = Policy::new(config);
    let mut state = SharedState::new(&policy, Timestamp::EPOCH);
    let mut now = 0u64;
    let mut outstanding: Vec<u64> = Vec::new();
    for event in events {
        let mut closed = None;
        match *event {
            Event::Admit(rank) => {
                let slow_start = state.in_slow_start();
                let admission = state.admit(&policy, rank);
                if config.dry_run {
                    prop_assert_ne!(admission, Admission::Shed);
                }
                if !config.dry_run {
                    prop_assert!(
                        state.in_flight() <= config.limit.max_limit,
                        "over max_limit"
                    );
                }
                let highest = rank.criticality == Criticality::CriticalPlus && rank.first_attempt;
                if slow_start && highest && admission != Admission::Admitted {
                    // Before the first cut, the highest rank is refused only at a full limit.
                    let before = state.in_flight() - u32::from(admission.is_admitted());
                    prop_assert!(before >= state.limit(&policy));
                }
                if admission.is_admitted() {
                    outstanding.push(now);
                }
            }
            Event::Release {
                pick,
                latency_ms,
                outcome,
            } => {
                if !outstanding.is_empty() {
                    outstanding.swap_remove(pick % outstanding.len());
                    now += latency_ms * 1_000_000;
                    let latency = Duration::from_millis(latency_ms);
                    closed = state.release(&policy, Timestamp::from_nanos(now), latency, outcome);
                }
            }
            Event::Advance { ms } => now += ms * 1_000_000,
        }
        check(&state, outstanding.len(), closed)?;
    }
    Ok(state)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn limit_stays_within_bounds(
        config in config(),
        events in proptest::collection::vec(event(), 0..600),
    ) {
        let policy = Policy::new(&config);
        let (min, max) = (config.limit.min_limit, config.limit.max_limit);
        run(&config, &events, |state, _, closed| {
            let limit = state.limit(&policy);
            prop_assert!(min <= limit && limit <= max, "{limit} outside [{min}, {max}]");
            if let Some(closed) = closed {
                prop_assert!(min <= closed.limit && closed.limit <= max);
            }
            Ok(())
        })?;
    }

    #[test]
    fn in_flight_is_exactly_the_admitted_and_unreleased_requests(
        config in config(),
        events in proptest::collection::vec(event(), 0..600),
    ) {
        let state = run(&config, &events, |state, outstanding, _| {
            prop_assert_eq!(state.in_flight() as usize, outstanding);
            Ok(())
        })?;
        // Draining every request leaves nothing behind, and extra releases never go negative.
        let policy = Policy::new(&config);
        let mut state = state;
        for _ in 0..state.in_flight() + 3 {
            state.release(&policy, Timestamp::EPOCH, Duration::ZERO, Outcome::Success);
        }
        prop_assert_eq!(state.in_flight(), 0);
    }

    #[test]
    fn lower_ranks_are_refused_whenever_a_higher_rank_would_be(
        config in config(),
        events in proptest::collection::vec(event(), 0..400),
    ) {
        let mut normal = config.clone();
        normal.dry_run = false;
        let policy = Policy::new(&normal);
        run(&config, &events, |state, _, _| {
            let refused: Vec<bool> = (0..Rank::COUNT)
                .map(|index| {
                    let rank = Rank {
                        criticality: Criticality::ALL[index / 2],
                        first_attempt: index % 2 == 1,
                    };
                    state.clone().admit(&policy, rank) == Admission::Shed
                })
                .collect();
            // Indexed in rank order: once a rank is admitted, every higher rank is too.
            for pair in refused.windows(2) {
                prop_assert!(pair[0] || !pair[1], "refusals by rank: {refused:?}");
            }
            Ok(())
        })?;
    }

    #[test]
    fn dry_run_admits_everything_and_reports_exactly_what_would_be_shed(
        config in config(),
        events in proptest::collection::vec(event(), 0..400),
        probe in rank(),
    ) {
        let mut enforcing = config.clone();
        enforcing.dry_run = false;
        let mut dry = config.clone();
        dry.dry_run = true;
        let (enforcing, dry) = (Policy::new(&enforcing), Policy::new(&dry));
        run(&config, &events, |state, _, _| {
            let decision = state.clone().admit(&enforcing, probe);
            let dry_decision = state.clone().admit(&dry, probe);
            let expected = if decision == Admission::Shed {
                Admission::WouldShed
            } else {
                Admission::Admitted
            };
            prop_assert_eq!(dry_decision, expected);
            Ok(())
        })?;
    }

    #[test]
    fn every_window_moves_the_limit_in_the_direction_latency_says(
        config in config(),
        events in proptest::collection::vec(event(), 0..600),
    ) {
        let tolerance = config.limit.tolerance.get();
        let target = config.limit.latency_target_ms.map(|t| Duration::from_millis(t.as_millis()));
        run(&config, &events, |_, _, closed| {
            if let Some(w) = closed {
                let ratio = w.latency.as_secs_f64() / w.baseline.as_secs_f64();
                let over_target = target.is_some_and(|t| w.latency > t);
                if w.action == LimitAction::UndoCut {
                    // Undoing a cut that did not lower latency restores a higher limit.
                    prop_assert!(w.limit >= w.previous_limit, "undo shrank: {w:?}");
                } else if w.action == LimitAction::Retest {
                    // Re-testing a latency known not to be queueing cuts whatever it is.
                    prop_assert!(w.limit <= w.previous_limit, "re-test grew: {w:?}");
                } else if ratio > 1.0 + tolerance || over_target {
                    prop_assert!(w.limit <= w.previous_limit, "rising latency grew: {w:?}");
                } else {
                    prop_assert!(w.limit >= w.previous_limit, "steady latency shrank: {w:?}");
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn a_cut_is_repeated_only_when_it_lowered_latency_or_the_throughput_held(
        config in config(),
        events in proptest::collection::vec(event(), 0..600),
    ) {
        // The operator's latency target cuts unconditionally; queueing cuts are verified.
        let mut config = config;
        config.limit.latency_target_ms = None;
        let mut last_cut: Option<WindowClosed> = None;
        run(&config, &events, |_, _, closed| {
            if let Some(w) = closed {
                let cut = matches!(w.action, LimitAction::Cut | LimitAction::Retest)
                    && w.limit < w.previous_limit;
                if let (true, Some(first)) = (cut, last_cut) {
                    // Had neither happened, this window would have undone the first cut.
                    let kept = f64::from(w.previous_limit) / f64::from(first.previous_limit);
                    let latency_held =
                        w.latency.as_secs_f64() >= first.latency.as_secs_f64() * (1.0 + kept) / 2.0;
                    let throughput_fell = f64::from(w.released) * first.duration.as_secs_f64()
                        < f64::from(first.released) * w.duration.as_secs_f64() * (1.0 + kept) / 2.0;
                    prop_assert!(
                        !(latency_held && throughput_fell),
                        "cut again after a cut that lowered neither latency nor throughput: \
                         {first:?} then {w:?}"
                    );
                }
                last_cut = cut.then_some(w);
            }
            Ok(())
        })?;
    }

    #[test]
    fn an_app_limited_service_never_drifts_the_limit_up(
        config in config(),
        latencies in proptest::collection::vec(0u64..500, 1..800),
    ) {
        // Demand stays below utilization × min_limit: the limit is never in use, so whatever
        // the latencies, the limit never exceeds where it started.
        let mut config = config;
        config.dry_run = false;
        config.limit.min_limit = config.limit.min_limit.max(10);
        config.limit.initial_limit = config.limit.initial_limit.max(10);
        config.limit.max_limit = config.limit.max_limit.max(config.limit.initial_limit);
        let concurrency = ((config.limit.utilization.get() * 10.0).ceil() as usize).saturating_sub(1);
        prop_assume!(concurrency >= 1);
        let mut events = Vec::new();
        for chunk in latencies.chunks(concurrency) {
            events.extend(chunk.iter().map(|_| Event::Admit(Rank {
                criticality: Criticality::CriticalPlus,
                first_attempt: true,
            })));
            events.extend(chunk.iter().map(|&latency_ms| Event::Release {
                pick: 0,
                latency_ms,
                outcome: Outcome::Success,
            }));
        }
        let initial = config.limit.initial_limit;
        let policy = Policy::new(&config);
        run(&config, &events, |state, _, _| {
            prop_assert!(state.limit(&policy) <= initial);
            Ok(())
        })?;
    }
}
