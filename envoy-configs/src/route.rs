//! Route configuration: virtual hosts, routes (path/prefix + header matchers) and route actions
//! (target cluster or cluster header, timeout, retry policy with priority/host retry plugins).

use crate::any::{Any, Message, RawAny};
use crate::duration;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::time::Duration;

/// `typed_per_filter_config` of a route or virtual host: per HTTP filter name (see
/// [`crate::HttpFilter::name`]), what that filter does differently for these requests.
pub type PerFilterConfigs = BTreeMap<String, PerFilterConfig>;

/// One filter's per-route configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PerFilterConfig {
    /// `envoy.config.route.v3.FilterConfig`: the filter is skipped (or, for a filter marked
    /// optional, its absence tolerated).
    Filter(Any<FilterConfig>),
    /// The filter's own per-route message (e.g. a fault filter's `HTTPFault`), by type URL.
    Raw(RawAny),
}

/// `envoy.config.route.v3.FilterConfig`: per-route switches any HTTP filter honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FilterConfig {
    /// The filter does not run for these requests.
    pub disabled: bool,
}

impl Message for FilterConfig {
    const TYPE_URL: &'static str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";
}

/// `envoy.config.route.v3.RouteConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteConfiguration {
    name: String,
    virtual_hosts: Vec<VirtualHost>,
}

impl RouteConfiguration {
    /// An empty route configuration.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            virtual_hosts: Vec::new(),
        }
    }

    /// Adds a virtual host.
    pub fn virtual_host(mut self, virtual_host: VirtualHost) -> Self {
        self.virtual_hosts.push(virtual_host);
        self
    }

    /// Makes the virtual hosts so far report attempt counts (see
    /// [`VirtualHost::include_attempt_counts`]).
    pub fn include_attempt_counts(mut self) -> Self {
        self.virtual_hosts = self
            .virtual_hosts
            .into_iter()
            .map(VirtualHost::include_attempt_counts)
            .collect();
        self
    }

    /// The virtual hosts, in insertion order.
    pub fn virtual_hosts(&self) -> &[VirtualHost] {
        &self.virtual_hosts
    }

    /// Appends `route` to the first virtual host, creating a catch-all `default` one if none exists.
    pub(crate) fn add_route(&mut self, route: Route) {
        match self.virtual_hosts.first_mut() {
            Some(first) => first.routes.push(route),
            None => self
                .virtual_hosts
                .push(VirtualHost::new("default", ["*"]).route(route)),
        }
    }
}

/// `envoy.config.route.v3.VirtualHost`: routes for a set of `:authority` domains.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VirtualHost {
    name: String,
    domains: Vec<String>,
    routes: Vec<Route>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    typed_per_filter_config: PerFilterConfigs,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    include_request_attempt_count: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    include_attempt_count_in_response: bool,
}

impl VirtualHost {
    /// A virtual host serving `domains` (`*` matches any authority), with no routes yet.
    pub fn new(
        name: impl Into<String>,
        domains: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            domains: domains.into_iter().map(Into::into).collect(),
            routes: Vec::new(),
            typed_per_filter_config: PerFilterConfigs::new(),
            include_request_attempt_count: false,
            include_attempt_count_in_response: false,
        }
    }

    /// Makes the router put `x-envoy-attempt-count` on upstream requests and on responses, so
    /// upstreams can tell retries from first attempts and retry budgets can settle.
    pub fn include_attempt_counts(mut self) -> Self {
        self.include_request_attempt_count = true;
        self.include_attempt_count_in_response = true;
        self
    }

    /// Appends a route; Envoy uses the first route that matches.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Configures HTTP filter `filter` differently for this virtual host's requests (a route's
    /// own entry for the filter wins).
    pub fn per_filter_config(mut self, filter: impl Into<String>, config: PerFilterConfig) -> Self {
        self.typed_per_filter_config.insert(filter.into(), config);
        self
    }

    /// The routes, in match order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// `envoy.config.route.v3.Route` that forwards to a cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    #[serde(rename = "match")]
    route_match: RouteMatch,
    route: RouteAction,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    typed_per_filter_config: PerFilterConfigs,
}

impl Route {
    /// Starts a route matching paths that begin with `prefix`; finish it with
    /// [`RouteMatch::to_cluster`] or [`RouteMatch::to_cluster_header`].
    pub fn prefix(prefix: impl Into<String>) -> RouteMatch {
        RouteMatch::new(PathMatch::Prefix(prefix.into()))
    }

