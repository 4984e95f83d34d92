//! The retry budget's plugin configuration ([`RetryBudgetConfig`]): JSON shape, defaults and
//! validation. `{}` is a valid configuration: the client role with Finagle's defaults (20 % of
//! requests, at least 10 retries per second, over 10 s).
//!
//! ```json
//! { "role": "server", "ratio": 0.1, "min_retries_per_second": 5, "ttl_ms": 10000,
//!   "retry_header": "x-client-attempt", "retry_after_seconds": 2 }
//! ```

use meshkit::config::{require_positive, ConfigError, DurationMs, Fraction, HeaderName, Validate};
use serde::{Deserialize, Serialize};

/// Which sidecar the filter runs in, and so what it does with the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Egress: caps the retries Envoy's router makes (`x-envoy-max-retries`) to what the
    /// budget affords, and honours pushback from the upstream.
    #[default]
    Client,
    /// Ingress: rejects retried requests past the budget with an immediate local reply.
    Server,
}

/// What a budget belongs to: requests with the same key share one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    /// The upstream cluster the route picked (`xds.cluster_name`), else `:authority`.
    #[default]
    Cluster,
    /// The request's `:authority`.
    Authority,
}

/// The whole plugin configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudgetConfig {
    /// `client` (default) or `server`.
    pub role: Role,
    /// Retries allowed per (first-attempt) request (default 0.2).
    pub ratio: Fraction,
    /// Retries allowed per second whatever the traffic, so a quiet service can still retry: a
    /// floor under `ratio`'s share, not an addition to it. One second of it (at least
    /// `max_retries`) is also the most a key can bank (default 10; at most 10000).
    pub min_retries_per_second: u32,
    /// How long unspent credit counts (default 10 s; 100 ms to 10 min).
    pub ttl_ms: DurationMs,
    /// Time buckets of the window; credit expires one bucket at a time, and the floor is
    /// credited per bucket (default 10; 1 to 60).
    pub buckets: u32,
    /// Client role: the most retries one request may get, i.e. the route's own `num_retries`
    /// (default 3; 1 to 100).
    pub max_retries: u32,
    /// What a budget belongs to (default `cluster`).
    pub key: KeySource,
    /// How many keys get their own budget; later keys share one overflow budget until a key
    /// expires (idle for `ttl_ms`) (default 32; 1 to 512).
    pub max_keys: u32,
    /// Server role: a header carrying the attempt number (1 for a first attempt), as clients
    /// outside the mesh may send it; a value above 1 marks a retry, besides
    /// `x-envoy-attempt-count` > 1 and `grpc-previous-rpc-attempts` > 0 (default none).
    pub retry_header: Option<HeaderName>,
    /// Server role: `retry-after` seconds of the reply to a rejected retry (default 1; 1 to
    /// 3600).
    pub retry_after_seconds: u32,
    /// Client role: how long retries stop after a pushback that names no delay
    /// (`x-mesh-shed: 1` without `retry-after`, a negative or unparseable
    /// `grpc-retry-pushback-ms`) (default 1 s).
    pub default_pushback_ms: DurationMs,
    /// Client role: the longest pushback honoured (default 30 s; at most 1 h).
    pub max_pushback_ms: DurationMs,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            role: Role::Client,
            ratio: Fraction::new(0.2).unwrap_or_default(),
            min_retries_per_second: 10,
            ttl_ms: DurationMs(10_000),
            buckets: 10,
            max_retries: 3,
            key: KeySource::Cluster,
            max_keys: 32,
            retry_header: None,
            retry_after_seconds: 1,
            default_pushback_ms: DurationMs(1_000),
            max_pushback_ms: DurationMs(30_000),
        }
    }
}

/// Bounds checked by [`RetryBudgetConfig::validate`].
pub mod limits {
    /// Largest `min_retries_per_second`.
    pub const MAX_MIN_RETRIES_PER_SECOND: u32 = 10_000;
    /// Shortest and longest `ttl_ms`.
    pub const TTL_MS: (u64, u64) = (100, 600_000);
    /// Most `buckets`.
    pub const MAX_BUCKETS: u32 = 60;
    /// Largest `max_retries`.
    pub const MAX_RETRIES: u32 = 100;
    /// Largest `max_keys`.
    pub const MAX_KEYS: u32 = 512;
    /// Largest `retry_after_seconds`.
    pub const MAX_RETRY_AFTER_SECONDS: u32 = 3_600;
    /// Largest `max_pushback_ms`.
    pub const MAX_PUSHBACK_MS: u64 = 3_600_000;
}

fn out_of_range(path: &str, value: impl std::fmt::Display, low: u64, high: u64) -> ConfigError {
    ConfigError::invalid(path, value, format!("must be between {low} and {high}"))
}

impl Validate for RetryBudgetConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        use limits::*;
        if self.ratio.get() == 0.0 && self.min_retries_per_second == 0 {
            return Err(ConfigError::invalid(
                "ratio",
                0,
                "must be > 0 when min_retries_per_second is 0 (the budget would allow no retry)",
            ));
        }
        if self.min_retries_per_second > MAX_MIN_RETRIES_PER_SECOND {
            return Err(out_of_range(
                "min_retries_per_second",
                self.min_retries_per_second,
                0,
                MAX_MIN_RETRIES_PER_SECOND.into(),
            ));
        }
        let ttl = self.ttl_ms.as_millis();
        if !(TTL_MS.0..=TTL_MS.1).contains(&ttl) {
            return Err(out_of_range("ttl_ms", ttl, TTL_MS.0, TTL_MS.1));
        }
        if !(1..=MAX_BUCKETS).contains(&self.buckets) {
            return Err(out_of_range("buckets", self.buckets, 1, MAX_BUCKETS.into()));
        }
        if !(1..=MAX_RETRIES).contains(&self.max_retries) {
            return Err(out_of_range(
                "max_retries",
                self.max_retries,
                1,
                MAX_RETRIES.into(),
            ));
        }
        if !(1..=MAX_KEYS).contains(&self.max_keys) {
            return Err(out_of_range("max_keys", self.max_keys, 1, MAX_KEYS.into()));
        }
        if let (Role::Client, Some(header)) = (self.role, &self.retry_header) {
            return Err(ConfigError::invalid(
                "retry_header",
                header,
                "is only used by role \"server\"",
            ));
        }
        if !(1..=MAX_RETRY_AFTER_SECONDS).contains(&self.retry_after_seconds) {
            // 0 tells clients to retry at once: the storm the budget exists to stop.
            return Err(out_of_range(
                "retry_after_seconds",
                self.retry_after_seconds,
                1,
                MAX_RETRY_AFTER_SECONDS.into(),
            ));
        }
        require_positive("default_pushback_ms", self.default_pushback_ms)?;
        let max_pushback = self.max_pushback_ms.as_millis();
        if max_pushback < self.default_pushback_ms.as_millis() || max_pushback > MAX_PUSHBACK_MS {
            return Err(ConfigError::invalid(
                "max_pushback_ms",
                max_pushback,
                format!("must be between default_pushback_ms and {MAX_PUSHBACK_MS}"),
            ));
        }
        Ok(())
    }
}
