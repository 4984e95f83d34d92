//! The filter kit: write a filter once as plain Rust, run it as its own module or inside the
//! suite module.
//!
//! A filter implements [`Filter`]: it is configured from its JSON configuration
//! ([`Filter::configure`]), then sees each request's headers, the response headers and
//! trailers, the end of the stream with its [`Outcome`], the tick and HTTP callout responses.
//! It talks to the host only through the narrow [`Host`] trait, so its worker logic (state
//! updates, pending work, outcomes) runs natively against [`fake::FakeHost`] in tests and
//! against Envoy through the kit's proxy-wasm contexts in production.
//!
//! - [`Filter`], [`Setup`], [`Verdict`]: what a filter implements and is given.
//! - [`host`]: the [`Host`] trait and the metric handles ([`Counter`], [`Gauge`],
//!   [`Histogram`]).
//! - [`response`]: [`ResponseTracker`], how a stream's response becomes its [`Outcome`].
//! - [`chain`]: [`Chain`], an ordered list of configured filters driven as one: a standalone
//!   module is a chain of one, the suite module a chain of any configured subset.
//! - [`fake`]: [`fake::FakeHost`], an in-memory host for native tests of a filter's worker logic.
//! - (wasm32) `wasm`: the proxy-wasm root and HTTP contexts, implemented once, and the module
//!   entry points: [`standalone_module!`](crate::standalone_module) for a filter's own module,
//!   `wasm::start_suite` for the suite.

pub mod chain;
pub mod fake;
pub mod host;
pub mod response;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use chain::{Chain, ChainError, MemberFactory};
pub use host::{Counter, Gauge, Histogram, Host, MetricKind};
pub use response::{Outcome, ResponseTracker};

use crate::config::{ConfigError, Validate};
use crate::metrics::metric_name;
use crate::properties::namespace_of;
use crate::shared::{KeyError, KeySpace};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// What a filter's request-headers step decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the request on (to the next filter of the chain, then Envoy's router).
    Continue,
    /// The filter answered the request itself (through [`Host::send_http_reply`] or
    /// [`Host::send_grpc_reply`]); later filters do not see it and its outcome is
    /// [`Outcome::LocalReply`].
    Replied,
}

/// What the kit already read of a request, so filters need not read it again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Request {
    grpc: bool,
}

impl Request {
    /// Whether the request is gRPC (`content-type: application/grpc…`).
    pub fn is_grpc(&self) -> bool {
        self.grpc
    }
}

/// A mesh filter, written once: the kit runs it alone or inside the suite.
///
/// One value of the implementing type is one Envoy worker's state for one configuration. The
/// kit calls [`Filter::on_stream_end`] exactly once for every stream whose request headers the
/// filter saw, whatever ended it (completion, reset, local reply, client disconnect), on the
/// value that saw its request headers: a reconfiguration starts a new value, and the old one
/// keeps serving its open streams and ticks until they are gone and it has no pending work.
pub trait Filter: Sized + 'static {
    /// The filter's name: log prefix, `mesh.<name>.*` metrics, suite section name.
    const NAME: &'static str;
    /// The JSON configuration (`#[serde(deny_unknown_fields, default)]`); `{}` must load.
    type Config: DeserializeOwned + Validate;
    /// Per-request state, created with `Default` when a request starts.
    type Stream: Default + 'static;

    /// Builds a worker's state for a validated configuration. An error is logged and makes
    /// Envoy reject the configuration.
    fn configure(config: Self::Config, setup: &mut Setup<'_>) -> Result<Self, ConfigError>;

    /// The request headers arrived.
    fn on_request_headers(
        &mut self,
        host: &dyn Host,
        request: &Request,
        stream: &mut Self::Stream,
    ) -> Verdict;

    /// The response headers arrived (from the upstream or a local reply).
    fn on_response_headers(&mut self, _host: &dyn Host, _stream: &mut Self::Stream) {}

    /// The response trailers arrived.
    fn on_response_trailers(&mut self, _host: &dyn Host, _stream: &mut Self::Stream) {}

    /// The stream ended; called exactly once per stream the filter saw.
    fn on_stream_end(&mut self, _host: &dyn Host, _stream: Self::Stream, _outcome: Outcome) {}

    /// The periodic tick (at the shortest period any filter of the chain asked for).
    fn on_tick(&mut self, _host: &dyn Host) {}

    /// An HTTP callout this filter dispatched ([`Host::dispatch_http_call`]) answered, or failed
    /// (no headers: `:status` absent). Its response is readable through `host`
    /// ([`Host::http_call_response_header`], [`Host::http_call_response_body`]). Only the filter
    /// that dispatched a callout sees its response.
    fn on_http_call_response(&mut self, _host: &dyn Host, _token: u32) {}

    /// Whether this worker state still owes work to shared state (e.g. a deferred update), so
    /// that a replaced configuration keeps being ticked until it is done.
    fn has_pending_work(&self) -> bool {
        false
    }
}

/// What a filter is given while it is configured: the host, its metric names, its shared-data
/// key space and the tick period it asks for.
pub struct Setup<'a> {
    host: &'a dyn Host,
    filter: &'static str,
    metric_instance: Option<String>,
    keys: KeySpace,
    tick: Option<Duration>,
}

/// Most shared-data keys one filter instance may create.
const MAX_KEYS_PER_INSTANCE: usize = 1024;

