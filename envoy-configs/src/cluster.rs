//! Upstream clusters, one type per kind, so a cluster Envoy would reject cannot be built:
//! endpoint clusters ([`StaticCluster`] with IP endpoints, [`StrictDnsCluster`] with hostnames)
//! carry endpoints per priority level, load balancing, health checks, outlier detection, upstream
//! HTTP options and circuit breakers; an [`AggregateCluster`] carries only its member list.
//! [`Cluster`] is the enum of the kinds, what a bootstrap or a CDS file holds.

use crate::any::{Any, Message};
use crate::duration;
use crate::http_filters::{HttpFilter, Percent};
use crate::listener::{Address, CommonHttpProtocolOptions, SocketAddress};
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Connect timeout of clusters built by this module unless overridden.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// `envoy.config.cluster.v3.Cluster`, one variant per kind the mesh uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Cluster {
    /// Fixed IP endpoints.
    Static(StaticCluster),
    /// Hostnames re-resolved periodically; every resolved address is an endpoint.
    StrictDns(StrictDnsCluster),
    /// Member clusters as priority levels (`envoy.clusters.aggregate`).
    Aggregate(AggregateCluster),
}

impl Message for Cluster {
    const TYPE_URL: &'static str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
}

impl Cluster {
    /// A STATIC round-robin cluster over `endpoints` at priority 0, connect timeout 1 s,
    /// HTTP/1.1 upstream.
    pub fn static_cluster(
        name: impl Into<String>,
        endpoints: impl IntoIterator<Item = SocketAddr>,
    ) -> StaticCluster {
        EndpointCluster::new(name.into(), Static::default()).priority(0, endpoints)
    }

    /// A STRICT_DNS round-robin cluster over `(hostname, port)` endpoints at priority 0.
    pub fn strict_dns<H: Into<String>>(
        name: impl Into<String>,
        hosts: impl IntoIterator<Item = (H, u16)>,
    ) -> StrictDnsCluster {
        let mut cluster = EndpointCluster::new(name.into(), StrictDns::default());
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
    ) -> AggregateCluster {
        AggregateCluster {
            name: name.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            lb_policy: ClusterProvided::ClusterProvided,
            cluster_type: CustomClusterType {
                name: "envoy.clusters.aggregate",
                typed_config: Any(AggregateClusterConfig {
                    clusters: clusters.into_iter().map(Into::into).collect(),
                }),
            },
            typed_extension_protocol_options: None,
            circuit_breakers: None,
        }
    }

    /// The admin cluster pattern: a STATIC cluster pointing at this Envoy's own admin interface
    /// (`127.0.0.1:<admin_port>`), so a wasm filter can `dispatch_http_call` to admin endpoints.
    pub fn admin(name: impl Into<String>, admin_port: u16) -> StaticCluster {
        Self::static_cluster(name, [SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port))])
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Static(cluster) => &cluster.name,
            Self::StrictDns(cluster) => &cluster.name,
            Self::Aggregate(cluster) => &cluster.name,
        }
    }

    /// The endpoint lists per priority level (`None` for aggregate clusters, which have none).
    pub fn load_assignment(&self) -> Option<&ClusterLoadAssignment> {
        match self {
            Self::Static(cluster) => Some(&cluster.load_assignment),
            Self::StrictDns(cluster) => Some(&cluster.load_assignment),
            Self::Aggregate(_) => None,
        }
    }
}

impl From<StaticCluster> for Cluster {
    fn from(cluster: StaticCluster) -> Self {
        Self::Static(cluster)
    }
}

impl From<StrictDnsCluster> for Cluster {
    fn from(cluster: StrictDnsCluster) -> Self {
        Self::StrictDns(cluster)
    }
}

impl From<AggregateCluster> for Cluster {
    fn from(cluster: AggregateCluster) -> Self {
        Self::Aggregate(cluster)
    }
}

/// A STATIC cluster: endpoints are IP addresses.
pub type StaticCluster = EndpointCluster<Static>;
/// A STRICT_DNS cluster: endpoints are hostnames, each resolved address an endpoint.
pub type StrictDnsCluster = EndpointCluster<StrictDns>;

/// The discovery settings of a STATIC cluster: `type: STATIC`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Static {
    #[serde(rename = "type")]
    discovery_type: &'static str,
}

