//! [`SharedCell`]: the bounded compare-and-swap read-modify-write loop every shared value uses.

use super::store::{SharedStore, StoreError};
use super::value::{DecodeError, SharedValue};
use std::fmt;
use std::marker::PhantomData;

/// The cas used to create a missing key.
///
/// Envoy ignores the cas when the key is missing but checks it once the key exists, so creating
/// with a nonzero cas makes a racing creator's write fail with `CasMismatch` instead of silently
/// overwriting it. `u32::MAX` is the cas value issued last in Envoy's sequence, so it only
/// matches a concurrently created key once every 2^32 - 1 writes.
pub const CREATE_CAS: u32 = u32::MAX;

/// Why a read-modify-write of a shared value failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    /// Every attempt lost a race with another writer.
    Contended {
        /// How many writes were attempted.
        attempts: u32,
    },
    /// The store refused a read or write.
    Store(StoreError),
    /// The stored bytes are not a valid value.
    Decode(DecodeError),
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::Contended { attempts } => {
                write!(f, "shared value still contended after {attempts} attempts")
            }
            UpdateError::Store(err) => err.fmt(f),
            UpdateError::Decode(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for UpdateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpdateError::Contended { .. } => None,
            UpdateError::Store(err) => Some(err),
            UpdateError::Decode(err) => Some(err),
        }
    }
}

impl From<StoreError> for UpdateError {
    fn from(err: StoreError) -> Self {
        UpdateError::Store(err)
    }
}

impl From<DecodeError> for UpdateError {
    fn from(err: DecodeError) -> Self {
        UpdateError::Decode(err)
    }
}

/// Operations on a shared value of type `T` stored under a key.
#[derive(Debug)]
pub struct SharedCell<T> {
    _value: PhantomData<fn() -> T>,
}

impl<T: SharedValue> SharedCell<T> {
    /// The value under `key`; `None` when the key is missing.
    pub fn read<S: SharedStore + ?Sized>(store: &S, key: &str) -> Result<Option<T>, UpdateError> {
        match store.get(key)? {
            Some((bytes, _)) => Ok(Some(T::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Replaces the value under `key` with `f(current)`, retrying on `CasMismatch` up to
    /// `max_retries` times (so at most `max_retries + 1` attempts); `f` runs once per attempt.
    /// Returns the new value. When `f` leaves the stored encoding unchanged nothing is written,
    /// so read-mostly updates neither pay for a write nor make other workers' CAS fail.
    pub fn update<S, F>(store: &S, key: &str, max_retries: u32, mut f: F) -> Result<T, UpdateError>
    where
        S: SharedStore + ?Sized,
        F: FnMut(Option<T>) -> T,
    {
        Self::try_update(store, key, max_retries, |current| Ok(f(current)))
    }

    /// Like [`SharedCell::update`], but `f` may refuse the current value with an error, which
    /// ends the update without writing.
    pub fn try_update<S, F>(
        store: &S,
        key: &str,
        max_retries: u32,
        mut f: F,
    ) -> Result<T, UpdateError>
    where
        S: SharedStore + ?Sized,
        F: FnMut(Option<T>) -> Result<T, UpdateError>,
    {
        let attempts = max_retries.saturating_add(1);
        for _ in 0..attempts {
            let (current, stored, cas) = match store.get(key)? {
                Some((bytes, cas)) => (Some(T::decode(&bytes)?), Some(bytes), cas),
                None => (None, None, CREATE_CAS),
            };
            let next = f(current)?;
            let encoded = next.encode();
            if stored.as_deref() == Some(encoded.as_slice()) {
                return Ok(next);
            }
            match store.set(key, &encoded, cas) {
                Ok(()) => return Ok(next),
                Err(StoreError::CasMismatch) => continue,
                Err(err) => return Err(UpdateError::Store(err)),
            }
        }
        Err(UpdateError::Contended { attempts })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::shared::store::MemoryStore;
    use std::cell::Cell;

    /// A store that fails the first `mismatches` writes with `CasMismatch`, like a worker that
    /// keeps losing races.
    pub(crate) struct RacingStore {
        pub(crate) inner: MemoryStore,
        pub(crate) mismatches: Cell<u32>,
    }

    impl RacingStore {
        pub(crate) fn losing(mismatches: u32) -> Self {
            Self {
                inner: MemoryStore::new(),
                mismatches: Cell::new(mismatches),
            }
        }
    }

    impl SharedStore for RacingStore {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.inner.get(key)
        }

        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            if self.mismatches.get() > 0 {
                self.mismatches.set(self.mismatches.get() - 1);
                return Err(StoreError::CasMismatch);
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn update_creates_then_modifies() {
        let store = MemoryStore::new();
        let first = SharedCell::<u64>::update(&store, "k", 0, |v| v.unwrap_or(10) + 1);
        assert_eq!(first, Ok(11));
        let second = SharedCell::<u64>::update(&store, "k", 0, |v| v.unwrap_or(10) + 1);
        assert_eq!(second, Ok(12));
        assert_eq!(SharedCell::<u64>::read(&store, "k"), Ok(Some(12)));
    }

    #[test]
    fn an_update_that_changes_nothing_writes_nothing() {
        let store = MemoryStore::new();
        SharedCell::<u64>::update(&store, "k", 0, |_| 4).unwrap();
        let (_, cas_before) = store.get("k").unwrap().unwrap();
        assert_eq!(
            SharedCell::<u64>::update(&store, "k", 0, |v| v.unwrap_or(0)),
            Ok(4)
        );
        let (_, cas_after) = store.get("k").unwrap().unwrap();
        assert_eq!(
            cas_before, cas_after,
            "an unchanged value must not be rewritten"
        );
        // A writer holding the old CAS is therefore not made to retry.
        assert_eq!(store.set("k", &5u64.encode(), cas_before), Ok(()));
    }

    #[test]
    fn retries_until_the_bound_then_reports_contention() {
        let store = RacingStore::losing(3);
        let mut calls = 0;
        let result = SharedCell::<u64>::update(&store, "k", 2, |_| {
            calls += 1;
            1
        });
        assert_eq!(result, Err(UpdateError::Contended { attempts: 3 }));
        assert_eq!(calls, 3);
        assert_eq!(SharedCell::<u64>::update(&store, "k", 2, |_| 7), Ok(7));
    }

    #[test]
    fn racing_creators_do_not_overwrite_each_other() {
        let store = MemoryStore::new();
        // Both workers saw the key missing; the second create must not clobber the first.
        store.set("k", &5u64.encode(), CREATE_CAS).unwrap();
        assert_eq!(
            store.set("k", &9u64.encode(), CREATE_CAS),
            Err(StoreError::CasMismatch)
        );
        assert_eq!(SharedCell::<u64>::read(&store, "k"), Ok(Some(5)));
    }

    #[test]
    fn garbage_in_the_store_is_a_decode_error_and_is_left_alone() {
        let store = MemoryStore::new();
        store.set("k", b"not a number", 0).unwrap();
        let result = SharedCell::<u64>::update(&store, "k", 4, |v| v.unwrap_or(0) + 1);
        assert!(matches!(result, Err(UpdateError::Decode(_))));
        assert_eq!(store.get("k").unwrap().unwrap().0, b"not a number");
    }
}
