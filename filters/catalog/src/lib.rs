//! The table of our proxy-wasm modules, read by everything that needs to know them: `cargo xtask build`
//! (what to build and ship), the demo (`cargo xtask up`: config and guide), the scenarios, the emulated
//! host and the real-Envoy harness (where a module's build is, and whether it is fresh).
//!
//! Adding a filter is one [`Module`] entry in [`MODULES`] (plus its crate). This crate has no
//! dependencies, so every consumer can read it cheaply.
//!
//! [`Module::built`] is the one lookup of a module's file: it fails, naming the module and telling to run
//! `cargo xtask build`, when the module is missing or older than a source it was built from.

mod location;

pub use location::{
    resolve_target_dir, stale_source, target_dir, workspace_root, ModuleError, WASM_TARGET,
};

/// Whether a module ships or exists for the tests only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A filter we ship: built by `cargo xtask build`, baked into the Envoy image, composed by the demo.
    Filter,
    /// The suite module (`mesh_suite.wasm`): shipped, running the filters in one module. Built in
    /// its own cargo invocation, since it links the filter crates without their entry points.
    Suite,
    /// A module only the tests load (built by `cargo xtask build`, never shipped).
    TestModule,
}

/// How the demo sidecar of `cargo xtask up` runs a filter and shows it acting.
#[derive(Clone, Copy, Debug)]
pub struct Demo {
    /// The plugin configuration (JSON text) the demo loads the module with.
    pub config: &'static str,
    /// Lines the demo prints so a user can watch the filter act; `{ingress}` and `{admin}` stand for the
    /// ingress and admin URLs.
    pub guide: &'static [&'static str],
}

/// One proxy-wasm module of the workspace.
#[derive(Clone, Copy, Debug)]
pub struct Module {
    /// Cargo package name, e.g. `load-shedder`.
    pub crate_name: &'static str,
    /// The crate's directory, relative to the workspace root.
    pub crate_dir: &'static str,
    /// The module file cargo builds, e.g. `load_shedder.wasm` (the crate name with `_` for `-`).
    pub file_name: &'static str,
    /// Shipped filter or test module.
    pub kind: Kind,
    /// How the demo runs it; `None`: the demo leaves it out.
    pub demo: Option<Demo>,
    /// The scenario (`cargo xtask scenario <name>`) that shows it acting, if any.
    pub scenario: Option<&'static str>,
    /// A filter's plugin configuration (JSON text) in `cargo xtask bench overhead`: its defaults, but
    /// refusing no request (a local reply costs less than proxying and would flatter the figure).
    /// `None` for the suite and test modules.
    pub bench_config: Option<&'static str>,
}

/// Where meshkit lives, relative to the workspace root: every filter is built from its sources too.
pub const MESHKIT_DIR: &str = "filters/common";

