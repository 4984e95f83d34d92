//! The configuration: `{}` loads safe defaults, and every validation rule rejects its bad value
//! with an error naming the field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drain_signal::config::{DrainConfig, ADMIN_CALL_TIMEOUT, MAX_PHASE_MS};
use meshkit::config::{load_config, ConfigError};
use std::time::Duration;

fn load(raw: &str) -> Result<DrainConfig, ConfigError> {
    load_config(Some(raw.as_bytes()))
}

fn error_at(raw: &str) -> ConfigError {
    load(raw).expect_err(raw)
}

#[test]
fn empty_configuration_loads_the_documented_defaults() {
    let config = load("{}").unwrap();
    assert_eq!(config.path, "/.mesh/drain");
    assert_eq!(config.allowed_sources, ["127.0.0.0/8", "::1/128"]);
    assert_eq!(config.token, None);
    assert_eq!(config.health_paths, ["/healthz", "/readyz"]);
    assert_eq!(config.delay_ms.as_duration(), Duration::from_secs(30));
    assert_eq!(config.admin_cluster, "envoy_admin");
    assert_eq!(config.gradual_window_ms, None);
    let policy = config.policy();
    assert_eq!(policy.delay, Duration::from_secs(30));
    assert_eq!(policy.call_timeout, ADMIN_CALL_TIMEOUT);
    let access = config.access();
    assert!(access.check_source(Some(b"127.0.0.1:5000")).is_ok());
    assert!(access.check_source(Some(b"[::1]:5000")).is_ok());
    assert!(access.check_source(Some(b"10.0.0.1:5000")).is_err());
}

#[test]
fn every_field_parses() {
    let config = load(
        r#"{"path": "/drain", "allowed_sources": ["10.0.0.0/8", "192.168.1.7"], "token": "s3cr3t-TOKEN",
            "health_paths": ["/health"], "delay_ms": 2000, "admin_cluster": "admin",
            "gradual_window_ms": 5000}"#,
    )
    .unwrap();
    assert_eq!(config.path, "/drain");
    assert_eq!(config.token.as_deref(), Some("s3cr3t-TOKEN"));
    assert_eq!(config.policy().gradual_window, Some(Duration::from_secs(5)));
    let access = config.access();
    assert!(access.check_source(Some(b"10.200.0.1:1")).is_ok());
    assert!(access.check_source(Some(b"192.168.1.7:1")).is_ok());
    assert!(access.check_source(Some(b"192.168.1.8:1")).is_err());
    // An empty list of health paths fails none.
    assert!(load(r#"{"health_paths": []}"#)
        .unwrap()
        .health_paths
        .is_empty());
    assert_eq!(
        load(r#"{"delay_ms": 0}"#).unwrap().policy().delay,
        Duration::ZERO
    );
}

#[test]
fn unknown_fields_and_wrong_types_name_the_field() {
    assert_eq!(error_at(r#"{"delay": 5}"#).path, "delay");
    assert_eq!(error_at(r#"{"delay_ms": "5s"}"#).path, "delay_ms");
    assert_eq!(
        error_at(r#"{"allowed_sources": "127.0.0.1"}"#).path,
        "allowed_sources"
    );
    assert_eq!(error_at(r#"{"token": 5}"#).path, "token");
}

#[test]
fn paths_must_be_absolute_without_query() {
    for bad in ["drain", "", "/drain?now", "/drain#x"] {
        let raw = format!(r#"{{"path": {bad:?}}}"#);
        assert_eq!(error_at(&raw).path, "path", "{bad}");
        let raw = format!(r#"{{"health_paths": ["/ok", {bad:?}]}}"#);
        assert_eq!(error_at(&raw).path, "health_paths[1]", "{bad}");
    }
}

#[test]
fn a_health_path_may_not_be_the_trigger_path() {
    let err = error_at(r#"{"path": "/healthz"}"#);
    assert_eq!(err.path, "health_paths[0]");
    assert!(err.message.contains("differ"), "{err}");
}

#[test]
fn allowed_sources_must_be_cidrs_and_not_empty() {
    let err = error_at(r#"{"allowed_sources": []}"#);
    assert_eq!(err.path, "allowed_sources");
    for bad in [
        "localhost",
        "10.0.0.0/33",
        "::1/129",
        "10.0.0/8",
        " 10.0.0.0/8",
        "",
    ] {
        let raw = format!(r#"{{"allowed_sources": ["127.0.0.1/32", {bad:?}]}}"#);
        let err = error_at(&raw);
        assert_eq!(err.path, "allowed_sources[1]", "{bad}");
        assert!(err.value.contains(bad), "names the value: {err}");
    }
}

#[test]
fn a_token_must_be_visible_ascii_and_is_never_echoed() {
    for bad in ["", "two words", "tab\there", "naïve"] {
        let raw = format!(r#"{{"token": {bad:?}}}"#);
        let err = error_at(&raw);
        assert_eq!(err.path, "token", "{bad:?}");
        assert!(err.value.is_empty(), "the secret is not echoed: {err}");
    }
}

#[test]
fn delay_and_gradual_window_are_bounded() {
    let raw = format!(r#"{{"delay_ms": {}}}"#, MAX_PHASE_MS + 1);
    assert_eq!(error_at(&raw).path, "delay_ms");
    assert!(load(&format!(r#"{{"delay_ms": {MAX_PHASE_MS}}}"#)).is_ok());
    for bad in [0, MAX_PHASE_MS + 1] {
        let raw = format!(r#"{{"gradual_window_ms": {bad}}}"#);
        assert_eq!(error_at(&raw).path, "gradual_window_ms", "{bad}");
    }
}

#[test]
fn the_admin_cluster_must_be_named() {
    assert_eq!(error_at(r#"{"admin_cluster": ""}"#).path, "admin_cluster");
}
