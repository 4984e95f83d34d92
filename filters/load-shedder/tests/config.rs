//! Parsing and validation of the plugin configuration through meshkit's loader.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use load_shedder::classify::Criticality;
use load_shedder::config::ShedderConfig;
use meshkit::config::{load_config, DurationMs, Validate};
use meshkit::grpc::GrpcStatus;

fn load(json: &str) -> Result<ShedderConfig, String> {
    load_config::<ShedderConfig>(Some(json.as_bytes())).map_err(|err| err.to_string())
}

fn error_path(json: &str) -> String {
    load_config::<ShedderConfig>(Some(json.as_bytes()))
        .unwrap_err()
        .path
}

#[test]
fn empty_configuration_is_the_documented_defaults() {
    let config = load("").unwrap();
    assert_eq!(config, ShedderConfig::default());
    config.validate().unwrap();
    assert!(!config.dry_run);
    assert_eq!(
        (
            config.limit.min_limit,
            config.limit.initial_limit,
            config.limit.max_limit
        ),
        (4, 20, 1000)
    );
    assert_eq!(config.limit.window_ms, DurationMs(100));
    assert_eq!(config.limit.latency_target_ms, None);
    assert_eq!(
        config.criticality.header.as_ref().map(|h| h.as_str()),
        Some("x-request-criticality")
    );
    assert_eq!(config.rejection.grpc_status, GrpcStatus::Unavailable);
}

#[test]
fn a_full_configuration_parses() {
    let config = load(
        r#"{
            "dry_run": true,
            "bypass_paths": ["/healthz"],
            "limit": { "min_limit": 2, "initial_limit": 10, "max_limit": 50, "latency_target_ms": 250 },
            "criticality": {
                "header": null,
                "routes": [
                    { "path_prefix": "/batch/", "criticality": "sheddable" },
                    { "grpc_method": "pkg.Search/Query", "criticality": "critical-plus" }
                ]
            },
            "rejection": { "grpc_status": "RESOURCE_EXHAUSTED", "retry_after_seconds": 2 }
        }"#,
    )
    .unwrap();
    assert!(config.dry_run);
    assert_eq!(config.limit.latency_target_ms, Some(DurationMs(250)));
    assert_eq!(config.criticality.header, None);
    assert_eq!(
        config.criticality.routes[1].criticality,
        Criticality::CriticalPlus
    );
    assert_eq!(config.rejection.grpc_status, GrpcStatus::ResourceExhausted);
}

/// The composer (`mesh-bootstrap`) writes a spec's typed configuration back out as the plugin's
/// JSON: what it writes must load as the same configuration.
#[test]
fn a_serialized_configuration_loads_back_unchanged() {
    let full = load(
        r#"{
            "dry_run": true,
            "bypass_paths": ["/healthz"],
            "limit": { "min_limit": 2, "max_limit": 50, "latency_target_ms": 250, "tolerance": 0.25 },
            "criticality": {
                "header": null,
                "routes": [
                    { "path_prefix": "/batch/", "criticality": "sheddable" },
                    { "grpc_method": "pkg.Search/Query", "criticality": "critical-plus" }
                ]
            },
            "rejection": { "grpc_status": "RESOURCE_EXHAUSTED", "retry_after_seconds": 2 }
        }"#,
    )
    .unwrap();
    for config in [ShedderConfig::default(), full] {
        let written = serde_json::to_string(&config).unwrap();
        assert_eq!(load(&written), Ok(config), "{written}");
    }
}

