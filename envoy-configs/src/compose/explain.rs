//! `mesh-bootstrap explain`: what a rendered sidecar does to traffic, per listener and filter, in
//! plain language.

use super::chain::Side;
use super::render::{Rendered, ADMIN_CLUSTER, APP_CLUSTER, EJECT_AFTER_LOCAL_FAILURES};
use super::spec::{Protocol, ServiceSpec};
use super::steering;
use crate::FailurePolicy;
use load_shedder::config::ShedderConfig;

/// The plain-language summary of `rendered` (rendered from `spec`).
pub fn explain(spec: &ServiceSpec, rendered: &Rendered) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "{} sidecar: the app speaks {} on 127.0.0.1:{}",
        spec.service,
        protocol_name(spec.app.protocol),
        spec.app.port
    ));
    line(String::new());
    line(format!(
        "ingress listener 0.0.0.0:{}: requests other services send to {}",
        spec.ingress.port, spec.service
    ));
    describe_filters(spec, rendered, Side::Ingress, &mut line);
    describe_stripped(spec, Side::Ingress, &mut line);
    for sandbox in &spec.sandboxes {
        line(format!(
            "  sandbox {}: requests keyed to it go to {}:{} ({}), and to the app within the same \
             request when the sandbox refuses, resets or answers 503",
            sandbox.name,
            sandbox.address,
            sandbox.port,
            steering::sandbox_fallback_cluster(&sandbox.name)
        ));
    }
    line(format!(
        "  then: forwarded to the app ({APP_CLUSTER}, 127.0.0.1:{}), giving up after {} ms",
        spec.app.port, spec.app.timeout_ms
    ));
    line(format!(
        "  connections: drained once {} s old so clients re-balance; at most {} concurrent HTTP/2 \
         streams each; on shutdown, open requests get {} ms to finish",
        spec.ingress.max_connection_duration_s,
        spec.ingress.max_concurrent_streams,
        spec.drain.timeout_ms
    ));
    line(String::new());
    line(format!(
        "egress listener 127.0.0.1:{}: calls {} makes, routed by their Host header",
        spec.egress.port, spec.service
    ));
    describe_filters(spec, rendered, Side::Egress, &mut line);
    if let Some(cache) = &spec.filters.entity_cache {
        for rule in &cache.0.rules {
            let matched = rule.grpc_method.clone().unwrap_or_else(|| {
                format!(
                    "{} {}*",
                    rule.http_method.as_deref().unwrap_or("any"),
                    rule.path_prefix.as_deref().unwrap_or("/")
                )
            });
            let where_status = if rule.grpc_method.is_some() {
                " (in its headers or, held until they arrive, its trailers)"
            } else {
                ""
            };
            line(format!(
                "  cacheable {matched}: sent to {} ({}), and to {} within the same call when the \
                 cache refuses, resets or answers UNAVAILABLE, INTERNAL, RESOURCE_EXHAUSTED or 503\
                 {where_status}; straight to {} while the cache's breaker is open",
                rule.cache_cluster,
                steering::cache_fallback_cluster(&rule.cache_cluster, &rule.origin_cluster),
                rule.origin_cluster,
                rule.origin_cluster
            ));
        }
    }
    describe_stripped(spec, Side::Egress, &mut line);
    if spec.dependencies.is_empty() {
        line("  no dependencies declared: every call is answered 404".to_owned());
    }
    for dependency in &spec.dependencies {
        let retry = &dependency.retry;
        let retries = if retry.retries == 0 {
            "no retries".to_owned()
        } else {
            let on: Vec<&str> = retry.on.iter().map(|on| on.as_str()).collect();
            format!(
                "up to {} retr{} on {}, each on another host",
                retry.retries,
                if retry.retries == 1 { "y" } else { "ies" },
                on.join(", ")
            )
        };
        let checked = match &dependency.health_check {
            None => String::new(),
            Some(check) => format!(
                "; each endpoint checked every {} ms ({}), out of rotation after 3 failed checks",
                check.interval_ms,
                check
                    .path
                    .as_ref()
                    .map_or("gRPC health".to_owned(), |path| format!("GET {path}"))
            ),
        };
        line(format!(
            "  Host {} -> {}:{} ({}, DNS-resolved): gives up after {} ms like the app; {}; the \
             attempt count travels in x-envoy-attempt-count; an endpoint failing \
             {EJECT_AFTER_LOCAL_FAILURES} connections in a row is ejected (never for its \
             answers: a shedding callee keeps its share){checked}",
            dependency.name,
            dependency.address,
            dependency.port,
            protocol_name(dependency.protocol),
            dependency.timeout_ms,
            retries
        ));
    }
    line("  any other Host: 404 (the sidecar is not an open proxy)".to_owned());
    line(String::new());
    line(format!(
        "the proxy itself: circuit breakers off (filters decide what is refused); the overload \
         manager answers 503 past 98 % of {} MiB heap and caps connections at {}; only {} stat \
         patterns exist (bounded metrics cost)",
        spec.overload.max_heap_mb,
        spec.overload.max_downstream_connections,
        rendered
            .bootstrap
            .stats_config_ref()
            .map_or(0, |stats| stats.patterns().len())
    ));
    line(format!(
        "Prometheus scrapes 0.0.0.0:{}/stats/prometheus (that path only; the admin interface stays on loopback)",
        spec.admin.prometheus_port
    ));
    line(format!(
        "run it with: envoy -c <bootstrap> --drain-strategy immediate (admin on 127.0.0.1:{}, \
         reachable by the filters as cluster {ADMIN_CLUSTER})",
        spec.admin.port
    ));
    if !rendered.notes.is_empty() {
        line(String::new());
        line("notes:".to_owned());
        for note in &rendered.notes {
            line(format!("  - {note}"));
        }
    }
    out
}

