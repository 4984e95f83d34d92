//! The sandbox router's plugin configuration ([`SandboxConfig`]): JSON shape, defaults and
//! validation. `{}` is valid and safe: no source is trusted and nothing is registered, so keys are
//! stripped and nothing is re-routed (a client-sent routing header is still removed).
//!
//! ```json
//! {
//!   "key_header": "x-sandbox",
//!   "baggage_key": "sandbox",
//!   "routing_header": "x-mesh-sandbox-cluster",
//!   "sandboxes": { "feature-x": "sandbox_feature_x" },
//!   "registry": { "cluster": "sandbox_registry", "path": "/sandboxes", "refresh_interval_ms": 10000 },
//!   "unknown_key": "baseline",
//!   "trusted_sources": ["127.0.0.1/32", "10.0.0.0/8"],
//!   "signing_secret": "at least thirty-two bytes of shared secret",
//!   "self": "feature-x",
//!   "max_key_length": 63
//! }
//! ```

use crate::key::{is_valid_name, DEFAULT_MAX_LENGTH, MAX_MAX_LENGTH};
use crate::registry::is_valid_cluster;
use ipnet::IpNet;
use meshkit::config::{require_positive, ConfigError, DurationMs, HeaderName, Validate};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The shortest signing secret accepted, in bytes (HMAC-SHA256's output size).
pub const MIN_SECRET_BYTES: usize = 32;
/// The shortest dynamic-registry refresh interval.
pub const MIN_REFRESH_INTERVAL_MS: u64 = 100;

/// The whole plugin configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Header carrying the sandbox key, the first key source (default `x-sandbox`; `null`
    /// disables it).
    pub key_header: Option<HeaderName>,
    /// Key of the W3C `baggage` member carrying the sandbox key, the second key source (default
    /// `sandbox`; `null` disables it).
    pub baggage_key: Option<String>,
    /// Header the filter sets to the sandbox's cluster, read by the route's `cluster_header`
    /// (default `x-mesh-sandbox-cluster`). Always removed from client requests first.
    pub routing_header: HeaderName,
    /// The static registry: sandbox name -> cluster (default none).
    pub sandboxes: BTreeMap<String, String>,
    /// The dynamic registry fetched over HTTP (default none).
    pub registry: Option<RegistryConfig>,
    /// What a trusted but unknown (unregistered or invalid) key gets (default `baseline`).
    pub unknown_key: UnknownKey,
    /// Downstream addresses (CIDRs or single addresses) whose keys are honoured, checked against
    /// the connection's source address (default none).
    pub trusted_sources: Vec<Cidr>,
    /// Keys signed with HMAC-SHA256 under this secret (`<name>.<hex signature>`) are honoured
    /// from any source (default none; at least 32 bytes).
    pub signing_secret: Option<String>,
    /// The sandbox this sidecar belongs to: it never re-routes (default none).
    #[serde(rename = "self")]
    pub own_sandbox: Option<String>,
    /// The longest valid sandbox name (default 63, at most 128).
    pub max_key_length: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            // Valid constants, so `ok()` never drops them.
            key_header: HeaderName::new("x-sandbox").ok(),
            baggage_key: Some("sandbox".to_owned()),
            routing_header: default_routing_header(),
            sandboxes: BTreeMap::new(),
            registry: None,
            unknown_key: UnknownKey::Baseline,
            trusted_sources: Vec::new(),
            signing_secret: None,
            own_sandbox: None,
            max_key_length: DEFAULT_MAX_LENGTH,
        }
    }
}

/// The default routing header, `x-mesh-sandbox-cluster`.
#[allow(clippy::expect_used)] // A valid constant; every test loading `{}` runs this.
fn default_routing_header() -> HeaderName {
    HeaderName::new("x-mesh-sandbox-cluster").expect("a valid header name")
}

/// Where the dynamic registry is fetched from and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The Envoy cluster serving the registry.
    pub cluster: String,
    /// The request path, e.g. `/sandboxes`; the answer is a JSON list of
    /// `{"name": ..., "cluster": ...}`.
    pub path: String,
    /// The `:authority` sent (default the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    /// One fetch per interval across all workers (default 10 s; at least 100 ms).
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval_ms: DurationMs,
    /// A fetch not answered within this fails (default 2 s; below `refresh_interval_ms`).
    #[serde(default = "default_fetch_timeout")]
    pub timeout_ms: DurationMs,
}

fn default_refresh_interval() -> DurationMs {
    DurationMs(10_000)
}

fn default_fetch_timeout() -> DurationMs {
    DurationMs(2_000)
}

/// What a trusted key that names no registered sandbox gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownKey {
    /// The baseline, as if there were no key.
    #[default]
    Baseline,
    /// A local 404 reply naming the problem.
    NotFound,
}