impl Default for Static {
    fn default() -> Self {
        Self {
            discovery_type: "STATIC",
        }
    }
}

/// The discovery settings of a STRICT_DNS cluster: `type: STRICT_DNS` and the address family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StrictDns {
    #[serde(rename = "type")]
    discovery_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_lookup_family: Option<DnsLookupFamily>,
}

impl Default for StrictDns {
    fn default() -> Self {
        Self {
            discovery_type: "STRICT_DNS",
            dns_lookup_family: None,
        }
    }
}

/// `Cluster.LbPolicy` of an endpoint cluster (an aggregate cluster's is always `CLUSTER_PROVIDED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LbPolicy {
    /// Round robin (Envoy's default).
    RoundRobin,
    /// Power of two choices on active requests.
    LeastRequest,
    /// Uniform random.
    Random,
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

/// A cluster of endpoints (STATIC or STRICT_DNS, by `D`): its endpoints per priority level and
/// everything that acts on them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointCluster<D> {
    name: String,
    #[serde(flatten)]
    discovery: D,
    #[serde(serialize_with = "duration::serialize")]
    connect_timeout: Duration,
    lb_policy: LbPolicy,
    load_assignment: ClusterLoadAssignment,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    health_checks: Vec<HealthCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outlier_detection: Option<OutlierDetection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    typed_extension_protocol_options: Option<ProtocolOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit_breakers: Option<CircuitBreakers>,
}

impl<D> EndpointCluster<D> {
    fn new(name: String, discovery: D) -> Self {
        Self {
            load_assignment: ClusterLoadAssignment {
                cluster_name: name.clone(),
                endpoints: Vec::new(),
            },
            name,
            discovery,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            lb_policy: LbPolicy::RoundRobin,
            health_checks: Vec::new(),
            outlier_detection: None,
            typed_extension_protocol_options: None,
            circuit_breakers: None,
        }
    }

    /// Adds `endpoints` at priority level `priority` (0 is tried first).
    pub fn priority(
        mut self,
        priority: u32,
        endpoints: impl IntoIterator<Item = SocketAddr>,
    ) -> Self {
        self.add_endpoints(priority, endpoints.into_iter().map(Address::from));
        self
    }

    fn add_endpoints(&mut self, priority: u32, addresses: impl Iterator<Item = Address>) {
        self.load_assignment.endpoints.push(LocalityLbEndpoints {
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

    /// Sets the load-balancing policy (default round robin).
    pub fn lb_policy(mut self, policy: LbPolicy) -> Self {
        self.lb_policy = policy;
        self
    }

    /// Speaks `protocol` to the endpoints (`HttpProtocolOptions.explicit_http_config`); HTTP
    /// health checks follow it.
    pub fn upstream_protocol(mut self, protocol: UpstreamHttpProtocol) -> Self {
        let explicit_http_config = match protocol {
            UpstreamHttpProtocol::Http1 => ExplicitHttpConfig::HttpProtocolOptions(Empty {}),
            UpstreamHttpProtocol::Http2 => ExplicitHttpConfig::Http2ProtocolOptions(Empty {}),
        };
        self.http_protocol_options().upstream_protocol =
            UpstreamProtocol::ExplicitHttpConfig(explicit_http_config);
        self.sync_health_check_codecs();
        self
    }

    /// Speaks HTTP/2 (h2c) to the endpoints.
    pub fn http2(self) -> Self {
        self.upstream_protocol(UpstreamHttpProtocol::Http2)
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
                    upstream_protocol: UpstreamProtocol::ExplicitHttpConfig(
                        ExplicitHttpConfig::HttpProtocolOptions(Empty {}),
                    ),
                    common_http_protocol_options: None,
                    http_filters: Vec::new(),
                }),
            })
            .http
            .0
    }

    fn speaks_http2(&self) -> bool {
        self.typed_extension_protocol_options
            .as_ref()
            .is_some_and(|options| {
                matches!(
                    options.http.0.upstream_protocol,
                    UpstreamProtocol::ExplicitHttpConfig(ExplicitHttpConfig::Http2ProtocolOptions(
                        _
                    ))
                )
            })
    }

    /// HTTP health checks speak the cluster's HTTP version (Envoy's checker defaults to
    /// HTTP/1.1, which an h2c-only endpoint refuses).
    fn sync_health_check_codecs(&mut self) {
        let codec = if self.speaks_http2() {
            Some(CodecClientType::Http2)
        } else {
            None
        };
        for check in &mut self.health_checks {
            if let HealthChecker::Http(http) = &mut check.checker {
                http.codec_client_type = codec;
            }
        }
    }

    /// Adds an active health check: endpoints failing it leave the load-balancing set until they
    /// pass again. A [`HealthCheck::grpc`] check needs an HTTP/2 cluster ([`Self::http2`]).
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.health_checks.push(check);
        self.sync_health_check_codecs();
        self
    }

    /// Sets outlier detection: endpoints that keep failing are ejected for a while.
    pub fn outlier_detection(mut self, detection: OutlierDetection) -> Self {
        self.outlier_detection = Some(detection);
        self
    }

    /// Adds circuit breaker thresholds (one entry per routing priority).
    pub fn circuit_breaker(mut self, thresholds: Thresholds) -> Self {
        add_thresholds(&mut self.circuit_breakers, thresholds);
        self
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoint lists per priority level.
    pub fn load_assignment(&self) -> &ClusterLoadAssignment {
        &self.load_assignment
    }
}

