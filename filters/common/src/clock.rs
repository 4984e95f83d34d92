//! Time: the [`Timestamp`] type, the [`Clock`] trait and (wasm32) the host's clock and the root
//! context's tick period.

use std::time::Duration;

/// A point in time: nanoseconds since the Unix epoch. Arithmetic saturates instead of overflowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// A timestamp `millis` milliseconds after the epoch (saturating at the largest timestamp).
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// This timestamp plus `duration`, saturating at the largest timestamp.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(nanos))
    }

    /// How long after `earlier` this timestamp is; zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// A source of the current time.
pub trait Clock {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The host's wall clock (`proxy_get_current_time_nanoseconds`).
#[cfg(target_arch = "wasm32")]
#[derive(Debug, Default, Clone, Copy)]
pub struct HostClock;

#[cfg(target_arch = "wasm32")]
impl Clock for HostClock {
    /// The host's time; the epoch if the host refuses to say (never panics).
    fn now(&self) -> Timestamp {
        match crate::ffi::current_time_nanos() {
            Ok(nanos) => Timestamp(nanos),
            Err(err) => {
                log::debug!("{err}; using the epoch as the current time");
                Timestamp::EPOCH
            }
        }
    }
}

/// Sets the root context's tick period (`proxy_set_tick_period_milliseconds`), rounded down to
/// whole milliseconds and capped at `u32::MAX` ms; zero disables ticks. Unlike the SDK's
/// `set_tick_period`, never panics.
#[cfg(target_arch = "wasm32")]
pub fn set_tick_period(period: Duration) -> Result<(), crate::error::HostError> {
    let millis = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    crate::ffi::set_tick_period_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        assert_eq!(Timestamp::from_millis(1_500).as_nanos(), 1_500_000_000);
        assert_eq!(Timestamp::from_nanos(7).as_nanos(), 7);
        assert_eq!(Timestamp::from_millis(u64::MAX).as_nanos(), u64::MAX);
    }

    #[test]
    fn arithmetic_saturates_near_the_limits() {
        let late = Timestamp::from_nanos(u64::MAX - 5);
        assert_eq!(
            late.saturating_add(Duration::from_secs(1)),
            Timestamp::from_nanos(u64::MAX)
        );
        assert_eq!(
            Timestamp::EPOCH.saturating_add(Duration::MAX),
            Timestamp::from_nanos(u64::MAX)
        );
        assert_eq!(
            Timestamp::EPOCH.saturating_duration_since(late),
            Duration::ZERO
        );
        assert_eq!(
            late.saturating_duration_since(Timestamp::EPOCH),
            Duration::from_nanos(u64::MAX - 5)
        );
    }
}
