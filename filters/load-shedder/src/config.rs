//! The load shedder's plugin configuration ([`ShedderConfig`]): JSON shape, defaults and
//! semantic validation. Every field has a default that is safe for any service; `{}` is a valid
//! configuration.
//!
//! ```json
//! {
//!   "dry_run": false,
//!   "bypass_paths": ["/healthz"],
//!   "limit": { "min_limit": 4, "initial_limit": 20, "max_limit": 1000, "window_ms": 100,
//!              "latency_target_ms": 250 },
//!   "criticality": { "routes": [ { "path_prefix": "/batch/", "criticality": "sheddable" },
//!                                { "grpc_method": "pkg.Search/Query", "criticality": "critical-plus" } ] },
//!   "rejection": { "grpc_status": "RESOURCE_EXHAUSTED", "retry_after_seconds": 2 }
//! }
//! ```

use crate::classify::Criticality;
use meshkit::config::{require_positive, ConfigError, DurationMs, Fraction, HeaderName, Validate};
use meshkit::grpc::{GrpcMethod, GrpcStatus};
use serde::{Deserialize, Serialize};

/// The whole plugin configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShedderConfig {
    /// Decide and count as usual but admit every request (default `false`).
    pub dry_run: bool,
    /// Request paths (compared without the query string, exactly) that are neither counted nor
    /// shed, e.g. health checks (default none).
    pub bypass_paths: Vec<String>,
    /// The adaptive concurrency limit.
    pub limit: LimitConfig,
    /// How requests are ranked.
    pub criticality: CriticalityConfig,
    /// What a shed request receives.
    pub rejection: RejectionConfig,
}

/// Parameters of the adaptive concurrency limit (see [`crate::policy`] for the algorithm).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitConfig {
    /// The limit never goes below this (default 4).
    pub min_limit: u32,
    /// The limit a fresh sidecar starts from, and the number of samples that close its first
    /// window (its no-load latency); the limit then doubles per window until the first cut
    /// (default 20).
    pub initial_limit: u32,
    /// The limit never goes above this (default 1000).
    pub max_limit: u32,
    /// A measurement window closes after this long, once it holds `window_min_samples`
    /// samples (default 100 ms).
    pub window_ms: DurationMs,
    /// Samples a window needs before it may close on time (default 1, so even one request per
    /// second adapts the limit).
    pub window_min_samples: u32,
    /// A window closes as soon as it holds this many samples, whatever its age (default 500;
    /// at most 65535).
    pub window_max_samples: u32,
    /// Which latency quantile of a window is compared with the no-load latency (default 0.5).
    pub latency_quantile: Fraction,
    /// Queueing tolerated before the limit shrinks: the limit shrinks once a window's latency
    /// exceeds the no-load latency by more than this fraction (default 0.5, as Netflix's
    /// Gradient2 `rttTolerance` of 1.5: a tighter tolerance mistakes CPU jitter for queueing).
    pub tolerance: Fraction,
    /// A window counts as using the limit (so the limit may grow) when a request was refused
    /// or the peak in-flight count reached this fraction of the limit (default 0.8).
    pub utilization: Fraction,
    /// The no-load latency is the smallest window latency seen in this much recent time (up to a
    /// third more, as it is kept in slots of a third); a latency that a cut failed to lower is
    /// taken as no-load for this long too (default 10 s).
    pub baseline_window_ms: DurationMs,
    /// Optional absolute target: while a window's latency exceeds it, the limit shrinks
    /// whatever the no-load latency (default none).
    pub latency_target_ms: Option<DurationMs>,
    /// Largest single-window decrease, as the fraction of the limit kept (default 0.8: several
    /// gentle cuts converge without the limit swinging between its bounds).
    pub max_decrease: Fraction,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            min_limit: 4,
            initial_limit: 20,
            max_limit: 1000,
            window_ms: DurationMs(100),
            window_min_samples: 1,
            window_max_samples: 500,
            latency_quantile: fraction(0.5),
            tolerance: fraction(0.5),
            utilization: fraction(0.8),
            baseline_window_ms: DurationMs(10_000),
            latency_target_ms: None,
            max_decrease: fraction(0.8),
        }
    }
}

