//! Where the harness finds Envoy and the built wasm modules, and bootstrap validation.

use super::EnvoyError;
use envoy_configs::Bootstrap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (parent of the `host-tests` crate).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The Envoy binary: `$MESH_ENVOY_BIN` if set, else `<workspace>/.venv/bin/envoy`
/// (installed by `cargo xtask bootstrap`).
pub fn envoy_binary() -> Result<PathBuf, EnvoyError> {
    let path = std::env::var_os("MESH_ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/envoy"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(EnvoyError::BinaryMissing { path })
    }
}

/// The release wasm module of workspace crate `crate_name`
/// (`<target>/wasm32-wasip1/release/<crate_name with underscores>.wasm`, honouring
/// `$CARGO_TARGET_DIR`); an error telling to run `cargo xtask build` if it is not built.
pub fn wasm_module(crate_name: &str) -> Result<PathBuf, EnvoyError> {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let path = target_dir
        .join("wasm32-wasip1/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    if path.is_file() {
        Ok(path)
    } else {
        Err(EnvoyError::WasmModuleMissing { path })
    }
}

/// Runs `envoy --mode validate` on `bootstrap`: Envoy parses it and builds every listener,
/// filter and cluster without binding ports or starting workers. On rejection the bootstrap
/// file is kept and its path is in the error.
pub fn validate(bootstrap: &Bootstrap) -> Result<(), EnvoyError> {
    let envoy = envoy_binary()?;
    let dir = tempfile::Builder::new()
        .prefix("envoy-validate-")
        .tempdir()
        .map_err(EnvoyError::io("creating a temp dir"))?;
    let config_path = dir.path().join("envoy.json");
    std::fs::write(&config_path, bootstrap.to_json())
        .map_err(EnvoyError::io(format!("writing {}", config_path.display())))?;
    let output = Command::new(&envoy)
        .args(["--mode", "validate", "-l", "warn", "-c"])
        .arg(&config_path)
        .output()
        .map_err(EnvoyError::io(format!("running {}", envoy.display())))?;
    if output.status.success() {
        return Ok(());
    }
    let kept = dir.keep();
    Err(EnvoyError::Invalid {
        status: output.status,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        config_path: kept.join("envoy.json"),
    })
}
