//! Upstream clusters: STATIC and STRICT_DNS endpoint lists (with priority levels), aggregate
//! clusters, upstream HTTP version, circuit breaker thresholds, and the admin cluster pattern.

use crate::any::{Any, Message};
use crate::duration;
use crate::http_filters::Percent;
use crate::listener::{Address, CommonHttpProtocolOptions, SocketAddress};
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Connect timeout of clusters built by this module unless overridden.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// `Cluster.DiscoveryType` (the built-in kinds the mesh uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiscoveryType {
    /// Fixed IP endpoints.
    Static,
    /// Hostnames re-resolved periodically; every resolved address is an endpoint.
    StrictDns,
}

/// `Cluster.LbPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LbPolicy {
    /// Round robin (Envoy's default).
    RoundRobin,
    /// Power of two choices on active requests.
    LeastRequest,
    /// Uniform random.
    Random,
    /// The cluster extension balances (required by aggregate clusters).
    ClusterProvided,
}

/// `Cluster.DnsLookupFamily`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DnsLookupFamily {
    /// IPv4 only.
    V4Only,
    /// IPv6 only.
    V6Only,
    /// IPv6 first, IPv4 if no IPv6 address.
    Auto,
}

/// Which HTTP version Envoy speaks to a cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamHttpProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

/// `envoy.config.cluster.v3.Cluster`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    name: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    discovery_type: Option<DiscoveryType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_type: Option<CustomClusterType>,
    #[serde(serialize_with = "duration::serialize")]
    connect_timeout: Duration,
    lb_policy: LbPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_lookup_family: Option<DnsLookupFamily>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_assignment: Option<ClusterLoadAssignment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    typed_extension_protocol_options: Option<ProtocolOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit_breakers: Option<CircuitBreakers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outlier_detection: Option<OutlierDetection>,
}

impl Cluster {
    fn with_discovery(name: String, discovery_type: DiscoveryType) -> Self {
        Self {
            load_assignment: Some(ClusterLoadAssignment {
                cluster_name: name.clone(),
                endpoints: Vec::new(),
            }),
            name,
            discovery_type: Some(discovery_type),
            cluster_type: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            lb_policy: LbPolicy::RoundRobin,
            dns_lookup_family: None,
            typed_extension_protocol_options: None,
            circuit_breakers: None,
            outlier_detection: None,
        }
    }

    /// A STATIC round-robin cluster over `endpoints` at priority 0, connect timeout 1 s,
    /// HTTP/1.1 upstream.
    pub fn static_cluster(
        name: impl Into<String>,
        endpoints: impl IntoIterator<Item = SocketAddr>,
    ) -> Self {
        Self::with_discovery(name.into(), DiscoveryType::Static).priority(0, endpoints)
    }

    /// A STRICT_DNS round-robin cluster over `(hostname, port)` endpoints at priority 0.
    pub fn strict_dns<H: Into<String>>(
        name: impl Into<String>,
        hosts: impl IntoIterator<Item = (H, u16)>,
    ) -> Self {
        let mut cluster = Self::with_discovery(name.into(), DiscoveryType::StrictDns);
        cluster.add_endpoints(
            0,
            hosts.into_iter().map(|(host, port)| Address {
                socket_address: SocketAddress {
                    address: host.into(),
                    port_value: port,
                },
            }),
        );
        cluster
    }

    /// An aggregate cluster (`envoy.clusters.aggregate`): `clusters` in order are priority levels
    /// 0, 1, ...; traffic goes to the first healthy one, and retries with
    /// [`crate::RetryPriority::previous_priorities`] fail over down the list.
    pub fn aggregate<C: Into<String>>(
        name: impl Into<String>,
        clusters: impl IntoIterator<Item = C>,
    ) -> Self {
        Self {
            name: name.into(),
            discovery_type: None,
            cluster_type: Some(CustomClusterType {
                name: "envoy.clusters.aggregate",
                typed_config: Any(AggregateClusterConfig {
                    clusters: clusters.into_iter().map(Into::into).collect(),
                }),
            }),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            lb_policy: LbPolicy::ClusterProvided,
            dns_lookup_family: None,
            load_assignment: None,
            typed_extension_protocol_options: None,
            circuit_breakers: None,
            outlier_detection: None,
        }
    }

