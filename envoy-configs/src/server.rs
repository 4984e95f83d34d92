//! Process-wide settings of the bootstrap: which stats exist (an inclusion list keeps the metrics
//! bill bounded) and the overload manager (what protects the proxy itself once circuit breakers are
//! off).

use crate::any::{Any, Message};
use crate::duration;
use crate::route::StringMatcher;
use serde::Serialize;
use std::time::Duration;

/// `envoy.config.metrics.v3.StatsConfig` (the stats matcher only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsConfig {
    stats_matcher: StatsMatcher,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct StatsMatcher {
    inclusion_list: ListStringMatcher,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct ListStringMatcher {
    patterns: Vec<StringMatcher>,
}

impl StatsConfig {
    /// Only stats whose name matches one of `patterns` exist; Envoy creates no others (they cost
    /// memory in the proxy and a time series each in Prometheus).
    pub fn inclusion_list(patterns: impl IntoIterator<Item = StringMatcher>) -> Self {
        Self {
            stats_matcher: StatsMatcher {
                inclusion_list: ListStringMatcher {
                    patterns: patterns.into_iter().collect(),
                },
            },
        }
    }

    /// The patterns of the inclusion list.
    pub fn patterns(&self) -> &[StringMatcher] {
        &self.stats_matcher.inclusion_list.patterns
    }
}

/// `envoy.config.overload.v3.OverloadManager`: resource monitors and the actions they trigger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverloadManager {
    #[serde(serialize_with = "duration::serialize")]
    refresh_interval: Duration,
    resource_monitors: Vec<ResourceMonitor>,
    actions: Vec<OverloadAction>,
}

/// `envoy.config.overload.v3.ResourceMonitor`.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct ResourceMonitor {
    name: &'static str,
    typed_config: MonitorConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
enum MonitorConfig {
    FixedHeap(Any<FixedHeapConfig>),
    DownstreamConnections(Any<DownstreamConnectionsConfig>),
}

/// `envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct FixedHeapConfig {
    max_heap_size_bytes: u64,
}

impl Message for FixedHeapConfig {
    const TYPE_URL: &'static str =
        "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig";
}

/// `envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct DownstreamConnectionsConfig {
    max_active_downstream_connections: u64,
}

impl Message for DownstreamConnectionsConfig {
    const TYPE_URL: &'static str = "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig";
}

/// `envoy.config.overload.v3.OverloadAction` with one threshold trigger.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct OverloadAction {
    name: &'static str,
    triggers: [Trigger; 1],
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Trigger {
    name: &'static str,
    threshold: Threshold,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Threshold {
    value: f64,
}

const FIXED_HEAP: &str = "envoy.resource_monitors.fixed_heap";
const DOWNSTREAM_CONNECTIONS: &str = "envoy.resource_monitors.global_downstream_max_connections";

impl OverloadManager {
    /// Protects the proxy: past 95 % of `max_heap_bytes` Envoy returns freed memory to the OS,
    /// past 98 % it answers new requests 503 instead of growing until the kernel kills it; and it
    /// accepts at most `max_downstream_connections` connections over all listeners.
    pub fn protect_proxy(max_heap_bytes: u64, max_downstream_connections: u64) -> Self {
        let heap_action = |name, value| OverloadAction {
            name,
            triggers: [Trigger {
                name: FIXED_HEAP,
                threshold: Threshold { value },
            }],
        };
        Self {
            refresh_interval: Duration::from_millis(250),
            resource_monitors: vec![
                ResourceMonitor {
                    name: FIXED_HEAP,
                    typed_config: MonitorConfig::FixedHeap(Any(FixedHeapConfig {
                        max_heap_size_bytes: max_heap_bytes,
                    })),
                },
                ResourceMonitor {
                    name: DOWNSTREAM_CONNECTIONS,
                    typed_config: MonitorConfig::DownstreamConnections(Any(
                        DownstreamConnectionsConfig {
                            max_active_downstream_connections: max_downstream_connections,
                        },
                    )),
                },
            ],
            actions: vec![
                heap_action("envoy.overload_actions.shrink_heap", 0.95),
                heap_action("envoy.overload_actions.stop_accepting_requests", 0.98),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn inclusion_list_is_a_list_of_string_matchers() {
        let stats = StatsConfig::inclusion_list([StringMatcher::Prefix("wasmcustom.mesh.".into())]);
        assert_eq!(
            serde_json::to_value(&stats).unwrap(),
            json!({"stats_matcher": {"inclusion_list": {"patterns": [{"prefix": "wasmcustom.mesh."}]}}})
        );
    }

    #[test]
    fn overload_manager_watches_heap_and_connections() {
        let value = serde_json::to_value(OverloadManager::protect_proxy(1 << 30, 50_000)).unwrap();
        assert_eq!(value["refresh_interval"], "0.250s");
        assert_eq!(
            value["resource_monitors"][0]["typed_config"]["max_heap_size_bytes"],
            1u64 << 30
        );
        assert_eq!(
            value["resource_monitors"][1]["typed_config"]["max_active_downstream_connections"],
            50_000
        );
        assert_eq!(
            value["actions"][1],
            json!({"name": "envoy.overload_actions.stop_accepting_requests",
                   "triggers": [{"name": FIXED_HEAP, "threshold": {"value": 0.98}}]})
        );
    }
}
