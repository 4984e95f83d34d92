//! The service spec: what a platform team writes instead of Envoy config. Parsed from YAML or
//! JSON with unknown fields rejected; every error names the field path (and, for YAML, the line).
//! Filter sections are the filters' own config types, so a filter's config error surfaces here,
//! before Envoy loads anything.

use super::chain::Side;
use crate::RetryOn;
use drain_signal::config::DrainConfig;
use entity_cache::config::EntityCacheConfig;
use load_shedder::config::ShedderConfig;
use meshkit::config::{ConfigError, Validate};
use retry_budget::config::{RetryBudgetConfig, Role};
use sandbox_router::config::SandboxConfig;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// One service's sidecar, as its team describes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service's name (a DNS label): the node's cluster, dashboard and alert labels.
    pub service: String,
    /// The application container the sidecar fronts.
    pub app: AppSpec,
    /// The inbound listener.
    #[serde(default)]
    pub ingress: IngressSpec,
    /// The outbound listener the app calls its dependencies through.
    #[serde(default)]
    pub egress: EgressSpec,
    /// Envoy's admin interface (loopback only).
    #[serde(default)]
    pub admin: AdminSpec,
    /// Shutdown behaviour.
    #[serde(default)]
    pub drain: DrainSpec,
    /// Limits that protect the proxy itself.
    #[serde(default)]
    pub overload: OverloadSpec,
    /// The mesh filters this service runs, each with the filter's own configuration.
    #[serde(default)]
    pub filters: FilterSpecs,
    /// The services this one calls, each reached through the egress listener.
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
    /// This service's sandbox deployments: requests keyed to one (sandbox-router) go to it, and
    /// back to the app when it is unavailable.
    #[serde(default)]
    pub sandboxes: Vec<SandboxSpec>,
}

/// One sandbox deployment of this service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// The sandbox key that selects it (a DNS label).
    pub name: String,
    /// DNS name (or IP) of its endpoints, resolved STRICT_DNS.
    pub address: String,
    /// Its port (it speaks the app's protocol).
    pub port: u16,
}

/// The local application.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Port the app listens on (on loopback, behind the sidecar).
    pub port: u16,
    /// What the app speaks.
    pub protocol: Protocol,
    /// Inbound request timeout, the route timeout of the ingress listener (default 15000).
    #[serde(default = "default_app_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_app_timeout_ms() -> u64 {
    15_000
}

/// An application protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (cleartext, prior knowledge).
    Http2,
    /// gRPC (HTTP/2).
    Grpc,
}

/// The inbound listener (binds all interfaces: other services call it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressSpec {
    /// Port (default 15006).
    pub port: u16,
    /// Streams one HTTP/2 client connection may carry at once (default 100).
    pub max_concurrent_streams: u32,
    /// Seconds after which a client connection is drained (default 300).
    pub max_connection_duration_s: u64,
}

impl Default for IngressSpec {
    fn default() -> Self {
        Self {
            port: 15006,
            max_concurrent_streams: 100,
            max_connection_duration_s: 300,
        }
    }
}

/// The outbound listener (loopback: only the app calls it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressSpec {
    /// Port (default 15001).
    pub port: u16,
    /// Seconds after which a connection to a dependency is retired (default 240, below the
    /// servers' 300, so the client always closes first).
    pub max_connection_duration_s: u64,
}

impl Default for EgressSpec {
    fn default() -> Self {
        Self {
            port: 15001,
            max_connection_duration_s: 240,
        }
    }
}

/// Envoy's admin interface.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSpec {
    /// Port on 127.0.0.1 (default 9901).
    pub port: u16,
    /// Port on all interfaces serving only `/stats/prometheus` (default 15090), so Prometheus can
    /// scrape the sidecar while the admin interface stays on loopback.
    pub prometheus_port: u16,
}

impl Default for AdminSpec {
    fn default() -> Self {
        Self {
            port: 9901,
            prometheus_port: 15090,
        }
    }
}

