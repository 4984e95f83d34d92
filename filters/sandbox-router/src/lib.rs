//! sandbox_router.wasm: sends requests that carry a sandbox key to that sandbox's deployment of
//! the service instead of the baseline; all other traffic is untouched. The key travels in a
//! header or in W3C `baggage`, which tracing libraries propagate, so one key set at the edge
//! reaches the sandboxed service wherever it sits in the call graph.
//!
//! The pure core — no hostcalls — is tested natively:
//! - [`config`]: [`config::SandboxConfig`], the plugin configuration with defaults and validation.
//! - [`baggage`]: the W3C Baggage parser over bytes and lenient member removal.
//! - [`key`]: valid sandbox names and HMAC-SHA256 signed keys.
//! - [`registry`]: sandbox name -> cluster.
//! - [`policy`]: key resolution, the trust decision and the registry lookup.
//! - [`refresh`]: the dynamic registry's shared state, fetch lease and answer parser.
//!
//! [`worker`]: [`SandboxRouter`], the filter on meshkit's filter kit, plain Rust over the kit's
//! `Host`, tested natively against the fake host. With the `standalone` feature (default) the
//! crate is also `sandbox_router.wasm`; the suite module links it without that feature.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod baggage;
pub mod config;
pub mod key;
pub mod policy;
pub mod refresh;
pub mod registry;
pub mod worker;

pub use worker::SandboxRouter;

#[cfg(all(target_arch = "wasm32", feature = "standalone"))]
meshkit::standalone_module!(SandboxRouter);
