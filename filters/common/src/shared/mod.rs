//! Typed values in Envoy shared data, updated with compare-and-swap retry loops.
//!
//! Envoy runs one VM per worker thread; shared data is the only state all workers see. Every
//! update here is a read-modify-write that retries on `CasMismatch` a bounded number of times.
//! Counters never lose increments: after the retry bound they keep the amount as worker-local
//! *pending* and fold it into the next write.
//!
//! - [`store`]: the [`SharedStore`] trait, the host store and the in-memory [`MemoryStore`].
//! - [`keys`]: [`KeySpace`], namespaced and bounded key names.
//! - [`value`]: [`SharedValue`], the byte encodings of stored values.
//! - [`cell`]: [`SharedCell`], the CAS read-modify-write loop.
//! - [`counter`]: [`SharedCounter`], a cross-worker `u64` counter.
//! - [`window`]: [`SlidingWindowCounter`], a cross-worker count of recent events.

pub mod cell;
pub mod counter;
pub mod keys;
pub mod store;
pub mod value;
pub mod window;

pub use cell::{SharedCell, UpdateError};
pub use counter::{CounterUpdate, SharedCounter};
pub use keys::{KeyError, KeySpace};
#[cfg(target_arch = "wasm32")]
pub use store::HostSharedStore;
pub use store::{MemoryStore, SharedStore, StoreError};
pub use value::{DecodeError, SharedValue};
pub use window::{SlidingWindowCounter, WindowConfigError};