/// Shutdown behaviour.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainSpec {
    /// How long a draining inbound connection may finish its requests after GOAWAY /
    /// `connection: close` (default 5000).
    pub timeout_ms: u64,
}

impl Default for DrainSpec {
    fn default() -> Self {
        Self { timeout_ms: 5000 }
    }
}

/// Limits protecting the proxy itself (circuit breakers are off; the overload manager is on).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadSpec {
    /// Heap the sidecar may use, in MiB (default 1024).
    pub max_heap_mb: u64,
    /// Downstream connections over all listeners (default 50000).
    pub max_downstream_connections: u64,
}

impl Default for OverloadSpec {
    fn default() -> Self {
        Self {
            max_heap_mb: 1024,
            max_downstream_connections: 50_000,
        }
    }
}

/// The mesh filters, one optional section each: absent (or `null`) leaves the filter out, `{}`
/// runs it on its defaults. A filter joins the composer with its section here (its own config
/// type), a line in [`FilterSpecs::sections`], and its place in [`super::chain::CHAIN`].
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterSpecs {
    /// drain-signal: `drain_signal::config::DrainConfig`.
    pub drain_signal: Option<Checked<DrainConfig>>,
    /// load-shedder: `load_shedder::config::ShedderConfig`.
    pub load_shedder: Option<Checked<ShedderConfig>>,
    /// retry-budget: one `retry_budget::config::RetryBudgetConfig` per role (`server`: ingress,
    /// `client`: egress), its `role` set by the section.
    pub retry_budget: Option<ByRole>,
    /// sandbox-router: `sandbox_router::config::SandboxConfig` (its sandboxes).
    pub sandbox_router: Option<Checked<SandboxConfig>>,
    /// entity-cache: `entity_cache::config::EntityCacheConfig` (its cache rules).
    pub entity_cache: Option<Checked<EntityCacheConfig>>,
}

/// One configured filter section of a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterSection {
    /// The filter's name (its crate, catalog entry and suite section name).
    pub filter: &'static str,
    /// The spec field it was given in, e.g. `filters.load_shedder`.
    pub field: &'static str,
    /// The configuration the plugin receives.
    pub config: serde_json::Value,
    /// The listener it is for, when the filter has a section per listener (`None`: each of the
    /// filter's listeners).
    pub side: Option<Side>,
}

/// retry-budget configured per role: `server` on the ingress listener, `client` on the egress
/// one; each section's key sets the configuration's `role`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ByRole {
    /// The ingress (server role) instance; absent: none.
    pub server: Option<InRole<ServerRole>>,
    /// The egress (client role) instance; absent: none.
    pub client: Option<InRole<ClientRole>>,
}

impl FilterSpecs {
    /// The configured sections, each as the JSON its plugin receives.
    pub fn sections(&self) -> Result<Vec<FilterSection>, SpecError> {
        let mut sections = Vec::new();
        section(
            &mut sections,
            "drain-signal",
            "filters.drain_signal",
            &self.drain_signal,
        )?;
        section(
            &mut sections,
            "load-shedder",
            "filters.load_shedder",
            &self.load_shedder,
        )?;
        if let Some(by_role) = &self.retry_budget {
            by_role_sections(&mut sections, "retry-budget", by_role)?;
        }
        section(
            &mut sections,
            "sandbox-router",
            "filters.sandbox_router",
            &self.sandbox_router,
        )?;
        section(
            &mut sections,
            "entity-cache",
            "filters.entity_cache",
            &self.entity_cache,
        )?;
        Ok(sections)
    }
}

fn section<T: Serialize>(
    sections: &mut Vec<FilterSection>,
    filter: &'static str,
    field: &'static str,
    config: &Option<T>,
) -> Result<(), SpecError> {
    if let Some(config) = config {
        let value = serde_json::to_value(config).map_err(|err| SpecError {
            path: field.to_owned(),
            line: None,
            message: format!("cannot be written as JSON: {err}"),
        })?;
        sections.push(FilterSection {
            filter,
            field,
            config: value,
            side: None,
        });
    }
    Ok(())
}

