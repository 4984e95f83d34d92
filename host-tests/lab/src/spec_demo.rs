//! The local sidecar of `cargo xtask up`: a service spec (by default the payment-service example)
//! rendered by the composer exactly as `mesh-bootstrap render` renders it, made local, run in a
//! real Envoy, checked once (each filter acting as the spec says) and explained with the
//! commands that show each filter at work.
//!
//! Made local means: the app (on 127.0.0.1), every egress dependency (the entity cache among
//! them) and every sandbox (each on its own 127.1.x.y address) become lab upstreams answering any gRPC method (health checks
//! included), and the sandbox router trusts 127.0.0.1 as a mesh pod, so 127.0.0.2 plays an
//! untrusted client. Nothing else of the spec changes.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use envoy_configs::compose::render::{render_local, LocalRenderError, Modules, Rendered};
use envoy_configs::compose::spec::{Protocol, ServiceSpec, SpecFormat};
use http::Request;
use http_body_util::Empty;
use mesh_envoy_harness::{DrainStrategy, EnvoyOptions};
use serde_json::{json, Value};

use crate::grpc_wire::{raw_grpc_call, GrpcCall};
use crate::keepalive;
use crate::upstream::{
    ServiceTime, Upstream, UpstreamConfig, UpstreamHandle, UPSTREAM_NAME_HEADER,
};

/// The spec `cargo xtask up` runs unless given another, relative to the workspace root.
pub const DEFAULT_SPEC: &str = "envoy-configs/examples/payment-service/spec.yaml";

/// The address the sandbox router is told to trust: the demo's own clients.
const TRUSTED_CLIENT: &str = "127.0.0.1/32";
/// A loopback address outside [`TRUSTED_CLIENT`]: an untrusted client.
pub const UNTRUSTED_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The app's capacity: overload it with a few hundred concurrent calls.
const APP_WORKERS: usize = 32;
const APP_SERVICE_TIME: Duration = Duration::from_millis(10);
/// What the checks call on the app when nothing in the spec names a method.
const APP_GRPC_PATH: &str = "/mesh.test.v1.Echo/Get";
const APP_HTTP_PATH: &str = "/hello";

/// Why the demo cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SpecDemoError {
    /// The spec file cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The spec file.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// The spec (or its local copy) is invalid or does not render.
    #[error("{path}: {message}")]
    Spec {
        /// The spec file.
        path: PathBuf,
        /// The error, naming the field.
        message: String,
    },
    /// A module the rendered sidecar loads is missing or stale.
    #[error(transparent)]
    Module(#[from] mesh_catalog::ModuleError),
    /// A demo upstream could not start.
    #[error("demo upstream `{name}`: {source}")]
    Upstream {
        /// The upstream's name.
        name: String,
        /// Why.
        source: crate::upstream::UpstreamError,
    },
    /// No free port for a listener.
    #[error("no free port: {0}")]
    Port(String),
}

/// Which ports the sidecar listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// The spec's own (what the guide of `cargo xtask up` shows).
    Spec,
    /// Free ones (tests running beside each other).
    Free,
}

/// The spec made local, its rendered sidecar and the upstreams standing in for the app, its
/// dependencies and its sandboxes.
pub struct SpecDemo {
    /// The spec the sidecar was rendered from, after the local changes.
    pub spec: ServiceSpec,
    /// The rendered sidecar (modules from this checkout's build).
    pub rendered: Rendered,
    /// The spec as JSON (filter sections as written, for the guide and the checks).
    json: Value,
    /// The spec file.
    path: PathBuf,
    /// App first, then dependencies, then sandboxes.
    upstreams: Vec<UpstreamHandle>,
}

/// One thing the demo checked through the running sidecar.
#[derive(Debug, Clone)]
pub struct Check {
    /// The filter (or `router`) acting.
    pub filter: &'static str,
    /// What should happen.
    pub expected: String,
    /// `Err` with what happened instead.
    pub outcome: Result<(), String>,
}

/// What a call got back.
struct Answer {
    /// The HTTP status, or the `grpc-status` of a gRPC call.
    status: String,
    /// The upstream that answered.
    served_by: Option<String>,
}

