//! `mesh-bootstrap k8s`: Kubernetes manifests running a service with its rendered sidecar (the
//! bootstrap as a ConfigMap, a Deployment with the app and sidecar containers, a Service on the
//! sidecar's ingress port), and Istio
//! `WasmPlugin` resources for teams already on Istio.

use super::render::{Rendered, DEFAULT_WASM_DIR, PROMETHEUS_PATH};
use super::spec::ServiceSpec;
use crate::FailurePolicy;
use serde_json::{json, Value};

/// Where the sidecar container mounts the bootstrap ConfigMap.
const BOOTSTRAP_DIR: &str = "/etc/envoy/bootstrap";

/// Images of the two containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// The service's own image.
    pub app: String,
    /// The image built from Dockerfile.envoy (Envoy 1.40 with the modules).
    pub sidecar: String,
}

/// A shell snippet asking the admin interface `request` (e.g. `GET /ready`) over bash's
/// `/dev/tcp` (the Envoy image has no curl), reading the reply to file descriptor 3.
fn admin_request(port: u16, request: &str) -> String {
    format!("exec 3<>/dev/tcp/127.0.0.1/{port} && printf '{request} HTTP/1.0\\r\\n\\r\\n' >&3")
}

/// The ConfigMap, Deployment and Service (a multi-document YAML stream).
pub fn kubernetes(
    spec: &ServiceSpec,
    rendered: &Rendered,
    images: &Images,
) -> Result<String, serde_yaml_ng::Error> {
    let service = spec.service.as_str();
    let bootstrap = rendered.bootstrap.to_yaml()?;
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("{service}-sidecar"), "labels": {"app": service}},
        "data": {"envoy.yaml": bootstrap},
    });
    let admin = spec.admin.port;
    let drain_s = spec.drain.timeout_ms.div_ceil(1000);
    let bootstrap_file = format!("{BOOTSTRAP_DIR}/envoy.yaml");
    // A missing bootstrap (optional volume) fails the container at once with a message, instead
    // of a pod waiting forever for its ConfigMap.
    let start = format!(
        "test -s {bootstrap_file} || {{ echo \"mesh sidecar: no bootstrap at {bootstrap_file}: apply the \
         {service}-sidecar ConfigMap (mesh-bootstrap k8s)\" >&2; exit 1; }}; \
         exec envoy -c {bootstrap_file} --drain-strategy immediate"
    );
    let ready = format!("{} && grep -q LIVE <&3", admin_request(admin, "GET /ready"));
    // On termination: close inbound connections now (clients reconnect to other pods), then let
    // in-flight requests finish for the drain timeout before Envoy gets SIGTERM.
    let pre_stop = format!(
        "{} && cat <&3 >/dev/null; sleep {drain_s}",
        admin_request(admin, "POST /drain_listeners?graceful&inboundonly")
    );
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": service, "labels": {"app": service}},
        "spec": {
            "selector": {"matchLabels": {"app": service}},
            "template": {
                "metadata": {
                    "labels": {"app": service, "service": service},
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": spec.admin.prometheus_port.to_string(),
                        "prometheus.io/path": PROMETHEUS_PATH,
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": drain_s + 10,
                    "containers": [
                        {
                            "name": "app",
                            "image": images.app,
                            "ports": [{"name": "app", "containerPort": spec.app.port}],
                        },
                        {
                            "name": "mesh-sidecar",
                            "image": images.sidecar,
                            "command": ["bash", "-c", start],
                            "ports": [
                                {"name": "ingress", "containerPort": spec.ingress.port},
                                {"name": "prometheus", "containerPort": spec.admin.prometheus_port},
                            ],
                            "readinessProbe": {
                                "exec": {"command": ["bash", "-c", ready]},
                                "periodSeconds": 5,
                            },
                            "lifecycle": {"preStop": {"exec": {"command": ["bash", "-c", pre_stop]}}},
                            "securityContext": {
                                "runAsNonRoot": true,
                                "runAsUser": 101,
                                "allowPrivilegeEscalation": false,
                            },
                            "volumeMounts": [{"name": "bootstrap", "mountPath": BOOTSTRAP_DIR, "readOnly": true}],
                        },
                    ],
                    "volumes": [{
                        "name": "bootstrap",
                        "configMap": {"name": format!("{service}-sidecar"), "optional": true},
                    }],
                },
            },
        },
    });
    // Callers reach the service through the sidecar's ingress port only.
    let service_object = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service, "labels": {"app": service}},
        "spec": {
            "selector": {"app": service},
            "ports": [{"name": "ingress", "port": spec.ingress.port, "targetPort": "ingress"}],
        },
    });
    Ok([config_map, deployment, service_object]
        .iter()
        .map(serde_yaml_ng::to_string)
        .collect::<Result<Vec<_>, _>>()?
        .join("---\n"))
}

/// Istio `WasmPlugin` resources, one per plugin of the rendered sidecar, for teams whose Istio
/// sidecars load the modules instead (from the same directory of the sidecar image).
pub fn istio(spec: &ServiceSpec, rendered: &Rendered) -> Result<String, serde_yaml_ng::Error> {
    let mut documents = Vec::new();
    for plugin in &rendered.plugins {
        let config = rendered
            .bootstrap
            .listeners()
            .iter()
            .flat_map(|listener| listener.http_connection_manager().http_filters())
            .find_map(|filter| match filter.config() {
                crate::HttpFilterConfig::Wasm(wasm) if wasm.0.name() == plugin.name => {
                    wasm.0.configuration_text().map(str::to_owned)
                }
                _ => None,
            })
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .unwrap_or_else(|| json!({}));
        let direction = match plugin.side {
            super::chain::Side::Ingress => "SERVER",
            super::chain::Side::Egress => "CLIENT",
        };
        let document = json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {"name": format!("{}-{}", spec.service, plugin.name)},
            "spec": {
                "selector": {"matchLabels": {"app": spec.service}},
                "url": format!("file://{DEFAULT_WASM_DIR}/{}", plugin.module),
                "pluginName": plugin.name,
                "phase": "AUTHZ",
                "failStrategy": match plugin.failure_policy {
                    FailurePolicy::FailOpen => "FAIL_OPEN",
                    FailurePolicy::FailClosed | FailurePolicy::FailReload => "FAIL_CLOSE",
                },
                "match": [{"mode": direction}],
                "pluginConfig": config,
            },
        });
        documents.push(serde_yaml_ng::to_string(&document)?);
    }
    Ok(documents.join("---\n"))
}
