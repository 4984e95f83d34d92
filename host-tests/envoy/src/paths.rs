//! Where the harness finds Envoy and the built wasm modules, and bootstrap validation.

use crate::EnvoyError;
use envoy_configs::Bootstrap;
use std::path::PathBuf;
use std::process::Command;

/// The Envoy binary: `$MESH_ENVOY_BIN` if set, else `<workspace>/.venv/bin/envoy`
/// (installed by `cargo xtask bootstrap`).
pub fn envoy_binary() -> Result<PathBuf, EnvoyError> {
    let path = std::env::var_os("MESH_ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| mesh_catalog::workspace_root().join(".venv/bin/envoy"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(EnvoyError::BinaryMissing { path })
    }
}

/// The built module of crate `crate_name` from the module catalog (`mesh-catalog`); an error naming
/// the module and telling to run `cargo xtask build` when it is missing or older than its sources.
pub fn wasm_module(crate_name: &str) -> Result<PathBuf, EnvoyError> {
    Ok(mesh_catalog::built(crate_name)?)
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
