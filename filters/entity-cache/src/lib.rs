//! entity_cache.wasm: on the caller's egress sidecar, cacheable gRPC and HTTP calls go to the
//! entity cache, and to the origin while the cache is degraded, with no error the client sees.
//!
//! - [`config`]: [`config::EntityCacheConfig`], the plugin configuration (rules, bypass and
//!   routing headers, breaker parameters) with defaults and validation.
//! - [`policy`]: the pure core: the request [`policy::Matcher`] over bytes, the per-cache-cluster
//!   [`policy::BreakerState`] (events with timestamps in, transitions out) and the classification
//!   of a cache response ([`policy::classify`]).
//! - [`worker`]: [`EntityCache`], the filter on meshkit's filter kit, tested natively against the
//!   fake host. With the `standalone` feature (default) the crate is also `entity_cache.wasm`;
//!   the suite module links it without that feature.

pub mod config;
pub mod policy;
pub mod worker;

pub use worker::EntityCache;

#[cfg(all(target_arch = "wasm32", feature = "standalone"))]
meshkit::standalone_module!(EntityCache);
