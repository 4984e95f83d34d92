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
const CREATE_CAS: u32 = u32::MAX;

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

/// A shared value of type `T` under one key of a store: the store, the key and the retry bound of
/// every read-modify-write.
///
/// The key may be owned (`String`, for a cell kept in worker state) or borrowed (`&str`, for a
/// cell made per call around a store the host lends, which costs no allocation).
///
/// ```
/// use meshkit::shared::{MemoryStore, SharedCell};
/// let store = MemoryStore::new();
/// let hits = SharedCell::<u64, _, _>::new(&store, "mesh/example/hits", 16);
/// assert_eq!(hits.update(|current| current.unwrap_or(0) + 1), Ok(1));
/// assert_eq!(hits.read(), Ok(Some(1)));
/// ```
pub struct SharedCell<T, S, K = String> {
    store: S,
    key: K,
    max_retries: u32,
    _value: PhantomData<fn() -> T>,
}

impl<T, S, K: AsRef<str>> SharedCell<T, S, K> {
    /// The value under `key` in `store`; updates retry a lost CAS race up to `max_retries` times
    /// (so at most `max_retries + 1` attempts).
    pub fn new(store: S, key: K, max_retries: u32) -> Self {
        Self {
            store,
            key,
            max_retries,
            _value: PhantomData,
        }
    }
}

impl<T, S: fmt::Debug, K: fmt::Debug> fmt::Debug for SharedCell<T, S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedCell")
            .field("store", &self.store)
            .field("key", &self.key)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl<T, S: Clone, K: Clone> Clone for SharedCell<T, S, K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            key: self.key.clone(),
            max_retries: self.max_retries,
            _value: PhantomData,
        }
    }
}

impl<T: SharedValue, S: SharedStore, K: AsRef<str>> SharedCell<T, S, K> {
    /// The stored value; `None` when the key is missing.
    pub fn read(&self) -> Result<Option<T>, UpdateError> {
        match self.store.get(self.key.as_ref())? {
            Some((bytes, _)) => Ok(Some(T::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Replaces the value with `f(current)`, retrying on `CasMismatch` up to the retry bound;
    /// `f` runs once per attempt. Returns the new value. When `f` leaves the stored encoding
    /// unchanged nothing is written, so read-mostly updates neither pay for a write nor make
    /// other workers' CAS fail.
    pub fn update<F>(&self, mut f: F) -> Result<T, UpdateError>
    where
        F: FnMut(Option<T>) -> T,
    {
        self.try_update(|current| Ok(f(current)))
    }

    /// Like [`SharedCell::update`], but `f` may refuse the current value with an error, which
    /// ends the update without writing.
    pub fn try_update<F>(&self, mut f: F) -> Result<T, UpdateError>
    where
        F: FnMut(Option<T>) -> Result<T, UpdateError>,
    {
        let attempts = self.max_retries.saturating_add(1);
        for _ in 0..attempts {
            let (current, stored, cas) = match self.store.get(self.key.as_ref())? {
                Some((bytes, cas)) => (Some(T::decode(&bytes)?), Some(bytes), cas),
                None => (None, None, CREATE_CAS),
            };
            let next = f(current)?;
            let encoded = next.encode();
            if stored.as_deref() == Some(encoded.as_slice()) {
                return Ok(next);
            }
            match self.store.set(self.key.as_ref(), &encoded, cas) {
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

    fn cell<S: SharedStore>(store: S, max_retries: u32) -> SharedCell<u64, S, &'static str> {
        SharedCell::new(store, "k", max_retries)
    }

    #[test]
    fn update_creates_then_modifies() {
        let store = MemoryStore::new();
        let cell = cell(&store, 0);
        assert_eq!(cell.read(), Ok(None));
        assert_eq!(cell.update(|v| v.unwrap_or(10) + 1), Ok(11));
        assert_eq!(cell.update(|v| v.unwrap_or(10) + 1), Ok(12));
        assert_eq!(cell.read(), Ok(Some(12)));
        let owned = SharedCell::<u64, _>::new(&store, String::from("k"), 0);
        assert_eq!(owned.read(), Ok(Some(12)));
    }

    #[test]
    fn an_update_that_changes_nothing_writes_nothing() {
        let store = MemoryStore::new();
        let cell = cell(&store, 0);
        cell.update(|_| 4).unwrap();
        let (_, cas_before) = store.get("k").unwrap().unwrap();
        assert_eq!(cell.update(|v| v.unwrap_or(0)), Ok(4));
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
        let cell = cell(&store, 2);
        let mut calls = 0;
        let result = cell.update(|_| {
            calls += 1;
            1
        });
        assert_eq!(result, Err(UpdateError::Contended { attempts: 3 }));
        assert_eq!(calls, 3);
        assert_eq!(cell.update(|_| 7), Ok(7));
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
        assert_eq!(cell(&store, 0).read(), Ok(Some(5)));
    }

    #[test]
    fn a_refused_update_writes_nothing() {
        let store = MemoryStore::new();
        let cell = cell(&store, 0);
        cell.update(|_| 3).unwrap();
        let refusal = UpdateError::Contended { attempts: 0 };
        assert_eq!(cell.try_update(|_| Err(refusal.clone())), Err(refusal));
        assert_eq!(cell.read(), Ok(Some(3)));
    }

    #[test]
    fn garbage_in_the_store_is_a_decode_error_and_is_left_alone() {
        let store = MemoryStore::new();
        store.set("k", b"not a number", 0).unwrap();
        let result = cell(&store, 4).update(|v| v.unwrap_or(0) + 1);
        assert!(matches!(result, Err(UpdateError::Decode(_))));
        assert_eq!(store.get("k").unwrap().unwrap().0, b"not a number");
    }
}
