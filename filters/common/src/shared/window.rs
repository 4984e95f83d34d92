//! [`SlidingWindowCounter`]: how many events happened in the last `window`, across all workers,
//! kept as one shared-data value ([`WindowState`]) of fixed-width time buckets.

use super::cell::{SharedCell, UpdateError};
use super::counter::CounterUpdate;
use super::store::SharedStore;
use super::value::{DecodeError, SharedValue};
use crate::bytes::{ByteReader, ByteWriter};
use crate::clock::Timestamp;
use std::fmt;
use std::time::Duration;

/// The most buckets one window may have (keeps the shared value under 8.1 KiB).
pub const MAX_BUCKETS: u32 = 1024;

const HEADER_LEN: usize = 8 + 8 + 4;

/// The bucketed counts of a sliding window, as stored in shared data.
///
/// Layout (little-endian): `u64` bucket width in nanoseconds, `u64` index of the newest bucket
/// (`timestamp_nanos / width`), `u32` bucket count `n`, then `n` `u64` counts, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WindowState {
    bucket_nanos: u64,
    newest_bucket: u64,
    counts: Vec<u64>,
}

impl WindowState {
    /// An all-zero window of `buckets` buckets of `bucket_nanos` each, newest bucket `newest`.
    fn new(bucket_nanos: u64, buckets: usize, newest_bucket: u64) -> Self {
        Self {
            bucket_nanos,
            newest_bucket,
            counts: vec![0; buckets],
        }
    }

    /// Records `n` events in bucket `bucket`, expiring buckets that fall out of the window.
    /// A bucket older than the newest one (the clock went backwards) counts as the newest.
    fn record(&mut self, bucket: u64, n: u64) {
        self.advance_to(bucket);
        if let Some(newest) = self.counts.first_mut() {
            *newest = newest.saturating_add(n);
        }
    }

    /// The number of events in the window ending with bucket `bucket` (at least the newest
    /// stored bucket, so a clock that went backwards sees the whole stored window).
    fn sum_at(&self, bucket: u64) -> u64 {
        let age = bucket.saturating_sub(self.newest_bucket);
        let live = usize::try_from(age)
            .ok()
            .and_then(|age| self.counts.len().checked_sub(age))
            .unwrap_or(0);
        self.counts[..live]
            .iter()
            .fold(0u64, |sum, &count| sum.saturating_add(count))
    }

    fn advance_to(&mut self, bucket: u64) {
        if bucket <= self.newest_bucket {
            return;
        }
        let shift = usize::try_from(bucket - self.newest_bucket).unwrap_or(usize::MAX);
        if shift >= self.counts.len() {
            self.counts.fill(0);
        } else {
            self.counts.rotate_right(shift);
            self.counts[..shift].fill(0);
        }
        self.newest_bucket = bucket;
    }
}

impl SharedValue for WindowState {
    fn encode(&self) -> Vec<u8> {
        let mut out = ByteWriter::with_capacity(HEADER_LEN + self.counts.len() * 8);
        out.u64(self.bucket_nanos)
            .u64(self.newest_bucket)
            .u32(u32::try_from(self.counts.len()).unwrap_or(u32::MAX));
        for count in &self.counts {
            out.u64(*count);
        }
        out.into_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = ByteReader::new(bytes, "WindowState");
        let bucket_nanos = input.u64()?;
        let newest_bucket = input.u64()?;
        let buckets = input.u32()?;
        if bucket_nanos == 0 || buckets == 0 || buckets > MAX_BUCKETS {
            return Err(DecodeError::new(
                "WindowState",
                format!("bad window shape: {buckets} buckets of {bucket_nanos} ns"),
            ));
        }
        let counts = (0..buckets)
            .map(|_| input.u64())
            .collect::<Result<Vec<_>, _>>()?;
        input.finish()?;
        Ok(Self {
            bucket_nanos,
            newest_bucket,
            counts,
        })
    }
}

/// A sliding-window shape that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowConfigError {
    message: String,
}

impl fmt::Display for WindowConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid sliding window: {}", self.message)
    }
}

impl std::error::Error for WindowConfigError {}

/// Counts events in the last `window`, split into `buckets` buckets, shared by all workers.
///
/// The window moves in whole buckets: an event at time `t` lands in bucket
/// `t / (window / buckets)` and stops counting once the current bucket is `buckets` or more
/// buckets later. Buckets are expired on every read and write. A clock that goes backwards
/// counts as the newest stored bucket; a gap longer than the window resets every bucket.
///
/// Like [`SharedCounter`](super::SharedCounter), events are never lost, only deferred: after the
/// retry bound they stay in [`pending`](Self::pending) and are written, in the bucket current at
/// that time, by the next [`add`](Self::add) or [`flush`](Self::flush).
///
/// The shared value records its bucket width and count; reading a value of another shape (the
/// same key used with a different window) is a [`UpdateError::Decode`] error.
#[derive(Debug, Clone)]
pub struct SlidingWindowCounter {
    key: String,
    bucket_nanos: u64,
    buckets: u32,
    max_retries: u32,
    pending: u64,
}

