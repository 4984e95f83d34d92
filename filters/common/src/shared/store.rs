//! Where shared values live: the [`SharedStore`] trait over Envoy's shared data, the host-backed
//! [`HostSharedStore`] (wasm32) and [`MemoryStore`], an in-process store with Envoy's exact CAS
//! semantics for tests.

use crate::error::HostError;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

/// Why a shared-data operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The key changed since the cas passed to `set` was read.
    CasMismatch,
    /// The host refused the operation.
    Host(HostError),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::CasMismatch => {
                f.write_str("shared data changed concurrently (cas mismatch)")
            }
            StoreError::Host(err) => write!(f, "shared data unavailable: {err}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::CasMismatch => None,
            StoreError::Host(err) => Some(err),
        }
    }
}

/// A key-value store with Envoy shared-data semantics:
/// `get` of a missing key is `Ok(None)`; `set` with `cas == 0` is unconditional; `set` with a
/// nonzero cas on an existing key fails with [`StoreError::CasMismatch`] unless the cas is the
/// key's current one; `set` on a missing key succeeds whatever the cas; every successful `set`
/// gives the key a new nonzero cas.
pub trait SharedStore {
    /// The value stored under `key` and its cas (0 if the host gave none).
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Stores `value` under `key` if `cas` allows it (see the trait docs).
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

impl<S: SharedStore + ?Sized> SharedStore for &S {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        (**self).get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        (**self).set(key, value, cas)
    }
}

/// An in-process [`SharedStore`] with Envoy's exact CAS semantics, including cas numbering (one
/// process-wide sequence starting at 1, skipping 0 on wrap). `Sync`, so tests can share it
/// between threads the way workers share Envoy's shared data.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug)]
struct MemoryState {
    entries: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(MemoryState {
                entries: HashMap::new(),
                next_cas: 1,
            }),
        }
    }

    /// An empty store whose next issued cas is `next_cas` (0 is skipped); for testing cas wrap.
    pub fn with_next_cas(next_cas: u32) -> Self {
        let store = Self::new();
        store.lock().next_cas = next_cas.max(1);
        store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panicking test thread cannot leave the map half-updated: every mutation is one insert.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryState {
    fn issue_cas(&mut self) -> u32 {
        let cas = self.next_cas;
        self.next_cas = match self.next_cas.wrapping_add(1) {
            0 => 1,
            next => next,
        };
        cas
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.lock().entries.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let Some((_, current)) = state.entries.get(key) {
            if cas != 0 && cas != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        let new_cas = state.issue_cas();
        state
            .entries
            .insert(key.to_owned(), (value.to_vec(), new_cas));
        Ok(())
    }
}

/// The host's shared data (`proxy_get_shared_data` / `proxy_set_shared_data`), shared by every
/// VM of the same `vm_id`.
#[cfg(target_arch = "wasm32")]
#[derive(Debug, Default, Clone, Copy)]
pub struct HostSharedStore;

#[cfg(target_arch = "wasm32")]
impl SharedStore for HostSharedStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        crate::ffi::shared_data(key).map_err(StoreError::Host)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        crate::ffi::set_shared_data(key, value, cas).map_err(|err| {
            if err.status() == proxy_wasm::types::Status::CasMismatch {
                StoreError::CasMismatch
            } else {
                StoreError::Host(err)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_key_reads_as_none() {
        assert_eq!(MemoryStore::new().get("nope"), Ok(None));
    }

    #[test]
    fn every_set_issues_a_new_nonzero_cas() {
        let store = MemoryStore::new();
        store.set("a", b"1", 0).unwrap();
        let (value, first) = store.get("a").unwrap().unwrap();
        assert_eq!(value, b"1");
        assert_ne!(first, 0);
        store.set("a", b"2", first).unwrap();
        let (value, second) = store.get("a").unwrap().unwrap();
        assert_eq!(value, b"2");
        assert_ne!(second, first);
        assert_ne!(second, 0);
    }

    #[test]
    fn stale_cas_on_existing_key_is_a_mismatch() {
        let store = MemoryStore::new();
        store.set("a", b"1", 0).unwrap();
        let (_, stale) = store.get("a").unwrap().unwrap();
        store.set("a", b"2", stale).unwrap();
        assert_eq!(store.set("a", b"3", stale), Err(StoreError::CasMismatch));
        assert_eq!(store.get("a").unwrap().unwrap().0, b"2");
    }

    #[test]
    fn zero_cas_is_unconditional() {
        let store = MemoryStore::new();
        store.set("a", b"1", 0).unwrap();
        store.set("a", b"2", 0).unwrap();
        assert_eq!(store.get("a").unwrap().unwrap().0, b"2");
    }

    #[test]
    fn set_on_missing_key_succeeds_whatever_the_cas() {
        let store = MemoryStore::new();
        store.set("a", b"1", 12_345).unwrap();
        assert_eq!(store.get("a").unwrap().unwrap().0, b"1");
    }

    #[test]
    fn cas_sequence_is_shared_across_keys_and_skips_zero_on_wrap() {
        let store = MemoryStore::with_next_cas(u32::MAX);
        store.set("a", b"", 0).unwrap();
        store.set("b", b"", 0).unwrap();
        assert_eq!(store.get("a").unwrap().unwrap().1, u32::MAX);
        assert_eq!(store.get("b").unwrap().unwrap().1, 1);
    }
}
