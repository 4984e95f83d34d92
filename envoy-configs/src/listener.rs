//! Static listeners: an address plus an HTTP connection manager (codec, routes, HTTP filters).

use crate::any::{Any, Message};
use crate::duration;
use crate::http_filters::{AdaptiveConcurrency, HttpFilter, WasmFilter};
use crate::route::{Route, RouteConfiguration, VirtualHost};
use serde::{Serialize, Serializer};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// `envoy.config.core.v3.Address` (socket addresses only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    /// The TCP socket address.
    pub socket_address: SocketAddress,
}

impl Address {
    /// `127.0.0.1:<port>`: where every sidecar listener and the admin interface bind.
    pub fn loopback(port: u16) -> Self {
        Self::from(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Self {
            socket_address: SocketAddress {
                address: addr.ip().to_string(),
                port_value: addr.port(),
            },
        }
    }
}

/// `envoy.config.core.v3.SocketAddress`: an IP (or, for STRICT_DNS clusters, a hostname) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketAddress {
    /// IP literal or DNS name.
    pub address: String,
    /// TCP port.
    pub port_value: u16,
}

/// `HttpConnectionManager.CodecType`: which HTTP versions the listener accepts downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CodecType {
    /// Sniff HTTP/1.1 vs HTTP/2 (prior knowledge) per connection.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only.
    Http2,
}

/// `Listener.DrainType`: which events drain the listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DrainType {
    /// Drain on hot restart, listener modification/removal and `/drain_listeners`.
    Default,
    /// Drain only when the listener is modified or removed.
    ModifyOnly,
}

/// `core.v3.TrafficDirection`: which way a listener's traffic flows. Admin
/// `/drain_listeners?inboundonly` drains only `Inbound` listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TrafficDirection {
    /// Traffic into the service (the ingress sidecar).
    Inbound,
    /// Traffic out of the service (the egress sidecar).
    Outbound,
}

/// `envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`.
///
/// Invariant kept by the builder: the router filter is always the last HTTP filter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpConnectionManager {
    stat_prefix: String,
    codec_type: CodecType,
    route_config: RouteConfiguration,
    http_filters: Vec<HttpFilter>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "duration::serialize_opt"
    )]
    drain_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    common_http_protocol_options: Option<CommonHttpProtocolOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http2_protocol_options: Option<Http2ProtocolOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    early_header_mutation_extensions: Vec<EarlyHeaderMutation>,
}

/// `HttpConnectionManager.early_header_mutation_extensions` entry: Envoy's
/// `envoy.http.early_header_mutation.header_mutation`, applied to every request before route
/// selection and before any HTTP filter runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EarlyHeaderMutation {
    name: &'static str,
    typed_config: Any<HeaderMutation>,
}

/// `envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderMutation {
    /// The mutations, in order.
    pub mutations: Vec<HeaderRemoval>,
}

/// `envoy.config.common.mutation_rules.v3.HeaderMutation` (removal only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderRemoval {
    /// The header removed from the request (every value of it).
    pub remove: String,
}

impl Message for HeaderMutation {
    const TYPE_URL: &'static str = "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation";
}

/// `envoy.config.core.v3.HttpProtocolOptions` (connection lifetime only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommonHttpProtocolOptions {
    /// A connection is drained (GOAWAY / `connection: close`) once it is this old.
    #[serde(serialize_with = "duration::serialize")]
    pub max_connection_duration: Duration,
}

/// `envoy.config.core.v3.Http2ProtocolOptions` (stream concurrency only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Http2ProtocolOptions {
    /// Streams one HTTP/2 connection may carry at once (Envoy's default is 2^31 - 1).
    pub max_concurrent_streams: u32,
}

impl Message for HttpConnectionManager {
    const TYPE_URL: &'static str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
}

impl HttpConnectionManager {
    /// Codec AUTO, stats under `http.<stat_prefix>.`, a route config named `<stat_prefix>` with one
    /// catch-all (`*`) virtual host named `default` and no routes, and only the router filter.
    pub fn new(stat_prefix: impl Into<String>) -> Self {
        let stat_prefix = stat_prefix.into();
        Self {
            route_config: RouteConfiguration::new(stat_prefix.clone())
                .virtual_host(VirtualHost::new("default", ["*"])),
            stat_prefix,
            codec_type: CodecType::Auto,
            http_filters: vec![HttpFilter::router()],
            drain_timeout: None,
            common_http_protocol_options: None,
            http2_protocol_options: None,
            early_header_mutation_extensions: Vec::new(),
        }
    }