impl SlidingWindowCounter {
    /// The retry bound of [`SlidingWindowCounter::new`].
    pub const DEFAULT_MAX_RETRIES: u32 = 16;

    /// A counter under `key` over `window` in `buckets` buckets (1..=1024). The bucket width is
    /// `window / buckets`, rounded down to whole nanoseconds, and must be at least 1 ns.
    pub fn new(
        key: impl Into<String>,
        window: Duration,
        buckets: u32,
    ) -> Result<Self, WindowConfigError> {
        if buckets == 0 || buckets > MAX_BUCKETS {
            return Err(WindowConfigError {
                message: format!(
                    "bucket count must be between 1 and {MAX_BUCKETS} (got {buckets})"
                ),
            });
        }
        let window_nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let bucket_nanos = window_nanos / u64::from(buckets);
        if bucket_nanos == 0 {
            return Err(WindowConfigError {
                message: format!("a window of {window:?} cannot hold {buckets} buckets"),
            });
        }
        Ok(Self {
            key: key.into(),
            bucket_nanos,
            buckets,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            pending: 0,
        })
    }

    /// The same counter with a different retry bound.
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Events this worker has counted but not yet written.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Records `n` events (plus anything pending) at `now`; on success reports the window's sum.
    /// Adding 0 with nothing pending writes nothing (it is a [`sum`](Self::sum)).
    pub fn add<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        now: Timestamp,
        n: u64,
    ) -> CounterUpdate {
        self.pending = self.pending.saturating_add(n);
        self.flush(store, now)
    }

    /// Writes pending events at `now`; with nothing pending, reports the window's sum.
    pub fn flush<S: SharedStore + ?Sized>(&mut self, store: &S, now: Timestamp) -> CounterUpdate {
        let delta = self.pending;
        let result = if delta == 0 {
            self.sum(store, now)
        } else {
            let bucket = self.bucket_of(now);
            let (bucket_nanos, buckets) = (self.bucket_nanos, self.buckets);
            self.cell(store)
                .try_update(|current| {
                    let mut state = match current {
                        Some(state) => check_shape(state, bucket_nanos, buckets)?,
                        None => WindowState::new(bucket_nanos, buckets as usize, bucket),
                    };
                    state.record(bucket, delta);
                    Ok(state)
                })
                .map(|state| state.sum_at(bucket))
        };
        match result {
            Ok(total) => {
                self.pending = 0;
                CounterUpdate::Applied { total }
            }
            Err(error) => CounterUpdate::Deferred {
                pending: self.pending,
                error,
            },
        }
    }

    /// The number of events in the window ending at `now`, as stored in shared data (excludes
    /// every worker's pending events).
    pub fn sum<S: SharedStore + ?Sized>(
        &self,
        store: &S,
        now: Timestamp,
    ) -> Result<u64, UpdateError> {
        match self.cell(store).read()? {
            Some(state) => {
                let state = check_shape(state, self.bucket_nanos, self.buckets)?;
                Ok(state.sum_at(self.bucket_of(now)))
            }
            None => Ok(0),
        }
    }

    fn cell<'a, S: SharedStore + ?Sized>(
        &'a self,
        store: &'a S,
    ) -> SharedCell<WindowState, &'a S, &'a str> {
        SharedCell::new(store, &self.key, self.max_retries)
    }

    fn bucket_of(&self, now: Timestamp) -> u64 {
        now.as_nanos() / self.bucket_nanos
    }
}