fn describe_filters(
    spec: &ServiceSpec,
    rendered: &Rendered,
    side: Side,
    line: &mut impl FnMut(String),
) {
    let mut step = 0;
    for plugin in rendered.plugins.iter().filter(|plugin| plugin.side == side) {
        let dead = match plugin.failure_policy {
            FailurePolicy::FailOpen => "requests skip it",
            FailurePolicy::FailClosed => "requests are refused (503)",
            FailurePolicy::FailReload => "the VM is reloaded; requests are refused meanwhile",
        };
        for slot in &plugin.filters {
            step += 1;
            line(format!(
                "  {step}. {} ({}, plugin {}): {}",
                slot.filter, plugin.module, plugin.name, slot.does
            ));
            for detail in details(spec, slot.filter) {
                line(format!("       {detail}"));
            }
        }
        line(format!(
            "     if plugin {} dies: {dead} ({})",
            plugin.name, plugin.failure_reason
        ));
    }
    if step == 0 {
        line("  no mesh filters".to_owned());
    }
}

/// A filter's configuration in a sentence or two, for filters whose config type the composer
/// knows.
fn details(spec: &ServiceSpec, filter: &str) -> Vec<String> {
    match (filter, &spec.filters.load_shedder) {
        ("load-shedder", Some(config)) => shedder_details(&config.0),
        _ => Vec::new(),
    }
}

fn shedder_details(config: &ShedderConfig) -> Vec<String> {
    let limit = &config.limit;
    let mut details = vec![format!(
        "limit between {} and {} concurrent requests, starting at {}{}",
        limit.min_limit,
        limit.max_limit,
        limit.initial_limit,
        limit
            .latency_target_ms
            .map_or(String::new(), |target| format!(
                ", shrinking while latency exceeds {} ms",
                target.as_millis()
            ))
    )];
    if config.dry_run {
        details.push("dry run: counts would-be sheds, admits everything".to_owned());
    }
    if !config.bypass_paths.is_empty() {
        details.push(format!(
            "never counts nor sheds {}",
            config.bypass_paths.join(", ")
        ));
    }
    let grpc_status = serde_json::to_value(config.rejection.grpc_status)
        .ok()
        .and_then(|status| status.as_str().map(str::to_owned))
        .unwrap_or_default();
    details.push(format!(
        "a shed request gets 503 with retry-after {} s (gRPC: {grpc_status})",
        config.rejection.retry_after_seconds
    ));
    details
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Http1 => "HTTP/1.1",
        Protocol::Http2 => "HTTP/2",
        Protocol::Grpc => "gRPC",
    }
}

/// The routing headers `side` removes from requests on arrival.
fn describe_stripped(spec: &ServiceSpec, side: Side, line: &mut impl FnMut(String)) {
    for (_, header) in steering::routing_headers(spec)
        .into_iter()
        .filter(|(on, _)| *on == side)
    {
        line(format!(
            "  {header} is removed from every request on arrival (before routing and filters): \
             only a mesh filter picks a cluster, even while its VM is dead"
        ));
    }
}