    /// Drains each downstream connection once it is `age` old, so clients reconnect (and
    /// re-balance) regularly.
    pub fn max_connection_duration(mut self, age: Duration) -> Self {
        self.common_http_protocol_options = Some(CommonHttpProtocolOptions {
            max_connection_duration: age,
        });
        self
    }

    /// Caps the concurrent streams of one downstream HTTP/2 connection.
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.http2_protocol_options = Some(Http2ProtocolOptions {
            max_concurrent_streams: streams,
        });
        self
    }

    /// Sets the downstream codec.
    pub fn codec(mut self, codec: CodecType) -> Self {
        self.codec_type = codec;
        self
    }

    /// Removes request header `name` as the request arrives, before the route is picked and
    /// before any HTTP filter sees it: a header that selects a route or cluster, which only a
    /// filter of ours may set, cannot come from a client, even while that filter's VM is dead.
    pub fn strip_request_header(mut self, name: impl Into<String>) -> Self {
        let removal = HeaderRemoval {
            remove: name.into(),
        };
        match self.early_header_mutation_extensions.first_mut() {
            Some(extension) => extension.typed_config.0.mutations.push(removal),
            None => self
                .early_header_mutation_extensions
                .push(EarlyHeaderMutation {
                    name: "envoy.http.early_header_mutation.header_mutation",
                    typed_config: Any(HeaderMutation {
                        mutations: vec![removal],
                    }),
                }),
        }
        self
    }

    /// Appends `route` to the first virtual host (the catch-all one made by [`Self::new`]).
    pub fn route(mut self, route: Route) -> Self {
        self.route_config.add_route(route);
        self
    }

    /// Adds a virtual host to the route configuration.
    pub fn virtual_host(mut self, virtual_host: VirtualHost) -> Self {
        self.route_config = self.route_config.virtual_host(virtual_host);
        self
    }

    /// Makes the router report `x-envoy-attempt-count` on upstream requests and on responses, on
    /// the virtual hosts so far (see [`VirtualHost::include_attempt_counts`]).
    pub fn include_attempt_counts(mut self) -> Self {
        self.route_config = self.route_config.include_attempt_counts();
        self
    }

    /// Adds an HTTP filter after the ones already added, and before the router.
    pub fn http_filter(mut self, filter: HttpFilter) -> Self {
        let router_at = self.http_filters.len().saturating_sub(1);
        self.http_filters.insert(router_at, filter);
        self
    }

    /// Sets how long HTTP/1.1 `Connection: close` / HTTP/2 GOAWAY draining lasts before close.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = Some(timeout);
        self
    }

    /// The stat prefix (`http.<prefix>.*` stats).
    pub fn stat_prefix(&self) -> &str {
        &self.stat_prefix
    }

    /// The HTTP filter chain, router last.
    pub fn http_filters(&self) -> &[HttpFilter] {
        &self.http_filters
    }

    /// The route configuration.
    pub fn route_config(&self) -> &RouteConfiguration {
        &self.route_config
    }
}

/// `envoy.config.listener.v3.Listener` with a single filter chain made of one HTTP connection
/// manager: the only listener shape the mesh sidecars use.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    name: String,
    address: Address,
    http_connection_manager: HttpConnectionManager,
    drain_type: Option<DrainType>,
    traffic_direction: Option<TrafficDirection>,
}

impl Listener {
    /// An HTTP listener on `127.0.0.1:<port>` whose connection manager has stat prefix `name`
    /// (see [`HttpConnectionManager::new`]). Port 0 asks the test harness to pick a free port.
    pub fn http(name: impl Into<String>, port: u16) -> Self {
        let name = name.into();
        Self {
            http_connection_manager: HttpConnectionManager::new(name.clone()),
            name,
            address: Address::loopback(port),
            drain_type: None,
            traffic_direction: None,
        }
    }

    /// Replaces the connection manager (for fully custom ones).
    pub fn with_http_connection_manager(mut self, hcm: HttpConnectionManager) -> Self {
        self.http_connection_manager = hcm;
        self
    }

    /// Binds to `address` instead of loopback.
    pub fn address(mut self, address: SocketAddr) -> Self {
        self.address = Address::from(address);
        self
    }

    /// Sets the downstream codec.
    pub fn codec(self, codec: CodecType) -> Self {
        self.map_hcm(|hcm| hcm.codec(codec))
    }

    /// Appends a route to the catch-all virtual host.
    pub fn route(self, route: Route) -> Self {
        self.map_hcm(|hcm| hcm.route(route))
    }