#[test]
fn every_validation_rule_names_the_offending_field() {
    for (json, path) in [
        // Parsing: unknown fields, wrong types, out-of-range fractions, header names, enums.
        (r#"{"limt": {}}"#, "limt"),
        (r#"{"limit": {"min_limit": "x"}}"#, "limit.min_limit"),
        (r#"{"limit": {"tolerance": 1.5}}"#, "limit.tolerance"),
        (
            r#"{"criticality": {"header": "X-Crit"}}"#,
            "criticality.header",
        ),
        (
            r#"{"criticality": {"routes": [{"path_prefix": "/a", "criticality": "urgent"}]}}"#,
            "criticality.routes[0].criticality",
        ),
        // bypass_paths
        (r#"{"bypass_paths": ["healthz"]}"#, "bypass_paths[0]"),
        (r#"{"bypass_paths": ["/ok", "/a?b=1"]}"#, "bypass_paths[1]"),
        // limit
        (r#"{"limit": {"min_limit": 0}}"#, "limit.min_limit"),
        (r#"{"limit": {"min_limit": 30}}"#, "limit.initial_limit"),
        (r#"{"limit": {"max_limit": 10}}"#, "limit.max_limit"),
        (r#"{"limit": {"window_ms": 0}}"#, "limit.window_ms"),
        (
            r#"{"limit": {"baseline_window_ms": 0}}"#,
            "limit.baseline_window_ms",
        ),
        (
            r#"{"limit": {"latency_target_ms": 0}}"#,
            "limit.latency_target_ms",
        ),
        (
            r#"{"limit": {"window_min_samples": 0}}"#,
            "limit.window_min_samples",
        ),
        (
            r#"{"limit": {"window_max_samples": 70000}}"#,
            "limit.window_max_samples",
        ),
        (
            r#"{"limit": {"window_min_samples": 10, "window_max_samples": 5}}"#,
            "limit.window_max_samples",
        ),
        (
            r#"{"limit": {"latency_quantile": 0}}"#,
            "limit.latency_quantile",
        ),
        (r#"{"limit": {"utilization": 0}}"#, "limit.utilization"),
        (r#"{"limit": {"max_decrease": 0}}"#, "limit.max_decrease"),
        (r#"{"limit": {"max_decrease": 0.95}}"#, "limit.max_decrease"),
        // criticality
        (
            r#"{"criticality": {"routes": [{"criticality": "critical"}]}}"#,
            "criticality.routes[0]",
        ),
        (
            r#"{"criticality": {"routes": [{"path_prefix": "/a", "grpc_method": "p.S/M", "criticality": "critical"}]}}"#,
            "criticality.routes[0]",
        ),
        (
            r#"{"criticality": {"routes": [{"path_prefix": "batch/", "criticality": "sheddable"}]}}"#,
            "criticality.routes[0].path_prefix",
        ),
        (
            r#"{"criticality": {"routes": [{"grpc_method": "NoSlash", "criticality": "critical"}]}}"#,
            "criticality.routes[0].grpc_method",
        ),
        (
            r#"{"criticality": {"shares": {"critical_plus": 0}}}"#,
            "criticality.shares.critical_plus",
        ),
        (
            r#"{"criticality": {"shares": {"sheddable": 0}}}"#,
            "criticality.shares.sheddable",
        ),
        (
            r#"{"criticality": {"shares": {"sheddable": 0.95}}}"#,
            "criticality.shares.sheddable",
        ),
        (
            r#"{"criticality": {"shares": {"critical": 1.0, "critical_plus": 0.95}}}"#,
            "criticality.shares.critical",
        ),
        // rejection
        (
            r#"{"rejection": {"grpc_status": "INTERNAL"}}"#,
            "rejection.grpc_status",
        ),
        (
            r#"{"rejection": {"retry_after_seconds": 0}}"#,
            "rejection.retry_after_seconds",
        ),
        (
            r#"{"rejection": {"retry_after_seconds": 3601}}"#,
            "rejection.retry_after_seconds",
        ),
    ] {
        assert_eq!(error_path(json), path, "{json}");
    }
}

#[test]
fn the_boundaries_of_each_range_are_valid() {
    for json in [
        r#"{"limit": {"min_limit": 1, "initial_limit": 1, "max_limit": 1}}"#,
        r#"{"limit": {"window_min_samples": 65535, "window_max_samples": 65535}}"#,
        r#"{"limit": {"max_decrease": 0.9, "latency_quantile": 1, "utilization": 1}}"#,
        r#"{"criticality": {"shares": {"critical_plus": 0.5, "critical": 0.5, "sheddable_plus": 0.5, "sheddable": 0.5}}}"#,
        r#"{"rejection": {"retry_after_seconds": 1}}"#,
        r#"{"rejection": {"retry_after_seconds": 3600}}"#,
    ] {
        load(json).unwrap_or_else(|err| panic!("{json}: {err}"));
    }
}

#[test]
fn error_messages_say_what_is_wrong() {
    let message = load(r#"{"limit": {"max_limit": 10}}"#).unwrap_err();
    assert_eq!(
        message,
        "invalid configuration at `limit.max_limit`: must be >= limit.initial_limit (got 10)"
    );
    let message = load(r#"{"rejection": {"retry_after_seconds": 0}}"#).unwrap_err();
    assert_eq!(
        message,
        "invalid configuration at `rejection.retry_after_seconds`: must be between 1 and 3600 \
         (got 0)"
    );
}
