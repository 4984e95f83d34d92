//! `mesh-bootstrap dashboard`: a Grafana dashboard and Prometheus alert rules for a service's
//! sidecar, from its spec and rendered plugins: the seed's "high error rate" and "increased
//! latency" alerts, plus one per mesh filter the sidecar runs. Each alert carries the series
//! that make it fire, from which [`rule_tests`] writes a `promtool test rules` case per alert.
//!
//! Series carry a `service` label: the scrape configuration must attach it to the sidecar's
//! `/stats/prometheus` target (the Kubernetes pod label of the same name).

use super::render::{dependency_cluster, Rendered};
use super::spec::ServiceSpec;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A Prometheus alerting rule, with the input series that make it fire (for its test).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Alert name.
    pub name: String,
    /// PromQL condition.
    pub expr: String,
    /// How long the condition must hold (minutes).
    pub for_minutes: u32,
    /// `page` or `ticket`.
    pub severity: &'static str,
    /// One line for the pager.
    pub summary: String,
    /// What it means and what to look at.
    pub description: String,
    /// `(series, values)` in promtool's notation that make the alert fire after 15 minutes.
    pub firing_series: Vec<(String, String)>,
}

/// The alerts of one filter, given the service name; a filter joins with a line in
/// [`filter_alerts`].
type FilterAlerts = fn(&str) -> Vec<Alert>;

/// The per-filter alerts, by filter name.
fn filter_alerts(filter: &str) -> Option<FilterAlerts> {
    match filter {
        "load-shedder" => Some(load_shedder_alerts),
        "retry-budget" => Some(retry_budget_alerts),
        "drain-signal" => Some(drain_signal_alerts),
        "sandbox-router" => Some(sandbox_router_alerts),
        "entity-cache" => Some(entity_cache_alerts),
        _ => None,
    }
}

/// Whether the dashboard knows alerts for `filter` (every filter of the catalog must).
pub fn has_filter_alerts(filter: &str) -> bool {
    filter_alerts(filter).is_some()
}