/// How a request's [`Criticality`] and attempt number are found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriticalityConfig {
    /// Header carrying the caller's criticality (default `x-request-criticality`); `null`
    /// ignores callers' claims. A known header value wins over `routes`, because criticality is
    /// propagated along the call chain from the request that started it.
    pub header: Option<HeaderName>,
    /// Header carrying the attempt number; attempts above 1 are retries, which rank below first
    /// attempts of the same criticality (default `x-envoy-attempt-count`; `null` disables).
    pub attempt_header: Option<HeaderName>,
    /// Criticality by path prefix or gRPC method when the header is absent or unknown; the
    /// longest matching rule wins. Requests matching nothing are `critical`.
    pub routes: Vec<CriticalityRoute>,
    /// Fraction of the limit each criticality may fill.
    pub shares: CriticalityShares,
}

impl Default for CriticalityConfig {
    fn default() -> Self {
        Self {
            // Both names are valid constants, so `ok()` never drops them.
            header: HeaderName::new("x-request-criticality").ok(),
            attempt_header: HeaderName::new("x-envoy-attempt-count").ok(),
            routes: Vec::new(),
            shares: CriticalityShares::default(),
        }
    }
}

/// One criticality mapping rule: exactly one of `path_prefix` and `grpc_method`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriticalityRoute {
    /// Matches paths starting with this (raw bytes, query string included).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Matches exactly the gRPC method `package.Service/Method` (path `/package.Service/Method`).
    #[serde(default)]
    pub grpc_method: Option<String>,
    /// The criticality of matching requests.
    pub criticality: Criticality,
}

/// Fraction of the adaptive limit that requests of each criticality may fill: a request is
/// admitted only while the in-flight count is below its share of the limit. Retries get the
/// midpoint between their criticality's share and the next lower one's (half the share for
/// `sheddable`). Shares must not increase as criticality falls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriticalityShares {
    /// Default 1.0.
    pub critical_plus: Fraction,
    /// Default 0.9.
    pub critical: Fraction,
    /// Default 0.75.
    pub sheddable_plus: Fraction,
    /// Default 0.5.
    pub sheddable: Fraction,
}

impl Default for CriticalityShares {
    fn default() -> Self {
        Self {
            critical_plus: fraction(1.0),
            critical: fraction(0.9),
            sheddable_plus: fraction(0.75),
            sheddable: fraction(0.5),
        }
    }
}

/// The reply to a shed request. Both forms carry `x-mesh-shed: 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RejectionConfig {
    /// Status of the trailers-only reply to gRPC requests: `UNAVAILABLE` (default, retried by
    /// gRPC clients) or `RESOURCE_EXHAUSTED`.
    pub grpc_status: GrpcStatus,
    /// `retry-after` seconds on HTTP 503 replies, and `grpc-retry-pushback-ms` on gRPC replies
    /// (default 1; 1 to 3600).
    pub retry_after_seconds: u32,
}

impl Default for RejectionConfig {
    fn default() -> Self {
        Self {
            grpc_status: GrpcStatus::Unavailable,
            retry_after_seconds: 1,
        }
    }
}

impl Validate for ShedderConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (index, path) in self.bypass_paths.iter().enumerate() {
            if !path.starts_with('/') || path.contains('?') {
                return Err(ConfigError::invalid(
                    format!("bypass_paths[{index}]"),
                    format!("{path:?}"),
                    "must start with '/' and have no query string",
                ));
            }
        }
        self.limit.validate()?;
        self.criticality.validate()?;
        self.rejection.validate()
    }
}

