//! HTTP filters of the connection manager: proxy-wasm plugins, Envoy's native adaptive
//! concurrency filter (the baseline the wasm filters are compared with), and the router.

use crate::any::{Any, Message, RawAny, StringValue};
use crate::duration;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// The V8 wasm runtime name, the one stock Envoy builds ship.
pub const WASM_RUNTIME_V8: &str = "envoy.wasm.runtime.v8";

/// One entry of `HttpConnectionManager.http_filters`. Its name is what a route's
/// `typed_per_filter_config` refers to it by ([`crate::Route::per_filter_config`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpFilter {
    name: String,
    typed_config: HttpFilterConfig,
}

impl HttpFilter {
    /// `envoy.filters.http.wasm` running `filter`.
    pub fn wasm(filter: WasmFilter) -> Self {
        Self {
            name: "envoy.filters.http.wasm".to_owned(),
            typed_config: HttpFilterConfig::Wasm(Any(filter)),
        }
    }

    /// `envoy.filters.http.adaptive_concurrency`.
    pub fn adaptive_concurrency(filter: AdaptiveConcurrency) -> Self {
        Self {
            name: "envoy.filters.http.adaptive_concurrency".to_owned(),
            typed_config: HttpFilterConfig::AdaptiveConcurrency(Any(filter)),
        }
    }

    /// `envoy.filters.http.lua` running `script` (its `envoy_on_request` / `envoy_on_response`).
    pub fn lua(script: impl Into<String>) -> Self {
        Self {
            name: "envoy.filters.http.lua".to_owned(),
            typed_config: HttpFilterConfig::Lua(Any(LuaFilter {
                default_source_code: InlineSource {
                    inline_string: script.into(),
                },
            })),
        }
    }

    /// An upstream filter ([`crate::AggregateCluster::upstream_http_filter`]) that holds each gRPC
    /// response until its trailers and, when they carry a status Envoy's `retry_on` can name
    /// (CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE), copies it (and
    /// `grpc-message`) into the response headers. Envoy's router decides retries on response
    /// headers only (envoyproxy/envoy#17629), so without it a failure in the trailers is never
    /// retried. Trailers-only responses and other protocols pass untouched; the body of a held
    /// response is buffered, so route only unary calls through it. A wasm filter cannot do this:
    /// Envoy turns a wasm filter's pause of the headers into a pause of the whole response, body
    /// and trailers included.
    pub fn grpc_trailer_status_to_headers() -> Self {
        Self::lua(GRPC_TRAILER_STATUS_TO_HEADERS)
    }

    /// `envoy.filters.http.router`: must be last (the builders keep it last).
    pub fn router() -> Self {
        Self {
            name: "envoy.filters.http.router".to_owned(),
            typed_config: HttpFilterConfig::Router(Any(Router {})),
        }
    }

    /// Any HTTP filter the model has no type for (the escape hatch): `name` in the chain,
    /// configured by `config`, whose type URL picks the extension (e.g.
    /// `type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault`).
    pub fn custom(name: impl Into<String>, config: RawAny) -> Self {
        Self {
            name: name.into(),
            typed_config: HttpFilterConfig::Raw(config),
        }
    }

    /// Renames the filter (its configuration, not its name, picks the extension), so routes can
    /// address it, e.g. one of several wasm filters.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The filter's name in the chain.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The filter's typed configuration.
    pub fn config(&self) -> &HttpFilterConfig {
        &self.typed_config
    }
}

/// The typed configuration of an [`HttpFilter`], one variant per supported extension.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum HttpFilterConfig {
    /// A proxy-wasm plugin.
    Wasm(Any<WasmFilter>),
    /// Envoy's gradient-based adaptive concurrency limiter.
    AdaptiveConcurrency(Any<AdaptiveConcurrency>),
    /// The router.
    Router(Any<Router>),
    /// A Lua script.
    Lua(Any<LuaFilter>),
    /// A filter the model has no type for ([`HttpFilter::custom`]).
    Raw(RawAny),
}

