//! [`SharedCounter`]: a `u64` counter that is exact across all Envoy workers.

use super::cell::{SharedCell, UpdateError};
use super::store::SharedStore;

/// The outcome of adding to a shared counter.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterUpdate {
    /// Everything this worker owed was written; `total` is the shared value afterwards.
    Applied {
        /// The shared total (or, for a sliding window, the window's sum) after the write.
        total: u64,
    },
    /// The write did not happen; the amount is kept locally and retried on the next write.
    Deferred {
        /// The amount this worker now holds back.
        pending: u64,
        /// Why the write did not happen.
        error: UpdateError,
    },
}

impl CounterUpdate {
    /// The total after the write, if it happened.
    pub fn total(&self) -> Option<u64> {
        match self {
            CounterUpdate::Applied { total } => Some(*total),
            CounterUpdate::Deferred { .. } => None,
        }
    }
}

/// A `u64` counter in shared data, correct across all workers.
///
/// Increments are never lost, only deferred: when a write still loses the CAS race after the
/// retry bound (or the store fails), the delta stays in this worker's [`pending`] amount and is
/// folded into the next [`add`] or [`flush`]. Until then the shared value lags by the pending
/// amount. The total saturates at `u64::MAX`.
///
/// [`pending`]: SharedCounter::pending
/// [`add`]: SharedCounter::add
/// [`flush`]: SharedCounter::flush
#[derive(Debug, Clone)]
pub struct SharedCounter {
    key: String,
    max_retries: u32,
    pending: u64,
}

impl SharedCounter {
    /// The retry bound of [`SharedCounter::new`].
    pub const DEFAULT_MAX_RETRIES: u32 = 16;

    /// A counter stored under `key`, retrying contended writes up to 16 times.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            max_retries: Self::DEFAULT_MAX_RETRIES,
            pending: 0,
        }
    }

    /// The same counter with a different retry bound.
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The amount this worker has counted but not yet written.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Adds `delta` (plus anything pending) to the shared total.
    pub fn add<S: SharedStore + ?Sized>(&mut self, store: &S, delta: u64) -> CounterUpdate {
        self.pending = self.pending.saturating_add(delta);
        self.flush(store)
    }

    /// Writes the pending amount; with nothing pending, reports the current total.
    pub fn flush<S: SharedStore + ?Sized>(&mut self, store: &S) -> CounterUpdate {
        let delta = self.pending;
        let result = if delta == 0 {
            self.read(store)
        } else {
            self.cell(store)
                .update(|current| current.unwrap_or(0).saturating_add(delta))
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

    /// The shared total (0 when never written); excludes every worker's pending amounts.
    pub fn read<S: SharedStore + ?Sized>(&self, store: &S) -> Result<u64, UpdateError> {
        Ok(self.cell(store).read()?.unwrap_or(0))
    }

    fn cell<'a, S: SharedStore + ?Sized>(
        &'a self,
        store: &'a S,
    ) -> SharedCell<u64, &'a S, &'a str> {
        SharedCell::new(store, &self.key, self.max_retries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::cell::tests::RacingStore;
    use crate::shared::store::MemoryStore;
    use std::sync::Arc;

    #[test]
    fn adds_accumulate() {
        let store = MemoryStore::new();
        let mut counter = SharedCounter::new("c");
        assert_eq!(counter.add(&store, 2), CounterUpdate::Applied { total: 2 });
        assert_eq!(counter.add(&store, 3), CounterUpdate::Applied { total: 5 });
        assert_eq!(counter.read(&store), Ok(5));
    }

    #[test]
    fn contended_delta_is_deferred_then_folded_in() {
        let store = RacingStore::losing(2);
        let mut counter = SharedCounter::new("c").with_max_retries(1);
        let update = counter.add(&store, 4);
        assert_eq!(
            update,
            CounterUpdate::Deferred {
                pending: 4,
                error: UpdateError::Contended { attempts: 2 }
            }
        );
        assert_eq!(counter.pending(), 4);
        assert_eq!(counter.read(&store), Ok(0));
        assert_eq!(counter.add(&store, 1), CounterUpdate::Applied { total: 5 });
        assert_eq!(counter.pending(), 0);
    }

    #[test]
    fn flush_writes_pending_and_reports_total_when_idle() {
        let store = RacingStore::losing(1);
        let mut counter = SharedCounter::new("c").with_max_retries(0);
        assert!(counter.add(&store, 7).total().is_none());
        assert_eq!(counter.flush(&store), CounterUpdate::Applied { total: 7 });
        assert_eq!(counter.flush(&store), CounterUpdate::Applied { total: 7 });
    }

    #[test]
    fn total_saturates() {
        let store = MemoryStore::new();
        let mut counter = SharedCounter::new("c");
        assert_eq!(
            counter.add(&store, u64::MAX - 1).total(),
            Some(u64::MAX - 1)
        );
        assert_eq!(counter.add(&store, 5).total(), Some(u64::MAX));
    }

    #[test]
    fn four_workers_hammering_one_counter_lose_nothing() {
        const WORKERS: u64 = 4;
        const INCREMENTS: u64 = 10_000;
        let store = Arc::new(MemoryStore::new());
        let handles: Vec<_> = (0..WORKERS)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    // A tiny retry bound makes deferral likely under contention.
                    let mut counter = SharedCounter::new("mesh/test/hits").with_max_retries(1);
                    for _ in 0..INCREMENTS {
                        let _ = counter.add(&*store, 1);
                    }
                    while counter.pending() > 0 {
                        let _ = counter.flush(&*store);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let counter = SharedCounter::new("mesh/test/hits");
        assert_eq!(counter.read(&*store), Ok(WORKERS * INCREMENTS));
    }
}
