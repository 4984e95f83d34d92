//! load_shedder.wasm: protects the local service behind the ingress sidecar with an adaptive,
//! criticality-aware concurrency limit shared by all Envoy workers.
//!
//! The pure policy core — no hostcalls, no clocks, deterministic — is tested natively:
//! - [`config`]: [`config::ShedderConfig`], the plugin configuration with defaults and validation.
//! - [`classify`]: request ranking from the criticality header, path and attempt count.
//! - [`policy`]: the shared state and the admit/release steps; the module doc describes the
//!   algorithm.
//! - [`histogram`]: the fixed-size latency histogram of a measurement window.
//! - [`reject`]: the reply a shed request receives.
//!
//!
//! [`worker`]: [`LoadShedder`], the filter on meshkit's filter kit: one worker's admission and
//! release through one shared-data cell, plain Rust over the kit's `Host`, tested natively
//! against the fake host. With the `standalone` feature (default) the crate is also
//! `load_shedder.wasm`; the suite module links it without that feature.

pub mod classify;
pub mod config;
pub mod histogram;
pub mod policy;
pub mod reject;
pub mod worker;

pub use worker::LoadShedder;

#[cfg(all(target_arch = "wasm32", feature = "standalone"))]
meshkit::standalone_module!(LoadShedder);
