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

#[test]
fn errors_name_the_offending_field() {
    for (json, path) in [
        (r#"{"limt": {}}"#, "limt"),
        (r#"{"limit": {"min_limit": "x"}}"#, "limit.min_limit"),
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
            r#"{"limit": {"window_max_samples": 70000}}"#,
            "limit.window_max_samples",
        ),
        (r#"{"limit": {"tolerance": 1.5}}"#, "limit.tolerance"),
        (r#"{"limit": {"utilization": 0}}"#, "limit.utilization"),
        (r#"{"limit": {"max_decrease": 0.95}}"#, "limit.max_decrease"),
        (r#"{"bypass_paths": ["healthz"]}"#, "bypass_paths[0]"),
        (
            r#"{"criticality": {"header": "X-Crit"}}"#,
            "criticality.header",
        ),
        (
            r#"{"criticality": {"routes": [{"criticality": "critical"}]}}"#,
            "criticality.routes[0]",
        ),
        (
            r#"{"criticality": {"routes": [{"path_prefix": "/a", "criticality": "urgent"}]}}"#,
            "criticality.routes[0].criticality",
        ),
        (
            r#"{"criticality": {"routes": [{"grpc_method": "NoSlash", "criticality": "critical"}]}}"#,
            "criticality.routes[0].grpc_method",
        ),
        (
            r#"{"criticality": {"shares": {"sheddable": 0.95}}}"#,
            "criticality.shares.sheddable",
        ),
        (
            r#"{"rejection": {"grpc_status": "INTERNAL"}}"#,
            "rejection.grpc_status",
        ),
    ] {
        assert_eq!(error_path(json), path, "{json}");
    }
}

#[test]
fn error_messages_say_what_is_wrong() {
    let message = load(r#"{"limit": {"max_limit": 10}}"#).unwrap_err();
    assert_eq!(
        message,
        "invalid configuration at `limit.max_limit`: must be >= limit.initial_limit (got 10)"
    );
}