impl StrictDnsCluster {
    /// Sets the DNS address family.
    pub fn dns_lookup_family(mut self, family: DnsLookupFamily) -> Self {
        self.discovery.dns_lookup_family = Some(family);
        self
    }
}

/// An aggregate cluster: its member clusters, nothing else (Envoy balances over the members;
/// endpoints, health checks and protocol options belong to them). Endpoint settings do not
/// exist on it:
///
/// ```compile_fail
/// # use envoy_configs::Cluster;
/// let aggregate = Cluster::aggregate("payments", ["primary", "fallback"])
///     .priority(1, ["127.0.0.1:8080".parse().unwrap()]); // no such method
/// ```
///
/// ```compile_fail
/// # use envoy_configs::Cluster;
/// let aggregate = Cluster::aggregate("payments", ["primary", "fallback"]).http2(); // members speak
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggregateCluster {
    name: String,
    #[serde(serialize_with = "duration::serialize")]
    connect_timeout: Duration,
    lb_policy: ClusterProvided,
    cluster_type: CustomClusterType,
    #[serde(skip_serializing_if = "Option::is_none")]
    typed_extension_protocol_options: Option<ProtocolOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit_breakers: Option<CircuitBreakers>,
}

impl AggregateCluster {
    /// Adds an upstream HTTP filter. Envoy builds a request's upstream filter chain from the
    /// route's cluster, so a route to the aggregate runs the aggregate's filters on every
    /// attempt, whichever member serves it (members' own upstream filters do not run).
    pub fn upstream_http_filter(mut self, filter: HttpFilter) -> Self {
        self.typed_extension_protocol_options
            .get_or_insert(ProtocolOptions {
                http: Any(HttpProtocolOptions {
                    upstream_protocol: UpstreamProtocol::UseDownstreamProtocolConfig(Empty {}),
                    common_http_protocol_options: None,
                    http_filters: Vec::new(),
                }),
            })
            .http
            .0
            .http_filters
            .push(filter);
        self
    }

    /// Sets the connect timeout Envoy requires of every cluster (unused: members connect).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds circuit breaker thresholds: a route to the aggregate counts its requests and retries
    /// against these, not the members'.
    pub fn circuit_breaker(mut self, thresholds: Thresholds) -> Self {
        add_thresholds(&mut self.circuit_breakers, thresholds);
        self
    }

    /// The member clusters, in priority order.
    pub fn clusters(&self) -> &[String] {
        &self.cluster_type.typed_config.0.clusters
    }
}

fn add_thresholds(breakers: &mut Option<CircuitBreakers>, thresholds: Thresholds) {
    breakers
        .get_or_insert_with(|| CircuitBreakers {
            thresholds: Vec::new(),
        })
        .thresholds
        .push(thresholds);
}

/// The only load-balancing policy of an aggregate cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum ClusterProvided {
    ClusterProvided,
}

/// `envoy.config.core.v3.HealthCheck`: an active health check of every endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheck {
    #[serde(serialize_with = "duration::serialize")]
    timeout: Duration,
    #[serde(serialize_with = "duration::serialize")]
    interval: Duration,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "duration::serialize_opt"
    )]
    no_traffic_interval: Option<Duration>,
    unhealthy_threshold: u32,
    healthy_threshold: u32,
    #[serde(flatten)]
    checker: HealthChecker,
}

