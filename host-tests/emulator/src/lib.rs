//! An emulated proxy-wasm host on wasmtime: loads a real `.wasm` built from this repo and
//! drives it through the proxy-wasm ABI 0.2.1 the way Envoy does.
//!
//! - N workers, each its own wasmtime `Store` + instance (Envoy's per-worker VMs), usable from
//!   different threads at once; they share one shared-data store with Envoy's CAS semantics,
//!   one stats store, one log and one virtual clock.
//! - Root lifecycle (vm start, configure, timer ticks driven by [`EmulatedHost::advance`]),
//!   HTTP streams ([`HttpStream`]) with byte-valued header maps, bodies, trailers, pauses,
//!   local responses and resets, `proxy_http_call` with scripted replies and virtual-time
//!   timeouts, metrics, logs, properties and the `clear_route_cache` foreign function.
//! - A trap is an [`EmulatorError::Trap`] carrying the trap and the module's last Critical log
//!   line (meshkit's panic hook puts the panic message there); imports the host does not
//!   implement trap with a message naming them.
//! - Each module is compiled once per test process; everything else is per host.
//!
//! ```no_run
//! use mesh_emulator::{built_module, EmulatedHost, HeaderMap};
//! # fn main() -> Result<(), mesh_emulator::EmulatorError> {
//! let host = EmulatedHost::builder(built_module("host-fixture")?)
//!     .workers(2)
//!     .plugin_config(r#"{}"#)
//!     .start()?;
//! let mut stream = host.worker(0)?.http_stream()?;
//! stream.send_request_headers(HeaderMap::from([(":path", "/")]).with("x-raw", [0xff]), true)?;
//! host.advance(std::time::Duration::from_secs(1))?;
//! # Ok(()) }
//! ```

mod error;
mod headers;
mod host;
mod hostcalls;
mod metrics;
mod shared_data;
mod state;
mod stream;
mod types;
mod vm;

pub use error::EmulatorError;
pub use headers::{HeaderMap, MapFormatError};
pub use host::{built_module, EmulatedHost, HostBuilder, Worker, DEFAULT_START_TIME_UNIX_SECS};
pub use metrics::{MetricKind, MetricValue};
pub use stream::HttpStream;
pub use types::{Action, HttpCall, HttpCallReply, LocalResponse, LogLevel, LogRecord};
