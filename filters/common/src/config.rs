//! Plugin configuration: JSON parsing with field-path error messages ([`load_config`]), semantic
//! checks ([`Validate`]) and the field types filters share ([`DurationMs`], [`Fraction`],
//! [`HeaderName`]).

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::time::Duration;

/// The path reported for errors that concern the whole document.
pub const ROOT_PATH: &str = "<root>";

/// A configuration that cannot be used: where, what was found, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted field path, e.g. `limits.max_concurrency`, or `<root>`.
    pub path: String,
    /// The offending value as written, or empty when not known.
    pub value: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A semantically invalid `value` at `path`.
    pub fn invalid(
        path: impl Into<String>,
        value: impl fmt::Display,
        message: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            value: value.to_string(),
            message: message.into(),
        }
    }

    /// A problem with the document as a whole (not UTF-8, not JSON).
    pub fn root(message: impl Into<String>) -> Self {
        Self {
            path: ROOT_PATH.to_owned(),
            value: String::new(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration at `{}`: {}",
            self.path, self.message
        )?;
        if !self.value.is_empty() {
            write!(f, " (got {})", self.value)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Semantic checks a configuration runs after it parsed.
pub trait Validate {
    /// `Ok` when the configuration is usable; otherwise the first problem found.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Parses and validates a JSON configuration.
///
/// Absent, empty, whitespace-only and `null` input all mean `{}` (every field at its default);
/// any other document must be a JSON object.
/// Type errors and unknown fields (use `#[serde(deny_unknown_fields, default)]` on structs) name
/// the field path; input that is not UTF-8 or not JSON is an error at `<root>`.
pub fn load_config<T: DeserializeOwned + Validate>(raw: Option<&[u8]>) -> Result<T, ConfigError> {
    let raw = raw.unwrap_or_default();
    let text = std::str::from_utf8(raw)
        .map_err(|err| ConfigError::root(format!("configuration is not UTF-8: {err}")))?;
    let trimmed = text.trim();
    let document = if trimmed.is_empty() || trimmed == "null" {
        "{}"
    } else if trimmed.starts_with('{') {
        text
    } else {
        return Err(ConfigError::root("configuration must be a JSON object"));
    };
    let mut deserializer = serde_json::Deserializer::from_str(document);
    let config: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ConfigError::root(format!("configuration is not valid JSON: {inner}"))
        } else {
            let path = if path == "." {
                ROOT_PATH.to_owned()
            } else {
                path
            };
            ConfigError {
                path,
                value: String::new(),
                message: inner.to_string(),
            }
        }
    })?;
    deserializer
        .end()
        .map_err(|err| ConfigError::root(format!("configuration is not valid JSON: {err}")))?;
    config.validate()?;
    Ok(config)
}

/// Reads the plugin configuration from the host and runs [`load_config`] on it. On error, logs
/// `<filter>: <error>` at error level and returns it; the caller should then return `false`
/// from `on_configure` so Envoy rejects the configuration.
#[cfg(target_arch = "wasm32")]
pub fn load_plugin_config<T: DeserializeOwned + Validate>(filter: &str) -> Result<T, ConfigError> {
    const PLUGIN_CONFIGURATION: u32 = proxy_wasm::types::BufferType::PluginConfiguration as u32;
    let result = crate::ffi::buffer_bytes(PLUGIN_CONFIGURATION, 0, usize::MAX)
        .map_err(|err| ConfigError::root(format!("cannot read the plugin configuration: {err}")))
        .and_then(|raw| load_config(raw.as_deref()));
    if let Err(err) = &result {
        log::error!("{filter}: {err}");
    }
    result
}

/// A duration in whole milliseconds, written in JSON as a number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct DurationMs(pub u64);

impl DurationMs {
    /// The number of milliseconds.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// As a [`Duration`].
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

/// Rejects a zero duration at `path` ("must be > 0").
pub fn require_positive(path: &str, value: DurationMs) -> Result<(), ConfigError> {
    if value.0 == 0 {
        Err(ConfigError::invalid(
            path,
            value.0,
            "must be > 0 milliseconds",
        ))
    } else {
        Ok(())
    }
}

/// A fraction in `[0, 1]` (e.g. a sampling rate), checked when deserialized.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize)]
#[serde(transparent)]
pub struct Fraction(f64);

impl Fraction {
    /// `value` if it is within `[0, 1]` (NaN is not).
    pub fn new(value: f64) -> Option<Self> {
        (0.0..=1.0).contains(&value).then_some(Self(value))
    }

    /// The fraction as a number in `[0, 1]`.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        Fraction::new(value).ok_or_else(|| {
            D::Error::custom(format!("must be a number between 0 and 1 (got {value})"))
        })
    }
}

/// An HTTP header name as filters match it: a lowercase token (RFC 9110 `tchar`s, no
/// uppercase), optionally prefixed by ':' for pseudo-headers such as `:authority`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct HeaderName(String);

