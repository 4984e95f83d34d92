//! The host-wide shared-data store, with Envoy's exact compare-and-swap semantics, and injected
//! compare-and-swap failures for tests that drive contention deterministically.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::state::{lock, sorted_keys};

/// Outcome of a shared-data write that did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetError {
    /// `cas` was non-zero and did not match the key's current cas.
    CasMismatch,
}

#[derive(Default)]
struct Entries {
    values: HashMap<String, (Vec<u8>, u32)>,
    last_cas: u32,
    injected: InjectedCasFailures,
}

/// CAS failures still to inject: the next `remaining` conditional writes (to `key` only, if set).
#[derive(Default)]
struct InjectedCasFailures {
    remaining: u64,
    key: Option<String>,
}

/// Key/value store shared by every worker of one emulated host (Envoy's shared data).
///
/// - `get` of a missing key is `None` (the host answers `NotFound`);
/// - `set` with `cas == 0` is unconditional; with `cas != 0` on an existing key it fails with
///   [`SetError::CasMismatch`] unless `cas` equals the key's current cas; on a missing key it
///   succeeds whatever the cas;
/// - every successful `set` gives the key a new non-zero cas.
///
/// [`SharedDataStore::fail_next_cas_sets`] makes conditional writes fail on demand, as if another
/// worker had written the key first.
#[derive(Default)]
pub struct SharedDataStore {
    entries: Mutex<Entries>,
    cas_mismatches: AtomicU64,
    injected_failures: AtomicU64,
}

