//! The lab: real traffic through a real Envoy (started by the `mesh-envoy-harness` crate).
//!
//! - [`bench`]: the overhead benchmark (bare Envoy vs a pass-through wasm filter vs each module vs the suite).
//! - [`grpc_wire`]: a raw gRPC probe showing response headers and trailers as sent.
//! - [`keepalive`]: keep-alive clients that reconnect when the server closes, and what they saw.
//! - [`upstream`]: scriptable loopback upstreams (HTTP/1.1, HTTP/2, gRPC; capacity model, faults, counters).
//! - [`spec_demo`]: `cargo xtask up`: a service spec's rendered sidecar run locally, checked and explained.
//! - [`scenario`]: named benchmarks (Envoy + upstream + load in phases, variants side by side).
//! - [`load`]: an open- or closed-loop load generator with HDR latency histograms and a serializable report.

pub mod bench;
pub mod grpc_wire;
pub mod keepalive;
pub mod load;
pub mod scenario;
pub mod spec_demo;
pub mod upstream;

/// The lab's async runtime: two worker threads (the load generator and the upstreams share the
/// machine with Envoy), timers and I/O enabled.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}