fn camel(service: &str) -> String {
    service
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

fn ingress(service: &str) -> String {
    format!(r#"service="{service}",envoy_http_conn_manager_prefix="ingress""#)
}

/// Every alert of the sidecar rendered from `spec`.
pub fn alerts(spec: &ServiceSpec, rendered: &Rendered) -> Vec<Alert> {
    let service = spec.service.as_str();
    let name = camel(service);
    let sel = ingress(service);
    let latency_ms = spec.app.timeout_ms / 2;
    let mut alerts = vec![
        Alert {
            name: format!("{name}HighErrorRate"),
            expr: format!(
                r#"sum(rate(envoy_http_downstream_rq_xx{{{sel},envoy_response_code_class="5"}}[5m])) / sum(rate(envoy_http_downstream_rq_total{{{sel}}}[5m])) > 0.05"#
            ),
            for_minutes: 5,
            severity: "page",
            summary: format!("{service}: more than 5 % of inbound requests fail with 5xx"),
            description: format!(
                "The ingress sidecar of {service} answered over 5 % of requests with 5xx for 5 minutes \
                 (the app's errors, timeouts and shed requests alike). Check the app, its dependencies' \
                 dashboards and the load shedder's panel."
            ),
            firing_series: vec![
                (
                    format!(r#"envoy_http_downstream_rq_xx{{{sel},envoy_response_code_class="5"}}"#),
                    "0+60x20".to_owned(),
                ),
                (
                    format!("envoy_http_downstream_rq_total{{{sel}}}"),
                    "0+600x20".to_owned(),
                ),
            ],
        },
        Alert {
            name: format!("{name}IncreasedLatency"),
            expr: format!(
                "histogram_quantile(0.99, sum by (le) (rate(envoy_http_downstream_rq_time_bucket{{{sel}}}[5m]))) > {latency_ms}"
            ),
            for_minutes: 10,
            severity: "ticket",
            summary: format!("{service}: p99 inbound latency above {latency_ms} ms"),
            description: format!(
                "p99 latency at the ingress sidecar of {service} exceeded half the app's timeout \
                 ({} ms) for 10 minutes: requests are close to timing out.",
                spec.app.timeout_ms
            ),
            firing_series: vec![
                (
                    format!(r#"envoy_http_downstream_rq_time_bucket{{{sel},le="{latency_ms}"}}"#),
                    "0+0x20".to_owned(),
                ),
                (
                    format!(
                        r#"envoy_http_downstream_rq_time_bucket{{{sel},le="{}"}}"#,
                        latency_ms * 2
                    ),
                    "0+60x20".to_owned(),
                ),
                (
                    format!(r#"envoy_http_downstream_rq_time_bucket{{{sel},le="+Inf"}}"#),
                    "0+60x20".to_owned(),
                ),
            ],
        },
    ];
    let mut seen: Vec<&str> = Vec::new();
    for slot in rendered.plugins.iter().flat_map(|plugin| &plugin.filters) {
        if seen.contains(&slot.filter) {
            continue;
        }
        seen.push(slot.filter);
        if let Some(make) = filter_alerts(slot.filter) {
            alerts.extend(make(service));
        }
    }
    alerts
}

fn load_shedder_alerts(service: &str) -> Vec<Alert> {
    let shed = format!(r#"{{__name__=~"mesh_load_shedder_shed_.*",service="{service}"}}"#);
    let admitted = format!(r#"mesh_load_shedder_admitted{{service="{service}"}}"#);
    vec![Alert {
        name: format!("{}LoadShedding", camel(service)),
        expr: format!(
            "sum(rate({shed}[5m])) / (sum(rate({admitted}[5m])) + sum(rate({shed}[5m]))) > 0.01"
        ),
        for_minutes: 5,
        severity: "ticket",
        summary: format!("{service}: the load shedder refuses more than 1 % of requests"),
        description: format!(
            "{service} is past its capacity: the load shedder has refused over 1 % of requests for \
             5 minutes (lowest criticality first). Scale the service or find what slowed it \
             (mesh_load_shedder_limit and window_latency_us on the dashboard)."
        ),
        firing_series: vec![
            (
                format!(r#"mesh_load_shedder_shed_sheddable{{service="{service}"}}"#),
                "0+60x20".to_owned(),
            ),
            (admitted, "0+600x20".to_owned()),
        ],
    }]
}

fn retry_budget_alerts(service: &str) -> Vec<Alert> {
    // The client role runs on the egress listener: instance `egress`.
    let denied = format!(r#"mesh_retry_budget_egress_retries_denied{{service="{service}"}}"#);
    let requests = format!(r#"mesh_retry_budget_egress_requests{{service="{service}"}}"#);
    vec![Alert {
        name: format!("{}RetryBudgetExhausted", camel(service)),
        expr: format!("sum(rate({denied}[5m])) / sum(rate({requests}[5m])) > 0.05"),
        for_minutes: 10,
        severity: "ticket",
        summary: format!("{service}: its retry budget denies retries to dependencies"),
        description: format!(
            "For 10 minutes the retry budget of {service}'s egress sidecar denied retries for over 5 %              of outgoing requests: a dependency is failing, and the budget keeps {service} from              multiplying the failure. Look at the dependencies' panels."
        ),
        firing_series: vec![
            (denied, "0+60x20".to_owned()),
            (requests, "0+600x20".to_owned()),
        ],
    }]
}

fn sandbox_router_alerts(service: &str) -> Vec<Alert> {
    // The dynamic registry is fetched by the ingress instance as well as the egress one; the
    // ingress one stands for both (they fetch the same registry).
    let failed =
        format!(r#"mesh_sandbox_router_ingress_registry_refresh_failed{{service="{service}"}}"#);
    let ok = format!(r#"mesh_sandbox_router_ingress_registry_refresh_ok{{service="{service}"}}"#);
    vec![Alert {
        name: format!("{}SandboxRegistryStale", camel(service)),
        expr: format!(
            "sum(increase({failed}[5m])) > 0 and sum(increase({ok}[5m])) == 0"
        ),
        for_minutes: 10,
        severity: "ticket",
        summary: format!("{service}: its sidecars cannot refresh the sandbox registry"),
        description: format!(
            "For 10 minutes every registry fetch of {service}'s sidecars failed: they keep routing \
             by the last good sandbox list, so sandboxes added or removed since are not seen. Check \
             the registry service and its cluster."
        ),
        firing_series: vec![(failed, "0+1x20".to_owned()), (ok, "5+0x20".to_owned())],
    }]
}

fn drain_signal_alerts(service: &str) -> Vec<Alert> {
    let state = format!(r#"mesh_drain_signal_drain_state{{service="{service}"}}"#);
    vec![Alert {
        name: format!("{}DrainStuck", camel(service)),
        expr: format!("max({state}) > 0"),
        for_minutes: 10,
        severity: "ticket",
        summary: format!("{service}: a sidecar has been draining for 10 minutes"),
        description: format!(
            "A sidecar of {service} started draining (failing health checks, then closing              connections) 10 minutes ago and is still running: its pod did not terminate. Check the              pod's preStop hook and termination grace period."
        ),
        firing_series: vec![(state, "2+0x20".to_owned())],
    }]
}

fn entity_cache_alerts(service: &str) -> Vec<Alert> {
    let opened = format!(r#"mesh_entity_cache_breaker_opened{{service="{service}"}}"#);
    vec![Alert {
        name: format!("{}EntityCacheDegraded", camel(service)),
        expr: format!("sum(increase({opened}[10m])) > 0"),
        for_minutes: 10,
        severity: "ticket",
        summary: format!("{service}: the entity cache keeps failing its calls"),
        description: format!(
            "For 10 minutes the breaker of an entity cache that {service} calls kept opening: its \
             cacheable calls go to the origins instead, which carry the load the cache should take. \
             Check the entity cache's health and the origins' load."
        ),
        firing_series: vec![(opened, "0+1x30".to_owned())],
    }]
}

#[derive(Serialize)]
struct RuleFile<'a> {
    groups: [RuleGroup<'a>; 1],
}

#[derive(Serialize)]
struct RuleGroup<'a> {
    name: String,
    rules: Vec<Rule<'a>>,
}

#[derive(Serialize)]
struct Rule<'a> {
    alert: &'a str,
    expr: &'a str,
    #[serde(rename = "for")]
    for_: String,
    labels: BTreeMap<&'static str, String>,
    annotations: BTreeMap<&'static str, &'a str>,
}

fn rule<'a>(service: &str, alert: &'a Alert) -> Rule<'a> {
    Rule {
        alert: &alert.name,
        expr: &alert.expr,
        for_: format!("{}m", alert.for_minutes),
        labels: labels(service, alert),
        annotations: BTreeMap::from([
            ("summary", alert.summary.as_str()),
            ("description", alert.description.as_str()),
        ]),
    }
}

fn labels(service: &str, alert: &Alert) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("severity", alert.severity.to_owned()),
        ("service", service.to_owned()),
    ])
}

/// The Prometheus rule file (YAML) of `alerts`.
pub fn rule_file(service: &str, alerts: &[Alert]) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(&RuleFile {
        groups: [RuleGroup {
            name: format!("{service}-sidecar"),
            rules: alerts.iter().map(|alert| rule(service, alert)).collect(),
        }],
    })
}

/// A `promtool test rules` file for the rule file `rules_file`: per alert, its firing series, and
/// the alert expected firing with its labels and annotations after 15 minutes.
pub fn rule_tests(
    service: &str,
    rules_file: &str,
    alerts: &[Alert],
) -> Result<String, serde_yaml_ng::Error> {
    let tests: Vec<Value> = alerts
        .iter()
        .map(|alert| {
            json!({
                "interval": "1m",
                "input_series": alert.firing_series.iter()
                    .map(|(series, values)| json!({"series": series, "values": values}))
                    .collect::<Vec<_>>(),
                "alert_rule_test": [{
                    "eval_time": "15m",
                    "alertname": alert.name,
                    "exp_alerts": [{
                        "exp_labels": labels(service, alert),
                        "exp_annotations": {"summary": alert.summary, "description": alert.description},
                    }],
                }],
            })
        })
        .collect();
    serde_yaml_ng::to_string(&json!({"rule_files": [rules_file], "tests": tests}))
}

/// The Grafana dashboard (JSON model) of the sidecar rendered from `spec`.
pub fn dashboard(spec: &ServiceSpec, rendered: &Rendered) -> Value {
    let service = spec.service.as_str();
    let sel = ingress(service);
    let mut panels = vec![
        panel(
            "Inbound requests by response class",
            "reqps",
            &[(
                format!("sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx{{{sel}}}[1m]))"),
                "{{envoy_response_code_class}}xx",
            )],
        ),
        panel(
            "Inbound 5xx ratio",
            "percentunit",
            &[(
                format!(
                    r#"sum(rate(envoy_http_downstream_rq_xx{{{sel},envoy_response_code_class="5"}}[1m])) / sum(rate(envoy_http_downstream_rq_total{{{sel}}}[1m]))"#
                ),
                "5xx",
            )],
        ),
        panel(
            "Inbound latency",
            "ms",
            &[0.5, 0.99].map(|q| {
                (
                    format!("histogram_quantile({q}, sum by (le) (rate(envoy_http_downstream_rq_time_bucket{{{sel}}}[1m])))"),
                    if q == 0.5 { "p50" } else { "p99" },
                )
            }),
        ),
    ];
    if !spec.dependencies.is_empty() {
        let clusters: Vec<String> = spec
            .dependencies
            .iter()
            .map(|d| dependency_cluster(&d.name))
            .collect();
        let clusters = clusters.join("|");
        let dep = format!(r#"service="{service}",envoy_cluster_name=~"{clusters}""#);
        panels.push(panel(
            "Calls to dependencies by response class",
            "reqps",
            &[(
                format!("sum by (envoy_cluster_name, envoy_response_code_class) (rate(envoy_cluster_upstream_rq_xx{{{dep}}}[1m]))"),
                "{{envoy_cluster_name}} {{envoy_response_code_class}}xx",
            )],
        ));
        panels.push(panel(
            "Retries to dependencies",
            "reqps",
            &[(
                format!("sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_retry{{{dep}}}[1m]))"),
                "{{envoy_cluster_name}}",
            )],
        ));
    }
    let runs_shedder = rendered
        .plugins
        .iter()
        .any(|p| p.filters.iter().any(|s| s.filter == "load-shedder"));
    if runs_shedder {
        let s = format!(r#"service="{service}""#);
        panels.push(panel(
            "Load shedder: limit and in flight",
            "short",
            &[
                (format!("max(mesh_load_shedder_limit{{{s}}})"), "limit"),
                (
                    format!("sum(mesh_load_shedder_in_flight{{{s}}})"),
                    "in flight",
                ),
            ],
        ));
        panels.push(panel(
            "Load shedder: shed by criticality",
            "reqps",
            &[(
                format!(
                    r#"sum by (__name__) (rate({{__name__=~"mesh_load_shedder_shed_.*",{s}}}[1m]))"#
                ),
                "{{__name__}}",
            )],
        ));
    }
    for (index, panel) in panels.iter_mut().enumerate() {
        panel["id"] = json!(index + 1);
        panel["gridPos"] = json!({"h": 8, "w": 12, "x": (index % 2) * 12, "y": (index / 2) * 8});
    }
    json!({
        "title": format!("{service} sidecar"),
        "uid": format!("mesh-{service}"),
        "tags": ["mesh", service],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [{
            "name": "datasource",
            "type": "datasource",
            "query": "prometheus",
        }]},
        "panels": panels,
    })
}

fn panel(title: &str, unit: &str, queries: &[(String, &str)]) -> Value {
    json!({
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": queries.iter().enumerate().map(|(i, (expr, legend))| json!({
            "refId": char::from(b'A' + u8::try_from(i).unwrap_or(0)).to_string(),
            "expr": expr,
            "legendFormat": legend,
        })).collect::<Vec<_>>(),
    })
}
