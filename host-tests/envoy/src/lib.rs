//! Real-Envoy harness: runs the stock Envoy binary on a [`Bootstrap`] with free loopback ports,
//! waits until it is ready, talks to its admin interface, and fails the test if the Envoy log
//! shows a wasm panic or trap.
//!
//! ```no_run
//! use envoy_configs::{Bootstrap, Listener, Route, Cluster};
//! use mesh_envoy_harness::{EnvoyOptions, EnvoyProcess};
//!
//! let bootstrap = Bootstrap::new(0)
//!     .listener(Listener::http("ingress", 0).route(Route::prefix("/").to_cluster("backend")))
//!     .cluster(Cluster::static_cluster("backend", ["127.0.0.1:8080".parse().unwrap()]));
//! let envoy = EnvoyProcess::start(&bootstrap, EnvoyOptions::default()).unwrap();
//! let ingress = envoy.listener_addr("ingress").unwrap();
//! // ... send traffic to `ingress`, read `envoy.stat("http.ingress.downstream_rq_2xx")` ...
//! envoy.shutdown();
//! ```

mod log_scan;
mod paths;
mod ports;
mod process;
mod prometheus;

pub use log_scan::{log_tail, wasm_failures, WASM_FAILURE_MARKERS};
pub use paths::{envoy_binary, validate, wasm_module};
pub use ports::reserve_port;
pub use process::{DrainStrategy, EnvoyOptions, EnvoyProcess};
pub use prometheus::prometheus_sample;

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// What can go wrong while running Envoy or talking to it.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyError {
    /// The Envoy binary is not where the harness looks.
    #[error(
        "Envoy binary not found at {path}: run `cargo xtask bootstrap` (or set MESH_ENVOY_BIN)"
    )]
    BinaryMissing {
        /// Where it was expected.
        path: PathBuf,
    },
    /// A wasm module of the catalog is unknown, not built, or older than its sources.
    #[error(transparent)]
    Module(#[from] mesh_catalog::ModuleError),
    /// A filesystem or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `envoy --mode validate` rejected a bootstrap.
    #[error("envoy rejected the bootstrap ({status}):\n{output}\nbootstrap: {config_path}")]
    Invalid {
        /// Envoy's exit status.
        status: ExitStatus,
        /// Envoy's combined stdout and stderr.
        output: String,
        /// The bootstrap file that was validated (kept for inspection).
        config_path: PathBuf,
    },
    /// Envoy exited before becoming ready.
    #[error("envoy exited before becoming ready ({status}); log {log_path}:\n{log_tail}")]
    Exited {
        /// Envoy's exit status.
        status: ExitStatus,
        /// The kept Envoy log.
        log_path: PathBuf,
        /// The last lines of the log.
        log_tail: String,
    },
    /// Envoy did not report `LIVE` on `/ready` in time.
    #[error("envoy not ready after {waited:?}; log {log_path}:\n{log_tail}")]
    NotReady {
        /// How long the harness waited.
        waited: Duration,
        /// The kept Envoy log.
        log_path: PathBuf,
        /// The last lines of the log.
        log_tail: String,
    },
    /// An admin request failed (connection error or non-2xx status).
    #[error("admin request {path} failed: {source}")]
    Admin {
        /// The admin path requested.
        path: String,
        /// The client error.
        source: Box<ureq::Error>,
    },
    /// An admin response was not the expected JSON.
    #[error("admin response of {path} is not valid JSON: {source}")]
    AdminJson {
        /// The admin path requested.
        path: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// No listener with that name in the bootstrap.
    #[error("no listener named {0:?} in the bootstrap")]
    UnknownListener(String),
    /// A stat did not reach the expected value in time.
    #[error(
        "stat {name} did not reach the expected value within {waited:?} (last value {last:?})"
    )]
    StatTimeout {
        /// The stat name.
        name: String,
        /// How long the harness waited.
        waited: Duration,
        /// The last value read (`None`: the stat did not exist).
        last: Option<u64>,
    },
}

impl EnvoyError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