/// The protocol of a [`HealthCheck`].
#[derive(Debug, Clone, PartialEq, Serialize)]
enum HealthChecker {
    #[serde(rename = "http_health_check")]
    Http(HttpHealthCheck),
    #[serde(rename = "grpc_health_check")]
    Grpc(GrpcHealthCheck),
    #[serde(rename = "tcp_health_check")]
    Tcp(Empty),
}

/// `HealthCheck.HttpHealthCheck`.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct HttpHealthCheck {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    codec_client_type: Option<CodecClientType>,
}

/// `envoy.type.v3.CodecClientType` (HTTP/1.1 is Envoy's default and left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum CodecClientType {
    Http2,
}

/// `HealthCheck.GrpcHealthCheck`: `grpc.health.v1.Health/Check`.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct GrpcHealthCheck {
    #[serde(skip_serializing_if = "String::is_empty")]
    service_name: String,
}

impl HealthCheck {
    fn new(checker: HealthChecker, interval: Duration, timeout: Duration) -> Self {
        Self {
            timeout,
            interval,
            no_traffic_interval: None,
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            checker,
        }
    }

    /// `GET path` every `interval`, failing after `timeout` or on a non-2xx answer; an endpoint
    /// is unhealthy after 3 failures in a row and healthy again after 2 passes.
    pub fn http(path: impl Into<String>, interval: Duration, timeout: Duration) -> Self {
        Self::new(
            HealthChecker::Http(HttpHealthCheck {
                path: path.into(),
                codec_client_type: None,
            }),
            interval,
            timeout,
        )
    }

    /// The gRPC health checking protocol (`grpc.health.v1.Health/Check` for `service`; empty:
    /// the server as a whole), thresholds as [`Self::http`].
    pub fn grpc(service: impl Into<String>, interval: Duration, timeout: Duration) -> Self {
        Self::new(
            HealthChecker::Grpc(GrpcHealthCheck {
                service_name: service.into(),
            }),
            interval,
            timeout,
        )
    }

    /// A TCP connect, thresholds as [`Self::http`].
    pub fn tcp(interval: Duration, timeout: Duration) -> Self {
        Self::new(HealthChecker::Tcp(Empty {}), interval, timeout)
    }

    /// How often to check while the cluster has had no traffic yet (Envoy's default: 60 s).
    pub fn no_traffic_interval(mut self, interval: Duration) -> Self {
        self.no_traffic_interval = Some(interval);
        self
    }

    /// Failures in a row that make an endpoint unhealthy, and passes that make it healthy again.
    pub fn thresholds(mut self, unhealthy: u32, healthy: u32) -> Self {
        self.unhealthy_threshold = unhealthy;
        self.healthy_threshold = healthy;
        self
    }
}

/// `envoy.config.cluster.v3.OutlierDetection`: passive health checking from real traffic.
/// `None` fields keep Envoy's defaults; [`OutlierDetection::local_origin_failures`] is the mesh's
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct OutlierDetection {
    /// Whether connect failures, resets and timeouts (local origin) count apart from the
    /// endpoint's own answers.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub split_external_local_origin_errors: bool,
    /// Local-origin failures in a row that eject an endpoint (with the split on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failure: Option<u32>,
    /// Percent chance such an ejection is enforced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcing_consecutive_local_origin_failure: Option<u32>,
    /// 5xx answers in a row that eject an endpoint (Envoy default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<u32>,
    /// Percent chance a consecutive-5xx ejection is enforced (Envoy default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcing_consecutive_5xx: Option<u32>,
    /// Percent chance a success-rate ejection is enforced (Envoy default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcing_success_rate: Option<u32>,
    /// Time between ejection sweeps (Envoy default 10 s).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "duration::serialize_opt"
    )]
    pub interval: Option<Duration>,
    /// Base ejection time, multiplied by the times an endpoint was ejected (Envoy default 30 s).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "duration::serialize_opt"
    )]
    pub base_ejection_time: Option<Duration>,
    /// Most endpoints ejected at once, in percent (Envoy default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