/// An IP network (`10.0.0.0/8`, `::1/128`) or a single address (`127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl Cidr {
    /// Whether `address` is in the network.
    pub fn contains(&self, address: &IpAddr) -> bool {
        self.0.contains(address)
    }
}

/// Written as the network (`10.0.0.0/8`; a single address as `/32` or `/128`).
impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map(Cidr)
            .map_err(|_| {
                D::Error::custom(format!(
                    "{text:?} is not a CIDR (e.g. 10.0.0.0/8) or an IP address"
                ))
            })
    }
}

impl Validate for SandboxConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_MAX_LENGTH).contains(&self.max_key_length) {
            return Err(ConfigError::invalid(
                "max_key_length",
                self.max_key_length,
                format!("must be between 1 and {MAX_MAX_LENGTH}"),
            ));
        }
        if self.key_header.is_none() && self.baggage_key.is_none() {
            return Err(ConfigError::invalid(
                "key_header",
                "null",
                "key_header and baggage_key cannot both be null: the filter would have no key source",
            ));
        }
        self.validate_headers()?;
        if let Some(key) = &self.baggage_key {
            let token = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(ConfigError::invalid(
                    "baggage_key",
                    format!("{key:?}"),
                    "must be a non-empty token (letters, digits and !#$%&'*+-.^_`|~)",
                ));
            }
        }
        for (name, cluster) in &self.sandboxes {
            self.validate_name(&format!("sandboxes.{name}"), name)?;
            if !is_valid_cluster(cluster) {
                return Err(ConfigError::invalid(
                    format!("sandboxes.{name}"),
                    format!("{cluster:?}"),
                    "must be a cluster name: 1 to 255 letters, digits and -_.:|",
                ));
            }
        }
        if let Some(registry) = &self.registry {
            registry.validate()?;
        }
        if let Some(secret) = &self.signing_secret {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(ConfigError::invalid(
                    "signing_secret",
                    format!("<{} bytes>", secret.len()),
                    format!("must be at least {MIN_SECRET_BYTES} bytes"),
                ));
            }
        }
        if let Some(own) = &self.own_sandbox {
            self.validate_name("self", own)?;
        }
        Ok(())
    }
}

impl SandboxConfig {
    fn validate_name(&self, path: &str, name: &str) -> Result<(), ConfigError> {
        if is_valid_name(name.as_bytes(), self.max_key_length) {
            Ok(())
        } else {
            Err(ConfigError::invalid(
                path,
                format!("{name:?}"),
                format!(
                    "a sandbox name is 1 to max_key_length ({}) letters, digits, '-' or '_'",
                    self.max_key_length
                ),
            ))
        }
    }

    fn validate_headers(&self) -> Result<(), ConfigError> {
        let routing = self.routing_header.as_str();
        let mut headers = vec![("routing_header", routing)];
        if let Some(key) = &self.key_header {
            headers.push(("key_header", key.as_str()));
            if key.as_str() == routing {
                return Err(ConfigError::invalid(
                    "key_header",
                    format!("{routing:?}"),
                    "must differ from routing_header (clients may send the key, never the routing header)",
                ));
            }
        }
        for (path, name) in headers {
            if name.starts_with(':') || name == "baggage" || name == "host" {
                return Err(ConfigError::invalid(
                    path,
                    format!("{name:?}"),
                    "must not be a pseudo-header, `baggage` or `host`",
                ));
            }
        }
        Ok(())
    }
}

impl Validate for RegistryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !is_valid_cluster(&self.cluster) {
            return Err(ConfigError::invalid(
                "registry.cluster",
                format!("{:?}", self.cluster),
                "must be a cluster name: 1 to 255 letters, digits and -_.:|",
            ));
        }
        let path_ok = self.path.starts_with('/') && self.path.bytes().all(|b| b.is_ascii_graphic());
        if !path_ok {
            return Err(ConfigError::invalid(
                "registry.path",
                format!("{:?}", self.path),
                "must start with '/' and contain only visible ASCII",
            ));
        }
        if let Some(authority) = &self.authority {
            if authority.is_empty() || !authority.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::invalid(
                    "registry.authority",
                    format!("{authority:?}"),
                    "must be non-empty visible ASCII",
                ));
            }
        }
        if self.refresh_interval_ms.as_millis() < MIN_REFRESH_INTERVAL_MS {
            return Err(ConfigError::invalid(
                "registry.refresh_interval_ms",
                self.refresh_interval_ms.as_millis(),
                format!("must be at least {MIN_REFRESH_INTERVAL_MS} milliseconds"),
            ));
        }
        require_positive("registry.timeout_ms", self.timeout_ms)?;
        if self.timeout_ms >= self.refresh_interval_ms {
            return Err(ConfigError::invalid(
                "registry.timeout_ms",
                self.timeout_ms.as_millis(),
                "must be below registry.refresh_interval_ms",
            ));
        }
        Ok(())
    }
}