fn by_role_sections(
    sections: &mut Vec<FilterSection>,
    filter: &'static str,
    by_role: &ByRole,
) -> Result<(), SpecError> {
    let server = by_role.server.as_ref().map(|in_role| &in_role.config);
    let client = by_role.client.as_ref().map(|in_role| &in_role.config);
    for (config, side, field) in [
        (server, Side::Ingress, "filters.retry_budget.server"),
        (client, Side::Egress, "filters.retry_budget.client"),
    ] {
        section(sections, filter, field, &config)?;
        if config.is_some() {
            if let Some(added) = sections.last_mut() {
                added.side = Some(side);
            }
        }
    }
    Ok(())
}

/// Starts a [`Checked`] validation error: the field path inside the section follows, up to "`: ".
const CHECKED_PATH_MARK: &str = "filter config field `";

/// A filter's own configuration type, parsed and semantically validated (`Validate`) while the
/// spec is read; it serializes as the plugin's JSON configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked<T>(pub T);

impl<'de, T: Deserialize<'de> + Validate> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let config = T::deserialize(deserializer)?;
        config.validate().map_err(validation_error)?;
        Ok(Self(config))
    }
}

/// A filter's validation error as a deserializer error whose path `ServiceSpec::parse` appends
/// to the section's.
fn validation_error<E: serde::de::Error>(err: ConfigError) -> E {
    let got = if err.value.is_empty() {
        String::new()
    } else {
        format!(" (got {})", err.value)
    };
    E::custom(format!(
        "{CHECKED_PATH_MARK}{}`: {}{got}",
        err.path, err.message
    ))
}

impl<T: Serialize> Serialize for Checked<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Which role a per-role section ([`ByRole`]) is for.
pub trait SectionRole {
    /// The role the section's configuration gets.
    const ROLE: Role;
    /// Its spelling.
    const NAME: &'static str;
}

/// The `server` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerRole;

impl SectionRole for ServerRole {
    const ROLE: Role = Role::Server;
    const NAME: &'static str = "server";
}

/// The `client` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRole;

impl SectionRole for ClientRole {
    const ROLE: Role = Role::Client;
    const NAME: &'static str = "client";
}

/// retry-budget's own configuration in the section of role `R`: its `role` left out (the
/// section sets it) or agreeing, then checked as [`Checked`] for that role. Errors name the
/// field inside the section; their line is the section's.
#[derive(Debug, Clone, PartialEq)]
pub struct InRole<R> {
    /// The configuration, with `role` set.
    pub config: RetryBudgetConfig,
    role: std::marker::PhantomData<R>,
}

impl<'de, R: SectionRole> Deserialize<'de> for InRole<R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut fields = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let field_error = |path: &str, message: String| {
            D::Error::custom(format!("{CHECKED_PATH_MARK}{path}`: {message}"))
        };
        if let Some(given) = fields.remove("role") {
            let role =
                Role::deserialize(&given).map_err(|err| field_error("role", err.to_string()))?;
            if role != R::ROLE {
                return Err(field_error(
                    "role",
                    format!(
                        "{given} contradicts the section: `{}` (or leave it out)",
                        R::NAME
                    ),
                ));
            }
        }
        let mut config: RetryBudgetConfig =
            serde_path_to_error::deserialize(serde_json::Value::Object(fields))
                .map_err(|err| field_error(&err.path().to_string(), err.inner().to_string()))?;
        config.role = R::ROLE;
        config.validate().map_err(validation_error)?;
        Ok(Self {
            config,
            role: std::marker::PhantomData,
        })
    }
}

/// A service this one calls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    /// Name (a DNS label): the app calls it with `Host: <name>`; the cluster is `egress_<name>`.
    pub name: String,
    /// DNS name (or IP) of its endpoints, resolved STRICT_DNS.
    pub address: String,
    /// Its port.
    pub port: u16,
    /// What it speaks.
    pub protocol: Protocol,
    /// The timeout the app uses for these calls: the route's, so app and sidecar give up together
    /// and report the same failure.
    pub timeout_ms: u64,
    /// Retries the sidecar makes.
    #[serde(default)]
    pub retry: RetrySpec,
    /// Active health checking of its endpoints (absent: none; endpoints that fail connections
    /// are still ejected by outlier detection).
    #[serde(default)]
    pub health_check: Option<HealthCheckSpec>,
}