    /// Starts a route matching exactly `path` (query string excluded).
    pub fn path(path: impl Into<String>) -> RouteMatch {
        RouteMatch::new(PathMatch::Path(path.into()))
    }

    /// A route from its two halves.
    pub fn new(route_match: RouteMatch, action: RouteAction) -> Self {
        Self {
            route_match,
            route: action,
            typed_per_filter_config: PerFilterConfigs::new(),
        }
    }

    /// Configures HTTP filter `filter` (its name in the chain) differently for this route's
    /// requests.
    pub fn per_filter_config(mut self, filter: impl Into<String>, config: PerFilterConfig) -> Self {
        self.typed_per_filter_config.insert(filter.into(), config);
        self
    }

    /// Skips HTTP filter `filter` for this route's requests (e.g. a health check path that no
    /// protection should count).
    pub fn disable_filter(self, filter: impl Into<String>) -> Self {
        self.per_filter_config(
            filter,
            PerFilterConfig::Filter(Any(FilterConfig { disabled: true })),
        )
    }

    /// Sets the whole-request timeout (Envoy's default is 15 s; zero disables it).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.route.timeout = Some(timeout);
        self
    }

    /// Sets the retry policy.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.route.retry_policy = Some(policy);
        self
    }

    /// What the route matches.
    pub fn route_match(&self) -> &RouteMatch {
        &self.route_match
    }

    /// Where the route sends matched requests.
    pub fn action(&self) -> &RouteAction {
        &self.route
    }
}

/// `envoy.config.route.v3.RouteMatch`: a path condition plus header conditions (all must hold).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteMatch {
    #[serde(flatten)]
    path: PathMatch,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<HeaderMatcher>,
}

impl RouteMatch {
    /// A match on the path alone.
    pub fn new(path: PathMatch) -> Self {
        Self {
            path,
            headers: Vec::new(),
        }
    }

    /// Also requires a header condition.
    pub fn header(mut self, matcher: HeaderMatcher) -> Self {
        self.headers.push(matcher);
        self
    }

    /// Finishes the route: forward to the cluster named `cluster`.
    pub fn to_cluster(self, cluster: impl Into<String>) -> Route {
        Route::new(
            self,
            RouteAction::new(ClusterSpecifier::Cluster(cluster.into())),
        )
    }

    /// Finishes the route: forward to the cluster named by the request header `header`
    /// (a filter typically sets it; Envoy answers 503 if the header is missing or unknown).
    pub fn to_cluster_header(self, header: impl Into<String>) -> Route {
        Route::new(
            self,
            RouteAction::new(ClusterSpecifier::ClusterHeader(header.into())),
        )
    }
}

/// The path half of a [`RouteMatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// Path starts with this prefix.
    Prefix(String),
    /// Path equals this exactly.
    Path(String),
}

/// `envoy.config.route.v3.HeaderMatcher`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderMatcher {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    string_match: Option<StringMatcher>,
    #[serde(skip_serializing_if = "Option::is_none")]
    present_match: Option<bool>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    invert_match: bool,
}

impl HeaderMatcher {
    /// Header `name` is present and its value satisfies `matcher`.
    pub fn string(name: impl Into<String>, matcher: StringMatcher) -> Self {
        Self {
            name: name.into(),
            string_match: Some(matcher),
            present_match: None,
            invert_match: false,
        }
    }

    /// Header `name` equals `value`.
    pub fn exact(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self::string(name, StringMatcher::Exact(value.into()))
    }

    /// Header `name` starts with `prefix`.
    pub fn prefix(name: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self::string(name, StringMatcher::Prefix(prefix.into()))
    }

    /// Header `name` is present, whatever its value.
    pub fn present(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            string_match: None,
            present_match: Some(true),
            invert_match: false,
        }
    }

    /// Negates the condition.
    pub fn inverted(mut self) -> Self {
        self.invert_match = true;
        self
    }
}

/// `envoy.type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatcher {
    /// Equal to the string.
    Exact(String),
    /// Starts with the string.
    Prefix(String),
    /// Ends with the string.
    Suffix(String),
    /// Contains the string.
    Contains(String),
    /// Matches the RE2 regular expression (see [`StringMatcher::regex`]).
    SafeRegex(RegexMatcher),
}

impl StringMatcher {
    /// Matches the RE2 regular expression `regex` (Envoy rejects the config if it does not
    /// compile).
    pub fn regex(regex: impl Into<String>) -> Self {
        Self::SafeRegex(RegexMatcher {
            regex: regex.into(),
        })
    }
}

/// `envoy.type.matcher.v3.RegexMatcher` (RE2, Envoy's only engine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegexMatcher {
    /// The RE2 expression.
    pub regex: String,
}

