//! Test infrastructure for the real `.wasm` modules.
//!
//! - [`emulator`]: an emulated proxy-wasm host on wasmtime (N workers, shared data, virtual clock).