/// Active health checking of a dependency's endpoints by this sidecar: every sidecar of the
/// service checks every endpoint, so keep the interval long for dependencies with many callers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// HTTP dependencies: the path a `GET` must answer 2xx on (required). gRPC dependencies use
    /// the gRPC health checking protocol and take no path.
    #[serde(default)]
    pub path: Option<String>,
    /// Time between checks of one endpoint (default 5000).
    #[serde(default = "default_health_interval_ms")]
    pub interval_ms: u64,
    /// A check not answered in this time failed (default 1000; at most `interval_ms`).
    #[serde(default = "default_health_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_health_interval_ms() -> u64 {
    5000
}

fn default_health_timeout_ms() -> u64 {
    1000
}

impl Dependency {
    /// The `Host` values that reach this dependency through the egress listener on `egress_port`:
    /// its name and its address, each bare and with the port the caller would write.
    pub fn domains(&self, egress_port: u16) -> Vec<String> {
        let mut domains = vec![self.name.clone(), format!("{}:{egress_port}", self.name)];
        for domain in [
            self.address.clone(),
            format!("{}:{}", self.address, self.port),
        ] {
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        domains
    }
}

/// Retry policy of a dependency's route.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySpec {
    /// Retries after the first attempt (default 1; at most 5).
    pub retries: u32,
    /// Conditions to retry on, Envoy's `retry_on` vocabulary (default: the failures where the
    /// request never reached the app: `connect-failure`, `refused-stream`, `reset-before-request`).
    pub on: Vec<RetryOn>,
    /// Timeout of each attempt (default none: the whole timeout).
    pub per_try_timeout_ms: Option<u64>,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            retries: 1,
            on: vec![
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::ResetBeforeRequest,
            ],
            per_try_timeout_ms: None,
        }
    }
}

/// Most retries a dependency may declare: more multiplies an outage (the seed's retry storm).
pub const MAX_RETRIES: u32 = 5;

/// A spec that cannot be used: where (field path, YAML line) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Dotted field path, e.g. `dependencies[1].timeout_ms`, or `.` for the whole document.
    pub path: String,
    /// 1-based line in a YAML spec, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.path)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SpecError {}

/// The format of a spec document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    /// YAML (a superset of JSON; errors carry lines).
    Yaml,
    /// JSON.
    Json,
}

impl SpecFormat {
    /// JSON for a `.json` file name, YAML otherwise.
    pub fn of_path(path: &std::path::Path) -> Self {
        match path.extension().and_then(|ext| ext.to_str()) {
            Some("json") => Self::Json,
            _ => Self::Yaml,
        }
    }
}

