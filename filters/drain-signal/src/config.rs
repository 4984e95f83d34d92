//! The drain signal's plugin configuration ([`DrainConfig`]): JSON shape, defaults and validation.
//! `{}` is valid: trigger on `POST /.mesh/drain` from loopback, fail `/healthz` and `/readyz`,
//! drain through cluster `envoy_admin` 30 s later.
//!
//! ```json
//! {
//!   "path": "/.mesh/drain",
//!   "allowed_sources": ["127.0.0.0/8", "::1/128"],
//!   "token": "s3cret",
//!   "health_paths": ["/healthz", "/readyz"],
//!   "delay_ms": 30000,
//!   "admin_cluster": "envoy_admin",
//!   "gradual_window_ms": 10000
//! }
//! ```

use crate::access::{parse_cidr, valid_token, Access};
use crate::policy::Policy;
use meshkit::config::{ConfigError, DurationMs, Validate};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The longest `delay_ms` and `gradual_window_ms`: an hour (Kubernetes' grace periods are far
/// shorter).
pub const MAX_PHASE_MS: u64 = 3_600_000;
/// The admin call's timeout.
pub const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The whole plugin configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// The trigger and state path, matched exactly without the query string (default
    /// `/.mesh/drain`). `POST` triggers, `GET` reads the state; the filter answers both itself.
    pub path: String,
    /// CIDRs (or single IPs) of connections allowed to use `path`, checked against the
    /// connection's source address (default loopback: `127.0.0.0/8`, `::1/128`).
    pub allowed_sources: Vec<String>,
    /// When set, a trigger must also carry `authorization: Bearer <token>` (default none).
    pub token: Option<String>,
    /// Paths (exact, query ignored) answered 503 from the trigger on (default `/healthz`,
    /// `/readyz`).
    pub health_paths: Vec<String>,
    /// From the trigger to the admin drain call (default 30 s).
    pub delay_ms: DurationMs,
    /// The cluster reaching Envoy's own admin interface (default `envoy_admin`).
    pub admin_cluster: String,
    /// Envoy's `--drain-time-s` when it runs with `--drain-strategy gradual`, spreading the
    /// closes over this window; shown as the state's `closes_by` (default none: immediate).
    pub gradual_window_ms: Option<DurationMs>,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            path: "/.mesh/drain".to_owned(),
            allowed_sources: vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()],
            token: None,
            health_paths: vec!["/healthz".to_owned(), "/readyz".to_owned()],
            delay_ms: DurationMs(30_000),
            admin_cluster: "envoy_admin".to_owned(),
            gradual_window_ms: None,
        }
    }
}

impl DrainConfig {
    /// The state machine's timing.
    pub fn policy(&self) -> Policy {
        Policy {
            delay: self.delay_ms.as_duration(),
            call_timeout: ADMIN_CALL_TIMEOUT,
            gradual_window: self.gradual_window_ms.map(DurationMs::as_duration),
        }
    }

    /// Who may use the trigger path (the configuration must have validated).
    pub fn access(&self) -> Access {
        let allowed = self
            .allowed_sources
            .iter()
            .filter_map(|cidr| parse_cidr(cidr))
            .collect();
        Access::new(allowed, self.token.as_deref())
    }
}

fn check_path(field: &str, path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') || path.contains('?') || path.contains('#') {
        return Err(ConfigError::invalid(
            field,
            format!("{path:?}"),
            "must start with '/' and have no query string or fragment",
        ));
    }
    Ok(())
}

impl Validate for DrainConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_path("path", &self.path)?;
        if self.allowed_sources.is_empty() {
            return Err(ConfigError::invalid(
                "allowed_sources",
                "[]",
                "must list at least one CIDR (nobody could trigger the drain)",
            ));
        }
        for (index, cidr) in self.allowed_sources.iter().enumerate() {
            if parse_cidr(cidr).is_none() {
                return Err(ConfigError::invalid(
                    format!("allowed_sources[{index}]"),
                    format!("{cidr:?}"),
                    "must be a CIDR such as 10.0.0.0/8 or an IP address",
                ));
            }
        }
        if let Some(token) = &self.token {
            if !valid_token(token) {
                // The value is a secret: not echoed.
                return Err(ConfigError::invalid(
                    "token",
                    "",
                    "must be non-empty visible ASCII without spaces",
                ));
            }
        }
        for (index, path) in self.health_paths.iter().enumerate() {
            let field = format!("health_paths[{index}]");
            check_path(&field, path)?;
            if *path == self.path {
                return Err(ConfigError::invalid(
                    field,
                    format!("{path:?}"),
                    "must differ from `path`",
                ));
            }
        }
        if self.delay_ms.as_millis() > MAX_PHASE_MS {
            return Err(ConfigError::invalid(
                "delay_ms",
                self.delay_ms.as_millis(),
                format!("must be at most {MAX_PHASE_MS} (an hour)"),
            ));
        }
        if self.admin_cluster.is_empty() {
            return Err(ConfigError::invalid(
                "admin_cluster",
                "\"\"",
                "must name the cluster that reaches Envoy's admin interface",
            ));
        }
        if let Some(window) = self.gradual_window_ms {
            if window.as_millis() == 0 || window.as_millis() > MAX_PHASE_MS {
                return Err(ConfigError::invalid(
                    "gradual_window_ms",
                    window.as_millis(),
                    format!("must be between 1 and {MAX_PHASE_MS}"),
                ));
            }
        }
        Ok(())
    }
}