fn check_shape(
    state: WindowState,
    bucket_nanos: u64,
    buckets: u32,
) -> Result<WindowState, UpdateError> {
    if state.bucket_nanos == bucket_nanos && state.counts.len() == buckets as usize {
        Ok(state)
    } else {
        Err(UpdateError::Decode(DecodeError::new(
            "WindowState",
            format!(
                "stored window has {} buckets of {} ns, expected {buckets} of {bucket_nanos} ns",
                state.counts.len(),
                state.bucket_nanos
            ),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::cell::tests::RacingStore;
    use crate::shared::store::MemoryStore;

    const SECOND: u64 = 1_000_000_000;

    fn at(nanos: u64) -> Timestamp {
        Timestamp::from_nanos(nanos)
    }

    fn ten_seconds_in_ten() -> SlidingWindowCounter {
        SlidingWindowCounter::new("w", Duration::from_secs(10), 10).unwrap()
    }

    #[test]
    fn events_expire_exactly_when_their_bucket_leaves_the_window() {
        let store = MemoryStore::new();
        let mut window = ten_seconds_in_ten();
        assert_eq!(
            window.add(&store, at(SECOND + 999_999_999), 3).total(),
            Some(3)
        );
        // The event is in bucket 1 = [1 s, 2 s); it counts while the current bucket is <= 10.
        assert_eq!(window.sum(&store, at(10 * SECOND)), Ok(3));
        assert_eq!(window.sum(&store, at(11 * SECOND - 1)), Ok(3));
        assert_eq!(window.sum(&store, at(11 * SECOND)), Ok(0));
    }

    #[test]
    fn buckets_expire_one_at_a_time() {
        let store = MemoryStore::new();
        let mut window = ten_seconds_in_ten();
        for second in 0..10 {
            let _ = window.add(&store, at(second * SECOND), second + 1);
        }
        assert_eq!(window.sum(&store, at(9 * SECOND)), Ok(55));
        assert_eq!(window.sum(&store, at(10 * SECOND)), Ok(54));
        assert_eq!(
            window.add(&store, at(12 * SECOND), 100).total(),
            Some(49 + 100)
        );
        assert_eq!(window.sum(&store, at(18 * SECOND)), Ok(10 + 100));
        assert_eq!(window.sum(&store, at(19 * SECOND)), Ok(100));
    }

    #[test]
    fn clock_going_backwards_counts_in_the_newest_bucket() {
        let store = MemoryStore::new();
        let mut window = ten_seconds_in_ten();
        let _ = window.add(&store, at(50 * SECOND), 1);
        assert_eq!(window.add(&store, at(3 * SECOND), 2).total(), Some(3));
        assert_eq!(window.sum(&store, at(0)), Ok(3));
        assert_eq!(window.sum(&store, at(59 * SECOND)), Ok(3));
        assert_eq!(window.sum(&store, at(60 * SECOND)), Ok(0));
    }

    #[test]
    fn huge_gaps_reset_every_bucket_without_overflow() {
        let store = MemoryStore::new();
        let mut window = ten_seconds_in_ten();
        let _ = window.add(&store, at(0), 5);
        assert_eq!(window.add(&store, at(u64::MAX), 1).total(), Some(1));
        assert_eq!(window.sum(&store, at(u64::MAX)), Ok(1));
        assert_eq!(window.sum(&store, at(0)), Ok(1));
    }

    #[test]
    fn contention_defers_events_without_losing_them() {
        let store = RacingStore::losing(1);
        let mut window = ten_seconds_in_ten().with_max_retries(0);
        let update = window.add(&store, at(SECOND), 4);
        assert!(matches!(
            update,
            CounterUpdate::Deferred {
                pending: 4,
                error: UpdateError::Contended { attempts: 1 }
            }
        ));
        assert_eq!(window.add(&store, at(2 * SECOND), 1).total(), Some(5));
        assert_eq!(window.pending(), 0);
    }

    #[test]
    fn a_differently_shaped_value_is_a_decode_error() {
        let store = MemoryStore::new();
        let _ = ten_seconds_in_ten().add(&store, at(0), 1);
        let mut other = SlidingWindowCounter::new("w", Duration::from_secs(10), 5).unwrap();
        assert!(matches!(
            other.sum(&store, at(0)),
            Err(UpdateError::Decode(_))
        ));
        assert!(matches!(
            other.add(&store, at(0), 1),
            CounterUpdate::Deferred {
                pending: 1,
                error: UpdateError::Decode(_)
            }
        ));
    }

    #[test]
    fn garbage_state_bytes_are_errors() {
        let valid = WindowState::new(SECOND, 3, 7).encode();
        assert_eq!(
            WindowState::decode(&valid),
            Ok(WindowState::new(SECOND, 3, 7))
        );
        for cut in 0..valid.len() {
            assert!(WindowState::decode(&valid[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = valid.clone();
        extra.push(0);
        assert!(WindowState::decode(&extra).is_err());
        let mut zero_width = valid.clone();
        zero_width[..8].fill(0);
        assert!(WindowState::decode(&zero_width).is_err());
        let mut many = valid;
        many[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(WindowState::decode(&many).is_err());
    }

    #[test]
    fn rejects_impossible_shapes() {
        assert!(SlidingWindowCounter::new("w", Duration::from_secs(1), 0).is_err());
        assert!(SlidingWindowCounter::new("w", Duration::from_secs(1), MAX_BUCKETS + 1).is_err());
        assert!(SlidingWindowCounter::new("w", Duration::from_nanos(3), 4).is_err());
        assert!(SlidingWindowCounter::new("w", Duration::MAX, MAX_BUCKETS).is_ok());
    }
}