impl SharedDataStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value and cas of `key`, or `None` when the key was never set.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        lock(&self.entries).values.get(key).cloned()
    }

    /// Writes `value` under `key` following Envoy's CAS rules; returns the key's new cas.
    /// An injected failure (see [`SharedDataStore::fail_next_cas_sets`]) comes first: the write
    /// fails with `CasMismatch` and changes nothing.
    pub fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<u32, SetError> {
        let mut entries = lock(&self.entries);
        let injected = &mut entries.injected;
        if cas != 0
            && injected.remaining > 0
            && injected.key.as_deref().is_none_or(|only| only == key)
        {
            injected.remaining -= 1;
            self.injected_failures.fetch_add(1, Ordering::Relaxed);
            return Err(SetError::CasMismatch);
        }
        if let Some((_, current)) = entries.values.get(key) {
            if cas != 0 && cas != *current {
                self.cas_mismatches.fetch_add(1, Ordering::Relaxed);
                return Err(SetError::CasMismatch);
            }
        }
        entries.last_cas = match entries.last_cas.wrapping_add(1) {
            0 => 1,
            next => next,
        };
        let new_cas = entries.last_cas;
        entries
            .values
            .insert(key.to_owned(), (value.to_vec(), new_cas));
        Ok(new_cas)
    }

    /// How many writes failed with [`SetError::CasMismatch`] because their cas was stale (evidence
    /// of contention); injected failures are not included.
    pub fn cas_mismatches(&self) -> u64 {
        self.cas_mismatches.load(Ordering::Relaxed)
    }

    /// Makes the next `count` writes with a nonzero cas (conditional writes, including a create with
    /// a nonzero cas) fail with [`SetError::CasMismatch`], only writes to `key` when given; other
    /// writes behave as usual. Replaces any injection still pending; `count` 0 cancels it.
    pub fn fail_next_cas_sets(&self, count: u64, key: Option<&str>) {
        lock(&self.entries).injected = InjectedCasFailures {
            remaining: count,
            key: key.map(str::to_owned),
        };
    }

    /// How many writes failed by injection so far.
    pub fn injected_cas_failures(&self) -> u64 {
        self.injected_failures.load(Ordering::Relaxed)
    }

    /// How many injected failures are still pending.
    pub fn pending_injected_cas_failures(&self) -> u64 {
        lock(&self.entries).injected.remaining
    }

    /// Every key currently stored, sorted.
    pub fn keys(&self) -> Vec<String> {
        sorted_keys(&lock(&self.entries).values)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn missing_key_reads_as_none() {
        assert_eq!(SharedDataStore::new().get("nope"), None);
    }

    #[test]
    fn set_on_missing_key_succeeds_whatever_the_cas() {
        let store = SharedDataStore::new();
        let cas = store.set("k", b"v", 12345).unwrap();
        assert_ne!(cas, 0);
        assert_eq!(store.get("k"), Some((b"v".to_vec(), cas)));
    }

    #[test]
    fn every_successful_set_gives_a_new_nonzero_cas() {
        let store = SharedDataStore::new();
        let first = store.set("k", b"1", 0).unwrap();
        let second = store.set("k", b"2", first).unwrap();
        let third = store.set("k", b"3", 0).unwrap();
        assert!(first != second && second != third && first != third);
        assert!([first, second, third].iter().all(|c| *c != 0));
    }

    #[test]
    fn stale_cas_fails_and_leaves_the_value() {
        let store = SharedDataStore::new();
        let first = store.set("k", b"1", 0).unwrap();
        let second = store.set("k", b"2", first).unwrap();
        assert_eq!(store.set("k", b"3", first), Err(SetError::CasMismatch));
        assert_eq!(store.cas_mismatches(), 1);
        assert_eq!(store.get("k"), Some((b"2".to_vec(), second)));
    }

    #[test]
    fn zero_cas_is_unconditional() {
        let store = SharedDataStore::new();
        store.set("k", b"1", 0).unwrap();
        store.set("k", b"2", 0).unwrap();
        assert_eq!(store.get("k").unwrap().0, b"2");
    }

    #[test]
    fn injected_failures_hit_the_next_conditional_writes_only() {
        let store = SharedDataStore::new();
        let cas = store.set("k", b"1", 0).unwrap();
        store.fail_next_cas_sets(2, None);
        // Unconditional writes are not conditional: they neither fail nor use up an injection.
        let cas = store.set("k", b"2", 0).unwrap_or(cas);
        assert_eq!(store.set("k", b"3", cas), Err(SetError::CasMismatch));
        // A create with a nonzero cas fails too (a racing creator won).
        assert_eq!(store.set("new", b"x", u32::MAX), Err(SetError::CasMismatch));
        assert_eq!(store.injected_cas_failures(), 2);
        assert_eq!(store.pending_injected_cas_failures(), 0);
        assert_eq!(
            store.cas_mismatches(),
            0,
            "injected failures are counted apart"
        );
        assert_eq!(store.get("k"), Some((b"2".to_vec(), cas)));
        assert_eq!(store.get("new"), None);
        // Used up: the same write succeeds now.
        assert!(store.set("k", b"3", cas).is_ok());
    }

    #[test]
    fn injected_failures_for_one_key_leave_other_keys_alone() {
        let store = SharedDataStore::new();
        let a = store.set("a", b"1", 0).unwrap();
        let b = store.set("b", b"1", 0).unwrap();
        store.fail_next_cas_sets(1, Some("a"));
        let b = store.set("b", b"2", b).unwrap();
        assert_eq!(store.pending_injected_cas_failures(), 1);
        assert_eq!(store.set("a", b"2", a), Err(SetError::CasMismatch));
        assert!(store.set("a", b"2", a).is_ok());
        assert!(store.set("b", b"3", b).is_ok());
        assert_eq!(store.injected_cas_failures(), 1);
    }

    #[test]
    fn a_new_injection_replaces_the_pending_one_and_zero_cancels() {
        let store = SharedDataStore::new();
        let cas = store.set("k", b"1", 0).unwrap();
        store.fail_next_cas_sets(5, None);
        store.fail_next_cas_sets(1, Some("other"));
        assert_eq!(store.pending_injected_cas_failures(), 1);
        let cas = store.set("k", b"2", cas).unwrap();
        store.fail_next_cas_sets(0, None);
        assert!(store.set("other", b"x", cas).is_ok());
        assert_eq!(store.injected_cas_failures(), 0);
    }

    #[test]
    fn concurrent_cas_increments_are_never_lost() {
        let store = SharedDataStore::new();
        // Seeded first: a cas-0 write to a missing key is unconditional, so racing seeds could
        // overwrite each other (that is Envoy's semantics too).
        store.set("n", &0u64.to_le_bytes(), 0).unwrap();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        loop {
                            let (bytes, cas) = store.get("n").unwrap();
                            let value = u64::from_le_bytes(bytes.try_into().unwrap());
                            if store.set("n", &(value + 1).to_le_bytes(), cas).is_ok() {
                                break;
                            }
                        }
                    }
                });
            }
        });
        let (bytes, _) = store.get("n").unwrap();
        assert_eq!(u64::from_le_bytes(bytes.try_into().unwrap()), 4000);
    }
}