    /// The admin cluster pattern: a STATIC cluster pointing at this Envoy's own admin interface
    /// (`127.0.0.1:<admin_port>`), so a wasm filter can `dispatch_http_call` to admin endpoints.
    pub fn admin(name: impl Into<String>, admin_port: u16) -> Self {
        Self::static_cluster(name, [SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port))])
    }

    /// Adds `endpoints` at priority level `priority` (0 is tried first). Only for STATIC clusters
    /// in practice; for an aggregate cluster this adds a load assignment Envoy rejects.
    pub fn priority(
        mut self,
        priority: u32,
        endpoints: impl IntoIterator<Item = SocketAddr>,
    ) -> Self {
        self.add_endpoints(priority, endpoints.into_iter().map(Address::from));
        self
    }

    fn add_endpoints(&mut self, priority: u32, addresses: impl Iterator<Item = Address>) {
        let assignment = self
            .load_assignment
            .get_or_insert_with(|| ClusterLoadAssignment {
                cluster_name: self.name.clone(),
                endpoints: Vec::new(),
            });
        assignment.endpoints.push(LocalityLbEndpoints {
            priority,
            lb_endpoints: addresses
                .map(|address| LbEndpoint {
                    endpoint: Endpoint { address },
                })
                .collect(),
        });
    }

    /// Sets the TCP connect timeout (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the load-balancing policy (default round robin; aggregate clusters keep
    /// `CLUSTER_PROVIDED`).
    pub fn lb_policy(mut self, policy: LbPolicy) -> Self {
        self.lb_policy = policy;
        self
    }

    /// Sets the DNS address family (STRICT_DNS clusters).
    pub fn dns_lookup_family(mut self, family: DnsLookupFamily) -> Self {
        self.dns_lookup_family = Some(family);
        self
    }

    /// Speaks `protocol` to the endpoints (`HttpProtocolOptions.explicit_http_config`).
    pub fn upstream_protocol(mut self, protocol: UpstreamHttpProtocol) -> Self {
        let explicit_http_config = match protocol {
            UpstreamHttpProtocol::Http1 => ExplicitHttpConfig::HttpProtocolOptions(Empty {}),
            UpstreamHttpProtocol::Http2 => ExplicitHttpConfig::Http2ProtocolOptions(Empty {}),
        };
        self.http_protocol_options().explicit_http_config = explicit_http_config;
        self
    }

    /// Closes each upstream connection once it is `age` old (drained first). A client age below
    /// the server's own limit means the client, not the server, retires a connection, so no
    /// request races a server-side close.
    pub fn max_connection_duration(mut self, age: Duration) -> Self {
        self.http_protocol_options().common_http_protocol_options =
            Some(CommonHttpProtocolOptions {
                max_connection_duration: age,
            });
        self
    }

    /// The cluster's HTTP protocol options, created as HTTP/1.1 if not set yet (Envoy requires
    /// an upstream protocol whenever the options are present).
    fn http_protocol_options(&mut self) -> &mut HttpProtocolOptions {
        &mut self
            .typed_extension_protocol_options
            .get_or_insert(ProtocolOptions {
                http: Any(HttpProtocolOptions {
                    explicit_http_config: ExplicitHttpConfig::HttpProtocolOptions(Empty {}),
                    common_http_protocol_options: None,
                }),
            })
            .http
            .0
    }

    /// Speaks HTTP/2 (h2c) to the endpoints.
    pub fn http2(self) -> Self {
        self.upstream_protocol(UpstreamHttpProtocol::Http2)
    }

    /// Adds circuit breaker thresholds (one entry per routing priority).
    pub fn circuit_breaker(mut self, thresholds: Thresholds) -> Self {
        self.circuit_breakers
            .get_or_insert_with(|| CircuitBreakers {
                thresholds: Vec::new(),
            })
            .thresholds
            .push(thresholds);
        self
    }

    /// Ejects hosts per `detection` (Envoy's outlier detection).
    pub fn outlier_detection(mut self, detection: OutlierDetection) -> Self {
        self.outlier_detection = Some(detection);
        self
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoint lists per priority level (empty for aggregate clusters).
    pub fn load_assignment(&self) -> Option<&ClusterLoadAssignment> {
        self.load_assignment.as_ref()
    }
}