impl SpecDemo {
    /// Reads the spec at `path`, starts its upstreams on the current tokio runtime and renders
    /// the local sidecar. Fails on an invalid spec (naming the field), a missing or stale module,
    /// or an upstream that cannot bind.
    pub async fn start(path: &Path, ports: Ports) -> Result<Self, SpecDemoError> {
        let spec_error = |message: String| SpecDemoError::Spec {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| SpecDemoError::Read {
            path: path.to_owned(),
            source,
        })?;
        let format = SpecFormat::of_path(path);
        let spec = ServiceSpec::parse(&text, format).map_err(|err| spec_error(err.to_string()))?;
        let mut json: Value = match format {
            SpecFormat::Yaml => {
                serde_yaml_ng::from_str(&text).map_err(|err| spec_error(err.to_string()))?
            }
            SpecFormat::Json => {
                serde_json::from_str(&text).map_err(|err| spec_error(err.to_string()))?
            }
        };

        let mut upstreams = Vec::new();
        let app = start_upstream(UpstreamConfig {
            workers: APP_WORKERS,
            service_time: ServiceTime::Constant(APP_SERVICE_TIME),
            ..UpstreamConfig::new(spec.service.clone())
        })
        .await?;
        json["app"]["port"] = json!(app.port());
        upstreams.push(app);
        for (index, dependency) in spec.dependencies.iter().enumerate() {
            let upstream = start_upstream(UpstreamConfig {
                ip: local_address(index),
                ..UpstreamConfig::new(dependency.name.clone())
            })
            .await?;
            json["dependencies"][index]["address"] = json!(upstream.addr().ip().to_string());
            json["dependencies"][index]["port"] = json!(upstream.port());
            upstreams.push(upstream);
        }
        for (index, sandbox) in spec.sandboxes.iter().enumerate() {
            let name = format!("{}-{}", spec.service, sandbox.name);
            let upstream = start_upstream(UpstreamConfig {
                ip: local_address(spec.dependencies.len() + index),
                ..UpstreamConfig::new(name)
            })
            .await?;
            json["sandboxes"][index]["address"] = json!(upstream.addr().ip().to_string());
            json["sandboxes"][index]["port"] = json!(upstream.port());
            upstreams.push(upstream);
        }
        if let Some(router) = json["filters"]["sandbox_router"].as_object_mut() {
            let trusted = router.entry("trusted_sources").or_insert_with(|| json!([]));
            if let Some(list) = trusted.as_array_mut() {
                list.push(json!(TRUSTED_CLIENT));
            }
        }
        if ports == Ports::Free {
            let free = || {
                mesh_envoy_harness::reserve_port()
                    .map_err(|err| SpecDemoError::Port(err.to_string()))
            };
            json["ingress"]["port"] = json!(free()?);
            json["egress"]["port"] = json!(free()?);
            json["admin"]["port"] = json!(free()?);
            json["admin"]["prometheus_port"] = json!(free()?);
        }
        let spec = ServiceSpec::parse(&json.to_string(), SpecFormat::Json)
            .map_err(|err| spec_error(format!("the local copy: {err}")))?;
        let rendered = render_local(&spec, Modules::Suite).map_err(|err| match err {
            LocalRenderError::Spec(err) => spec_error(err.to_string()),
            LocalRenderError::Module(err) => SpecDemoError::Module(err),
        })?;
        Ok(Self {
            spec,
            rendered,
            json,
            path: path.to_owned(),
            upstreams,
        })
    }

    /// How to run the sidecar: as the composer requires, with the immediate drain strategy.
    pub fn envoy_options() -> EnvoyOptions {
        EnvoyOptions {
            drain_strategy: Some(DrainStrategy::Immediate),
            ..EnvoyOptions::default()
        }
    }