/// The script of [`HttpFilter::grpc_trailer_status_to_headers`].
const GRPC_TRAILER_STATUS_TO_HEADERS: &str = r#"
-- gRPC statuses Envoy's retry_on can name: CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
-- INTERNAL, UNAVAILABLE.
local retriable = { ["1"] = true, ["4"] = true, ["8"] = true, ["13"] = true, ["14"] = true }

function envoy_on_response(response)
  local headers = response:headers()
  local content_type = headers:get("content-type")
  if content_type == nil or string.sub(content_type, 1, 16) ~= "application/grpc"
      or headers:get("grpc-status") ~= nil then
    return
  end
  -- Waits for the whole body; the headers are held meanwhile.
  response:body()
  local trailers = response:trailers()
  if trailers == nil then
    return
  end
  local status = trailers:get("grpc-status")
  if status ~= nil and retriable[status] then
    -- A wrapper from before the wait is out of scope: take the (still held) headers again.
    local held = response:headers()
    held:replace("grpc-status", status)
    local message = trailers:get("grpc-message")
    if message ~= nil then
      held:replace("grpc-message", message)
    end
  end
end
"#;

/// `envoy.extensions.filters.http.lua.v3.Lua` with its script inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LuaFilter {
    default_source_code: InlineSource,
}

impl Message for LuaFilter {
    const TYPE_URL: &'static str = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua";
}

/// `envoy.config.core.v3.DataSource` (inline string only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct InlineSource {
    inline_string: String,
}

/// `envoy.extensions.filters.http.router.v3.Router` with Envoy's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Router {}

impl Message for Router {
    const TYPE_URL: &'static str =
        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
}

/// `envoy.extensions.filters.http.wasm.v3.Wasm`: a proxy-wasm plugin loaded from a local file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WasmFilter {
    config: PluginConfig,
}

impl Message for WasmFilter {
    const TYPE_URL: &'static str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
}

/// `envoy.extensions.wasm.v3.PluginConfig`.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct PluginConfig {
    name: String,
    root_id: String,
    vm_config: VmConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    configuration: Option<Any<StringValue>>,
    failure_policy: FailurePolicy,
}

/// `envoy.extensions.wasm.v3.FailurePolicy`: what requests get while the plugin's VM is dead
/// (it failed to start, or a panic trapped it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailurePolicy {
    /// Requests are answered 503 without reaching the upstream.
    FailClosed,
    /// Requests skip the filter, as if it were not configured.
    FailOpen,
    /// Envoy creates a new VM for the next request (with backoff); requests fail closed meanwhile.
    FailReload,
}

/// `envoy.extensions.wasm.v3.VmConfig`.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct VmConfig {
    vm_id: String,
    runtime: String,
    code: AsyncDataSource,
}

/// `envoy.config.core.v3.AsyncDataSource` (local file only).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct AsyncDataSource {
    local: DataSource,
}

/// `envoy.config.core.v3.DataSource` (filename only).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct DataSource {
    filename: String,
}

impl WasmFilter {
    /// Plugin `name` running the module at `wasm_file` on V8, fail-closed
    /// ([`FailurePolicy::FailClosed`]: a dead VM answers 503 rather than silently skipping the
    /// filter), with `root_id` and
    /// `vm_id` both set to `name` and no configuration.
    pub fn new(name: impl Into<String>, wasm_file: impl AsRef<Path>) -> Self {
        let name = name.into();
        Self {
            config: PluginConfig {
                root_id: name.clone(),
                vm_config: VmConfig {
                    vm_id: name.clone(),
                    runtime: WASM_RUNTIME_V8.to_owned(),
                    code: AsyncDataSource {
                        local: DataSource {
                            filename: wasm_file.as_ref().to_string_lossy().into_owned(),
                        },
                    },
                },
                name,
                configuration: None,
                failure_policy: FailurePolicy::FailClosed,
            },
        }
    }