/// `envoy.config.route.v3.RouteAction` (cluster forwarding only).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteAction {
    #[serde(flatten)]
    cluster: ClusterSpecifier,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "duration::serialize_opt"
    )]
    timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_policy: Option<RetryPolicy>,
}

impl RouteAction {
    /// Forward to `cluster` with Envoy's default timeout and no retries.
    pub fn new(cluster: ClusterSpecifier) -> Self {
        Self {
            cluster,
            timeout: None,
            retry_policy: None,
        }
    }

    /// The target cluster (or the header naming it).
    pub fn cluster(&self) -> &ClusterSpecifier {
        &self.cluster
    }
}

/// Which upstream cluster a route forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterSpecifier {
    /// A fixed cluster name.
    Cluster(String),
    /// The cluster named by this request header's value.
    ClusterHeader(String),
}

/// A `retry_on` condition of Envoy's router (`x-envoy-retry-on` and `x-envoy-retry-grpc-on`
/// vocabulary); deserializes from the same spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum RetryOn {
    /// `5xx`: any 5xx response, reset, or connect failure.
    #[serde(rename = "5xx")]
    FiveXx,
    /// `gateway-error`: 502, 503, 504.
    #[serde(rename = "gateway-error")]
    GatewayError,
    /// `reset`: upstream did not respond (disconnect/reset/read timeout).
    #[serde(rename = "reset")]
    Reset,
    /// `reset-before-request`: reset before the request was fully sent.
    #[serde(rename = "reset-before-request")]
    ResetBeforeRequest,
    /// `connect-failure`: connection to the upstream failed.
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// `envoy-ratelimited`: response carries `x-envoy-ratelimited`.
    #[serde(rename = "envoy-ratelimited")]
    EnvoyRatelimited,
    /// `retriable-4xx`: 409.
    #[serde(rename = "retriable-4xx")]
    Retriable4xx,
    /// `refused-stream`: HTTP/2 REFUSED_STREAM.
    #[serde(rename = "refused-stream")]
    RefusedStream,
    /// `retriable-status-codes`: codes listed in [`RetryPolicy::retriable_status_codes`].
    #[serde(rename = "retriable-status-codes")]
    RetriableStatusCodes,
    /// `unavailable`: gRPC status UNAVAILABLE in the response headers.
    #[serde(rename = "unavailable")]
    Unavailable,
    /// `cancelled`: gRPC status CANCELLED in the response headers.
    #[serde(rename = "cancelled")]
    Cancelled,
    /// `deadline-exceeded`: gRPC status DEADLINE_EXCEEDED in the response headers.
    #[serde(rename = "deadline-exceeded")]
    DeadlineExceeded,
    /// `internal`: gRPC status INTERNAL in the response headers.
    #[serde(rename = "internal")]
    Internal,
    /// `resource-exhausted`: gRPC status RESOURCE_EXHAUSTED in the response headers.
    #[serde(rename = "resource-exhausted")]
    ResourceExhausted,
}

impl RetryOn {
    /// Envoy's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FiveXx => "5xx",
            Self::GatewayError => "gateway-error",
            Self::Reset => "reset",
            Self::ResetBeforeRequest => "reset-before-request",
            Self::ConnectFailure => "connect-failure",
            Self::EnvoyRatelimited => "envoy-ratelimited",
            Self::Retriable4xx => "retriable-4xx",
            Self::RefusedStream => "refused-stream",
            Self::RetriableStatusCodes => "retriable-status-codes",
            Self::Unavailable => "unavailable",
            Self::Cancelled => "cancelled",
            Self::DeadlineExceeded => "deadline-exceeded",
            Self::Internal => "internal",
            Self::ResourceExhausted => "resource-exhausted",
        }
    }
}

fn serialize_retry_on<S: Serializer>(on: &[RetryOn], serializer: S) -> Result<S::Ok, S::Error> {
    let joined: Vec<&str> = on.iter().map(|condition| condition.as_str()).collect();
    serializer.serialize_str(&joined.join(","))
}

/// `envoy.config.route.v3.RetryPolicy`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    #[serde(serialize_with = "serialize_retry_on")]
    retry_on: Vec<RetryOn>,
    num_retries: u32,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "duration::serialize_opt"
    )]
    per_try_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    retriable_status_codes: Vec<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_priority: Option<RetryPriority>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    retry_host_predicate: Vec<RetryHostPredicate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_selection_retry_max_attempts: Option<u32>,
}