impl<'a> Setup<'a> {
    /// The setup of filter `filter` in plugin `plugin` (Envoy's plugin name), as suite section
    /// `section` when it runs inside the suite. The instance's metrics carry its name (the
    /// section's, else the plugin's) as a segment (`mesh.<filter>.<instance>.<metric>`) unless
    /// it is named after the filter, so two instances never overwrite each other's gauges. Its
    /// shared-data keys live in a namespace derived injectively from plugin and section.
    pub fn new(
        host: &'a dyn Host,
        filter: &'static str,
        plugin: &str,
        section: Option<&str>,
    ) -> Setup<'a> {
        let instance = section.unwrap_or(plugin);
        let named_after_filter =
            instance.is_empty() || instance.replace('-', "_") == filter.replace('-', "_");
        let metric_instance = (!named_after_filter).then(|| metric_segment(instance));
        let namespace = match section {
            // '~' never appears in an encoded name, so plugin and section cannot blur.
            Some(section) => format!(
                "{}~{}",
                namespace_of(plugin.as_bytes()),
                namespace_of(section.as_bytes())
            ),
            None => namespace_of(plugin.as_bytes()),
        };
        Setup {
            host,
            filter,
            metric_instance,
            keys: KeySpace::new(format!("{filter}.{namespace}"), MAX_KEYS_PER_INSTANCE),
            tick: None,
        }
    }

    /// The host.
    pub fn host(&self) -> &'a dyn Host {
        self.host
    }

    /// The stat name of `metric` for this instance.
    pub fn metric_name(&self, metric: &str) -> String {
        let metric = match &self.metric_instance {
            Some(instance) => format!("{instance}.{metric}"),
            None => metric.to_owned(),
        };
        metric_name(self.filter, &metric).unwrap_or_else(|err| {
            log::error!("{}: {err}", self.filter);
            format!("mesh.invalid.{}", self.filter.replace('-', "_"))
        })
    }

    /// Defines the counter `mesh.<filter>[.<instance>].<metric>`.
    pub fn counter(&self, metric: &str) -> Counter {
        Counter::define(self.host, &self.metric_name(metric))
    }

    /// Defines the gauge `mesh.<filter>[.<instance>].<metric>`.
    pub fn gauge(&self, metric: &str) -> Gauge {
        Gauge::define(self.host, &self.metric_name(metric))
    }

    /// The shared-data key `name` of layout `version` in this instance's namespace. The version
    /// is part of the key, so a module with a new layout never decodes an old one's bytes.
    pub fn shared_key(&mut self, name: &str, version: u32) -> Result<String, KeyError> {
        self.keys.key(&format!("{name}.v{version}"))
    }

    /// Asks for ticks at least every `period`.
    pub fn tick_every(&mut self, period: Duration) {
        self.tick = Some(self.tick.map_or(period, |current| current.min(period)));
    }

    /// The tick period asked for, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        self.tick
    }
}

/// `instance` as one metric-name segment: ASCII letters and digits kept, everything else '_'.
fn metric_segment(instance: &str) -> String {
    instance
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Configures `F` from raw JSON: parses and validates it (errors name the field path), then
/// calls [`Filter::configure`].
pub fn configure_filter<F: Filter>(
    raw: Option<&[u8]>,
    setup: &mut Setup<'_>,
) -> Result<F, ConfigError> {
    crate::config::load_config::<F::Config>(raw).and_then(|config| F::configure(config, setup))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::fake::FakeHost;

    #[test]
    fn metrics_carry_the_instance_unless_named_after_the_filter() {
        let host = FakeHost::new();
        for name in ["", "load-shedder", "load_shedder"] {
            let setup = Setup::new(&host, "load-shedder", name, None);
            assert_eq!(setup.metric_name("limit"), "mesh.load_shedder.limit");
        }
        let setup = Setup::new(&host, "load-shedder", "edge/v2", None);
        assert_eq!(
            setup.metric_name("limit"),
            "mesh.load_shedder.edge_v2.limit"
        );
        let section = Setup::new(&host, "load-shedder", "suite", Some("load-shedder"));
        assert_eq!(section.metric_name("limit"), "mesh.load_shedder.limit");
        let named = Setup::new(&host, "load-shedder", "suite", Some("batch"));
        assert_eq!(named.metric_name("limit"), "mesh.load_shedder.batch.limit");
    }

    #[test]
    fn keys_carry_the_layout_version_and_separate_instances() {
        let host = FakeHost::new();
        let mut a = Setup::new(&host, "load-shedder", "a/b", None);
        let mut b = Setup::new(&host, "load-shedder", "a_b", None);
        let mut c = Setup::new(&host, "load-shedder", "a", Some("b"));
        let key_c = c.shared_key("state", 2).unwrap();
        let key_a = a.shared_key("state", 2).unwrap();
        assert_ne!(key_a, key_c);
        let key_b = b.shared_key("state", 2).unwrap();
        assert_ne!(key_a, key_b);
        assert!(key_a.ends_with("/state.v2"), "{key_a}");
        assert_ne!(key_a, a.shared_key("state", 3).unwrap());
    }

    #[test]
    fn the_shortest_tick_asked_for_wins() {
        let host = FakeHost::new();
        let mut setup = Setup::new(&host, "f", "f", None);
        assert_eq!(setup.tick_period(), None);
        setup.tick_every(Duration::from_secs(1));
        setup.tick_every(Duration::from_millis(200));
        setup.tick_every(Duration::from_secs(5));
        assert_eq!(setup.tick_period(), Some(Duration::from_millis(200)));
    }
}