    /// Sets the root id the plugin's root context is created under.
    pub fn root_id(mut self, root_id: impl Into<String>) -> Self {
        self.config.root_id = root_id.into();
        self
    }

    /// Sets the VM id (plugins with the same VM id and code share one VM per worker).
    pub fn vm_id(mut self, vm_id: impl Into<String>) -> Self {
        self.config.vm_config.vm_id = vm_id.into();
        self
    }

    /// Sets the wasm runtime extension name (default [`WASM_RUNTIME_V8`]).
    pub fn runtime(mut self, runtime: impl Into<String>) -> Self {
        self.config.vm_config.runtime = runtime.into();
        self
    }

    /// Sets the plugin configuration, passed to `on_configure` as this JSON document's text.
    pub fn configuration(mut self, configuration: &serde_json::Value) -> Self {
        self.config.configuration = Some(Any(StringValue {
            value: configuration.to_string(),
        }));
        self
    }

    /// Sets the plugin configuration to `configuration` serialized as JSON: a filter's own typed
    /// configuration struct, so what the plugin receives is what the type allows.
    pub fn typed_configuration<T: serde::Serialize>(
        mut self,
        configuration: &T,
    ) -> Result<Self, serde_json::Error> {
        self.config.configuration = Some(Any(StringValue {
            value: serde_json::to_string(configuration)?,
        }));
        Ok(self)
    }

    /// Lets requests bypass the filter when its VM has failed (`false`, the default, is
    /// [`FailurePolicy::FailClosed`]).
    pub fn fail_open(self, fail_open: bool) -> Self {
        self.failure_policy(if fail_open {
            FailurePolicy::FailOpen
        } else {
            FailurePolicy::FailClosed
        })
    }

    /// Sets what requests get while the VM is dead (default [`FailurePolicy::FailClosed`]).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.config.failure_policy = policy;
        self
    }

    /// The configuration text the plugin receives, if any.
    pub fn configuration_text(&self) -> Option<&str> {
        self.config
            .configuration
            .as_ref()
            .map(|any| any.0.value.as_str())
    }

    /// The plugin name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The local path of the wasm module, as written into the config.
    pub fn wasm_file(&self) -> &str {
        &self.config.vm_config.code.local.filename
    }
}

/// `envoy.type.v3.Percent`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percent {
    /// 0.0 to 100.0.
    pub value: f64,
}

/// `envoy.extensions.filters.http.adaptive_concurrency.v3.AdaptiveConcurrency` (gradient
/// controller). [`Default`] is the configuration of Envoy's documentation: p90 samples,
/// limit recalculated every 100 ms, minRTT re-measured every 60 s over 50 requests with 10 % jitter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdaptiveConcurrency {
    /// The gradient controller's parameters.
    pub gradient_controller_config: GradientControllerConfig,
}

impl Default for AdaptiveConcurrency {
    fn default() -> Self {
        Self {
            gradient_controller_config: GradientControllerConfig {
                sample_aggregate_percentile: Some(Percent { value: 90.0 }),
                concurrency_limit_params: ConcurrencyLimitParams {
                    max_concurrency_limit: None,
                    concurrency_update_interval: Duration::from_millis(100),
                },
                min_rtt_calc_params: MinRttCalcParams {
                    interval: Some(Duration::from_secs(60)),
                    request_count: Some(50),
                    jitter: Some(Percent { value: 10.0 }),
                    min_concurrency: None,
                    buffer: None,
                },
            },
        }
    }
}

impl Message for AdaptiveConcurrency {
    const TYPE_URL: &'static str = "type.googleapis.com/envoy.extensions.filters.http.adaptive_concurrency.v3.AdaptiveConcurrency";
}

/// `GradientControllerConfig`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GradientControllerConfig {
    /// Latency percentile compared with minRTT (Envoy default p50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_aggregate_percentile: Option<Percent>,
    /// How the concurrency limit moves.
    pub concurrency_limit_params: ConcurrencyLimitParams,
    /// How minRTT is measured.
    pub min_rtt_calc_params: MinRttCalcParams,
}