impl RetryPolicy {
    /// Retry up to `num_retries` times on any of `on`.
    pub fn new(on: impl IntoIterator<Item = RetryOn>, num_retries: u32) -> Self {
        Self {
            retry_on: on.into_iter().collect(),
            num_retries,
            per_try_timeout: None,
            retriable_status_codes: Vec::new(),
            retry_priority: None,
            retry_host_predicate: Vec::new(),
            host_selection_retry_max_attempts: None,
        }
    }

    /// Timeout of each attempt (the route timeout still bounds the whole request).
    pub fn per_try_timeout(mut self, timeout: Duration) -> Self {
        self.per_try_timeout = Some(timeout);
        self
    }

    /// Status codes that [`RetryOn::RetriableStatusCodes`] retries (added to `retry_on` too).
    pub fn retriable_status_codes(mut self, codes: impl IntoIterator<Item = u16>) -> Self {
        self.retriable_status_codes.extend(codes);
        if !self.retry_on.contains(&RetryOn::RetriableStatusCodes) {
            self.retry_on.push(RetryOn::RetriableStatusCodes);
        }
        self
    }

    /// Retries move to the next priority level (see [`RetryPriority::previous_priorities`]).
    pub fn retry_priority(mut self, priority: RetryPriority) -> Self {
        self.retry_priority = Some(priority);
        self
    }

    /// Retries avoid hosts already tried, re-picking up to `max_attempts` times.
    pub fn avoid_previous_hosts(mut self, max_attempts: u32) -> Self {
        self.retry_host_predicate
            .push(RetryHostPredicate::previous_hosts());
        self.host_selection_retry_max_attempts = Some(max_attempts);
        self
    }
}

/// `envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviousPrioritiesConfig {
    /// After how many attempts the priorities already tried are excluded again.
    pub update_frequency: u32,
}

impl Message for PreviousPrioritiesConfig {
    const TYPE_URL: &'static str = "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig";
}

/// `RetryPolicy.RetryPriority`: the retry priority plugin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPriority {
    name: &'static str,
    typed_config: Any<PreviousPrioritiesConfig>,
}

impl RetryPriority {
    /// `envoy.retry_priorities.previous_priorities`: each retry skips priority levels already
    /// attempted, re-evaluating every `update_frequency` attempts. With an aggregate cluster the
    /// priority levels are its member clusters, so retries fail over from primary to fallback.
    pub fn previous_priorities(update_frequency: u32) -> Self {
        Self {
            name: "envoy.retry_priorities.previous_priorities",
            typed_config: Any(PreviousPrioritiesConfig { update_frequency }),
        }
    }
}

/// `envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate` (no fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviousHostsPredicate {}

impl Message for PreviousHostsPredicate {
    const TYPE_URL: &'static str =
        "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";
}

/// `RetryPolicy.RetryHostPredicate`: a host-rejection plugin for retries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryHostPredicate {
    name: &'static str,
    typed_config: Any<PreviousHostsPredicate>,
}