impl ServiceSpec {
    /// Parses and validates a spec.
    pub fn parse(text: &str, format: SpecFormat) -> Result<Self, SpecError> {
        let spec: Self = match format {
            SpecFormat::Yaml => {
                let deserializer = serde_yaml_ng::Deserializer::from_str(text);
                serde_path_to_error::deserialize(deserializer).map_err(|err| {
                    let line = err.inner().location().map(|at| at.line());
                    spec_error(err.path().to_string(), line, &err.inner().to_string())
                })?
            }
            SpecFormat::Json => {
                let mut deserializer = serde_json::Deserializer::from_str(text);
                serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
                    let line = Some(err.inner().line()).filter(|&line| line > 0);
                    spec_error(err.path().to_string(), line, &err.inner().to_string())
                })?
            }
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Rules across fields: names are DNS labels, ports distinct and non-zero, timeouts positive,
    /// retries bounded.
    fn validate(&self) -> Result<(), SpecError> {
        dns_label("service", &self.service)?;
        self.filters.sections()?;
        let ports = [
            ("app.port", self.app.port),
            ("ingress.port", self.ingress.port),
            ("egress.port", self.egress.port),
            ("admin.port", self.admin.port),
            ("admin.prometheus_port", self.admin.prometheus_port),
        ];
        for (index, &(path, port)) in ports.iter().enumerate() {
            if port == 0 {
                return Err(invalid(path, "must not be 0"));
            }
            if let Some((other, _)) = ports[..index].iter().find(|(_, p)| *p == port) {
                return Err(invalid(path, format!("{port} is already `{other}`")));
            }
        }
        positive("app.timeout_ms", self.app.timeout_ms)?;
        positive("drain.timeout_ms", self.drain.timeout_ms)?;
        positive(
            "ingress.max_concurrent_streams",
            self.ingress.max_concurrent_streams.into(),
        )?;
        positive(
            "ingress.max_connection_duration_s",
            self.ingress.max_connection_duration_s,
        )?;
        positive(
            "egress.max_connection_duration_s",
            self.egress.max_connection_duration_s,
        )?;
        positive("overload.max_heap_mb", self.overload.max_heap_mb)?;
        positive(
            "overload.max_downstream_connections",
            self.overload.max_downstream_connections,
        )?;
        for (index, dependency) in self.dependencies.iter().enumerate() {
            let at = |field: &str| format!("dependencies[{index}].{field}");
            dns_label(&at("name"), &dependency.name)?;
            if self.dependencies[..index]
                .iter()
                .any(|d| d.name == dependency.name)
            {
                return Err(invalid(
                    &at("name"),
                    format!("{:?} is declared twice", dependency.name),
                ));
            }
            if dependency.address.is_empty() {
                return Err(invalid(&at("address"), "must not be empty"));
            }
            if dependency.port == 0 {
                return Err(invalid(&at("port"), "must not be 0"));
            }
            positive(&at("timeout_ms"), dependency.timeout_ms)?;
            for domain in dependency.domains(self.egress.port) {
                if let Some(other) = self.dependencies[..index]
                    .iter()
                    .find(|other| other.domains(self.egress.port).contains(&domain))
                {
                    return Err(invalid(
                        &at("address"),
                        format!(
                            "Host {domain:?} would reach both {:?} and {:?}; give each dependency its own address",
                            other.name, dependency.name
                        ),
                    ));
                }
            }
            let retry = &dependency.retry;
            if retry.retries > MAX_RETRIES {
                return Err(invalid(
                    &at("retry.retries"),
                    format!(
                        "{} is above {MAX_RETRIES}: retries multiply an outage",
                        retry.retries
                    ),
                ));
            }
            if retry.retries > 0 && retry.on.is_empty() {
                return Err(invalid(
                    &at("retry.on"),
                    "retries need at least one condition",
                ));
            }
            if let Some(check) = &dependency.health_check {
                check.validate(dependency.protocol, &at)?;
            }
            if let Some(per_try) = retry.per_try_timeout_ms {
                positive(&at("retry.per_try_timeout_ms"), per_try)?;
                if per_try > dependency.timeout_ms {
                    return Err(invalid(
                        &at("retry.per_try_timeout_ms"),
                        format!("{per_try} exceeds timeout_ms {}", dependency.timeout_ms),
                    ));
                }
            }
        }
        self.validate_sandboxes()?;
        self.validate_cache_rules()
    }

    /// Sandboxes need the sandbox router, distinct DNS-label names, an address and a port.
    fn validate_sandboxes(&self) -> Result<(), SpecError> {
        for (index, sandbox) in self.sandboxes.iter().enumerate() {
            let at = |field: &str| format!("sandboxes[{index}].{field}");
            let Some(router) = &self.filters.sandbox_router else {
                return Err(invalid(
                    &at("name"),
                    "sandboxes are reached through the sandbox router: add `filters.sandbox_router`",
                ));
            };
            dns_label(&at("name"), &sandbox.name)?;
            if self.sandboxes[..index]
                .iter()
                .any(|s| s.name == sandbox.name)
                || router.0.sandboxes.contains_key(&sandbox.name)
            {
                return Err(invalid(
                    &at("name"),
                    format!("{:?} is declared twice", sandbox.name),
                ));
            }
            if sandbox.address.is_empty() {
                return Err(invalid(&at("address"), "must not be empty"));
            }
            if sandbox.port == 0 {
                return Err(invalid(&at("port"), "must not be 0"));
            }
        }
        Ok(())
    }