/// `GradientControllerConfig.ConcurrencyLimitCalculationParams`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConcurrencyLimitParams {
    /// Upper bound of the limit (Envoy default 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency_limit: Option<u32>,
    /// Period of limit recalculation (required by Envoy).
    #[serde(serialize_with = "duration::serialize")]
    pub concurrency_update_interval: Duration,
}

/// `GradientControllerConfig.MinimumRTTCalculationParams`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinRttCalcParams {
    /// Time between minRTT measurements.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "duration::serialize_opt"
    )]
    pub interval: Option<Duration>,
    /// Requests sampled per minRTT measurement (Envoy default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_count: Option<u32>,
    /// Random delay added to `interval` (Envoy default 15 %).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Percent>,
    /// Concurrency limit while measuring minRTT (Envoy default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_concurrency: Option<u32>,
    /// Headroom added to minRTT before comparing (Envoy default 25 %).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer: Option<Percent>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn wasm_filter_is_a_fail_closed_v8_plugin_with_string_configuration() {
        let filter = HttpFilter::wasm(
            WasmFilter::new("shed", "/opt/shed.wasm")
                .root_id("shed_root")
                .vm_id("shared_vm")
                .configuration(&json!({"limit": 10})),
        );
        assert_eq!(
            serde_json::to_value(&filter).unwrap(),
            json!({
                "name": "envoy.filters.http.wasm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": "shed",
                        "root_id": "shed_root",
                        "vm_config": {
                            "vm_id": "shared_vm",
                            "runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": "/opt/shed.wasm"}}
                        },
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": "{\"limit\":10}"
                        },
                        "failure_policy": "FAIL_CLOSED"
                    }
                }
            })
        );
    }

    #[test]
    fn wasm_filter_defaults_ids_to_plugin_name_and_omits_missing_configuration() {
        let value =
            serde_json::to_value(HttpFilter::wasm(WasmFilter::new("p", "/p.wasm"))).unwrap();
        let config = &value["typed_config"]["config"];
        assert_eq!(config["root_id"], "p");
        assert_eq!(config["vm_config"]["vm_id"], "p");
        assert!(config.get("configuration").is_none());
    }

    #[test]
    fn adaptive_concurrency_defaults_follow_envoy_docs() {
        let value = serde_json::to_value(HttpFilter::adaptive_concurrency(
            AdaptiveConcurrency::default(),
        ))
        .unwrap();
        assert_eq!(value["name"], "envoy.filters.http.adaptive_concurrency");
        assert_eq!(
            value["typed_config"],
            json!({
                "@type": AdaptiveConcurrency::TYPE_URL,
                "gradient_controller_config": {
                    "sample_aggregate_percentile": {"value": 90.0},
                    "concurrency_limit_params": {"concurrency_update_interval": "0.100s"},
                    "min_rtt_calc_params": {
                        "interval": "60s",
                        "request_count": 50,
                        "jitter": {"value": 10.0}
                    }
                }
            })
        );
    }

    #[test]
    fn a_custom_filter_carries_its_name_and_raw_config() {
        let config = RawAny::new(
            "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            &json!({"max_request_bytes": 1024}),
        )
        .unwrap();
        let filter = HttpFilter::custom("buffer", config);
        assert_eq!(filter.name(), "buffer");
        assert_eq!(
            serde_json::to_value(&filter).unwrap(),
            json!({
                "name": "buffer",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                    "max_request_bytes": 1024
                }
            })
        );
        let renamed = HttpFilter::wasm(WasmFilter::new("p", "/p.wasm")).named("mesh-ingress");
        assert_eq!(
            serde_json::to_value(&renamed).unwrap()["name"],
            "mesh-ingress"
        );
    }

    #[test]
    fn router_has_only_its_type() {
        assert_eq!(
            serde_json::to_value(HttpFilter::router()).unwrap(),
            json!({"name": "envoy.filters.http.router", "typed_config": {"@type": Router::TYPE_URL}})
        );
    }
}