impl RetryHostPredicate {
    /// `envoy.retry_host_predicates.previous_hosts`: reject hosts already attempted.
    pub fn previous_hosts() -> Self {
        Self {
            name: "envoy.retry_host_predicates.previous_hosts",
            typed_config: Any(PreviousHostsPredicate {}),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::{json, Value};

    fn to_value(route: &Route) -> Value {
        serde_json::to_value(route).unwrap()
    }

    #[test]
    fn attempt_counts_are_serialized_only_when_asked_for() {
        let plain = serde_json::to_value(VirtualHost::new("v", ["*"])).unwrap();
        assert!(plain.get("include_attempt_count_in_response").is_none());
        let counted =
            serde_json::to_value(VirtualHost::new("v", ["*"]).include_attempt_counts()).unwrap();
        assert_eq!(counted["include_request_attempt_count"], true);
        assert_eq!(counted["include_attempt_count_in_response"], true);
    }

    #[test]
    fn prefix_route_to_cluster_with_timeout() {
        let route = Route::prefix("/api")
            .to_cluster("backend")
            .timeout(Duration::from_millis(2500));
        assert_eq!(
            to_value(&route),
            json!({"match": {"prefix": "/api"}, "route": {"cluster": "backend", "timeout": "2.500s"}})
        );
    }

    #[test]
    fn path_route_with_header_matchers_to_cluster_header() {
        let route = Route::path("/exact")
            .header(HeaderMatcher::exact("x-canary", "1"))
            .header(HeaderMatcher::present("x-debug").inverted())
            .header(HeaderMatcher::prefix("x-tenant", "acme-"))
            .to_cluster_header("x-mesh-cluster");
        let value = to_value(&route);
        assert_eq!(value["match"]["path"], "/exact");
        assert!(value["match"].get("prefix").is_none());
        assert_eq!(
            value["match"]["headers"],
            json!([
                {"name": "x-canary", "string_match": {"exact": "1"}},
                {"name": "x-debug", "present_match": true, "invert_match": true},
                {"name": "x-tenant", "string_match": {"prefix": "acme-"}}
            ])
        );
        assert_eq!(value["route"], json!({"cluster_header": "x-mesh-cluster"}));
    }

    #[test]
    fn retry_policy_with_priority_and_host_plugins() {
        let route = Route::prefix("/").to_cluster("agg").retry_policy(
            RetryPolicy::new([RetryOn::FiveXx, RetryOn::ConnectFailure], 3)
                .per_try_timeout(Duration::from_millis(500))
                .retriable_status_codes([429])
                .retry_priority(RetryPriority::previous_priorities(2))
                .avoid_previous_hosts(5),
        );
        let policy = &to_value(&route)["route"]["retry_policy"];
        assert_eq!(
            policy["retry_on"],
            "5xx,connect-failure,retriable-status-codes"
        );
        assert_eq!(policy["num_retries"], 3);
        assert_eq!(policy["per_try_timeout"], "0.500s");
        assert_eq!(policy["retriable_status_codes"], json!([429]));
        assert_eq!(
            policy["retry_priority"],
            json!({
                "name": "envoy.retry_priorities.previous_priorities",
                "typed_config": {
                    "@type": PreviousPrioritiesConfig::TYPE_URL,
                    "update_frequency": 2
                }
            })
        );
        assert_eq!(
            policy["retry_host_predicate"],
            json!([{
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": PreviousHostsPredicate::TYPE_URL}
            }])
        );
        assert_eq!(policy["host_selection_retry_max_attempts"], 5);
    }

    #[test]
    fn grpc_retry_conditions_use_envoys_spelling() {
        let policy = serde_json::to_value(RetryPolicy::new(
            [
                RetryOn::Unavailable,
                RetryOn::Cancelled,
                RetryOn::DeadlineExceeded,
                RetryOn::Internal,
                RetryOn::ResourceExhausted,
            ],
            1,
        ))
        .unwrap();
        assert_eq!(
            policy["retry_on"],
            "unavailable,cancelled,deadline-exceeded,internal,resource-exhausted"
        );
        let parsed: RetryOn = serde_json::from_value(json!("resource-exhausted")).unwrap();
        assert_eq!(parsed, RetryOn::ResourceExhausted);
    }

    #[test]
    fn per_filter_configs_are_keyed_by_filter_name_on_routes_and_hosts() {
        let fault = RawAny::new(
            "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            &json!({"abort": {"http_status": 429, "percentage": {"numerator": 100}}}),
        )
        .unwrap();
        let route = Route::prefix("/")
            .to_cluster("c")
            .disable_filter("shed")
            .per_filter_config("fault", PerFilterConfig::Raw(fault.clone()));
        assert_eq!(
            to_value(&route)["typed_per_filter_config"],
            json!({
                "fault": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                    "abort": {"http_status": 429, "percentage": {"numerator": 100}}
                },
                "shed": {"@type": FilterConfig::TYPE_URL, "disabled": true}
            })
        );
        assert!(to_value(&Route::prefix("/").to_cluster("c"))
            .get("typed_per_filter_config")
            .is_none());
        let host =
            VirtualHost::new("v", ["*"]).per_filter_config("fault", PerFilterConfig::Raw(fault));
        assert_eq!(
            serde_json::to_value(host).unwrap()["typed_per_filter_config"]["fault"]["abort"]
                ["http_status"],
            429
        );
    }

    #[test]
    fn minimal_retry_policy_leaves_optional_parts_out() {
        let policy = serde_json::to_value(RetryPolicy::new([RetryOn::Reset], 1)).unwrap();
        assert_eq!(policy, json!({"retry_on": "reset", "num_retries": 1}));
    }

    #[test]
    fn route_added_to_empty_config_creates_catch_all_host() {
        let mut config = RouteConfiguration::new("rc");
        config.add_route(Route::prefix("/").to_cluster("c"));
        let value = serde_json::to_value(&config).unwrap();
        assert_eq!(value["virtual_hosts"][0]["domains"], json!(["*"]));
        assert_eq!(
            value["virtual_hosts"][0]["routes"][0]["route"]["cluster"],
            "c"
        );
    }
}
