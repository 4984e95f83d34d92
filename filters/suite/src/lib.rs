//! mesh_suite.wasm: one proxy-wasm module that runs any configured, ordered subset of the mesh
//! filters in one VM per worker and one HTTP context per request, each filter with its own
//! configuration section and metrics (see `meshkit::kit::chain` for the configuration format):
//!
//! ```json
//! {"filters": [{"filter": "load-shedder", "config": {"dry_run": true}}]}
//! ```
//!
//! A filter joins the suite with one line in [`factories`].

use meshkit::kit::MemberFactory;

/// The filters the suite can run, one line each.
pub fn factories() -> Vec<MemberFactory> {
    vec![
        MemberFactory::of::<load_shedder::LoadShedder>(),
        MemberFactory::of::<retry_budget::RetryBudget>(),
        MemberFactory::of::<drain_signal::DrainSignal>(),
        MemberFactory::of::<sandbox_router::SandboxRouter>(),
        MemberFactory::of::<entity_cache::EntityCache>(),
    ]
}

#[cfg(target_arch = "wasm32")]
struct Suite;

#[cfg(target_arch = "wasm32")]
impl meshkit::kit::wasm::SuiteTable for Suite {
    fn factories() -> Vec<MemberFactory> {
        factories()
    }
}

#[cfg(target_arch = "wasm32")]
meshkit::kit::wasm::__proxy_wasm::main! {{
    meshkit::kit::wasm::start_suite::<Suite>();
}}
