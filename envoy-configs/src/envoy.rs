//! The pinned Envoy binary and `envoy --mode validate`: one implementation, used by
//! `mesh-bootstrap validate` and the real-Envoy test harness.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// The Envoy binary: `$MESH_ENVOY_BIN` if set, else `<workspace>/.venv/bin/envoy` (installed by
/// `cargo xtask bootstrap`). `Err` carries the path looked at, when no file is there.
pub fn envoy_binary() -> Result<PathBuf, PathBuf> {
    let path = std::env::var_os("MESH_ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| mesh_catalog::workspace_root().join(".venv/bin/envoy"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(path)
    }
}

/// Envoy's verdict on a bootstrap it refused.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Envoy's exit status.
    pub status: ExitStatus,
    /// Envoy's combined stdout and stderr.
    pub output: String,
}

/// Runs `envoy --mode validate` on the bootstrap file `config` (`.json` or `.yaml`): Envoy parses
/// it and builds every listener, filter (loading each wasm module and configuring its plugins)
/// and cluster, without binding ports or starting workers. The outer `Err`: Envoy could not run.
pub fn validate_file(envoy: &Path, config: &Path) -> std::io::Result<Result<(), Rejected>> {
    let output = Command::new(envoy)
        .args(["--mode", "validate", "-l", "warn", "-c"])
        .arg(config)
        .output()?;
    if output.status.success() {
        return Ok(Ok(()));
    }
    Ok(Err(Rejected {
        status: output.status,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }))
}