/// Every module of the workspace, shipped filters in filter-chain order first (the drain signal
/// before the load shedder, so neither its trigger nor health checks are shed).
pub const MODULES: &[Module] = &[
    Module {
        crate_name: "sandbox-router",
        crate_dir: "filters/sandbox-router",
        file_name: "sandbox_router.wasm",
        kind: Kind::Filter,
        demo: Some(Demo {
            // The demo has one deployment, so sandbox `demo` is served by it: watch the counters.
            config: r#"{"sandboxes": {"demo": "demo-service"}, "trusted_sources": ["127.0.0.1/32"]}"#,
            guide: &[
                "sandbox-router: a key in a header or W3C baggage picks the sandbox; untrusted sources are stripped:",
                "  curl -s -H 'x-sandbox: demo' {ingress}/ && curl -s -H 'baggage: sandbox=demo' {ingress}/",
                "  curl -s --interface 127.0.0.2 -H 'x-sandbox: demo' {ingress}/   # untrusted source",
                "  curl -s {admin}/stats/prometheus | grep mesh_sandbox_router",
            ],
        }),
        scenario: Some("sandbox"),
        bench_config: Some("{}"),
    },
    Module {
        crate_name: "drain-signal",
        crate_dir: "filters/drain-signal",
        file_name: "drain_signal.wasm",
        kind: Kind::Filter,
        demo: Some(Demo {
            // Admin cluster `envoy_admin` of the demo bootstrap; a short delay to watch it act.
            config: r#"{"delay_ms": 5000}"#,
            guide: &[
                "drain-signal: trigger a drain as a Kubernetes preStop hook would, watch health checks fail, then Envoy drain",
                "  (try it last: it drains the demo's ingress; restart `cargo xtask up` afterwards):",
                "  curl -s -X POST {ingress}/.mesh/drain; curl -si {ingress}/healthz | head -1",
                "  sleep 6; curl -s {ingress}/.mesh/drain; curl -s {admin}/stats/prometheus | grep mesh_drain_signal",
            ],
        }),
        scenario: Some("drain"),
        // Requests off its paths pass through without touching shared data.
        bench_config: Some("{}"),
    },
    Module {
        crate_name: "load-shedder",
        crate_dir: "filters/load-shedder",
        file_name: "load_shedder.wasm",
        kind: Kind::Filter,
        demo: Some(Demo {
            // The defaults: what we recommend to every service.
            config: "{}",
            guide: &[
                "load-shedder: overload the 32-worker demo service and watch low-criticality work get shed first:",
                "  hey -z 10s -c 300 -H 'x-request-criticality: sheddable' {ingress}/ &",
                "  hey -z 10s -c 20 -H 'x-request-criticality: critical' {ingress}/",
                "  curl -s {admin}/stats/prometheus | grep mesh_load_shedder",
            ],
        }),
        scenario: Some("load-shedding"),
        // Dry run: every request takes the whole admission and release path and is proxied.
        bench_config: Some(r#"{"dry_run": true}"#),
    },
    Module {
        crate_name: "retry-budget",
        crate_dir: "filters/retry-budget",
        file_name: "retry_budget.wasm",
        kind: Kind::Filter,
        demo: Some(Demo {
            // The demo sidecar is an ingress: the server role, with a small per-second minimum so
            // that a few retries beyond 20 % of first attempts already get rejected.
            config: r#"{"role": "server", "min_retries_per_second": 1}"#,
            guide: &[
                "retry-budget (server role): first attempts pass; retries beyond 20 % of them (at least 1/s) get 503 + retry-after:",
                "  hey -z 10s -c 10 -q 20 {ingress}/ &",
                "  hey -z 10s -c 10 -q 20 -H 'x-envoy-attempt-count: 2' {ingress}/",
                "  curl -s {admin}/stats/prometheus | grep mesh_retry_budget",
            ],
        }),
        scenario: Some("retry-storm"),
        // The client role: it sets the retry header on every request and refuses none.
        bench_config: Some("{}"),
    },
    Module {
        crate_name: "entity-cache",
        crate_dir: "filters/entity-cache",
        file_name: "entity_cache.wasm",
        kind: Kind::Filter,
        demo: Some(Demo {
            // The demo has one upstream, so cache and origin are both the demo service's cluster
            // names; the routing header the filter sets shows where a call would go.
            config: r#"{"rules": [{"http_method": "GET", "path_prefix": "/items/", "cache_cluster": "entity-cache", "origin_cluster": "demo-service"}]}"#,
            guide: &[
                "entity-cache: GET /items/* are cacheable (the demo routes every call to the demo service; the counters show the decision):",
                "  curl -s {ingress}/items/1 -o /dev/null; curl -s -H 'x-entity-cache: bypass' {ingress}/items/1 -o /dev/null",
                "  curl -s {admin}/stats/prometheus | grep mesh_entity_cache",
            ],
        }),
        scenario: Some("cache-failover"),
        // Every GET is cacheable: each request is routed and its outcome recorded in the breaker
        // (the bench's route ignores the routing header, so nothing is refused).
        bench_config: Some(
            r#"{"rules": [{"path_prefix": "/", "cache_cluster": "bench-cache", "origin_cluster": "bench-origin"}]}"#,
        ),
    },
    Module {
        crate_name: "mesh-suite",
        crate_dir: "filters/suite",
        file_name: "mesh_suite.wasm",
        kind: Kind::Suite,
        demo: None,
        scenario: None,
        bench_config: None,
    },
    Module {
        crate_name: "host-fixture",
        crate_dir: "host-tests/fixture",
        file_name: "host_fixture.wasm",
        kind: Kind::TestModule,
        demo: None,
        scenario: None,
        bench_config: None,
    },
];

/// The module built by crate `crate_name`.
pub fn module(crate_name: &str) -> Result<&'static Module, ModuleError> {
    MODULES
        .iter()
        .find(|m| m.crate_name == crate_name)
        .ok_or_else(|| ModuleError::Unknown {
            crate_name: crate_name.to_owned(),
        })
}

/// The shipped filters, in filter-chain order.
pub fn filters() -> impl Iterator<Item = &'static Module> {
    MODULES.iter().filter(|m| m.kind == Kind::Filter)
}

/// Every shipped module: the filters and the suite.
pub fn shipped() -> impl Iterator<Item = &'static Module> {
    MODULES.iter().filter(|m| m.kind != Kind::TestModule)
}

/// The built, fresh module of crate `crate_name` (see [`Module::built`]).
pub fn built(crate_name: &str) -> Result<std::path::PathBuf, ModuleError> {
    module(crate_name)?.built()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn module_file_names_are_what_cargo_builds() {
        for m in MODULES {
            assert_eq!(
                m.file_name,
                format!("{}.wasm", m.crate_name.replace('-', "_")),
                "{}",
                m.crate_name
            );
        }
    }

    #[test]
    fn crate_names_are_unique_and_crate_dirs_exist() {
        for (i, m) in MODULES.iter().enumerate() {
            assert!(
                MODULES[..i].iter().all(|o| o.crate_name != m.crate_name),
                "{} listed twice",
                m.crate_name
            );
            let manifest = workspace_root().join(m.crate_dir).join("Cargo.toml");
            let text = std::fs::read_to_string(&manifest)
                .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
            assert!(
                text.contains(&format!("name = \"{}\"", m.crate_name)),
                "{} does not define package {}",
                manifest.display(),
                m.crate_name
            );
        }
    }

    #[test]
    fn test_modules_are_neither_demoed_nor_in_scenarios() {
        for m in MODULES.iter().filter(|m| m.kind == Kind::TestModule) {
            assert!(m.demo.is_none() && m.scenario.is_none(), "{}", m.crate_name);
        }
    }

    #[test]
    fn exactly_the_filters_have_a_bench_configuration() {
        for m in MODULES {
            assert_eq!(
                m.bench_config.is_some(),
                m.kind == Kind::Filter,
                "{}",
                m.crate_name
            );
        }
    }

    #[test]
    fn an_unknown_module_is_named_in_the_error() {
        let err = built("no-such-filter").unwrap_err();
        assert!(err.to_string().contains("no-such-filter"), "{err}");
        assert!(
            err.to_string().contains("load-shedder"),
            "lists the known: {err}"
        );
    }
}
