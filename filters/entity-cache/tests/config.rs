//! Parsing and validation of the plugin configuration through meshkit's loader: the documented
//! defaults, and every rule with the field it names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use entity_cache::config::{EntityCacheConfig, MAX_CACHE_CLUSTERS, MAX_RULES};
use meshkit::config::{load_config, DurationMs};

fn load(json: &str) -> Result<EntityCacheConfig, String> {
    load_config::<EntityCacheConfig>(Some(json.as_bytes())).map_err(|err| err.to_string())
}

/// The field path of the error `json` fails with.
fn error_path(json: &str) -> String {
    load_config::<EntityCacheConfig>(Some(json.as_bytes()))
        .unwrap_err()
        .path
}

/// A configuration with the one rule `rule` (JSON object members, without braces).
fn one_rule(rule: &str) -> String {
    format!(r#"{{"rules": [{{{rule}}}]}}"#)
}

const CLUSTERS: &str = r#""cache_cluster": "cache", "origin_cluster": "origin""#;

#[test]
fn empty_configuration_is_the_documented_defaults() {
    let config = load("{}").unwrap();
    assert_eq!(config, EntityCacheConfig::default());
    assert_eq!(config, load("").unwrap());
    assert!(config.rules.is_empty());
    assert_eq!(
        config.routing_header.as_ref().map(|h| h.as_str()),
        Some("x-entity-cache-cluster")
    );
    assert_eq!(
        config.bypass_header.as_ref().map(|h| h.as_str()),
        Some("x-entity-cache")
    );
    assert_eq!(config.bypass_value, "bypass");
    let breaker = &config.breaker;
    assert_eq!(breaker.window_ms, DurationMs(10_000));
    assert_eq!(breaker.min_requests, 20);
    assert_eq!(breaker.error_rate.get(), 0.5);
    assert_eq!(breaker.consecutive_failures, 5);
    assert_eq!(breaker.latency_threshold_ms, Some(DurationMs(1_000)));
    assert_eq!(breaker.cool_down_ms, DurationMs(5_000));
    assert_eq!(breaker.half_open_share.get(), 0.1);
    assert_eq!(breaker.successes_to_close, 5);
}

#[test]
fn a_full_configuration_parses() {
    let config = load(
        r#"{"rules": [
              {"grpc_method": "catalog.Catalog/*", "cache_cluster": "cache", "origin_cluster": "catalog"},
              {"grpc_method": "users.Users/GetUser", "cache_cluster": "cache-2", "origin_cluster": "users"},
              {"http_method": "GET", "path_prefix": "/v1/items/", "cache_cluster": "cache", "origin_cluster": "items"}
            ],
            "routing_header": "x-route-to", "bypass_header": "x-no-cache", "bypass_value": "1",
            "breaker": {"window_ms": 2000, "min_requests": 10, "error_rate": 0.2,
                        "consecutive_failures": 3, "latency_threshold_ms": null,
                        "cool_down_ms": 1000, "half_open_share": 0.5, "successes_to_close": 2}}"#,
    )
    .unwrap();
    assert_eq!(config.rules.len(), 3);
    assert_eq!(config.cache_clusters(), vec!["cache", "cache-2"]);
    assert_eq!(config.breaker.latency_threshold_ms, None);
    assert_eq!(config.bypass_value, "1");
    assert!(load(r#"{"bypass_header": null}"#)
        .unwrap()
        .bypass_header
        .is_none());
}

