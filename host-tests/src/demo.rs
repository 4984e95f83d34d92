//! The local sidecar demo of `cargo xtask up`: one ingress listener in front of a demo service, with every
//! filter module that is built composed into it, and a guide printing what to run to see each one act.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_configs::{Bootstrap, Cluster, Listener, Route, Thresholds, WasmFilter};
use serde_json::json;

use crate::envoy::{wasm_module, EnvoyProcess};
use crate::upstream::UpstreamHandle;

/// Name of the demo's ingress listener.
pub const INGRESS: &str = "ingress";

/// A filter the demo composes when its module is built, and how to watch it act.
struct DemoFilter {
    /// Crate name, e.g. `load-shedder`.
    crate_name: &'static str,
    /// Demo configuration (small limits so a laptop can trigger the behaviour).
    config: serde_json::Value,
    /// Lines of the guide; `{ingress}` and `{admin}` are replaced by the URLs.
    guide: &'static [&'static str],
}

/// Every filter the demo knows, in filter-chain order.
fn known_filters() -> Vec<DemoFilter> {
    vec![DemoFilter {
        crate_name: "load-shedder",
        config: json!({ "limit": { "max_limit": 64 } }),
        guide: &[
            "load-shedder: overload the 32-worker demo service and watch low-criticality work get shed first:",
            "  hey -z 10s -c 300 -H 'x-request-criticality: sheddable' {ingress}/ &",
            "  hey -z 10s -c 20 -H 'x-request-criticality: critical' {ingress}/",
            "  curl -s {admin}/stats/prometheus | grep mesh_load_shedder",
        ],
    }]
}

/// The demo's bootstrap and the filters it composed.
pub struct DemoSidecar {
    /// Ready to start with [`EnvoyProcess::start`].
    pub bootstrap: Bootstrap,
    composed: Vec<DemoFilter>,
}

/// Composes every built filter module in front of `upstream`, listening on `port` with admin on
/// `admin_port`.
pub fn sidecar(port: u16, admin_port: u16, upstream: SocketAddr) -> DemoSidecar {
    let mut listener = Listener::http(INGRESS, port);
    let mut composed = Vec::new();
    for filter in known_filters() {
        let Ok(module) = wasm_module(filter.crate_name) else {
            continue;
        };
        let plugin = filter.crate_name.replace('-', "_");
        listener =
            listener.wasm_filter(WasmFilter::new(&plugin, module).configuration(&filter.config));
        composed.push(filter);
    }
    let listener = listener.route(
        Route::prefix("/")
            .to_cluster("demo-service")
            .timeout(Duration::from_secs(15)),
    );
    let bootstrap = Bootstrap::new(admin_port).listener(listener).cluster(
        Cluster::static_cluster("demo-service", [upstream])
            .circuit_breaker(Thresholds::unlimited()),
    );
    DemoSidecar {
        bootstrap,
        composed,
    }
}

impl DemoSidecar {
    /// What is running where, and the commands that show each composed filter acting.
    pub fn guide(&self, envoy: &EnvoyProcess, upstream: &UpstreamHandle) -> String {
        let ingress = envoy
            .listener_addr(INGRESS)
            .map_or_else(|e| format!("<{e}>"), |addr| format!("http://{addr}"));
        let admin = envoy.admin_url();
        let mut out = String::new();
        let _ = writeln!(out, "mesh-filters demo sidecar is up");
        let _ = writeln!(out, "  ingress (Envoy):   {ingress}");
        let _ = writeln!(out, "  admin (Envoy):     {admin}");
        let _ = writeln!(
            out,
            "  demo service:      {} (32 workers, 10 ms per request)",
            upstream.url()
        );
        let _ = writeln!(out, "\n  curl -i {ingress}/hello");
        if self.composed.is_empty() {
            let _ = writeln!(
                out,
                "\nNo filter module is built: Envoy proxies without filters."
            );
        }
        for filter in &self.composed {
            let _ = writeln!(out);
            for line in filter.guide {
                let _ = writeln!(
                    out,
                    "{}",
                    line.replace("{ingress}", &ingress)
                        .replace("{admin}", &admin)
                );
            }
        }
        out
    }
}
