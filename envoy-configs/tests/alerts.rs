//! The alert rules `mesh-bootstrap dashboard` writes for each example pass `promtool check rules`,
//! and each alert fires on its own firing series (`promtool test rules`, a case per alert).
//! promtool comes from Debian's `prometheus` package (`cargo xtask bootstrap` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use envoy_configs::compose::dashboard::{alerts, has_filter_alerts, rule_file, rule_tests};
use envoy_configs::compose::render::{render, RenderOptions};
use envoy_configs::compose::spec::{ServiceSpec, SpecFormat};
use std::path::Path;
use std::process::Command;

fn promtool(dir: &Path, args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| {
            panic!("promtool not runnable ({err}): run `cargo xtask bootstrap` (Debian package prometheus)")
        });
    assert!(
        output.status.success(),
        "promtool {args:?} failed in {}:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_examples_alert_rules_pass_promtool_and_each_alert_fires_in_its_test() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for service in ["payment-service", "notification-service"] {
        let text = std::fs::read_to_string(examples.join(service).join("spec.yaml")).unwrap();
        let spec = ServiceSpec::parse(&text, SpecFormat::Yaml).unwrap();
        let rendered = render(&spec, &RenderOptions::default()).unwrap();
        let alerts = alerts(&spec, &rendered);
        let names: Vec<&str> = alerts.iter().map(|a| a.name.as_str()).collect();
        assert!(
            names.iter().any(|n| n.ends_with("HighErrorRate")),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n.ends_with("IncreasedLatency")),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n.ends_with("LoadShedding")),
            "{names:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("alerts.yaml"),
            rule_file(&spec.service, &alerts).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("alerts.test.yaml"),
            rule_tests(&spec.service, "alerts.yaml", &alerts).unwrap(),
        )
        .unwrap();
        promtool(dir.path(), &["check", "rules", "alerts.yaml"]);
        promtool(dir.path(), &["test", "rules", "alerts.test.yaml"]);
    }
}

#[test]
fn a_sidecar_without_filters_gets_only_the_service_alerts() {
    let spec = ServiceSpec::parse(
        "service: orders\napp: {port: 8080, protocol: http1}\n",
        SpecFormat::Yaml,
    )
    .unwrap();
    let rendered = render(&spec, &RenderOptions::default()).unwrap();
    let names: Vec<String> = alerts(&spec, &rendered)
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["OrdersHighErrorRate", "OrdersIncreasedLatency"]);
}

/// A filter that ships needs its alert (the "one per filter"): add it to
/// `compose::dashboard::filter_alerts` when adding the filter to the catalog.
#[test]
fn every_shipped_filter_has_an_alert() {
    for module in mesh_catalog::filters() {
        assert!(
            has_filter_alerts(module.crate_name),
            "{} has no alert in envoy_configs::compose::dashboard",
            module.crate_name
        );
    }
}
