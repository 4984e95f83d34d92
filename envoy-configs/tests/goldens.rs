//! The example specs under `envoy-configs/examples/*/spec.yaml` render exactly their checked-in
//! `bootstrap.yaml`, `explain.txt`, `dashboard.json` and `alerts.yaml`, and their Kubernetes
//! manifests under `envoy-configs/k8s/<example>/` (`mesh-bootstrap k8s`): a change to rendering
//! shows up as a golden diff in review. `MESH_BLESS=1 cargo test -p envoy-configs --test goldens`
//! rewrites them. (That each golden bootstrap passes `envoy --mode validate` is the real-Envoy
//! harness's test `composer_goldens`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use envoy_configs::compose::dashboard;
use envoy_configs::compose::explain::explain;
use envoy_configs::compose::k8s;
use envoy_configs::compose::render::{render, RenderOptions};
use envoy_configs::compose::spec::{ServiceSpec, SpecFormat};
use std::path::{Path, PathBuf};

fn examples() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|dir| dir.join("spec.yaml").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 2, "examples missing under {}", root.display());
    dirs
}

fn check(golden: &Path, rendered: &str, stale: &mut Vec<String>) {
    if std::env::var_os("MESH_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(golden, rendered).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(golden).unwrap_or_default();
    if expected != rendered {
        let line = expected
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(rendered.lines().count()))
            + 1;
        stale.push(format!(
            "{} differs from what the spec renders (first at line {line}); review the change, then \
             re-bless with MESH_BLESS=1",
            golden.display()
        ));
    }
}

#[test]
fn every_example_renders_its_golden_bootstrap_and_explanation() {
    let mut stale = Vec::new();
    for dir in examples() {
        let text = std::fs::read_to_string(dir.join("spec.yaml")).unwrap();
        let spec = ServiceSpec::parse(&text, SpecFormat::Yaml)
            .unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
        let rendered = render(&spec, &RenderOptions::default()).unwrap();
        let yaml = rendered.bootstrap.to_yaml().unwrap();
        check(&dir.join("bootstrap.yaml"), &yaml, &mut stale);
        check(
            &dir.join("explain.txt"),
            &explain(&spec, &rendered),
            &mut stale,
        );
        let board = dashboard::dashboard(&spec, &rendered);
        check(
            &dir.join("dashboard.json"),
            &format!("{board:#}\n"),
            &mut stale,
        );
        let alerts = dashboard::alerts(&spec, &rendered);
        let rules = dashboard::rule_file(&spec.service, &alerts).unwrap();
        check(&dir.join("alerts.yaml"), &rules, &mut stale);
        let k8s_dir = dir.join("../../k8s").join(dir.file_name().unwrap());
        std::fs::create_dir_all(&k8s_dir).unwrap();
        let images = k8s::Images {
            app: format!("{}:latest", spec.service),
            sidecar: "mesh-envoy:latest".to_owned(),
        };
        let manifests = k8s::kubernetes(&spec, &rendered, &images).unwrap();
        check(&k8s_dir.join("kubernetes.yaml"), &manifests, &mut stale);
        check(
            &k8s_dir.join("istio.yaml"),
            &k8s::istio(&spec, &rendered).unwrap(),
            &mut stale,
        );
    }
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}