impl OutlierDetection {
    /// Ejects an endpoint after `failures` connect failures, resets or timeouts in a row, and
    /// never for its answers: a callee shedding load answers 503, and ejecting it would move its
    /// load onto the others (a cascade). At most half the endpoints are ejected at once.
    pub fn local_origin_failures(failures: u32) -> Self {
        Self {
            split_external_local_origin_errors: true,
            consecutive_local_origin_failure: Some(failures),
            enforcing_consecutive_local_origin_failure: Some(100),
            enforcing_consecutive_5xx: Some(0),
            enforcing_success_rate: Some(0),
            max_ejection_percent: Some(50),
            ..Self::default()
        }
    }

    /// Ejects an endpoint after `consecutive_5xx` failures in a row (answers with 5xx, connect
    /// failures and resets alike; a gRPC status only when it comes in the response headers, a
    /// trailers-only answer, never in trailers) for `base_ejection_time`, re-evaluated every
    /// `interval`; every endpoint may be ejected. The Envoy-native way to steer around a failing
    /// cache (the `cache-failover` scenario's baseline).
    pub fn consecutive_5xx(
        consecutive_5xx: u32,
        interval: Duration,
        base_ejection_time: Duration,
    ) -> Self {
        Self {
            consecutive_5xx: Some(consecutive_5xx),
            interval: Some(interval),
            base_ejection_time: Some(base_ejection_time),
            max_ejection_percent: Some(100),
            ..Self::default()
        }
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
    #[serde(flatten)]
    upstream_protocol: UpstreamProtocol,
    /// Upstream HTTP filters, written with Envoy's upstream codec filter last.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "serialize_upstream_filters"
    )]
    http_filters: Vec<HttpFilter>,
}

/// `envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec`: the last upstream HTTP filter,
/// the one that talks to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct UpstreamCodec {}

impl Message for UpstreamCodec {
    const TYPE_URL: &'static str =
        "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec";
}

/// `filters`, then the upstream codec Envoy requires last.
fn serialize_upstream_filters<S: serde::Serializer>(
    filters: &[HttpFilter],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Codec {
        name: &'static str,
        typed_config: Any<UpstreamCodec>,
    }
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Entry<'a> {
        Filter(&'a HttpFilter),
        Codec(Codec),
    }
    let codec = Codec {
        name: "envoy.filters.http.upstream_codec",
        typed_config: Any(UpstreamCodec {}),
    };
    serializer.collect_seq(
        filters
            .iter()
            .map(Entry::Filter)
            .chain(std::iter::once(Entry::Codec(codec))),
    )
}

impl Message for HttpProtocolOptions {
    const TYPE_URL: &'static str =
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
}

/// `HttpProtocolOptions.upstream_protocol_options`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
enum UpstreamProtocol {
    /// One protocol to the endpoints.
    ExplicitHttpConfig(ExplicitHttpConfig),
    /// The downstream's (an aggregate cluster's options: its members connect, with theirs).
    UseDownstreamProtocolConfig(Empty),
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

