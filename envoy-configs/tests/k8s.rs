//! The Kubernetes manifests of the examples (goldens under `envoy-configs/k8s/`, kept current by the
//! `goldens` test) pass `kubernetes-validate --strict` (PyPI, installed into `.venv` by
//! `cargo xtask bootstrap`; or `$MESH_KUBERNETES_VALIDATE_BIN`). The Istio WasmPlugins are not
//! schema-checked: kubernetes-validate knows no Istio CRDs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn every_examples_kubernetes_manifests_pass_kubernetes_validate() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tool = std::env::var_os("MESH_KUBERNETES_VALIDATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| mesh_catalog::workspace_root().join(".venv/bin/kubernetes-validate"));
    let mut checked = 0;
    for entry in std::fs::read_dir(crate_dir.join("k8s")).unwrap() {
        let manifests = entry.unwrap().path().join("kubernetes.yaml");
        if !manifests.is_file() {
            continue;
        }
        let output = Command::new(&tool)
            .args(["--strict", "--quiet"])
            .arg(&manifests)
            .output()
            .unwrap_or_else(|err| {
                panic!(
                    "{} not runnable ({err}): run `cargo xtask bootstrap`",
                    tool.display()
                )
            });
        assert!(
            output.status.success(),
            "kubernetes-validate {}:\n{}{}",
            manifests.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected the examples' manifests under envoy-configs/k8s"
    );
}
