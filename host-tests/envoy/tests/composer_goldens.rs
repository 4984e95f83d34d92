//! Every golden bootstrap of `envoy-configs/examples/*` (what `mesh-bootstrap render` writes for
//! the example specs) is accepted by the real Envoy's `--mode validate`, which loads each wasm
//! module with its plugin configuration: the goldens point at `/etc/envoy/wasm` (the image's
//! module directory), so the test points them at this checkout's built modules instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use envoy_configs::compose::render::DEFAULT_WASM_DIR;
use mesh_envoy_harness::{envoy_binary, wasm_module};
use std::path::Path;

#[test]
fn every_golden_bootstrap_passes_envoy_validate() {
    let envoy = envoy_binary().unwrap();
    let suite = wasm_module("mesh-suite").unwrap();
    let wasm_dir = suite.parent().unwrap().to_str().unwrap().to_owned();
    let examples = mesh_catalog::workspace_root().join("envoy-configs/examples");
    let scratch = tempfile::tempdir().unwrap();
    let mut validated = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let golden = entry.unwrap().path().join("bootstrap.yaml");
        if !golden.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&golden).unwrap();
        for module in modules_named_in(&text) {
            let crate_name = module.trim_end_matches(".wasm").replace('_', "-");
            wasm_module(&crate_name).unwrap();
        }
        let local = text.replace(&format!("{DEFAULT_WASM_DIR}/"), &format!("{wasm_dir}/"));
        let name = golden.parent().unwrap().file_name().unwrap().to_owned();
        let file = scratch.path().join(Path::new(&name).with_extension("yaml"));
        std::fs::write(&file, local).unwrap();
        if let Err(rejected) = envoy_configs::envoy::validate_file(&envoy, &file).unwrap() {
            panic!(
                "{}: envoy rejects it:\n{}",
                golden.display(),
                rejected.output
            );
        }
        validated += 1;
    }
    assert!(
        validated >= 2,
        "expected the example goldens under {}",
        examples.display()
    );
}

/// The module files a bootstrap loads from the image's module directory.
fn modules_named_in(text: &str) -> Vec<String> {
    text.match_indices(&format!("{DEFAULT_WASM_DIR}/"))
        .filter_map(|(at, prefix)| {
            let rest = &text[at + prefix.len()..];
            rest.split_whitespace().next().map(str::to_owned)
        })
        .collect()
}