impl HeaderName {
    /// `name` if it is a valid lowercase header name; otherwise why not.
    pub fn new(name: impl Into<String>) -> Result<Self, String> {
        let name = name.into();
        let token = name.strip_prefix(':').unwrap_or(&name);
        if token.is_empty() {
            return Err(format!("header name {name:?} is empty"));
        }
        if let Some(bad) = token.chars().find(|&c| !is_lowercase_tchar(c)) {
            let hint = if bad.is_ascii_uppercase() {
                " (header names must be lowercase)"
            } else {
                ""
            };
            return Err(format!("header name {name:?} contains {bad:?}{hint}"));
        }
        Ok(Self(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for HeaderName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for HeaderName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        HeaderName::new(String::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

fn is_lowercase_tchar(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || "!#$%&'*+-.^_`|~".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Limits {
        min_concurrency: u32,
        max_concurrency: u32,
    }

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        timeout_ms: DurationMs,
        sample_rate: Option<Fraction>,
        header: Option<HeaderName>,
        limits: Limits,
        routes: Vec<Limits>,
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.limits.max_concurrency < self.limits.min_concurrency {
                return Err(ConfigError::invalid(
                    "limits.max_concurrency",
                    self.limits.max_concurrency,
                    "must be >= min_concurrency",
                ));
            }
            Ok(())
        }
    }

    fn load(raw: &str) -> Result<Sample, ConfigError> {
        load_config(Some(raw.as_bytes()))
    }

    #[test]
    fn absent_empty_blank_and_null_mean_defaults() {
        assert_eq!(load_config::<Sample>(None), Ok(Sample::default()));
        for raw in ["", "  \n\t", "null", " null \n", "{}"] {
            assert_eq!(load(raw), Ok(Sample::default()), "{raw:?}");
        }
    }

    #[test]
    fn parses_fields() {
        let config = load(
            r#"{"timeout_ms": 250, "sample_rate": 0.5, "header": "x-tenant",
                "limits": {"min_concurrency": 1, "max_concurrency": 8}}"#,
        )
        .unwrap();
        assert_eq!(config.timeout_ms.as_duration(), Duration::from_millis(250));
        assert_eq!(config.sample_rate.map(Fraction::get), Some(0.5));
        assert_eq!(config.header.unwrap().as_str(), "x-tenant");
        assert_eq!(config.limits.max_concurrency, 8);
    }

    #[test]
    fn type_errors_name_the_field_path() {
        let err = load(r#"{"limits": {"max_concurrency": "many"}}"#).unwrap_err();
        assert_eq!(err.path, "limits.max_concurrency");
        assert!(err.message.contains("invalid type"), "{err}");
        let err = load(r#"{"routes": [{}, {"min_concurrency": -1}]}"#).unwrap_err();
        assert_eq!(err.path, "routes[1].min_concurrency");
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_path() {
        let err = load(r#"{"limits": {"max_concurency": 3}}"#).unwrap_err();
        assert_eq!(err.path, "limits.max_concurency");
        assert!(err.message.contains("unknown field"), "{err}");
    }

    #[test]
    fn semantic_errors_read_well() {
        let err = load(r#"{"limits": {"min_concurrency": 2, "max_concurrency": 0}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration at `limits.max_concurrency`: must be >= min_concurrency (got 0)"
        );
    }

    #[test]
    fn non_json_and_non_utf8_are_root_errors() {
        for raw in [&b"{"[..], b"timeout_ms: 5", b"{} {}", b"\xff\xfe"] {
            let err = load_config::<Sample>(Some(raw)).unwrap_err();
            assert_eq!(err.path, ROOT_PATH, "{err}");
        }
        for raw in ["[1, 2]", "5", "\"text\""] {
            let err = load(raw).unwrap_err();
            assert_eq!(err.path, ROOT_PATH, "{raw}: {err}");
            assert!(err.message.contains("must be a JSON object"), "{err}");
        }
    }

    #[test]
    fn fraction_is_range_checked() {
        assert_eq!(
            load(r#"{"sample_rate": 1}"#).unwrap().sample_rate,
            Fraction::new(1.0)
        );
        let err = load(r#"{"sample_rate": 1.5}"#).unwrap_err();
        assert_eq!(err.path, "sample_rate");
        assert!(err.message.contains("between 0 and 1"), "{err}");
        assert!(load(r#"{"sample_rate": -0.1}"#).is_err());
        assert_eq!(Fraction::new(f64::NAN), None);
    }

    #[test]
    fn header_names_must_be_lowercase_tokens() {
        assert!(HeaderName::new(":authority").is_ok());
        assert!(HeaderName::new("x-b3-traceid").is_ok());
        for bad in ["", ":", "X-Tenant", "x tenant", "x-ü", "a:b"] {
            assert!(HeaderName::new(bad).is_err(), "{bad:?} accepted");
        }
        let err = load(r#"{"header": "X-Tenant"}"#).unwrap_err();
        assert_eq!(err.path, "header");
        assert!(err.message.contains("must be lowercase"), "{err}");
    }

    #[test]
    fn require_positive_rejects_zero() {
        assert!(require_positive("timeout_ms", DurationMs(1)).is_ok());
        assert_eq!(
            require_positive("timeout_ms", DurationMs(0))
                .unwrap_err()
                .to_string(),
            "invalid configuration at `timeout_ms`: must be > 0 milliseconds (got 0)"
        );
    }
}
