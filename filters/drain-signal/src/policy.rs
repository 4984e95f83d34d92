//! The drain state machine, pure: timestamped [`Event`]s in, [`Decision`]s out, no hostcalls.
//! Its [`DrainState`] is the one value all workers share (in Envoy shared data), so every worker
//! and a reloaded VM continue the same drain.
//!
//! ```text
//!  Idle ──Trigger──► HealthFailing(started_at) ──AdminCallSucceeded──► Draining(started_at, drained_at)
//!                      │  from started_at + delay, a Tick claims the admin call (one worker:
//!                      │  the claim is a CAS on the shared state) and is told to dispatch it;
//!                      │  a failed call, or a claim whose worker never reported back, is
//!                      └  claimed again after a backoff
//! ```
//!
//! A trigger in any other state than `Idle` changes nothing (idempotent). Health checks fail from
//! `HealthFailing` on.

use meshkit::bytes::{ByteReader, ByteWriter, DecodeError};
use meshkit::clock::Timestamp;
use meshkit::shared::SharedValue;
use std::time::Duration;

/// The first retry of a failed admin call waits this long; each further failure doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between admin call retries.
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long past its timeout a claimed admin call may stay unreported before another worker
/// claims it (the claiming VM was reloaded or died).
pub const CLAIM_GRACE: Duration = Duration::from_secs(1);

/// The drain's timing, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// From the trigger to the admin call (clients' DNS refresh, load balancers' probes).
    pub delay: Duration,
    /// The admin call's timeout.
    pub call_timeout: Duration,
    /// Envoy's graceful drain window, when its closes are spread (`--drain-strategy gradual`).
    pub gradual_window: Option<Duration>,
}

/// The admin call of a drain that has not drained yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminCall {
    /// From when a tick may claim it: the drain deadline, a retry time after a failure, or the
    /// expiry of the current claim.
    pub next_at: Timestamp,
    /// When the current claim was made (it identifies the claim); `None` while unclaimed.
    pub claimed_at: Option<Timestamp>,
    /// Failed calls so far.
    pub failures: u32,
}

/// The shared drain state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DrainState {
    /// Serving normally.
    #[default]
    Idle,
    /// Triggered: health checks fail; the admin call is due from `started_at + delay`.
    HealthFailing {
        /// When the trigger was accepted.
        started_at: Timestamp,
        /// The admin call's progress.
        admin_call: AdminCall,
    },
    /// Envoy accepted the admin call: its inbound listeners are draining.
    Draining {
        /// When the trigger was accepted.
        started_at: Timestamp,
        /// When Envoy accepted the admin call.
        drained_at: Timestamp,
    },
}

/// Something that happened, at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An accepted trigger request.
    Trigger,
    /// A worker's periodic tick.
    Tick,
    /// The admin call of claim `claimed_at` answered 2xx.
    AdminCallSucceeded {
        /// The claim it was dispatched under.
        claimed_at: Timestamp,
    },
    /// The admin call of claim `claimed_at` failed (not dispatched, no answer, or not 2xx).
    AdminCallFailed {
        /// The claim it was dispatched under.
        claimed_at: Timestamp,
    },
}

/// What the worker that applied an event must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing.
    None,
    /// The trigger started the drain.
    Started,
    /// The trigger found a drain already under way; nothing changed.
    AlreadyTriggered,
    /// Dispatch the admin call now, under claim `claimed_at` (report its result with it).
    DispatchAdminCall {
        /// The claim's identity.
        claimed_at: Timestamp,
    },
}

/// The drain's phase, as the `drain_state` metric and the JSON state show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// 0: serving normally.
    Idle = 0,
    /// 1: health checks fail; waiting for the delay.
    HealthFailing = 1,
    /// 2: Envoy drains the inbound listeners.
    Draining = 2,
}

impl Phase {
    /// The name in the JSON state.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::HealthFailing => "health_failing",
            Phase::Draining => "draining",
        }
    }
}

impl DrainState {
    /// Applies `event` at `now`; returns the next state and what to do.
    pub fn step(self, policy: &Policy, event: Event, now: Timestamp) -> (DrainState, Decision) {
        match (self, event) {
            (DrainState::Idle, Event::Trigger) => (
                DrainState::HealthFailing {
                    started_at: now,
                    admin_call: AdminCall {
                        next_at: now.saturating_add(policy.delay),
                        claimed_at: None,
                        failures: 0,
                    },
                },
                Decision::Started,
            ),
            (_, Event::Trigger) => (self, Decision::AlreadyTriggered),
            (
                DrainState::HealthFailing {
                    started_at,
                    admin_call,
                },
                Event::Tick,
            ) if now >= admin_call.next_at => (
                DrainState::HealthFailing {
                    started_at,
                    admin_call: AdminCall {
                        next_at: now
                            .saturating_add(policy.call_timeout)
                            .saturating_add(CLAIM_GRACE),
                        claimed_at: Some(now),
                        ..admin_call
                    },
                },
                Decision::DispatchAdminCall { claimed_at: now },
            ),
            (
                DrainState::HealthFailing {
                    started_at,
                    admin_call,
                },
                Event::AdminCallSucceeded { claimed_at },
            ) if admin_call.claimed_at == Some(claimed_at) => (
                DrainState::Draining {
                    started_at,
                    drained_at: now,
                },
                Decision::None,
            ),
            (
                DrainState::HealthFailing {
                    started_at,
                    admin_call,
                },
                Event::AdminCallFailed { claimed_at },
            ) if admin_call.claimed_at == Some(claimed_at) => {
                let failures = admin_call.failures.saturating_add(1);
                (
                    DrainState::HealthFailing {
                        started_at,
                        admin_call: AdminCall {
                            next_at: now.saturating_add(retry_backoff(failures)),
                            claimed_at: None,
                            failures,
                        },
                    },
                    Decision::None,
                )
            }
            _ => (self, Decision::None),
        }
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        match self {
            DrainState::Idle => Phase::Idle,
            DrainState::HealthFailing { .. } => Phase::HealthFailing,
            DrainState::Draining { .. } => Phase::Draining,
        }
    }