    /// Adds a virtual host.
    pub fn virtual_host(self, virtual_host: VirtualHost) -> Self {
        self.map_hcm(|hcm| hcm.virtual_host(virtual_host))
    }

    /// Makes the router report attempt counts on the virtual hosts so far (the catch-all one
    /// included): `x-envoy-attempt-count` on upstream requests and on responses.
    pub fn include_attempt_counts(self) -> Self {
        self.map_hcm(HttpConnectionManager::include_attempt_counts)
    }

    /// Adds a proxy-wasm filter (before the router, after previously added filters).
    pub fn wasm_filter(self, filter: WasmFilter) -> Self {
        self.http_filter(HttpFilter::wasm(filter))
    }

    /// Adds Envoy's native adaptive concurrency filter (before the router).
    pub fn adaptive_concurrency(self, filter: AdaptiveConcurrency) -> Self {
        self.http_filter(HttpFilter::adaptive_concurrency(filter))
    }

    /// Adds any HTTP filter (before the router).
    pub fn http_filter(self, filter: HttpFilter) -> Self {
        self.map_hcm(|hcm| hcm.http_filter(filter))
    }

    /// Sets the HTTP connection manager's drain timeout.
    pub fn drain_timeout(self, timeout: Duration) -> Self {
        self.map_hcm(|hcm| hcm.drain_timeout(timeout))
    }

    /// Removes request header `name` before routing and filters (see
    /// [`HttpConnectionManager::strip_request_header`]).
    pub fn strip_request_header(self, name: impl Into<String>) -> Self {
        self.map_hcm(|hcm| hcm.strip_request_header(name))
    }

    /// Drains each downstream connection once it is `age` old.
    pub fn max_connection_duration(self, age: Duration) -> Self {
        self.map_hcm(|hcm| hcm.max_connection_duration(age))
    }

    /// Caps the concurrent streams of one downstream HTTP/2 connection.
    pub fn max_concurrent_streams(self, streams: u32) -> Self {
        self.map_hcm(|hcm| hcm.max_concurrent_streams(streams))
    }

    /// Sets which events drain this listener.
    pub fn drain_type(mut self, drain_type: DrainType) -> Self {
        self.drain_type = Some(drain_type);
        self
    }

    /// Sets the listener's traffic direction (unset: unspecified, which
    /// `/drain_listeners?inboundonly` leaves alone).
    pub fn traffic_direction(mut self, direction: TrafficDirection) -> Self {
        self.traffic_direction = Some(direction);
        self
    }

    /// The listener's name (also its connection manager's stat prefix unless replaced).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port the listener binds (0 until a harness assigns one, if built with port 0).
    pub fn port(&self) -> u16 {
        self.address.socket_address.port_value
    }

    /// The bind address as given (IP literal and port).
    pub fn socket_address(&self) -> &SocketAddress {
        &self.address.socket_address
    }

    /// Rebinds the listener to another port on the same address.
    pub fn set_port(&mut self, port: u16) {
        self.address.socket_address.port_value = port;
    }

    /// The HTTP connection manager.
    pub fn http_connection_manager(&self) -> &HttpConnectionManager {
        &self.http_connection_manager
    }

    fn map_hcm(
        mut self,
        change: impl FnOnce(HttpConnectionManager) -> HttpConnectionManager,
    ) -> Self {
        self.http_connection_manager = change(self.http_connection_manager);
        self
    }
}

impl Message for Listener {
    const TYPE_URL: &'static str = "type.googleapis.com/envoy.config.listener.v3.Listener";
}

/// Name of Envoy's HTTP connection manager network filter.
const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";