    /// The sidecar's ingress listener, on loopback.
    pub fn ingress(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.spec.ingress.port))
    }

    /// The sidecar's egress listener.
    pub fn egress(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.spec.egress.port))
    }

    /// Envoy's admin interface.
    pub fn admin(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.spec.admin.port))
    }

    /// The upstream standing in for the app, a dependency or a sandbox, by its name (the
    /// service's, the dependency's, or `<service>-<sandbox>`).
    pub fn upstream(&self, name: &str) -> Option<&UpstreamHandle> {
        self.upstreams
            .iter()
            .find(|upstream| upstream.name() == name)
    }

    /// The filters the sidecar runs (crate names, each once, in chain order).
    pub fn filters(&self) -> Vec<&'static str> {
        let mut filters = Vec::new();
        for slot in self
            .rendered
            .plugins
            .iter()
            .flat_map(|plugin| &plugin.filters)
        {
            if !filters.contains(&slot.filter) {
                filters.push(slot.filter);
            }
        }
        filters
    }

    /// Calls the running sidecar once per behaviour the spec asks of it and reports each.
    pub async fn check(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        let service = self.spec.service.as_str();
        let app_path = self.app_path();
        checks.push(
            self.expect_served(
                "router",
                format!("a call of {app_path} to the ingress reaches the app"),
                self.call(
                    self.ingress(),
                    None,
                    &app_path,
                    &[],
                    Ipv4Addr::LOCALHOST,
                    self.grpc_app(),
                ),
                service,
            )
            .await,
        );
        for dependency in &self.spec.dependencies {
            let grpc = matches!(dependency.protocol, Protocol::Grpc);
            let path = if grpc { APP_GRPC_PATH } else { APP_HTTP_PATH };
            let name = dependency.name.as_str();
            checks.push(
                self.expect_served(
                    "router",
                    format!(
                        "a call of {path} to host `{name}` through the egress reaches `{name}`"
                    ),
                    self.call(
                        self.egress(),
                        Some(name),
                        path,
                        &[],
                        Ipv4Addr::LOCALHOST,
                        grpc,
                    ),
                    name,
                )
                .await,
            );
        }
        let filters = self.filters();
        if let (true, Some(sandbox)) = (
            filters.contains(&"sandbox-router"),
            self.spec.sandboxes.first(),
        ) {
            let deployment = format!("{service}-{}", sandbox.name);
            let key_header = self.filter_setting("sandbox_router", "key_header", "x-sandbox");
            let baggage_key = self.filter_setting("sandbox_router", "baggage_key", "sandbox");
            let keyed = [(key_header.as_str(), sandbox.name.as_str())];
            checks.push(
                self.expect_served(
                    "sandbox-router",
                    format!(
                        "`{key_header}: {}` from a trusted client reaches the sandbox",
                        sandbox.name
                    ),
                    self.call(
                        self.ingress(),
                        None,
                        &app_path,
                        &keyed,
                        Ipv4Addr::LOCALHOST,
                        self.grpc_app(),
                    ),
                    &deployment,
                )
                .await,
            );
            let baggage = format!("{baggage_key}={}", sandbox.name);
            checks.push(
                self.expect_served(
                    "sandbox-router",
                    format!("`baggage: {baggage}` from a trusted client reaches the sandbox"),
                    self.call(
                        self.ingress(),
                        None,
                        &app_path,
                        &[("baggage", &baggage)],
                        Ipv4Addr::LOCALHOST,
                        self.grpc_app(),
                    ),
                    &deployment,
                )
                .await,
            );
            checks.push(
                self.expect_served(
                    "sandbox-router",
                    format!("the same key from {UNTRUSTED_CLIENT} (untrusted) reaches the app"),
                    self.call(
                        self.ingress(),
                        None,
                        &app_path,
                        &keyed,
                        UNTRUSTED_CLIENT,
                        self.grpc_app(),
                    ),
                    service,
                )
                .await,
            );
        }
        if let (true, Some(rule)) = (filters.contains(&"entity-cache"), self.cache_rule()) {
            let bypass = self.filter_setting("entity_cache", "bypass_header", "x-entity-cache");
            checks.push(
                self.expect_served(
                    "entity-cache",
                    format!(
                        "a cacheable call {} to `{}` is served by `{}`",
                        rule.path, rule.origin, rule.cache
                    ),
                    self.call(
                        self.egress(),
                        Some(&rule.origin),
                        &rule.path,
                        &[],
                        Ipv4Addr::LOCALHOST,
                        rule.grpc,
                    ),
                    &rule.cache,
                )
                .await,
            );
            checks.push(
                self.expect_served(
                    "entity-cache",
                    format!(
                        "the same call with `{bypass}: bypass` is served by `{}`",
                        rule.origin
                    ),
                    self.call(
                        self.egress(),
                        Some(&rule.origin),
                        &rule.path,
                        &[(bypass.as_str(), "bypass")],
                        Ipv4Addr::LOCALHOST,
                        rule.grpc,
                    ),
                    &rule.origin,
                )
                .await,
            );
        }
        if filters.contains(&"drain-signal") {
            let path = self.filter_setting("drain_signal", "path", "/.mesh/drain");
            let outcome = self
                .call(self.ingress(), None, &path, &[], Ipv4Addr::LOCALHOST, false)
                .await
                .and_then(|answer| match answer.status.as_str() {
                    "200" => Ok(()),
                    other => Err(format!("got HTTP {other}")),
                });
            checks.push(Check {
                filter: "drain-signal",
                expected: format!("GET {path} answers the drain state (200) without draining"),
                outcome,
            });
        }
        let stats = self.prometheus().await;
        for filter in filters {
            let prefix = format!("mesh_{}_", filter.replace('-', "_"));
            checks.push(Check {
                filter,
                expected: format!("its metrics `*{prefix}*` are on the Prometheus listener"),
                outcome: match &stats {
                    Ok(text) if text.contains(&prefix) => Ok(()),
                    Ok(_) => Err("none found".to_owned()),
                    Err(err) => Err(err.clone()),
                },
            });
        }
        checks
    }

    /// What is running where, the checks' results, and the commands that show each filter at
    /// work.
    pub fn guide(&self, checks: &[Check]) -> String {
        let ingress = format!("http://{}", self.ingress());
        let egress = format!("http://{}", self.egress());
        let admin = format!("http://{}", self.admin());
        let prometheus = format!(
            "http://127.0.0.1:{}/stats/prometheus",
            self.spec.admin.prometheus_port
        );
        let service = &self.spec.service;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "mesh-filters: the `{service}` sidecar is up, rendered from {}",
            self.path.display()
        );
        let _ = writeln!(
            out,
            "  (as `mesh-bootstrap render` renders it; upstreams on loopback stand in for the app,"
        );
        let trust = if self.filters().contains(&"sandbox-router") {
            format!(", and the sandbox router trusts {TRUSTED_CLIENT}")
        } else {
            String::new()
        };
        let _ = writeln!(out, "  its dependencies and sandboxes{trust})");
        let _ = writeln!(out, "  ingress:    {ingress}   (in front of the app)");
        let _ = writeln!(
            out,
            "  egress:     {egress}   (the app's calls out, by host name)"
        );
        let _ = writeln!(out, "  admin:      {admin}");
        let _ = writeln!(out, "  prometheus: {prometheus}");
        for upstream in &self.upstreams {
            let _ = writeln!(out, "  upstream `{}`: {}", upstream.name(), upstream.url());
        }
        for note in &self.rendered.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        let _ = writeln!(out, "\nChecked through the sidecar:");
        for check in checks {
            let verdict = match &check.outcome {
                Ok(()) => "ok  ".to_owned(),
                Err(err) => format!("FAIL ({err})"),
            };
            let _ = writeln!(out, "  {verdict} {}: {}", check.filter, check.expected);
        }

        let app_curl = curl(self.grpc_app());
        let app_path = self.app_path();
        let _ = writeln!(out, "\nTry it (every response names the upstream that answered in `{UPSTREAM_NAME_HEADER}`):");
        let _ = writeln!(out, "  {app_curl} {ingress}{app_path}");
        let filters = self.filters();
        if filters.contains(&"load-shedder") {
            let _ = writeln!(out, "\nload-shedder: overload the app ({APP_WORKERS} workers, {} ms a call); low criticality is shed first", APP_SERVICE_TIME.as_millis());
            if self.grpc_app() {
                let _ = writeln!(out, "(a shed gRPC call is HTTP 200 with grpc-status UNAVAILABLE, so hey counts it as 200: the counters tell):");
            }
            let (low, high) = self.shedding_calls();
            let method = if self.grpc_app() {
                " -m POST -T application/grpc"
            } else {
                ""
            };
            let target = |call: &str| {
                if call.contains("{ingress}") {
                    call.replace("{ingress}", &ingress)
                } else {
                    format!("{ingress}{call}")
                }
            };
            let _ = writeln!(out, "  hey -z 10s -c 300{method} {} &", target(&low));
            let _ = writeln!(out, "  hey -z 10s -c 20{method} {}", target(&high));
            let _ = writeln!(out, "  curl -s {prometheus} | grep mesh_load_shedder");
        }
        if filters.contains(&"retry-budget") {
            let _ = writeln!(out, "\nretry-budget: the server role on the ingress answers retries beyond 20 % of first attempts with 503 + retry-after;");
            let _ = writeln!(out, "the client role on the egress sets `x-envoy-max-retries` on every call from the budget of its dependency:");
            let _ = writeln!(out, "  hey -z 10s -c 10 -q 20 {ingress}/ & hey -z 10s -c 10 -q 20 -H 'x-envoy-attempt-count: 2' {ingress}/");
            let _ = writeln!(out, "  curl -s {prometheus} | grep mesh_retry_budget");
        }
        if let (true, Some(sandbox)) = (
            filters.contains(&"sandbox-router"),
            self.spec.sandboxes.first(),
        ) {
            let key_header = self.filter_setting("sandbox_router", "key_header", "x-sandbox");
            let _ = writeln!(out, "\nsandbox-router: a key in a header or W3C baggage picks the sandbox; untrusted sources are stripped:");
            let _ = writeln!(
                out,
                "  {app_curl} -H '{key_header}: {}' {ingress}{app_path}",
                sandbox.name
            );
            let _ = writeln!(out, "  {app_curl} --interface {UNTRUSTED_CLIENT} -H '{key_header}: {}' {ingress}{app_path}   # untrusted", sandbox.name);
        }
        if let (true, Some(rule)) = (filters.contains(&"entity-cache"), self.cache_rule()) {
            let bypass = self.filter_setting("entity_cache", "bypass_header", "x-entity-cache");
            let rule_curl = curl(rule.grpc);
            let _ = writeln!(out, "\nentity-cache: cacheable calls to `{}` go to `{}`, and to `{}` when the cache fails:", rule.origin, rule.cache, rule.origin);
            let _ = writeln!(
                out,
                "  {rule_curl} -H 'host: {}' {egress}{}",
                rule.origin, rule.path
            );
            let _ = writeln!(
                out,
                "  {rule_curl} -H 'host: {}' -H '{bypass}: bypass' {egress}{}",
                rule.origin, rule.path
            );
            let _ = writeln!(out, "  curl -s {prometheus} | grep mesh_entity_cache");
        }
        if filters.contains(&"drain-signal") {
            let path = self.filter_setting("drain_signal", "path", "/.mesh/drain");
            let _ = writeln!(out, "\ndrain-signal: what the Kubernetes preStop hook does; health checks fail at once, the ingress drains after the delay");
            let _ = writeln!(out, "(try it last, then restart `cargo xtask up`):");
            let _ = writeln!(out, "  curl -s -X POST {ingress}{path}; curl -si {ingress}/healthz | head -1; curl -s {ingress}{path}");
        }
        for filter in filters {
            if let Some(scenario) = mesh_catalog::module(filter)
                .ok()
                .and_then(|module| module.scenario)
            {
                let _ = writeln!(out, "\n{filter} beside its Envoy-native alternative: cargo xtask scenario {scenario}");
            }
        }
        out
    }

    fn grpc_app(&self) -> bool {
        matches!(self.spec.app.protocol, Protocol::Grpc)
    }

    /// The path the checks and the guide call on the app: for gRPC, the load shedder's most
    /// critical method when the spec names one.
    fn app_path(&self) -> String {
        let (_, critical) = self.shedding_calls();
        match (self.grpc_app(), critical.starts_with('/')) {
            (true, true) => critical,
            (true, false) => APP_GRPC_PATH.to_owned(),
            (false, _) => APP_HTTP_PATH.to_owned(),
        }
    }

    /// A sheddable and a critical call to the app: a path of the load shedder's criticality
    /// routes when the spec has one, else the app's default path with the criticality header.
    fn shedding_calls(&self) -> (String, String) {
        let criticality = &self.json["filters"]["load_shedder"]["criticality"];
        let routes = criticality["routes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let header = criticality["header"]
            .as_str()
            .unwrap_or("x-request-criticality")
            .to_owned();
        let default = if self.grpc_app() {
            APP_GRPC_PATH
        } else {
            APP_HTTP_PATH
        };
        let call_of = |wanted: &[&str]| {
            routes
                .iter()
                .find_map(|route| {
                    let level = route["criticality"].as_str()?;
                    if !wanted.contains(&level) {
                        return None;
                    }
                    match (route["grpc_method"].as_str(), route["path_prefix"].as_str()) {
                        (Some(method), _) => Some(format!("/{method}")),
                        (None, Some(prefix)) => Some(format!("{prefix}1")),
                        (None, None) => None,
                    }
                })
                .unwrap_or_else(|| format!("-H '{header}: {}' {{ingress}}{default}", wanted[0]))
        };
        (
            call_of(&["sheddable"]),
            call_of(&["critical-plus", "critical"]),
        )
    }

    /// A filter's string setting as the spec wrote it, or its default.
    fn filter_setting(&self, section: &str, field: &str, default: &str) -> String {
        self.json["filters"][section][field]
            .as_str()
            .unwrap_or(default)
            .to_owned()
    }

    /// The entity cache's first rule, as a call to make.
    fn cache_rule(&self) -> Option<CacheRule> {
        let rule = self.json["filters"]["entity_cache"]["rules"].get(0)?;
        let (path, grpc) = match (rule["grpc_method"].as_str(), rule["path_prefix"].as_str()) {
            (Some(method), _) => (format!("/{}", method.replace("/*", "/Get")), true),
            (None, Some(prefix)) => (format!("{prefix}1"), false),
            (None, None) => return None,
        };
        Some(CacheRule {
            path,
            grpc,
            cache: rule["cache_cluster"].as_str()?.to_owned(),
            origin: rule["origin_cluster"].as_str()?.to_owned(),
        })
    }

    async fn expect_served(
        &self,
        filter: &'static str,
        expected: String,
        call: impl std::future::Future<Output = Result<Answer, String>>,
        upstream: &str,
    ) -> Check {
        let outcome = call
            .await
            .and_then(|answer| match answer.served_by.as_deref() {
                Some(name) if name == upstream => Ok(()),
                other => Err(format!(
                    "served by {} (status {})",
                    other.unwrap_or("no upstream"),
                    answer.status
                )),
            });
        Check {
            filter,
            expected,
            outcome,
        }
    }

    /// One call through a listener: gRPC (an empty message, any method) or HTTP GET.
    async fn call(
        &self,
        listener: SocketAddr,
        authority: Option<&str>,
        path: &str,
        headers: &[(&str, &str)],
        source: Ipv4Addr,
        grpc: bool,
    ) -> Result<Answer, String> {
        if grpc {
            let mut call = GrpcCall::new(listener, path).from_source(IpAddr::V4(source));
            if let Some(authority) = authority {
                call = call.authority(authority);
            }
            for (name, value) in headers {
                call = call.header(*name, *value);
            }
            let response = raw_grpc_call(&call).await.map_err(|err| err.to_string())?;
            return Ok(Answer {
                status: response.grpc_status().map_or_else(
                    || format!("HTTP {}", response.status),
                    |code| format!("grpc-status {code}"),
                ),
                served_by: response.header(UPSTREAM_NAME_HEADER).map(str::to_owned),
            });
        }
        let mut request = Request::get(path).header("host", authority.unwrap_or("demo"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|err| err.to_string())?;
        let (status, response_headers, _) = keepalive::exchange(source, listener, request).await?;
        Ok(Answer {
            status: status.as_str().to_owned(),
            served_by: response_headers
                .get(UPSTREAM_NAME_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
        })
    }

    /// The Prometheus listener's page.
    async fn prometheus(&self) -> Result<String, String> {
        let request = Request::get("/stats/prometheus")
            .header("host", "prometheus")
            .body(Empty::<Bytes>::new())
            .map_err(|err| err.to_string())?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.spec.admin.prometheus_port));
        let (status, _, body) = keepalive::exchange(Ipv4Addr::LOCALHOST, addr, request).await?;
        if !status.is_success() {
            return Err(format!("the Prometheus listener answered {status}"));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// The curl command line calling the sidecar: gRPC (an empty message over HTTP/2, trailers
/// shown) or plain HTTP.
fn curl(grpc: bool) -> &'static str {
    if grpc {
        r"printf '\0\0\0\0\0' | curl -si --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @-"
    } else {
        "curl -si"
    }
}

/// The entity cache's first rule, as a demo call.
struct CacheRule {
    path: String,
    grpc: bool,
    cache: String,
    origin: String,
}

/// The loopback address of the `index`th dependency or sandbox: each its own, as each has its own
/// host name in the mesh (the composer refuses two dependencies on one address).
fn local_address(index: usize) -> Ipv4Addr {
    let [high, low] = u16::try_from(index + 1).unwrap_or(u16::MAX).to_be_bytes();
    Ipv4Addr::new(127, 1, high, low)
}

async fn start_upstream(config: UpstreamConfig) -> Result<UpstreamHandle, SpecDemoError> {
    let name = config.name.clone();
    Upstream::start(UpstreamConfig {
        any_grpc_method: true,
        ..config
    })
    .await
    .map_err(|source| SpecDemoError::Upstream { name, source })
}