impl Validate for LimitConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.min_limit == 0 {
            return Err(ConfigError::invalid("limit.min_limit", 0, "must be >= 1"));
        }
        if self.initial_limit < self.min_limit {
            return Err(ConfigError::invalid(
                "limit.initial_limit",
                self.initial_limit,
                "must be >= limit.min_limit",
            ));
        }
        if self.max_limit < self.initial_limit {
            return Err(ConfigError::invalid(
                "limit.max_limit",
                self.max_limit,
                "must be >= limit.initial_limit",
            ));
        }
        require_positive("limit.window_ms", self.window_ms)?;
        require_positive("limit.baseline_window_ms", self.baseline_window_ms)?;
        if let Some(target) = self.latency_target_ms {
            require_positive("limit.latency_target_ms", target)?;
        }
        if self.window_min_samples == 0 {
            return Err(ConfigError::invalid(
                "limit.window_min_samples",
                0,
                "must be >= 1",
            ));
        }
        if self.window_max_samples < self.window_min_samples
            || self.window_max_samples > u32::from(u16::MAX)
        {
            return Err(ConfigError::invalid(
                "limit.window_max_samples",
                self.window_max_samples,
                "must be between limit.window_min_samples and 65535",
            ));
        }
        for (path, value) in [
            ("limit.latency_quantile", self.latency_quantile),
            ("limit.utilization", self.utilization),
            ("limit.max_decrease", self.max_decrease),
        ] {
            if value.get() == 0.0 {
                return Err(ConfigError::invalid(path, value.get(), "must be > 0"));
            }
        }
        if self.max_decrease.get() > MAX_DECREASE_CEILING {
            return Err(ConfigError::invalid(
                "limit.max_decrease",
                self.max_decrease.get(),
                "must be <= 0.9 (every decrease removes at least 10%)",
            ));
        }
        Ok(())
    }
}

/// The largest `max_decrease`: a decrease always keeps at most this fraction of the limit.
pub const MAX_DECREASE_CEILING: f64 = 0.9;

impl Validate for CriticalityConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (index, route) in self.routes.iter().enumerate() {
            let path = format!("criticality.routes[{index}]");
            match (&route.path_prefix, &route.grpc_method) {
                (Some(prefix), None) => {
                    if !prefix.starts_with('/') {
                        return Err(ConfigError::invalid(
                            format!("{path}.path_prefix"),
                            format!("{prefix:?}"),
                            "must start with '/'",
                        ));
                    }
                }
                (None, Some(method)) => {
                    if GrpcMethod::parse(format!("/{method}").as_bytes()).is_none() {
                        return Err(ConfigError::invalid(
                            format!("{path}.grpc_method"),
                            format!("{method:?}"),
                            "must be `package.Service/Method`",
                        ));
                    }
                }
                _ => {
                    return Err(ConfigError::invalid(
                        path,
                        "",
                        "needs exactly one of `path_prefix` and `grpc_method`",
                    ))
                }
            }
        }
        let shares = &self.shares;
        let ordered = [
            ("criticality.shares.critical_plus", shares.critical_plus),
            ("criticality.shares.critical", shares.critical),
            ("criticality.shares.sheddable_plus", shares.sheddable_plus),
            ("criticality.shares.sheddable", shares.sheddable),
        ];
        for (path, share) in ordered {
            if share.get() == 0.0 {
                return Err(ConfigError::invalid(path, share.get(), "must be > 0"));
            }
        }
        for pair in ordered.windows(2) {
            let (higher_path, higher) = pair[0];
            let (lower_path, lower) = pair[1];
            if lower.get() > higher.get() {
                return Err(ConfigError::invalid(
                    lower_path,
                    lower.get(),
                    format!("must be <= {higher_path}"),
                ));
            }
        }
        Ok(())
    }
}

/// The largest `rejection.retry_after_seconds`: an hour.
pub const MAX_RETRY_AFTER_SECONDS: u32 = 3_600;

impl Validate for RejectionConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(
            self.grpc_status,
            GrpcStatus::Unavailable | GrpcStatus::ResourceExhausted
        ) {
            return Err(ConfigError::invalid(
                "rejection.grpc_status",
                self.grpc_status.name(),
                "must be UNAVAILABLE or RESOURCE_EXHAUSTED",
            ));
        }
        if !(1..=MAX_RETRY_AFTER_SECONDS).contains(&self.retry_after_seconds) {
            // 0 tells clients to retry at once, the retry storm shedding exists to stop.
            return Err(ConfigError::invalid(
                "rejection.retry_after_seconds",
                self.retry_after_seconds,
                format!("must be between 1 and {MAX_RETRY_AFTER_SECONDS}"),
            ));
        }
        Ok(())
    }
}

/// A default fraction; only called with constants in `[0, 1]`.
fn fraction(value: f64) -> Fraction {
    Fraction::new(value).unwrap_or_default()
}
