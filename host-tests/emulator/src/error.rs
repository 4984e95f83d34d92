//! Everything that can go wrong while loading or driving a module in the emulated host.

use std::path::PathBuf;

use thiserror::Error;

/// An emulated-host failure; a module trap is the most important one for tests.
#[derive(Debug, Error)]
pub enum EmulatorError {
    /// A module of the catalog is unknown, not built, or older than its sources.
    #[error(transparent)]
    Module(#[from] mesh_catalog::ModuleError),
    /// The `.wasm` file does not exist.
    #[error("wasm module {} does not exist: run `cargo xtask build` first", path.display())]
    ModuleNotBuilt {
        /// Where the module was expected.
        path: PathBuf,
    },
    /// The file exists but could not be read, compiled or instantiated.
    #[error("cannot load wasm module {}: {reason}", path.display())]
    ModuleLoad {
        /// The module's path.
        path: PathBuf,
        /// Reader, compiler or linker message.
        reason: String,
    },
    /// The module trapped (panicked, hit `unreachable`, or called an import the host lacks).
    /// The worker's VM is dead afterwards, as with Envoy's default failure policy.
    #[error(
        "worker {worker} trapped in {callback}: {trap}{}",
        panic_suffix(panic_message)
    )]
    Trap {
        /// Worker whose VM trapped.
        worker: usize,
        /// The export the host was calling.
        callback: String,
        /// Wasmtime's trap description (includes the wasm backtrace when available).
        trap: String,
        /// What the module said before trapping: its last Critical log line (meshkit's
        /// panic hook), or else what it wrote to stderr.
        panic_message: Option<String>,
    },
    /// A call reached a worker whose VM trapped earlier.
    #[error("worker {worker} is dead since an earlier trap: {reason}")]
    WorkerDead {
        /// The dead worker.
        worker: usize,
        /// The original trap, as text.
        reason: String,
    },
    /// `proxy_on_vm_start` returned false.
    #[error(
        "worker {worker}: proxy_on_vm_start returned false{}",
        log_suffix(errors)
    )]
    VmStartRejected {
        /// The rejecting worker.
        worker: usize,
        /// Error (and higher) log lines the module wrote meanwhile.
        errors: Vec<String>,
    },
    /// `proxy_on_configure` returned false: the plugin configuration was rejected.
    #[error(
        "worker {worker}: proxy_on_configure rejected the plugin configuration{}",
        log_suffix(errors)
    )]
    ConfigureRejected {
        /// The rejecting worker.
        worker: usize,
        /// Error (and higher) log lines the module wrote meanwhile (they name the bad field).
        errors: Vec<String>,
    },
    /// The module lacks an export the ABI requires (e.g. `memory`).
    #[error("the module does not export `{name}` with the proxy-wasm 0.2.1 signature")]
    MissingExport {
        /// The export's name.
        name: String,
    },
    /// There is no worker with this index.
    #[error("no worker {index}: the host has {workers} workers")]
    NoSuchWorker {
        /// The requested index.
        index: usize,
        /// How many workers exist.
        workers: usize,
    },
    /// The HTTP stream already ended (local response, reset, finish, or end of response).
    #[error("HTTP stream {context_id} on worker {worker} has already ended")]
    StreamEnded {
        /// Its worker.
        worker: usize,
        /// Its context id.
        context_id: u32,
    },
    /// No HTTP call with this token is waiting for a reply (never dispatched, already
    /// answered, timed out, or cancelled because its stream ended).
    #[error("no HTTP call with token {token} is waiting for a reply")]
    NoPendingCall {
        /// The token.
        token: u32,
    },
}

fn panic_suffix(panic_message: &Option<String>) -> String {
    panic_message
        .as_ref()
        .map(|message| format!("\nmodule said before trapping: {message}"))
        .unwrap_or_default()
}

fn log_suffix(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(": {}", errors.join("; "))
    }
}
