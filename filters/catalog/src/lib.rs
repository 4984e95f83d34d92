//! The table of our proxy-wasm modules, read by everything that needs to know them: `cargo xtask build`
//! (what to build and ship), the scenarios, the emulated
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
    /// A filter we ship: built by `cargo xtask build`, baked into the Envoy image.
    Filter,
    /// The suite module (`mesh_suite.wasm`): shipped, running the filters in one module. Built in
    /// its own cargo invocation, since it links the filter crates without their entry points.
    Suite,
    /// A module only the tests load (built by `cargo xtask build`, never shipped).
    TestModule,
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
        scenario: Some("sandbox"),
        bench_config: Some("{}"),
    },
    Module {
        crate_name: "drain-signal",
        crate_dir: "filters/drain-signal",
        file_name: "drain_signal.wasm",
        kind: Kind::Filter,
        scenario: Some("drain"),
        // Requests off its paths pass through without touching shared data.
        bench_config: Some("{}"),
    },
    Module {
        crate_name: "load-shedder",
        crate_dir: "filters/load-shedder",
        file_name: "load_shedder.wasm",
        kind: Kind::Filter,
        scenario: Some("load-shedding"),
        // Dry run: every request takes the whole admission and release path and is proxied.
        bench_config: Some(r#"{"dry_run": true}"#),
    },
    Module {
        crate_name: "retry-budget",
        crate_dir: "filters/retry-budget",
        file_name: "retry_budget.wasm",
        kind: Kind::Filter,
        scenario: Some("retry-storm"),
        // The client role: it sets the retry header on every request and refuses none.
        bench_config: Some("{}"),
    },
    Module {
        crate_name: "entity-cache",
        crate_dir: "filters/entity-cache",
        file_name: "entity_cache.wasm",
        kind: Kind::Filter,
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
        scenario: None,
        bench_config: None,
    },
    Module {
        crate_name: "host-fixture",
        crate_dir: "host-tests/fixture",
        file_name: "host_fixture.wasm",
        kind: Kind::TestModule,
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
    fn test_modules_are_in_no_scenario() {
        for m in MODULES.iter().filter(|m| m.kind == Kind::TestModule) {
            assert!(m.scenario.is_none(), "{}", m.crate_name);
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