    /// Whether health checks fail (from the trigger on).
    pub fn fails_health_checks(&self) -> bool {
        !matches!(self, DrainState::Idle)
    }

    /// When the trigger was accepted.
    pub fn started_at(&self) -> Option<Timestamp> {
        match *self {
            DrainState::Idle => None,
            DrainState::HealthFailing { started_at, .. }
            | DrainState::Draining { started_at, .. } => Some(started_at),
        }
    }

    /// When the admin call is due (`started_at + delay`).
    pub fn drain_due_at(&self, policy: &Policy) -> Option<Timestamp> {
        self.started_at()
            .map(|started_at| started_at.saturating_add(policy.delay))
    }

    /// When Envoy accepted the admin call.
    pub fn drained_at(&self) -> Option<Timestamp> {
        match *self {
            DrainState::Draining { drained_at, .. } => Some(drained_at),
            _ => None,
        }
    }

    /// When every connection should have been told to close: at the admin call with Envoy's
    /// immediate strategy, at the end of the gradual window otherwise.
    pub fn closes_by(&self, policy: &Policy) -> Option<Timestamp> {
        self.drained_at()
            .map(|at| at.saturating_add(policy.gradual_window.unwrap_or_default()))
    }

    /// Failed admin calls so far.
    pub fn admin_call_failures(&self) -> u32 {
        match self {
            DrainState::HealthFailing { admin_call, .. } => admin_call.failures,
            _ => 0,
        }
    }
}

/// The wait before the next claim after `failures` failed calls: [`FIRST_RETRY`] doubling per
/// failure, at most [`MAX_RETRY`].
pub fn retry_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

impl DrainState {
    /// The layout version of the encoding (part of the shared-data key).
    pub const FORMAT_VERSION: u8 = 1;
}

const NONE: u64 = u64::MAX;

impl SharedValue for DrainState {
    /// Layout (little-endian): version u8, phase u8, started_at u64 ns, then for
    /// `HealthFailing` next_at u64 ns, claimed_at u64 ns (`u64::MAX` = unclaimed), failures
    /// u32; for `Draining` drained_at u64 ns.
    fn encode(&self) -> Vec<u8> {
        let mut out = ByteWriter::with_capacity(30);
        out.u8(Self::FORMAT_VERSION).u8(self.phase() as u8);
        match *self {
            DrainState::Idle => {}
            DrainState::HealthFailing {
                started_at,
                admin_call,
            } => {
                out.u64(started_at.as_nanos())
                    .u64(admin_call.next_at.as_nanos())
                    .u64(admin_call.claimed_at.map_or(NONE, Timestamp::as_nanos))
                    .u32(admin_call.failures);
            }
            DrainState::Draining {
                started_at,
                drained_at,
            } => {
                out.u64(started_at.as_nanos()).u64(drained_at.as_nanos());
            }
        }
        out.into_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = ByteReader::new(bytes, "drain state");
        let version = input.u8()?;
        if version != Self::FORMAT_VERSION {
            return Err(DecodeError::new(
                "drain state",
                format!(
                    "layout version {version}, expected {}",
                    Self::FORMAT_VERSION
                ),
            ));
        }
        let state = match input.u8()? {
            0 => DrainState::Idle,
            1 => {
                let started_at = Timestamp::from_nanos(input.u64()?);
                let next_at = Timestamp::from_nanos(input.u64()?);
                let claimed_at = input.u64()?;
                let failures = input.u32()?;
                DrainState::HealthFailing {
                    started_at,
                    admin_call: AdminCall {
                        next_at,
                        claimed_at: (claimed_at != NONE).then(|| Timestamp::from_nanos(claimed_at)),
                        failures,
                    },
                }
            }
            2 => DrainState::Draining {
                started_at: Timestamp::from_nanos(input.u64()?),
                drained_at: Timestamp::from_nanos(input.u64()?),
            },
            phase => {
                return Err(DecodeError::new(
                    "drain state",
                    format!("unknown phase {phase}"),
                ))
            }
        };
        input.finish()?;
        Ok(state)
    }
}