/// `envoy.config.endpoint.v3.ClusterLoadAssignment`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterLoadAssignment {
    /// Must equal the cluster's name.
    pub cluster_name: String,
    /// Endpoint groups, each at one priority level.
    pub endpoints: Vec<LocalityLbEndpoints>,
}

/// `envoy.config.endpoint.v3.LocalityLbEndpoints`: the endpoints of one priority level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalityLbEndpoints {
    /// Priority level (0 highest); omitted from the JSON when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: u32,
    /// The endpoints.
    pub lb_endpoints: Vec<LbEndpoint>,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// `envoy.config.endpoint.v3.LbEndpoint`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LbEndpoint {
    /// The upstream host.
    pub endpoint: Endpoint,
}

/// `envoy.config.endpoint.v3.Endpoint`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    /// Where the host listens.
    pub address: Address,
}

/// `Cluster.CustomClusterType`: a cluster implemented by an extension.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomClusterType {
    name: &'static str,
    typed_config: Any<AggregateClusterConfig>,
}

/// `envoy.extensions.clusters.aggregate.v3.ClusterConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AggregateClusterConfig {
    /// Member clusters, in priority order.
    pub clusters: Vec<String>,
}

impl Message for AggregateClusterConfig {
    const TYPE_URL: &'static str =
        "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig";
}

/// `Cluster.typed_extension_protocol_options`, keyed by extension name.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct ProtocolOptions {
    #[serde(rename = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions")]
    http: Any<HttpProtocolOptions>,
}

/// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions` (explicit config only).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct HttpProtocolOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    common_http_protocol_options: Option<CommonHttpProtocolOptions>,
    explicit_http_config: ExplicitHttpConfig,
}

impl Message for HttpProtocolOptions {
    const TYPE_URL: &'static str =
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
}

/// `HttpProtocolOptions.ExplicitHttpConfig` with default per-protocol options.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
enum ExplicitHttpConfig {
    HttpProtocolOptions(Empty),
    Http2ProtocolOptions(Empty),
}

/// A message with every field at its default: `{}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Empty {}

/// `envoy.config.cluster.v3.OutlierDetection` (consecutive 5xx ejection). Envoy counts a
/// connect failure or reset as a 5xx, and a gRPC status only when it comes in the response
/// headers (a trailers-only answer), never in trailers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlierDetection {
    /// Consecutive 5xx (or local-origin failures) that eject a host.
    pub consecutive_5xx: u32,
    /// How often ejections are re-evaluated (an ejected host returns at the first tick after
    /// its ejection time).
    #[serde(serialize_with = "duration::serialize")]
    pub interval: Duration,
    /// Ejection time, multiplied by the number of times the host was ejected.
    #[serde(serialize_with = "duration::serialize")]
    pub base_ejection_time: Duration,
    /// Most hosts of the cluster ejected at once, in percent.
    pub max_ejection_percent: u32,
}

impl OutlierDetection {
    /// Ejects a host after `consecutive_5xx` failures in a row for `base_ejection_time`,
    /// re-evaluated every `interval`; every host may be ejected.
    pub fn consecutive_5xx(
        consecutive_5xx: u32,
        interval: Duration,
        base_ejection_time: Duration,
    ) -> Self {
        Self {
            consecutive_5xx,
            interval,
            base_ejection_time,
            max_ejection_percent: 100,
        }
    }
}

