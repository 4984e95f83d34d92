//! drain_signal.wasm: graceful shutdown that clients notice. On a trigger (`POST /.mesh/drain`
//! from an allowed source, e.g. a Kubernetes preStop hook), the ingress sidecar fails its health
//! checks at once so load balancers and readiness probes take the pod out, then, after a delay
//! covering clients' DNS refresh, asks Envoy through its admin API to drain the inbound listeners,
//! so HTTP/1.1 clients get `Connection: close` and HTTP/2 clients GOAWAY.
//!
//! The pure core — no hostcalls, deterministic — is tested natively:
//! - [`config`]: [`config::DrainConfig`], the plugin configuration with defaults and validation.
//! - [`access`]: who may trigger: source address CIDRs and the bearer token, parsed from bytes.
//! - [`policy`]: the drain state machine shared by all workers.
//!
//! [`worker`]: [`DrainSignal`], the filter on meshkit's filter kit, tested natively against the
//! fake host. With the `standalone` feature (default) the crate is also `drain_signal.wasm`; the
//! suite module links it without that feature.

pub mod access;
pub mod config;
pub mod policy;
pub mod worker;

pub use worker::DrainSignal;

#[cfg(all(target_arch = "wasm32", feature = "standalone"))]
meshkit::standalone_module!(DrainSignal);