    fn to_value<T: Serialize>(cluster: &T) -> Value {
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
        let aggregate = Cluster::aggregate("agg", ["primary", "fallback"]);
        assert_eq!(aggregate.clusters(), ["primary", "fallback"]);
        let limited = to_value(&aggregate.clone().circuit_breaker(Thresholds::unlimited()));
        assert_eq!(
            limited["circuit_breakers"]["thresholds"][0]["max_retries"],
            u64::from(u32::MAX)
        );
        let value = to_value(&aggregate);
        assert!(value.get("circuit_breakers").is_none());
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
    fn an_aggregate_s_upstream_filters_end_with_the_upstream_codec() {
        let key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
        let aggregate = Cluster::aggregate("agg", ["primary", "fallback"])
            .upstream_http_filter(HttpFilter::grpc_trailer_status_to_headers());
        let options = &to_value(&aggregate)["typed_extension_protocol_options"][key];
        assert_eq!(options["use_downstream_protocol_config"], json!({}));
        let filters = options["http_filters"].as_array().unwrap();
        assert_eq!(filters.len(), 2);
        assert_eq!(filters[0]["name"], "envoy.filters.http.lua");
        assert!(
            filters[0]["typed_config"]["default_source_code"]["inline_string"]
                .as_str()
                .unwrap()
                .contains("envoy_on_response")
        );
        assert_eq!(
            filters[1],
            json!({
                "name": "envoy.filters.http.upstream_codec",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
                }
            })
        );
        assert!(to_value(&Cluster::aggregate("agg", ["a", "b"]))
            .get("typed_extension_protocol_options")
            .is_none());
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
    fn every_kind_serializes_the_same_inside_the_enum() {
        let kinds: [(Cluster, Value); 3] = [
            (
                Cluster::static_cluster("s", [addr(1)]).into(),
                to_value(&Cluster::static_cluster("s", [addr(1)])),
            ),
            (
                Cluster::strict_dns("d", [("h", 1)]).into(),
                to_value(&Cluster::strict_dns("d", [("h", 1)])),
            ),
            (
                Cluster::aggregate("a", ["s"]).into(),
                to_value(&Cluster::aggregate("a", ["s"])),
            ),
        ];
        for (cluster, alone) in kinds {
            assert_eq!(to_value(&cluster), alone);
        }
        let packed = to_value(&Any(Cluster::from(Cluster::aggregate("a", ["s"]))));
        assert_eq!(packed["@type"], Cluster::TYPE_URL);
        assert_eq!(packed["name"], "a");
        assert!(Cluster::from(Cluster::aggregate("a", ["s"]))
            .load_assignment()
            .is_none());
    }

    #[test]
    fn http_health_checks_speak_the_cluster_protocol_whatever_the_order() {
        let check =
            || HealthCheck::http("/healthz", Duration::from_secs(5), Duration::from_secs(1));
        let before = to_value(
            &Cluster::static_cluster("c", [addr(1)])
                .health_check(check())
                .http2(),
        );
        let after = to_value(
            &Cluster::static_cluster("c", [addr(1)])
                .http2()
                .health_check(check()),
        );
        for value in [&before, &after] {
            assert_eq!(
                value["health_checks"],
                json!([{
                    "timeout": "1s",
                    "interval": "5s",
                    "unhealthy_threshold": 3,
                    "healthy_threshold": 2,
                    "http_health_check": {"path": "/healthz", "codec_client_type": "HTTP2"}
                }])
            );
        }
        let h1 = to_value(&Cluster::static_cluster("c", [addr(1)]).health_check(check()));
        assert_eq!(
            h1["health_checks"][0]["http_health_check"],
            json!({"path": "/healthz"})
        );
        assert!(to_value(&Cluster::static_cluster("c", [addr(1)]))
            .get("health_checks")
            .is_none());
    }

    #[test]
    fn grpc_and_tcp_health_checks_name_their_checker() {
        let value = to_value(
            &Cluster::strict_dns("c", [("h", 1)])
                .http2()
                .health_check(
                    HealthCheck::grpc("", Duration::from_secs(10), Duration::from_millis(500))
                        .thresholds(2, 1),
                )
                .health_check(HealthCheck::tcp(
                    Duration::from_secs(3),
                    Duration::from_secs(1),
                )),
        );
        let checks = &value["health_checks"];
        assert_eq!(checks[0]["grpc_health_check"], json!({}));
        assert_eq!(checks[0]["timeout"], "0.500s");
        assert_eq!(checks[0]["unhealthy_threshold"], 2);
        assert_eq!(checks[0]["healthy_threshold"], 1);
        assert_eq!(checks[1]["tcp_health_check"], json!({}));
        let named = to_value(&HealthCheck::grpc(
            "ledger",
            Duration::from_secs(1),
            Duration::from_secs(1),
        ));
        assert_eq!(
            named["grpc_health_check"],
            json!({"service_name": "ledger"})
        );
    }

    #[test]
    fn outlier_detection_ejects_on_local_failures_only() {
        let value = to_value(
            &Cluster::strict_dns("c", [("h", 1)])
                .outlier_detection(OutlierDetection::local_origin_failures(5)),
        );
        assert_eq!(
            value["outlier_detection"],
            json!({
                "split_external_local_origin_errors": true,
                "consecutive_local_origin_failure": 5,
                "enforcing_consecutive_local_origin_failure": 100,
                "enforcing_consecutive_5xx": 0,
                "enforcing_success_rate": 0,
                "max_ejection_percent": 50
            })
        );
        let tuned = to_value(&OutlierDetection {
            interval: Some(Duration::from_secs(2)),
            base_ejection_time: Some(Duration::from_millis(1500)),
            ..OutlierDetection::default()
        });
        assert_eq!(
            tuned,
            json!({"interval": "2s", "base_ejection_time": "1.500s"})
        );
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