#[test]
fn unknown_fields_and_bad_types_name_the_field() {
    assert_eq!(error_path(r#"{"rule": []}"#), "rule");
    assert_eq!(
        error_path(r#"{"breaker": {"cooldown_ms": 1}}"#),
        "breaker.cooldown_ms"
    );
    assert_eq!(
        error_path(&one_rule(&format!(
            r#""grpc_method": "a.B/C", "cache": "x", {CLUSTERS}"#
        ))),
        "rules[0].cache"
    );
    assert_eq!(
        error_path(r#"{"routing_header": "X-Upper"}"#),
        "routing_header"
    );
    assert_eq!(
        error_path(r#"{"breaker": {"error_rate": 1.5}}"#),
        "breaker.error_rate"
    );
    assert_eq!(
        error_path(&one_rule(r#""grpc_method": "a.B/C""#)),
        "rules[0]"
    );
}

#[test]
fn a_rule_needs_exactly_one_pattern() {
    assert_eq!(error_path(&one_rule(CLUSTERS)), "rules[0]");
    let both = format!(r#""grpc_method": "a.B/C", "path_prefix": "/", {CLUSTERS}"#);
    assert_eq!(error_path(&one_rule(&both)), "rules[0]");
}

#[test]
fn grpc_methods_must_be_service_slash_method_or_star() {
    for good in ["a.B/C", "pkg.sub.Service/*", "S/M"] {
        load(&one_rule(&format!(
            r#""grpc_method": "{good}", {CLUSTERS}"#
        )))
        .unwrap();
    }
    for bad in [
        "a.B", "/a.B/C", "a.B/", "a.B/C/D", "a.B/C*", "*/C", "a B/C", "a.B/?",
    ] {
        let json = one_rule(&format!(r#""grpc_method": "{bad}", {CLUSTERS}"#));
        assert_eq!(error_path(&json), "rules[0].grpc_method", "{bad}");
        assert!(load(&json).unwrap_err().contains(bad), "the value is named");
    }
    let with_method = format!(r#""grpc_method": "a.B/C", "http_method": "GET", {CLUSTERS}"#);
    assert_eq!(error_path(&one_rule(&with_method)), "rules[0].http_method");
}

#[test]
fn http_rules_need_a_slash_prefix_and_an_uppercase_method() {
    load(&one_rule(&format!(r#""path_prefix": "/", {CLUSTERS}"#))).unwrap();
    for bad in ["v1/", "", "/a b"] {
        let json = one_rule(&format!(r#""path_prefix": "{bad}", {CLUSTERS}"#));
        assert_eq!(error_path(&json), "rules[0].path_prefix", "{bad:?}");
    }
    for bad in ["get", "", "G ET"] {
        let json = one_rule(&format!(
            r#""http_method": "{bad}", "path_prefix": "/", {CLUSTERS}"#
        ));
        assert_eq!(error_path(&json), "rules[0].http_method", "{bad:?}");
    }
}

#[test]
fn cluster_names_are_checked_and_distinct() {
    let rule = |cache: &str, origin: &str| {
        one_rule(&format!(
            r#""path_prefix": "/", "cache_cluster": "{cache}", "origin_cluster": "{origin}""#
        ))
    };
    assert_eq!(error_path(&rule("", "o")), "rules[0].cache_cluster");
    assert_eq!(error_path(&rule("c c", "o")), "rules[0].cache_cluster");
    assert_eq!(
        error_path(&rule(&"c".repeat(101), "o")),
        "rules[0].cache_cluster"
    );
    assert_eq!(error_path(&rule("c", "o\\r\\n")), "rules[0].origin_cluster");
    assert_eq!(error_path(&rule("same", "same")), "rules[0].origin_cluster");
    // A cluster cannot be one rule's cache and another's origin.
    let crossed = r#"{"rules": [
        {"path_prefix": "/a", "cache_cluster": "c", "origin_cluster": "o"},
        {"path_prefix": "/b", "cache_cluster": "x", "origin_cluster": "c"}]}"#;
    assert_eq!(error_path(crossed), "rules[1].origin_cluster");
}

#[test]
fn rules_and_cache_clusters_are_bounded() {
    let rule = format!(r#"{{"path_prefix": "/", {CLUSTERS}}}"#);
    let rules = vec![rule.as_str(); MAX_RULES + 1].join(",");
    assert_eq!(error_path(&format!(r#"{{"rules": [{rules}]}}"#)), "rules");
    let clusters: Vec<String> = (0..=MAX_CACHE_CLUSTERS)
        .map(|i| {
            format!(r#"{{"path_prefix": "/", "cache_cluster": "c{i}", "origin_cluster": "o"}}"#)
        })
        .collect();
    let json = format!(r#"{{"rules": [{}]}}"#, clusters.join(","));
    assert_eq!(error_path(&json), "rules");
}

#[test]
fn the_headers_must_be_usable() {
    assert_eq!(error_path(r#"{"routing_header": null}"#), "routing_header");
    assert_eq!(
        error_path(r#"{"routing_header": "x-a", "bypass_header": "x-a"}"#),
        "bypass_header"
    );
    assert_eq!(error_path(r#"{"bypass_value": ""}"#), "bypass_value");
    assert_eq!(error_path(r#"{"bypass_value": "a b"}"#), "bypass_value");
    // Without a bypass header the value is unused.
    load(r#"{"bypass_header": null, "bypass_value": ""}"#).unwrap();
}

#[test]
fn breaker_parameters_are_bounded() {
    let path = |breaker: &str| error_path(&format!(r#"{{"breaker": {{{breaker}}}}}"#));
    assert_eq!(path(r#""window_ms": 99"#), "breaker.window_ms");
    assert_eq!(path(r#""window_ms": 600001"#), "breaker.window_ms");
    assert_eq!(path(r#""cool_down_ms": 0"#), "breaker.cool_down_ms");
    assert_eq!(path(r#""min_requests": 0"#), "breaker.min_requests");
    assert_eq!(path(r#""error_rate": 0"#), "breaker.error_rate");
    assert_eq!(
        path(r#""consecutive_failures": 0"#),
        "breaker.consecutive_failures"
    );
    assert_eq!(
        path(r#""consecutive_failures": 1001"#),
        "breaker.consecutive_failures"
    );
    assert_eq!(
        path(r#""successes_to_close": 0"#),
        "breaker.successes_to_close"
    );
    assert_eq!(
        path(r#""latency_threshold_ms": 0"#),
        "breaker.latency_threshold_ms"
    );
    assert_eq!(path(r#""half_open_share": 0"#), "breaker.half_open_share");
    assert_eq!(
        path(r#""half_open_share": -0.1"#),
        "breaker.half_open_share"
    );
    let message = load(r#"{"breaker": {"window_ms": 99}}"#).unwrap_err();
    assert!(message.contains("99"), "the value is named: {message}");
}
