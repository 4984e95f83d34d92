//! The entity cache's plugin configuration ([`EntityCacheConfig`]): JSON shape, defaults and
//! validation. `{}` is a valid configuration: no rules, so every request passes untouched (a
//! client-sent routing header is still removed).
//!
//! ```json
//! { "rules": [
//!     {"grpc_method": "catalog.Catalog/*", "cache_cluster": "entity-cache", "origin_cluster": "catalog"},
//!     {"grpc_method": "users.Users/GetUser", "cache_cluster": "entity-cache", "origin_cluster": "users"},
//!     {"http_method": "GET", "path_prefix": "/v1/items/", "cache_cluster": "entity-cache", "origin_cluster": "items"}
//!   ],
//!   "breaker": {"consecutive_failures": 5, "cool_down_ms": 5000} }
//! ```

use meshkit::config::{require_positive, ConfigError, DurationMs, Fraction, HeaderName, Validate};
use serde::{Deserialize, Serialize};

/// Longest cluster name, in bytes.
pub const MAX_CLUSTER_NAME_LEN: usize = 100;
/// Most rules.
pub const MAX_RULES: usize = 256;
/// Most distinct cache clusters (each has its own breaker in shared data).
pub const MAX_CACHE_CLUSTERS: usize = 32;

/// One matching rule: which requests are cacheable, and where they go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A gRPC method, `package.Service/Method`, or every method of a service,
    /// `package.Service/*`; matches gRPC requests only.
    #[serde(default)]
    pub grpc_method: Option<String>,
    /// An HTTP method the rule matches (e.g. `GET`); absent: `GET` and `HEAD`. Only with
    /// `path_prefix`. A cache attempt that fails is retried on the origin, so name idempotent
    /// methods only.
    #[serde(default)]
    pub http_method: Option<String>,
    /// A path prefix (starting with '/') the rule matches.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The cluster (the routing header's value) of the cache: the cache itself, or an aggregate
    /// cluster `[cache, origin]` whose retry policy falls back to the origin in the same call.
    /// The breaker is kept per cache cluster.
    pub cache_cluster: String,
    /// The origin's cluster: where the request goes while the cache's breaker is open, or when
    /// the client asks to bypass the cache.
    pub origin_cluster: String,
}

/// The breaker of each cache cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// The window over which the error rate is measured (default 10 s; 100 ms to 10 min).
    pub window_ms: DurationMs,
    /// Fewest cache outcomes in the window before the error rate can open the breaker
    /// (default 20; at least 1).
    pub min_requests: u32,
    /// Error rate in the window above which the breaker opens (default 0.5; above 0).
    pub error_rate: Fraction,
    /// Consecutive cache failures that open the breaker whatever the volume (default 5; 1 to
    /// 1000).
    pub consecutive_failures: u32,
    /// A cache response slower than this counts as a failure (default 1000 ms; `null`: never).
    pub latency_threshold_ms: Option<DurationMs>,
    /// How long an open breaker sends everything to the origin before it half-opens (default
    /// 5 s; 100 ms to 10 min).
    pub cool_down_ms: DurationMs,
    /// Share of cacheable calls a half-open breaker lets probe the cache (default 0.1; above 0).
    pub half_open_share: Fraction,
    /// Successful probes that close a half-open breaker (default 5; 1 to 1000).
    pub successes_to_close: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window_ms: DurationMs(10_000),
            min_requests: 20,
            error_rate: Fraction::new(0.5).unwrap_or_default(),
            consecutive_failures: 5,
            latency_threshold_ms: Some(DurationMs(1_000)),
            cool_down_ms: DurationMs(5_000),
            half_open_share: Fraction::new(0.1).unwrap_or_default(),
            successes_to_close: 5,
        }
    }
}

/// The whole plugin configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntityCacheConfig {
    /// The rules, first match wins (default none).
    pub rules: Vec<RuleConfig>,
    /// The request header naming the cluster, read by the route's `cluster_header`; a
    /// client-sent one is always removed (default `x-entity-cache-cluster`; required).
    pub routing_header: Option<HeaderName>,
    /// The request header that skips the cache (default `x-entity-cache`), with
    /// [`bypass_value`](Self::bypass_value); `null`: no bypass.
    pub bypass_header: Option<HeaderName>,
    /// The bypass header's value that skips the cache (default `bypass`).
    pub bypass_value: String,
    /// The breaker of each cache cluster.
    pub breaker: BreakerConfig,
}

impl Default for EntityCacheConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            routing_header: HeaderName::new("x-entity-cache-cluster").ok(),
            bypass_header: HeaderName::new("x-entity-cache").ok(),
            bypass_value: "bypass".to_owned(),
            breaker: BreakerConfig::default(),
        }
    }
}

/// Bounds checked by [`EntityCacheConfig::validate`].
pub mod limits {
    /// Shortest and longest `window_ms` and `cool_down_ms`.
    pub const DURATION_MS: (u64, u64) = (100, 600_000);
    /// Largest `consecutive_failures` and `successes_to_close`.
    pub const MAX_COUNT: u32 = 1_000;
}

fn out_of_range(path: &str, value: impl std::fmt::Display, low: u64, high: u64) -> ConfigError {
    ConfigError::invalid(path, value, format!("must be between {low} and {high}"))
}

/// Whether `part` of a gRPC method name is non-empty visible ASCII without '/', '?', '#' or
/// '*'.
fn is_method_part(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"/?#*".contains(&b))
}

