//! meshkit: the building blocks every mesh filter shares.
//!
//! Filters are proxy-wasm modules running in Envoy. A panic traps the VM and, with Envoy's
//! default failure policy, leaves it dead, so everything here reports problems as values:
//!
//! - [`clock`]: [`Timestamp`](clock::Timestamp), the [`Clock`](clock::Clock) trait and (wasm32)
//!   the host clock and tick period.
//! - [`error`]: [`HostError`](error::HostError), a failed hostcall.
//! - [`headers`]: trap-free header and trailer access, `clear_route_cache` (host part wasm32).
//! - [`body`]: reading and replacing the buffered request and response bodies (host part wasm32).
//! - [`callout`]: HTTP callouts: dispatch, the response's headers, body and trailers, resuming the
//!   waiting request (host part wasm32).
//! - [`foreign`] (wasm32): host-registered foreign functions.
//! - [`shared`]: typed values in Envoy shared data ([`SharedCell`](shared::SharedCell), a bounded
//!   CAS loop), cross-worker counters and sliding windows, and an in-memory store with Envoy's
//!   semantics for tests.
//! - [`bytes`]: [`ByteWriter`](bytes::ByteWriter) and [`ByteReader`](bytes::ByteReader), the
//!   little-endian encodings of shared-data values and header maps, with
//!   [`DecodeError`](bytes::DecodeError) for bytes that do not decode.
//! - [`config`]: JSON plugin configuration with field-path errors and shared field types.
//! - [`metrics`]: `mesh.<filter>.<metric>` stat names and (wasm32) metric handles.
//! - [`grpc`]: gRPC content types, method paths and status codes.
//! - [`reply`]: (wasm32) local HTTP and gRPC error replies, and the HTTP status of a gRPC status.
//! - [`panic_hook`]: panic messages and (wasm32) logging that cannot trap: a logger and a panic
//!   hook writing to the host log through meshkit's own import.
//! - [`properties`]: the plugin's shared-data namespace and (wasm32) trap-free property reads.
//! - [`wire`]: the proxy-wasm ABI's serialized header-map format.
//!
//! Everything that calls the host is compiled only for `wasm32`; the rest is plain Rust,
//! tested natively and on `wasm32-unknown-unknown`. Nothing calls the SDK's panicking
//! `proxy_wasm::hostcalls` except [`callout`]'s dispatch, whose module doc says why.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod body;
pub mod bytes;
pub mod callout;
pub mod clock;
pub mod config;
pub mod error;
#[cfg(target_arch = "wasm32")]
mod ffi;
#[cfg(target_arch = "wasm32")]
pub mod foreign;
pub mod grpc;
pub mod headers;
pub mod kit;
pub mod metrics;
pub mod panic_hook;
pub mod properties;
pub mod reply;
pub mod shared;
pub mod wire;

pub use error::HostError;
