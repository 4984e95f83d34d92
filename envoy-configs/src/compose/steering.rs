//! Traffic steering around the filters that pick clusters (sandbox-router, entity-cache): their
//! routing headers stripped from every request by Envoy itself before routing and before any
//! filter (so no client picks a cluster, not even while a filter's VM is dead and it fails open),
//! a `cluster_header` route per routing header, and an aggregate cluster [preferred, fallback]
//! per fallback, with a retry that moves down it (`previous_priorities`), so an unavailable
//! sandbox or cache costs the client nothing. A cache serving gRPC rules gets an upstream filter
//! on its aggregate ([`HttpFilter::grpc_trailer_status_to_headers`]) so that retry also covers
//! a failure status the cache puts in its trailers.

use super::chain::Side;
use super::render::{dependency_cluster, upstream_protocol, APP_CLUSTER};
use super::spec::{FilterSection, Protocol, ServiceSpec, SpecError};
use crate::{
    Cluster, HeaderMatcher, HttpFilter, RetryOn, RetryPolicy, RetryPriority, Route, Thresholds,
};
use std::time::Duration;

/// What the renderer adds to the sidecar for the spec's steering filters.
#[derive(Debug, Default)]
pub struct Steering {
    /// Sandbox and aggregate clusters.
    pub clusters: Vec<Cluster>,
    /// Ingress routes, ahead of the app's catch-all route.
    pub ingress_routes: Vec<Route>,
    /// Egress routes by dependency name, ahead of that dependency's catch-all route.
    pub egress_routes: Vec<(String, Route)>,
    /// Request headers each listener strips on arrival.
    pub stripped: Vec<(Side, String)>,
}

/// The cluster of sandbox `name` of this service.
pub fn sandbox_cluster(name: &str) -> String {
    format!("sandbox_{name}")
}

/// The aggregate cluster [sandbox `name`, the app]: where the sandbox router sends its requests.
pub fn sandbox_fallback_cluster(name: &str) -> String {
    format!("sandbox_{name}_or_app")
}

/// The aggregate cluster [cache dependency, origin dependency]: where entity-cache sends the
/// cacheable calls of a rule.
pub fn cache_fallback_cluster(cache: &str, origin: &str) -> String {
    format!("egress_{cache}_or_{origin}")
}

/// Plans the steering of `spec`, and rewrites the steering filters' `sections` to name the
/// clusters it adds: the ingress sandbox router gets the spec's `sandboxes`; entity-cache rules,
/// which a spec writes with dependency names, get the aggregate and origin clusters.
pub fn plan(spec: &ServiceSpec, sections: &mut Vec<FilterSection>) -> Result<Steering, SpecError> {
    let mut steering = Steering {
        stripped: routing_headers(spec),
        ..Steering::default()
    };
    if let Some(router) = &spec.filters.sandbox_router {
        let header = router.0.routing_header.as_str().to_owned();
        let mut ingress_config = router.0.clone();
        for sandbox in &spec.sandboxes {
            let fallback = sandbox_fallback_cluster(&sandbox.name);
            ingress_config
                .sandboxes
                .insert(sandbox.name.clone(), fallback.clone());
            steering.clusters.push(
                Cluster::strict_dns(
                    sandbox_cluster(&sandbox.name),
                    [(sandbox.address.clone(), sandbox.port)],
                )
                .upstream_protocol(upstream_protocol(spec.app.protocol))
                .circuit_breaker(Thresholds::unlimited())
                .into(),
            );
            steering.clusters.push(
                Cluster::aggregate(
                    fallback,
                    [sandbox_cluster(&sandbox.name), APP_CLUSTER.to_owned()],
                )
                .circuit_breaker(Thresholds::unlimited())
                .into(),
            );
        }
        steering.ingress_routes.push(cluster_header_route(
            &header,
            spec.app.timeout_ms,
            fallback_retry(spec.app.protocol),
        ));
        for dependency in &spec.dependencies {
            steering.egress_routes.push((
                dependency.name.clone(),
                cluster_header_route(
                    &header,
                    dependency.timeout_ms,
                    fallback_retry(dependency.protocol),
                ),
            ));
        }
        if !spec.sandboxes.is_empty() {
            split_by_side(sections, "sandbox-router", &ingress_config)?;
        }
    }
    if let Some(cache) = &spec.filters.entity_cache {
        let mut config = cache.0.clone();
        let mut origins: Vec<String> = Vec::new();
        let rules = config.rules.clone();
        for rule in &mut config.rules {
            let aggregate = cache_fallback_cluster(&rule.cache_cluster, &rule.origin_cluster);
            if !steering.clusters.iter().any(|c| c.name() == aggregate) {
                let mut cluster = Cluster::aggregate(
                    aggregate.clone(),
                    [
                        dependency_cluster(&rule.cache_cluster),
                        dependency_cluster(&rule.origin_cluster),
                    ],
                )
                .circuit_breaker(Thresholds::unlimited());
                let grpc = rules.iter().any(|other| {
                    other.grpc_method.is_some()
                        && other.cache_cluster == rule.cache_cluster
                        && other.origin_cluster == rule.origin_cluster
                });
                if grpc {
                    // The router sees a cache's failure status in the trailers too.
                    cluster =
                        cluster.upstream_http_filter(HttpFilter::grpc_trailer_status_to_headers());
                }
                steering.clusters.push(cluster.into());
            }
            if !origins.contains(&rule.origin_cluster) {
                origins.push(rule.origin_cluster.clone());
            }
            rule.origin_cluster = dependency_cluster(&rule.origin_cluster);
            rule.cache_cluster = aggregate;
        }
        if let Some(header) = &config.routing_header {
            for origin in origins {
                let Some(dependency) = spec.dependencies.iter().find(|d| d.name == origin) else {
                    continue;
                };
                steering.egress_routes.push((
                    origin,
                    cluster_header_route(
                        header.as_str(),
                        dependency.timeout_ms,
                        fallback_retry(dependency.protocol),
                    ),
                ));
            }
        }
        for section in sections.iter_mut().filter(|s| s.filter == "entity-cache") {
            section.config = to_json("filters.entity_cache", &config)?;
        }
    }
    Ok(steering)
}

