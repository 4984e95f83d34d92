//! Every configuration rule: defaults, each rejected value named by its field path, and the
//! fields a valid configuration sets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshkit::config::{load_config, ConfigError};
use sandbox_router::config::{SandboxConfig, UnknownKey};
use std::net::IpAddr;

fn load(raw: &str) -> Result<SandboxConfig, ConfigError> {
    load_config(Some(raw.as_bytes()))
}

fn rejected(raw: &str, path: &str, needle: &str) {
    let err = load(raw).expect_err(raw);
    assert_eq!(err.path, path, "{raw}: {err}");
    assert!(err.to_string().contains(needle), "{raw}: {err}");
}

#[test]
fn empty_configuration_is_safe_defaults() {
    for raw in ["{}", "", "null"] {
        let config = load(raw).unwrap();
        assert_eq!(config, SandboxConfig::default());
        assert_eq!(config.key_header.unwrap().as_str(), "x-sandbox");
        assert_eq!(config.baggage_key.as_deref(), Some("sandbox"));
        assert_eq!(config.routing_header.as_str(), "x-mesh-sandbox-cluster");
        assert!(config.sandboxes.is_empty() && config.registry.is_none());
        assert!(
            config.trusted_sources.is_empty(),
            "nobody is trusted by default"
        );
        assert_eq!(config.unknown_key, UnknownKey::Baseline);
        assert_eq!(config.signing_secret, None);
        assert_eq!(config.own_sandbox, None);
        assert_eq!(config.max_key_length, 63);
    }
}

#[test]
fn a_full_configuration_loads() {
    let config = load(
        r#"{"key_header": "x-env", "baggage_key": "env", "routing_header": "x-route",
            "sandboxes": {"feature-x": "sandbox_feature_x", "b_2": "outbound|80||b.svc"},
            "registry": {"cluster": "registry", "path": "/v1/sandboxes", "authority": "registry.local",
                         "refresh_interval_ms": 5000, "timeout_ms": 500},
            "unknown_key": "not_found",
            "trusted_sources": ["127.0.0.1/32", "10.0.0.0/8", "::1", "fd00::/8"],
            "signing_secret": "0123456789abcdef0123456789abcdef",
            "self": "feature-x", "max_key_length": 20}"#,
    )
    .unwrap();
    assert_eq!(config.unknown_key, UnknownKey::NotFound);
    assert_eq!(config.sandboxes["b_2"], "outbound|80||b.svc");
    let registry = config.registry.unwrap();
    assert_eq!(registry.refresh_interval_ms.as_millis(), 5000);
    assert_eq!(registry.authority.as_deref(), Some("registry.local"));
    let loopback: IpAddr = "::1".parse().unwrap();
    assert!(config.trusted_sources[2].contains(&loopback));
    assert!(config.trusted_sources[1].contains(&"10.9.8.7".parse().unwrap()));
    assert_eq!(config.own_sandbox.as_deref(), Some("feature-x"));
}