/// `envoy.config.cluster.v3.CircuitBreakers`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitBreakers {
    /// One entry per routing priority.
    pub thresholds: Vec<Thresholds>,
}

/// `envoy.config.core.v3.RoutingPriority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoutingPriority {
    /// Normal traffic.
    #[default]
    Default,
    /// Traffic routed with `priority: HIGH`.
    High,
}

/// `CircuitBreakers.Thresholds`; `None` keeps Envoy's default (1024 each, 3 retries).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Thresholds {
    /// Which routing priority these apply to.
    pub priority: RoutingPriority,
    /// Max upstream connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Max requests queued waiting for a connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Max concurrent requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Max concurrent retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Envoy's native retry budget; when set it replaces `max_retries`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// `CircuitBreakers.Thresholds.RetryBudget`: concurrent retries limited to a percentage of the
/// active requests (Envoy's native retry budget).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryBudget {
    /// Active retries allowed, as a percentage of active (pending plus in-flight) requests.
    pub budget_percent: Percent,
    /// Active retries allowed whatever the active requests.
    pub min_retry_concurrency: u32,
}

impl Thresholds {
    /// Every limit at `u32::MAX`: circuit breaking effectively off, the mesh's default (Envoy's
    /// 1024 defaults drop legitimate traffic of busy services; load shedding is opt-in instead).
    pub fn unlimited() -> Self {
        Self {
            priority: RoutingPriority::Default,
            max_connections: Some(u32::MAX),
            max_pending_requests: Some(u32::MAX),
            max_requests: Some(u32::MAX),
            max_retries: Some(u32::MAX),
            retry_budget: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::{json, Value};

    fn to_value(cluster: &Cluster) -> Value {
        serde_json::to_value(cluster).unwrap()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn static_cluster_lists_endpoints_by_priority() {
        let cluster = Cluster::static_cluster("backend", [addr(8001), addr(8002)])
            .priority(1, [addr(9001)])
            .connect_timeout(Duration::from_millis(250));
        let value = to_value(&cluster);
        assert_eq!(value["type"], "STATIC");
        assert_eq!(value["connect_timeout"], "0.250s");
        assert_eq!(value["lb_policy"], "ROUND_ROBIN");
        assert!(value.get("cluster_type").is_none());
        let endpoints = &value["load_assignment"]["endpoints"];
        assert_eq!(value["load_assignment"]["cluster_name"], "backend");
        assert!(endpoints[0].get("priority").is_none());
        assert_eq!(
            endpoints[0]["lb_endpoints"][1],
            json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 8002}}}})
        );
        assert_eq!(endpoints[1]["priority"], 1);
        assert_eq!(
            endpoints[1]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"],
            9001
        );
    }

    #[test]
    fn strict_dns_cluster_keeps_hostnames() {
        let cluster = Cluster::strict_dns("dns", [("localhost", 8080)])
            .dns_lookup_family(DnsLookupFamily::V4Only)
            .lb_policy(LbPolicy::LeastRequest);
        let value = to_value(&cluster);
        assert_eq!(value["type"], "STRICT_DNS");
        assert_eq!(value["dns_lookup_family"], "V4_ONLY");
        assert_eq!(value["lb_policy"], "LEAST_REQUEST");
        assert_eq!(
            value["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["address"],
            "localhost"
        );
    }

    #[test]
    fn aggregate_cluster_uses_the_extension_and_no_endpoints() {
        let value = to_value(&Cluster::aggregate("agg", ["primary", "fallback"]));
        assert!(value.get("type").is_none());
        assert!(value.get("load_assignment").is_none());
        assert_eq!(value["lb_policy"], "CLUSTER_PROVIDED");
        assert_eq!(
            value["cluster_type"],
            json!({
                "name": "envoy.clusters.aggregate",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                    "clusters": ["primary", "fallback"]
                }
            })
        );
    }

    #[test]
    fn outlier_detection_is_serialized_only_when_set() {
        assert!(to_value(&Cluster::static_cluster("c", [addr(1)]))
            .get("outlier_detection")
            .is_none());
        let detection = OutlierDetection::consecutive_5xx(
            5,
            Duration::from_secs(1),
            Duration::from_millis(500),
        );
        let value = to_value(&Cluster::static_cluster("c", [addr(1)]).outlier_detection(detection));
        assert_eq!(
            value["outlier_detection"],
            json!({
                "consecutive_5xx": 5,
                "interval": "1s",
                "base_ejection_time": "0.500s",
                "max_ejection_percent": 100
            })
        );
    }

    #[test]
    fn http2_and_http1_are_explicit_protocol_options() {
        let key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
        let h2 = to_value(&Cluster::static_cluster("c", [addr(1)]).http2());
        assert_eq!(
            h2["typed_extension_protocol_options"][key],
            json!({
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            })
        );
        let h1 = to_value(
            &Cluster::static_cluster("c", [addr(1)]).upstream_protocol(UpstreamHttpProtocol::Http1),
        );
        assert_eq!(
            h1["typed_extension_protocol_options"][key]["explicit_http_config"],
            json!({"http_protocol_options": {}})
        );
        assert!(to_value(&Cluster::static_cluster("c", [addr(1)]))
            .get("typed_extension_protocol_options")
            .is_none());
    }

    #[test]
    fn max_connection_duration_keeps_the_upstream_protocol() {
        let key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
        let value = to_value(
            &Cluster::static_cluster("c", [addr(1)])
                .max_connection_duration(Duration::from_secs(240))
                .http2(),
        );
        let options = &value["typed_extension_protocol_options"][key];
        assert_eq!(
            options["common_http_protocol_options"],
            json!({"max_connection_duration": "240s"})
        );
        assert_eq!(
            options["explicit_http_config"],
            json!({"http2_protocol_options": {}})
        );
    }

    #[test]
    fn a_native_retry_budget_serializes_its_percent_as_a_value() {
        let cluster = Cluster::static_cluster("c", [addr(1)]).circuit_breaker(Thresholds {
            retry_budget: Some(RetryBudget {
                budget_percent: Percent { value: 20.0 },
                min_retry_concurrency: 3,
            }),
            ..Thresholds::unlimited()
        });
        assert_eq!(
            to_value(&cluster)["circuit_breakers"]["thresholds"][0]["retry_budget"],
            json!({"budget_percent": {"value": 20.0}, "min_retry_concurrency": 3})
        );
    }

    #[test]
    fn circuit_breaker_thresholds_serialize_only_what_is_set() {
        let cluster = Cluster::static_cluster("c", [addr(1)])
            .circuit_breaker(Thresholds {
                max_requests: Some(64),
                ..Thresholds::default()
            })
            .circuit_breaker(Thresholds {
                priority: RoutingPriority::High,
                ..Thresholds::unlimited()
            });
        let thresholds = &to_value(&cluster)["circuit_breakers"]["thresholds"];
        assert_eq!(
            thresholds[0],
            json!({"priority": "DEFAULT", "max_requests": 64})
        );
        assert_eq!(thresholds[1]["priority"], "HIGH");
        assert_eq!(thresholds[1]["max_connections"], u64::from(u32::MAX));
    }

    #[test]
    fn admin_cluster_points_at_the_admin_port_on_loopback() {
        let value = to_value(&Cluster::admin("admin", 9901));
        assert_eq!(value["type"], "STATIC");
        assert_eq!(
            value["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
            json!({"socket_address": {"address": "127.0.0.1", "port_value": 9901}})
        );
    }
}