    /// An entity-cache rule names its cache and its origin by declared dependency.
    fn validate_cache_rules(&self) -> Result<(), SpecError> {
        let Some(cache) = &self.filters.entity_cache else {
            return Ok(());
        };
        for (index, rule) in cache.0.rules.iter().enumerate() {
            for (field, name) in [
                ("cache_cluster", &rule.cache_cluster),
                ("origin_cluster", &rule.origin_cluster),
            ] {
                if !self.dependencies.iter().any(|d| &d.name == name) {
                    return Err(invalid(
                        &format!("filters.entity_cache.rules[{index}].{field}"),
                        format!(
                            "{name:?} is not a declared dependency: in a spec, a rule names its cache and \
                             its origin by dependency name"
                        ),
                    ));
                }
            }
            if rule.cache_cluster == rule.origin_cluster {
                return Err(invalid(
                    &format!("filters.entity_cache.rules[{index}].cache_cluster"),
                    format!("{:?} is also the rule's origin", rule.cache_cluster),
                ));
            }
        }
        Ok(())
    }
}

impl HealthCheckSpec {
    fn validate(&self, protocol: Protocol, at: &dyn Fn(&str) -> String) -> Result<(), SpecError> {
        match (protocol, &self.path) {
            (Protocol::Grpc, Some(_)) => return Err(invalid(
                &at("health_check.path"),
                "a gRPC dependency is checked with grpc.health.v1.Health/Check: leave the path out",
            )),
            (Protocol::Http1 | Protocol::Http2, None) => {
                return Err(invalid(
                    &at("health_check.path"),
                    "an HTTP dependency needs the path a GET must answer 2xx on",
                ))
            }
            (_, Some(path)) if !path.starts_with('/') => {
                return Err(invalid(
                    &at("health_check.path"),
                    format!("{path:?} must start with '/'"),
                ))
            }
            _ => {}
        }
        positive(&at("health_check.interval_ms"), self.interval_ms)?;
        positive(&at("health_check.timeout_ms"), self.timeout_ms)?;
        if self.timeout_ms > self.interval_ms {
            return Err(invalid(
                &at("health_check.timeout_ms"),
                format!(
                    "{} exceeds interval_ms {}",
                    self.timeout_ms, self.interval_ms
                ),
            ));
        }
        Ok(())
    }
}

fn invalid(path: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        path: path.to_owned(),
        line: None,
        message: message.into(),
    }
}

fn positive(path: &str, value: u64) -> Result<(), SpecError> {
    if value == 0 {
        Err(invalid(path, "must be > 0"))
    } else {
        Ok(())
    }
}

/// A lowercase DNS label: it names clusters, stats and Kubernetes objects.
fn dns_label(path: &str, name: &str) -> Result<(), SpecError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(invalid(
            path,
            format!("{name:?} is not a DNS label (lowercase letters, digits and '-', at most 63)"),
        ))
    }
}

/// A parse error from the deserializer's `message`. serde_yaml_ng starts messages with the path
/// and both parsers end them with "at line L column C"; path and line are reported apart, so the
/// message drops them. A filter's semantic error ([`Checked`]) extends the path into its section.
fn spec_error(mut path: String, line: Option<usize>, message: &str) -> SpecError {
    let mut message = match message.find(" at line ") {
        Some(at) => &message[..at],
        None => message,
    };
    if let Some((prefix, rest)) = message.split_once(": ") {
        if !prefix.contains(' ') && !prefix.contains('`') {
            message = rest;
        }
    }
    if let Some(inner) = message.strip_prefix(CHECKED_PATH_MARK) {
        if let Some((field, rest)) = inner.split_once("`: ") {
            path = format!("{path}.{field}");
            message = rest;
        }
    }
    SpecError {
        path,
        line,
        message: message.to_owned(),
    }
}