/// The routing headers of the spec's steering filters, by the listener that strips them: the
/// sandbox router's on both, entity-cache's on egress.
pub fn routing_headers(spec: &ServiceSpec) -> Vec<(Side, String)> {
    let mut headers = Vec::new();
    if let Some(router) = &spec.filters.sandbox_router {
        let header = router.0.routing_header.as_str();
        headers.push((Side::Ingress, header.to_owned()));
        headers.push((Side::Egress, header.to_owned()));
    }
    if let Some(header) = spec
        .filters
        .entity_cache
        .as_ref()
        .and_then(|cache| cache.0.routing_header.as_ref())
    {
        headers.push((Side::Egress, header.as_str().to_owned()));
    }
    headers
}

/// Requests carrying `header` go to the cluster it names (set by one of our filters, never by a
/// client: the listener strips it on arrival).
fn cluster_header_route(header: &str, timeout_ms: u64, retry: RetryPolicy) -> Route {
    Route::prefix("/")
        .header(HeaderMatcher::present(header))
        .to_cluster_header(header)
        .timeout(Duration::from_millis(timeout_ms))
        .retry_policy(retry)
}

/// One retry, on the next priority of an aggregate cluster (the fallback), when the preferred
/// cluster refuses, resets, answers 503, or (gRPC) answers an unavailable-like status in its
/// headers. Envoy 1.40 does not retry on a status in trailers: entity-cache counts those.
fn fallback_retry(protocol: Protocol) -> RetryPolicy {
    let mut on = vec![
        RetryOn::ConnectFailure,
        RetryOn::RefusedStream,
        RetryOn::Reset,
    ];
    if protocol == Protocol::Grpc {
        on.extend([
            RetryOn::Unavailable,
            RetryOn::Internal,
            RetryOn::ResourceExhausted,
        ]);
    }
    RetryPolicy::new(on, 1)
        .retriable_status_codes([503])
        .retry_priority(RetryPriority::previous_priorities(1))
}

/// Replaces the one section of `filter` (for both listeners) by an ingress section with
/// `ingress_config` and an egress section as written.
fn split_by_side<T: serde::Serialize>(
    sections: &mut Vec<FilterSection>,
    filter: &str,
    ingress_config: &T,
) -> Result<(), SpecError> {
    let Some(index) = sections.iter().position(|s| s.filter == filter) else {
        return Ok(());
    };
    let mut egress = sections[index].clone();
    egress.side = Some(Side::Egress);
    let ingress = &mut sections[index];
    ingress.side = Some(Side::Ingress);
    ingress.config = to_json(ingress.field, ingress_config)?;
    sections.insert(index + 1, egress);
    Ok(())
}

fn to_json<T: serde::Serialize>(path: &str, config: &T) -> Result<serde_json::Value, SpecError> {
    serde_json::to_value(config).map_err(|err| SpecError {
        path: path.to_owned(),
        line: None,
        message: format!("cannot be written as JSON: {err}"),
    })
}
