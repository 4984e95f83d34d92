//! Typed Envoy v3 bootstrap model for the mesh sidecars (and [`compose`]: service spec to sidecar), serialized to the JSON that
//! `envoy -c <file>` accepts (verified against Envoy 1.40).
//!
//! This crate is the project's single config model: sidecar templates are built from these types.
//! Every struct mirrors the Envoy proto message of the same name, carries only the fields the mesh
//! uses, and leaves unset optional fields out of the JSON so Envoy applies its own defaults.
//!
//! ```
//! use envoy_configs::{Bootstrap, Cluster, Listener, Route, WasmFilter};
//! use std::time::Duration;
//!
//! let bootstrap = Bootstrap::new(9901)
//!     .listener(
//!         Listener::http("ingress", 10000)
//!             .wasm_filter(WasmFilter::new("shed", "/filters/shed.wasm"))
//!             .route(Route::prefix("/").to_cluster("backend").timeout(Duration::from_secs(5))),
//!     )
//!     .cluster(Cluster::static_cluster("backend", ["127.0.0.1:8080".parse().unwrap()]));
//! assert!(bootstrap.to_json().contains("envoy.filters.http.wasm"));
//! ```

mod any;
mod bootstrap;
mod cluster;
pub mod compose;
mod duration;
pub mod envoy;
mod http_filters;
mod listener;
mod route;
mod server;
mod xds;

pub use any::{Any, Message, RawAny, RawAnyError, StringValue};
pub use bootstrap::{Admin, Bootstrap, Node, StaticResources};
pub use cluster::{
    AggregateCluster, AggregateClusterConfig, CircuitBreakers, Cluster, ClusterLoadAssignment,
    CustomClusterType, DnsLookupFamily, Endpoint, EndpointCluster, HealthCheck, LbEndpoint,
    LbPolicy, LocalityLbEndpoints, OutlierDetection, RetryBudget, RoutingPriority, Static,
    StaticCluster, StrictDns, StrictDnsCluster, Thresholds, UpstreamHttpProtocol,
};
pub use http_filters::{
    AdaptiveConcurrency, ConcurrencyLimitParams, FailurePolicy, GradientControllerConfig,
    HttpFilter, HttpFilterConfig, LuaFilter, MinRttCalcParams, Percent, Router, WasmFilter,
    WASM_RUNTIME_V8,
};
pub use listener::{
    Address, CodecType, CommonHttpProtocolOptions, DrainType, EarlyHeaderMutation, HeaderMutation,
    HeaderRemoval, Http2ProtocolOptions, HttpConnectionManager, Listener, SocketAddress,
    TrafficDirection,
};
pub use route::{
    ClusterSpecifier, FilterConfig, HeaderMatcher, PathMatch, PerFilterConfig, PerFilterConfigs,
    PreviousHostsPredicate, PreviousPrioritiesConfig, RegexMatcher, RetryHostPredicate, RetryOn,
    RetryPolicy, RetryPriority, Route, RouteAction, RouteConfiguration, RouteMatch, StringMatcher,
    VirtualHost,
};
pub use server::{OverloadManager, StatsConfig};
pub use xds::{ConfigSource, DiscoveryResponse, DynamicResources};
