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
//! On `wasm32` the private `glue` module adds the proxy-wasm root and HTTP contexts that apply
//! the policy to Envoy's streams through one shared-data cell.

pub mod classify;
pub mod config;
pub mod histogram;
pub mod policy;
pub mod reject;

#[cfg(target_arch = "wasm32")]
mod glue;
