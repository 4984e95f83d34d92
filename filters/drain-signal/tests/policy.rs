//! The drain state machine in virtual time: trigger, health failing, the admin call claimed once
//! when due, retries with backoff after failures, expired claims, idempotent triggers, the
//! shared-data encoding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drain_signal::policy::{
    retry_backoff, AdminCall, Decision, DrainState, Event, Phase, Policy, CLAIM_GRACE, FIRST_RETRY,
    MAX_RETRY,
};
use meshkit::clock::Timestamp;
use meshkit::shared::SharedValue;
use std::time::Duration;

const DELAY: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(5);

fn policy() -> Policy {
    Policy {
        delay: DELAY,
        call_timeout: TIMEOUT,
        gradual_window: None,
    }
}

fn at(secs: f64) -> Timestamp {
    Timestamp::from_nanos((secs * 1e9) as u64)
}

fn step(state: DrainState, event: Event, secs: f64) -> (DrainState, Decision) {
    state.step(&policy(), event, at(secs))
}

/// Triggered at 100 s.
fn triggered() -> DrainState {
    let (state, decision) = step(DrainState::Idle, Event::Trigger, 100.0);
    assert_eq!(decision, Decision::Started);
    state
}

#[test]
fn idle_serves_and_ticks_do_nothing() {
    let state = DrainState::Idle;
    assert!(!state.fails_health_checks());
    assert_eq!(state.phase(), Phase::Idle);
    for secs in [0.0, 1e6] {
        assert_eq!(step(state, Event::Tick, secs), (state, Decision::None));
    }
    let stray = Event::AdminCallSucceeded {
        claimed_at: at(1.0),
    };
    assert_eq!(step(state, stray, 2.0), (state, Decision::None));
}

#[test]
fn a_trigger_fails_health_checks_at_once_and_schedules_the_drain_after_the_delay() {
    let state = triggered();
    assert!(state.fails_health_checks());
    assert_eq!(state.phase(), Phase::HealthFailing);
    assert_eq!(state.started_at(), Some(at(100.0)));
    assert_eq!(state.drain_due_at(&policy()), Some(at(130.0)));
    assert_eq!(state.drained_at(), None);
    // Ticks before the deadline change nothing.
    for secs in [100.0, 110.0, 129.999] {
        assert_eq!(
            step(state, Event::Tick, secs),
            (state, Decision::None),
            "{secs}"
        );
    }
}

#[test]
fn triggers_are_idempotent() {
    let state = triggered();
    assert_eq!(
        step(state, Event::Trigger, 120.0),
        (state, Decision::AlreadyTriggered)
    );
    let (claimed, _) = step(state, Event::Tick, 130.0);
    let (drained, _) = step(
        claimed,
        Event::AdminCallSucceeded {
            claimed_at: at(130.0),
        },
        130.1,
    );
    assert_eq!(
        step(drained, Event::Trigger, 200.0),
        (drained, Decision::AlreadyTriggered)
    );
}

#[test]
fn the_first_tick_at_the_deadline_claims_the_admin_call_and_no_other_tick_does() {
    let state = triggered();
    let (claimed, decision) = step(state, Event::Tick, 130.0);
    assert_eq!(
        decision,
        Decision::DispatchAdminCall {
            claimed_at: at(130.0)
        }
    );
    // Another worker's tick, while the claim stands, claims nothing.
    for secs in [130.0, 131.0, 135.9] {
        assert_eq!(step(claimed, Event::Tick, secs).1, Decision::None, "{secs}");
    }
    let (drained, decision) = step(
        claimed,
        Event::AdminCallSucceeded {
            claimed_at: at(130.0),
        },
        130.2,
    );
    assert_eq!(decision, Decision::None);
    assert_eq!(drained.phase(), Phase::Draining);
    assert_eq!(drained.drained_at(), Some(at(130.2)));
    assert_eq!(drained.closes_by(&policy()), Some(at(130.2)));
    assert!(drained.fails_health_checks());
    for secs in [131.0, 1e6] {
        assert_eq!(step(drained, Event::Tick, secs), (drained, Decision::None));
    }
}