#[test]
fn registry_defaults_apply_to_omitted_fields() {
    let config = load(r#"{"registry": {"cluster": "registry", "path": "/sandboxes"}}"#).unwrap();
    let registry = config.registry.unwrap();
    assert_eq!(registry.refresh_interval_ms.as_millis(), 10_000);
    assert_eq!(registry.timeout_ms.as_millis(), 2_000);
    assert_eq!(registry.authority, None);
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    rejected(r#"{"sandbox": {}}"#, "sandbox", "unknown field");
    rejected(
        r#"{"registry": {"cluster": "r", "path": "/", "interval": 1}}"#,
        "registry.interval",
        "unknown field",
    );
}

#[test]
fn required_registry_fields_are_named() {
    rejected(r#"{"registry": {"path": "/s"}}"#, "registry", "cluster");
    rejected(r#"{"registry": {"cluster": "r"}}"#, "registry", "path");
}

#[test]
fn header_rules() {
    rejected(r#"{"key_header": "X-Sandbox"}"#, "key_header", "lowercase");
    rejected(
        r#"{"key_header": "x-route", "routing_header": "x-route"}"#,
        "key_header",
        "must differ from routing_header",
    );
    rejected(
        r#"{"routing_header": ":authority"}"#,
        "routing_header",
        "pseudo-header",
    );
    rejected(
        r#"{"routing_header": "baggage"}"#,
        "routing_header",
        "baggage",
    );
    rejected(r#"{"key_header": "baggage"}"#, "key_header", "baggage");
    rejected(r#"{"key_header": "host"}"#, "key_header", "host");
    rejected(
        r#"{"key_header": null, "baggage_key": null}"#,
        "key_header",
        "cannot both be null",
    );
    assert!(load(r#"{"key_header": null}"#)
        .unwrap()
        .key_header
        .is_none());
    assert!(load(r#"{"baggage_key": null}"#)
        .unwrap()
        .baggage_key
        .is_none());
}

#[test]
fn baggage_key_must_be_a_token() {
    for bad in ["", "a b", "a=b", "a,b", "é"] {
        rejected(
            &format!(r#"{{"baggage_key": {bad:?}}}"#),
            "baggage_key",
            "token",
        );
    }
}

#[test]
fn sandbox_names_and_clusters_are_checked() {
    rejected(
        r#"{"sandboxes": {"a.b": "c"}}"#,
        "sandboxes.a.b",
        "sandbox name",
    );
    rejected(r#"{"sandboxes": {"": "c"}}"#, "sandboxes.", "sandbox name");
    rejected(r#"{"sandboxes": {"a": ""}}"#, "sandboxes.a", "cluster name");
    rejected(
        r#"{"sandboxes": {"a": "c d"}}"#,
        "sandboxes.a",
        "cluster name",
    );
    rejected(
        r#"{"max_key_length": 3, "sandboxes": {"abcd": "c"}}"#,
        "sandboxes.abcd",
        "max_key_length (3)",
    );
    rejected(r#"{"self": "a/b"}"#, "self", "sandbox name");
}

#[test]
fn max_key_length_is_bounded() {
    rejected(
        r#"{"max_key_length": 0}"#,
        "max_key_length",
        "between 1 and 128",
    );
    rejected(
        r#"{"max_key_length": 129}"#,
        "max_key_length",
        "between 1 and 128",
    );
    assert_eq!(
        load(r#"{"max_key_length": 128}"#).unwrap().max_key_length,
        128
    );
}

#[test]
fn registry_rules() {
    let registry =
        |fields: &str| format!(r#"{{"registry": {{"cluster": "r", "path": "/s"{fields}}}}}"#);
    rejected(
        r#"{"registry": {"cluster": "a b", "path": "/s"}}"#,
        "registry.cluster",
        "cluster name",
    );
    rejected(
        r#"{"registry": {"cluster": "r", "path": "s"}}"#,
        "registry.path",
        "must start with '/'",
    );
    rejected(
        r#"{"registry": {"cluster": "r", "path": "/a b"}}"#,
        "registry.path",
        "visible ASCII",
    );
    rejected(
        &registry(r#", "authority": """#),
        "registry.authority",
        "non-empty",
    );
    rejected(
        &registry(r#", "refresh_interval_ms": 99, "timeout_ms": 50"#),
        "registry.refresh_interval_ms",
        "at least 100",
    );
    rejected(
        &registry(r#", "timeout_ms": 0"#),
        "registry.timeout_ms",
        "> 0",
    );
    rejected(
        &registry(r#", "refresh_interval_ms": 1000, "timeout_ms": 1000"#),
        "registry.timeout_ms",
        "below registry.refresh_interval_ms",
    );
}

#[test]
fn trusted_sources_must_be_networks_or_addresses() {
    rejected(
        r#"{"trusted_sources": ["127.0.0.1/32", "localhost"]}"#,
        "trusted_sources[1]",
        "not a CIDR",
    );
    rejected(
        r#"{"trusted_sources": ["10.0.0.0/33"]}"#,
        "trusted_sources[0]",
        "not a CIDR",
    );
    let config = load(r#"{"trusted_sources": ["192.168.1.7"]}"#).unwrap();
    assert!(config.trusted_sources[0].contains(&"192.168.1.7".parse().unwrap()));
    assert!(!config.trusted_sources[0].contains(&"192.168.1.8".parse().unwrap()));
}

#[test]
fn signing_secret_needs_32_bytes_and_is_never_echoed() {
    let err = load(r#"{"signing_secret": "short-secret"}"#).unwrap_err();
    assert_eq!(err.path, "signing_secret");
    assert!(err.to_string().contains("at least 32 bytes"), "{err}");
    assert!(
        !err.to_string().contains("short-secret"),
        "leaks the secret: {err}"
    );
}

#[test]
fn unknown_key_accepts_its_two_modes_only() {
    assert_eq!(
        load(r#"{"unknown_key": "baseline"}"#).unwrap().unknown_key,
        UnknownKey::Baseline
    );
    rejected(
        r#"{"unknown_key": "drop"}"#,
        "unknown_key",
        "unknown variant",
    );
}
