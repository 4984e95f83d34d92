//! The local sidecar demo of `cargo xtask up`: one ingress listener in front of a demo service, with every
//! shipped filter of the module catalog (`mesh-catalog`) composed into it, and a guide printing what to run
//! to see each one act.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_configs::{
    Bootstrap, Cluster, Listener, Route, Thresholds, TrafficDirection, WasmFilter,
};
use mesh_catalog::{Demo, Module, ModuleError};
use mesh_envoy_harness::EnvoyProcess;

use crate::upstream::UpstreamHandle;

/// Name of the demo's ingress listener.
pub const INGRESS: &str = "ingress";

/// Why the demo sidecar cannot be composed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A filter module is missing or stale.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// A filter's demo configuration in the catalog is not JSON.
    #[error("demo configuration of `{crate_name}` is not JSON: {source}")]
    Config {
        /// The filter's crate.
        crate_name: &'static str,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// The demo's bootstrap and the filters it composed.
pub struct DemoSidecar {
    /// Ready to start with [`EnvoyProcess::start`].
    pub bootstrap: Bootstrap,
    composed: Vec<(&'static Module, &'static Demo)>,
}

/// Composes every shipped filter with a demo (in filter-chain order, each with its demo configuration)
/// in front of `upstream`, listening on `port` with admin on `admin_port`. Fails when a module is not
/// built or older than its sources.
pub fn sidecar(port: u16, admin_port: u16, upstream: SocketAddr) -> Result<DemoSidecar, DemoError> {
    // Inbound, so the drain signal's `/drain_listeners?inboundonly` drains it.
    let mut listener = Listener::http(INGRESS, port).traffic_direction(TrafficDirection::Inbound);
    let mut composed = Vec::new();
    for module in mesh_catalog::filters() {
        let Some(demo) = &module.demo else {
            continue;
        };
        let config: serde_json::Value =
            serde_json::from_str(demo.config).map_err(|source| DemoError::Config {
                crate_name: module.crate_name,
                source,
            })?;
        let plugin = module.crate_name.replace('-', "_");
        listener =
            listener.wasm_filter(WasmFilter::new(&plugin, module.built()?).configuration(&config));
        composed.push((module, demo));
    }
    let listener = listener.route(
        Route::prefix("/")
            .to_cluster("demo-service")
            .timeout(Duration::from_secs(15)),
    );
    // `envoy_admin`: the drain signal's default admin cluster.
    let bootstrap = Bootstrap::new(admin_port)
        .listener(listener)
        .cluster(
            Cluster::static_cluster("demo-service", [upstream])
                .circuit_breaker(Thresholds::unlimited()),
        )
        .admin_cluster("envoy_admin");
    Ok(DemoSidecar {
        bootstrap,
        composed,
    })
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
        for (module, demo) in &self.composed {
            let _ = writeln!(out);
            for line in demo.guide {
                let _ = writeln!(
                    out,
                    "{}",
                    line.replace("{ingress}", &ingress)
                        .replace("{admin}", &admin)
                );
            }
            if let Some(scenario) = module.scenario {
                let _ = writeln!(
                    out,
                    "  benchmark beside bare Envoy: cargo xtask scenario {scenario}"
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    #[test]
    fn every_demo_configuration_is_json_and_every_scenario_exists() {
        for module in mesh_catalog::MODULES {
            if let Some(demo) = &module.demo {
                serde_json::from_str::<serde_json::Value>(demo.config)
                    .unwrap_or_else(|e| panic!("{}: {e}", module.crate_name));
                assert!(!demo.guide.is_empty(), "{}", module.crate_name);
            }
            if let Some(scenario) = module.scenario {
                assert!(
                    crate::scenario::NAMES.contains(&scenario)
                        || crate::scenario::SCRIPTED.contains(&scenario),
                    "{}: no scenario `{scenario}`",
                    module.crate_name
                );
            }
        }
    }
}
