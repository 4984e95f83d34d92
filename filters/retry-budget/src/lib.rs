//! retry_budget.wasm: retries can never multiply an outage. One module, two roles chosen by
//! configuration: on the egress sidecar (`client`) it caps the retries Envoy's router makes to
//! a budget per upstream; on the ingress sidecar (`server`) it rejects retries past the budget.
//!
//! - [`config`]: [`config::RetryBudgetConfig`], the plugin configuration with defaults and
//!   validation.
//! - [`policy`]: the pure core: the budget as a capped balance of expiring retry tokens (the
//!   module doc describes the algorithm and its bound), and the parsers of attempt counts and
//!   pushback.
//! - [`worker`]: [`RetryBudget`], the filter on meshkit's filter kit, tested natively against
//!   the fake host. With the `standalone` feature (default) the crate is also
//!   `retry_budget.wasm`; the suite module links it without that feature.

pub mod config;
pub mod policy;
pub mod worker;

pub use worker::RetryBudget;

#[cfg(all(target_arch = "wasm32", feature = "standalone"))]
meshkit::standalone_module!(RetryBudget);