#[test]
fn a_failed_call_is_claimed_again_after_a_growing_backoff() {
    let mut state = triggered();
    let mut now = 130.0;
    for failures in 1..=8u32 {
        let (claimed, decision) = step(state, Event::Tick, now);
        assert_eq!(
            decision,
            Decision::DispatchAdminCall {
                claimed_at: at(now)
            }
        );
        let (failed, _) = step(
            claimed,
            Event::AdminCallFailed {
                claimed_at: at(now),
            },
            now + 0.5,
        );
        assert_eq!(failed.admin_call_failures(), failures);
        assert!(failed.fails_health_checks());
        let backoff = retry_backoff(failures).as_secs_f64();
        assert_eq!(
            step(failed, Event::Tick, now + 0.5 + backoff - 0.001).1,
            Decision::None
        );
        state = failed;
        now += 0.5 + backoff;
    }
    assert_eq!(retry_backoff(1), FIRST_RETRY);
    assert_eq!(retry_backoff(2), FIRST_RETRY * 2);
    assert_eq!(retry_backoff(u32::MAX), MAX_RETRY);
}

#[test]
fn a_claim_whose_worker_never_reports_expires_and_is_claimed_again() {
    let (claimed, _) = step(triggered(), Event::Tick, 130.0);
    let expiry = 130.0 + (TIMEOUT + CLAIM_GRACE).as_secs_f64();
    assert_eq!(step(claimed, Event::Tick, expiry - 0.001).1, Decision::None);
    let (reclaimed, decision) = step(claimed, Event::Tick, expiry);
    assert_eq!(
        decision,
        Decision::DispatchAdminCall {
            claimed_at: at(expiry)
        }
    );
    // The vanished claim's late result is ignored; the current claim's counts.
    let late = Event::AdminCallFailed {
        claimed_at: at(130.0),
    };
    assert_eq!(
        step(reclaimed, late, expiry + 1.0),
        (reclaimed, Decision::None)
    );
    let (drained, _) = step(
        reclaimed,
        Event::AdminCallSucceeded {
            claimed_at: at(expiry),
        },
        expiry + 1.0,
    );
    assert_eq!(drained.phase(), Phase::Draining);
}

#[test]
fn a_gradual_window_extends_closes_by() {
    let policy = Policy {
        gradual_window: Some(Duration::from_secs(10)),
        ..policy()
    };
    let (state, _) = DrainState::Idle.step(&policy, Event::Trigger, at(0.0));
    let (claimed, _) = state.step(&policy, Event::Tick, at(30.0));
    let (drained, _) = claimed.step(
        &policy,
        Event::AdminCallSucceeded {
            claimed_at: at(30.0),
        },
        at(30.0),
    );
    assert_eq!(drained.closes_by(&policy), Some(at(40.0)));
}

#[test]
fn a_zero_delay_drains_on_the_next_tick() {
    let policy = Policy {
        delay: Duration::ZERO,
        ..policy()
    };
    let (state, _) = DrainState::Idle.step(&policy, Event::Trigger, at(5.0));
    assert!(matches!(
        state.step(&policy, Event::Tick, at(5.0)).1,
        Decision::DispatchAdminCall { .. }
    ));
}

#[test]
fn every_state_round_trips_through_shared_data_and_other_layouts_are_refused() {
    let states = [
        DrainState::Idle,
        triggered(),
        DrainState::HealthFailing {
            started_at: at(1.0),
            admin_call: AdminCall {
                next_at: at(2.0),
                claimed_at: Some(at(1.5)),
                failures: 3,
            },
        },
        DrainState::Draining {
            started_at: at(1.0),
            drained_at: at(31.0),
        },
    ];
    for state in states {
        assert_eq!(DrainState::decode(&state.encode()), Ok(state));
    }
    let mut other_version = triggered().encode();
    other_version[0] = DrainState::FORMAT_VERSION + 1;
    assert!(DrainState::decode(&other_version).is_err());
    let mut unknown_phase = DrainState::Idle.encode();
    unknown_phase[1] = 9;
    assert!(DrainState::decode(&unknown_phase).is_err());
    let mut trailing = DrainState::Idle.encode();
    trailing.push(0);
    assert!(DrainState::decode(&trailing).is_err());
}