/// Whether `name` is a cluster name we put in a header: ASCII letters, digits, '.', '_', '-'.
fn is_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CLUSTER_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl RuleConfig {
    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        match (&self.grpc_method, &self.path_prefix) {
            (Some(method), None) => {
                let valid = method.split_once('/').is_some_and(|(service, name)| {
                    is_method_part(service) && (name == "*" || is_method_part(name))
                });
                if !valid {
                    return Err(ConfigError::invalid(
                        format!("{path}.grpc_method"),
                        format!("{method:?}"),
                        "must be `package.Service/Method` or `package.Service/*`",
                    ));
                }
                if let Some(http_method) = &self.http_method {
                    return Err(ConfigError::invalid(
                        format!("{path}.http_method"),
                        format!("{http_method:?}"),
                        "is only used with `path_prefix`",
                    ));
                }
            }
            (None, Some(prefix)) => {
                if !prefix.starts_with('/') || prefix.bytes().any(|b| !b.is_ascii_graphic()) {
                    return Err(ConfigError::invalid(
                        format!("{path}.path_prefix"),
                        format!("{prefix:?}"),
                        "must start with '/' and be visible ASCII",
                    ));
                }
                if let Some(method) = &self.http_method {
                    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                        return Err(ConfigError::invalid(
                            format!("{path}.http_method"),
                            format!("{method:?}"),
                            "must be an uppercase HTTP method, e.g. \"GET\"",
                        ));
                    }
                }
            }
            _ => {
                return Err(ConfigError::invalid(
                    path,
                    "{..}",
                    "a rule needs exactly one of `grpc_method` and `path_prefix`",
                ))
            }
        }
        for (field, cluster) in [
            ("cache_cluster", &self.cache_cluster),
            ("origin_cluster", &self.origin_cluster),
        ] {
            if !is_cluster_name(cluster) {
                return Err(ConfigError::invalid(
                    format!("{path}.{field}"),
                    format!("{cluster:?}"),
                    format!(
                        "must be 1 to {MAX_CLUSTER_NAME_LEN} ASCII letters, digits, '.', '_' or '-'"
                    ),
                ));
            }
        }
        if self.cache_cluster == self.origin_cluster {
            return Err(ConfigError::invalid(
                format!("{path}.origin_cluster"),
                format!("{:?}", self.origin_cluster),
                "must differ from cache_cluster",
            ));
        }
        Ok(())
    }
}

impl Validate for BreakerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        use limits::*;
        for (field, value) in [
            ("window_ms", self.window_ms),
            ("cool_down_ms", self.cool_down_ms),
        ] {
            let ms = value.as_millis();
            if !(DURATION_MS.0..=DURATION_MS.1).contains(&ms) {
                return Err(out_of_range(
                    &format!("breaker.{field}"),
                    ms,
                    DURATION_MS.0,
                    DURATION_MS.1,
                ));
            }
        }
        if self.min_requests == 0 {
            return Err(ConfigError::invalid(
                "breaker.min_requests",
                0,
                "must be at least 1",
            ));
        }
        if self.error_rate.get() == 0.0 {
            return Err(ConfigError::invalid(
                "breaker.error_rate",
                0,
                "must be above 0 (0 would open on the first error)",
            ));
        }
        for (field, value) in [
            ("consecutive_failures", self.consecutive_failures),
            ("successes_to_close", self.successes_to_close),
        ] {
            if !(1..=MAX_COUNT).contains(&value) {
                return Err(out_of_range(
                    &format!("breaker.{field}"),
                    value,
                    1,
                    MAX_COUNT.into(),
                ));
            }
        }
        if let Some(threshold) = self.latency_threshold_ms {
            require_positive("breaker.latency_threshold_ms", threshold)?;
        }
        if self.half_open_share.get() == 0.0 {
            return Err(ConfigError::invalid(
                "breaker.half_open_share",
                0,
                "must be above 0 (a half-open breaker must let some calls probe the cache)",
            ));
        }
        Ok(())
    }
}

impl Validate for EntityCacheConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.rules.len() > MAX_RULES {
            return Err(ConfigError::invalid(
                "rules",
                self.rules.len(),
                format!("at most {MAX_RULES} rules"),
            ));
        }
        for (index, rule) in self.rules.iter().enumerate() {
            rule.validate(&format!("rules[{index}]"))?;
        }
        let clusters = self.cache_clusters();
        if clusters.len() > MAX_CACHE_CLUSTERS {
            return Err(ConfigError::invalid(
                "rules",
                format!("{} cache clusters", clusters.len()),
                format!("at most {MAX_CACHE_CLUSTERS} distinct cache clusters"),
            ));
        }
        if let Some(rule) = self
            .rules
            .iter()
            .position(|rule| clusters.contains(&rule.origin_cluster.as_str()))
        {
            return Err(ConfigError::invalid(
                format!("rules[{rule}].origin_cluster"),
                format!("{:?}", self.rules[rule].origin_cluster),
                "is a cache_cluster of another rule",
            ));
        }
        let Some(routing_header) = &self.routing_header else {
            return Err(ConfigError::invalid(
                "routing_header",
                "null",
                "must be a header name (the route's cluster_header)",
            ));
        };
        if self.bypass_header.as_ref() == Some(routing_header) {
            return Err(ConfigError::invalid(
                "bypass_header",
                routing_header,
                "must differ from routing_header",
            ));
        }
        if self.bypass_header.is_some()
            && (self.bypass_value.is_empty()
                || !self.bypass_value.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError::invalid(
                "bypass_value",
                format!("{:?}", self.bypass_value),
                "must be non-empty visible ASCII",
            ));
        }
        self.breaker.validate()
    }
}

impl EntityCacheConfig {
    /// The distinct cache clusters, in order of first appearance.
    pub fn cache_clusters(&self) -> Vec<&str> {
        let mut clusters: Vec<&str> = Vec::new();
        for rule in &self.rules {
            if !clusters.contains(&rule.cache_cluster.as_str()) {
                clusters.push(&rule.cache_cluster);
            }
        }
        clusters
    }
}