impl Serialize for Listener {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct NetworkFilter<'a> {
            name: &'static str,
            typed_config: Any<&'a HttpConnectionManager>,
        }
        #[derive(Serialize)]
        struct FilterChain<'a> {
            filters: [NetworkFilter<'a>; 1],
        }
        #[derive(Serialize)]
        struct Repr<'a> {
            name: &'a str,
            address: &'a Address,
            filter_chains: [FilterChain<'a>; 1],
            #[serde(skip_serializing_if = "Option::is_none")]
            drain_type: Option<DrainType>,
            #[serde(skip_serializing_if = "Option::is_none")]
            traffic_direction: Option<TrafficDirection>,
        }
        Repr {
            name: &self.name,
            address: &self.address,
            filter_chains: [FilterChain {
                filters: [NetworkFilter {
                    name: HTTP_CONNECTION_MANAGER,
                    typed_config: Any(&self.http_connection_manager),
                }],
            }],
            drain_type: self.drain_type,
            traffic_direction: self.traffic_direction,
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::{json, Value};

    fn hcm_json(listener: &Listener) -> Value {
        let value = serde_json::to_value(listener).unwrap();
        value["filter_chains"][0]["filters"][0]["typed_config"].clone()
    }

    #[test]
    fn http_listener_binds_loopback_and_wraps_a_connection_manager() {
        let value = serde_json::to_value(Listener::http("ingress", 10000)).unwrap();
        assert_eq!(value["name"], "ingress");
        assert_eq!(
            value["address"],
            json!({"socket_address": {"address": "127.0.0.1", "port_value": 10000}})
        );
        let filter = &value["filter_chains"][0]["filters"][0];
        assert_eq!(filter["name"], HTTP_CONNECTION_MANAGER);
        assert_eq!(
            filter["typed_config"]["@type"],
            HttpConnectionManager::TYPE_URL
        );
        assert_eq!(filter["typed_config"]["stat_prefix"], "ingress");
        assert_eq!(filter["typed_config"]["codec_type"], "AUTO");
        assert!(value.get("drain_type").is_none());
        assert!(value.get("traffic_direction").is_none());
    }

    #[test]
    fn stripped_headers_are_one_early_header_mutation_removing_each() {
        assert!(hcm_json(&Listener::http("l", 1))
            .get("early_header_mutation_extensions")
            .is_none());
        let listener = Listener::http("l", 1)
            .strip_request_header("x-a")
            .strip_request_header("x-b");
        assert_eq!(
            hcm_json(&listener)["early_header_mutation_extensions"],
            json!([{
                "name": "envoy.http.early_header_mutation.header_mutation",
                "typed_config": {
                    "@type": HeaderMutation::TYPE_URL,
                    "mutations": [{"remove": "x-a"}, {"remove": "x-b"}]
                }
            }])
        );
    }

    #[test]
    fn attempt_counts_apply_to_the_catch_all_virtual_host() {
        let listener = Listener::http("l", 1)
            .include_attempt_counts()
            .route(Route::prefix("/").to_cluster("c"));
        let hosts = &hcm_json(&listener)["route_config"]["virtual_hosts"];
        assert_eq!(hosts.as_array().unwrap().len(), 1);
        assert_eq!(hosts[0]["include_request_attempt_count"], true);
        assert_eq!(hosts[0]["include_attempt_count_in_response"], true);
        assert_eq!(hosts[0]["routes"][0]["route"]["cluster"], "c");
    }

    #[test]
    fn codec_and_drain_settings_serialize_in_envoy_spelling() {
        let listener = Listener::http("l", 1)
            .codec(CodecType::Http2)
            .drain_timeout(Duration::from_millis(1500))
            .drain_type(DrainType::ModifyOnly)
            .traffic_direction(TrafficDirection::Inbound);
        let hcm = hcm_json(&listener);
        assert_eq!(hcm["codec_type"], "HTTP2");
        assert_eq!(hcm["drain_timeout"], "1.500s");
        let value = serde_json::to_value(&listener).unwrap();
        assert_eq!(value["drain_type"], "MODIFY_ONLY");
        assert_eq!(value["traffic_direction"], "INBOUND");
    }

    #[test]
    fn router_stays_last_whatever_the_order_filters_are_added() {
        let listener = Listener::http("l", 1)
            .wasm_filter(WasmFilter::new("first", "/a.wasm"))
            .adaptive_concurrency(AdaptiveConcurrency::default())
            .wasm_filter(WasmFilter::new("third", "/c.wasm"));
        let names: Vec<String> = hcm_json(&listener)["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "envoy.filters.http.wasm",
                "envoy.filters.http.adaptive_concurrency",
                "envoy.filters.http.wasm",
                "envoy.filters.http.router"
            ]
        );
        let filters = hcm_json(&listener)["http_filters"].clone();
        assert_eq!(filters[0]["typed_config"]["config"]["name"], "first");
        assert_eq!(filters[2]["typed_config"]["config"]["name"], "third");
    }

    #[test]
    fn routes_go_to_the_catch_all_virtual_host() {
        let listener = Listener::http("ingress", 1).route(Route::prefix("/").to_cluster("b"));
        let route_config = &hcm_json(&listener)["route_config"];
        assert_eq!(route_config["name"], "ingress");
        assert_eq!(route_config["virtual_hosts"][0]["domains"], json!(["*"]));
        assert_eq!(
            route_config["virtual_hosts"][0]["routes"][0]["route"]["cluster"],
            "b"
        );
    }
}
