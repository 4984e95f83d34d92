//! Parsing and validation of the plugin configuration through meshkit's loader: the
//! documented defaults, and every rule with the field it names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshkit::config::{load_config, DurationMs};
use retry_budget::config::{KeySource, RetryBudgetConfig, Role};

fn load(json: &str) -> Result<RetryBudgetConfig, String> {
    load_config::<RetryBudgetConfig>(Some(json.as_bytes())).map_err(|err| err.to_string())
}

/// The field path of the error `json` fails with.
fn error_path(json: &str) -> String {
    load_config::<RetryBudgetConfig>(Some(json.as_bytes()))
        .unwrap_err()
        .path
}

#[test]
fn empty_configuration_is_the_documented_defaults() {
    let config = load("{}").unwrap();
    assert_eq!(config, RetryBudgetConfig::default());
    assert_eq!(config, load("").unwrap());
    assert_eq!(config.role, Role::Client);
    assert_eq!(config.ratio.get(), 0.2);
    assert_eq!(config.min_retries_per_second, 10);
    assert_eq!(config.ttl_ms, DurationMs(10_000));
    assert_eq!(config.buckets, 10);
    assert_eq!(config.max_retries, 3);
    assert_eq!(config.key, KeySource::Cluster);
    assert_eq!(config.max_keys, 32);
    assert_eq!(config.retry_header, None);
    assert_eq!(config.retry_after_seconds, 1);
    assert_eq!(config.default_pushback_ms, DurationMs(1_000));
    assert_eq!(config.max_pushback_ms, DurationMs(30_000));
}

#[test]
fn a_full_server_configuration_parses() {
    let config = load(
        r#"{"role": "server", "ratio": 0.1, "min_retries_per_second": 5, "ttl_ms": 2000,
            "buckets": 20, "max_retries": 2, "key": "authority", "max_keys": 4,
            "retry_header": "x-retry-attempt", "retry_after_seconds": 2,
            "default_pushback_ms": 500, "max_pushback_ms": 500}"#,
    )
    .unwrap();
    assert_eq!(config.role, Role::Server);
    assert_eq!(config.key, KeySource::Authority);
    assert_eq!(
        config.retry_header.as_ref().map(|h| h.as_str()),
        Some("x-retry-attempt")
    );
    assert_eq!((config.buckets, config.max_keys), (20, 4));
}

#[test]
fn unknown_fields_and_bad_types_name_the_field() {
    assert_eq!(error_path(r#"{"ratoi": 0.2}"#), "ratoi");
    assert_eq!(error_path(r#"{"role": "proxy"}"#), "role");
    assert_eq!(error_path(r#"{"key": "path"}"#), "key");
    assert_eq!(error_path(r#"{"ratio": 1.5}"#), "ratio");
    assert_eq!(error_path(r#"{"ratio": -0.1}"#), "ratio");
    assert_eq!(error_path(r#"{"ttl_ms": "10s"}"#), "ttl_ms");
    assert_eq!(error_path(r#"{"retry_header": "X-Retry"}"#), "retry_header");
}

#[test]
fn every_validation_rule_names_its_field_and_value() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{"ratio": 0, "min_retries_per_second": 0}"#,
            "ratio",
            "no retry",
        ),
        (
            r#"{"min_retries_per_second": 10001}"#,
            "min_retries_per_second",
            "10001",
        ),
        (r#"{"ttl_ms": 99}"#, "ttl_ms", "99"),
        (r#"{"ttl_ms": 600001}"#, "ttl_ms", "600001"),
        (r#"{"buckets": 0}"#, "buckets", "0"),
        (r#"{"buckets": 61}"#, "buckets", "61"),
        (r#"{"max_retries": 0}"#, "max_retries", "0"),
        (r#"{"max_retries": 101}"#, "max_retries", "101"),
        (r#"{"max_keys": 0}"#, "max_keys", "0"),
        (r#"{"max_keys": 513}"#, "max_keys", "513"),
        (r#"{"retry_header": "x-retry"}"#, "retry_header", "server"),
        (r#"{"retry_after_seconds": 0}"#, "retry_after_seconds", "0"),
        (
            r#"{"retry_after_seconds": 3601}"#,
            "retry_after_seconds",
            "3601",
        ),
        (r#"{"default_pushback_ms": 0}"#, "default_pushback_ms", "0"),
        (
            r#"{"default_pushback_ms": 2000, "max_pushback_ms": 1000}"#,
            "max_pushback_ms",
            "1000",
        ),
        (
            r#"{"max_pushback_ms": 3600001}"#,
            "max_pushback_ms",
            "3600001",
        ),
    ];
    for (json, path, shown) in cases {
        let err = load_config::<RetryBudgetConfig>(Some(json.as_bytes())).unwrap_err();
        assert_eq!(err.path, *path, "{json}: {err}");
        assert!(err.to_string().contains(shown), "{json}: {err}");
    }
}

#[test]
fn the_bounds_themselves_are_valid() {
    for json in [
        r#"{"ratio": 0, "min_retries_per_second": 1}"#,
        r#"{"ratio": 1, "min_retries_per_second": 0}"#,
        r#"{"min_retries_per_second": 10000, "ttl_ms": 100, "buckets": 1}"#,
        r#"{"ttl_ms": 600000, "buckets": 60, "max_retries": 100, "max_keys": 512}"#,
        r#"{"role": "server", "retry_header": "x-retry", "retry_after_seconds": 3600}"#,
        r#"{"default_pushback_ms": 3600000, "max_pushback_ms": 3600000}"#,
    ] {
        load(json).unwrap_or_else(|err| panic!("{json}: {err}"));
    }
}
