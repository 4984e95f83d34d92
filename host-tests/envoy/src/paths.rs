//! Where the harness finds Envoy and the built wasm modules, and bootstrap validation.

use crate::EnvoyError;
use envoy_configs::Bootstrap;
use std::path::PathBuf;

/// The Envoy binary: `$MESH_ENVOY_BIN` if set, else `<workspace>/.venv/bin/envoy`
/// (installed by `cargo xtask bootstrap`).
pub fn envoy_binary() -> Result<PathBuf, EnvoyError> {
    envoy_configs::envoy::envoy_binary().map_err(|path| EnvoyError::BinaryMissing { path })
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
    let verdict = envoy_configs::envoy::validate_file(&envoy, &config_path)
        .map_err(EnvoyError::io(format!("running {}", envoy.display())))?;
    verdict.map_err(|rejected| EnvoyError::Invalid {
        status: rejected.status,
        output: rejected.output,
        config_path: dir.keep().join("envoy.json"),
    })
}
