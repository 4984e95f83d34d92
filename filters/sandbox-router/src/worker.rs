//! [`SandboxRouter`]: one Envoy worker's sandbox router on the filter kit, plain Rust over the
//! kit's [`Host`], so it is tested natively against the fake host and runs unchanged in
//! `sandbox_router.wasm` and `mesh_suite.wasm`.
//!
//! Per request (request headers only; no shared-data access):
//! 1. A routing header sent by the client is removed, whatever else happens (a failed removal
//!    answers 500: no client may pick a cluster).
//! 2. The key header, the `baggage` header (every line of it, joined into one list) and, when
//!    either is present, the connection's `source.address` property are read as bytes and
//!    decided on by the pure [`Policy`](crate::policy::Policy).
//! 3. Strip: the key header and every baggage member named `baggage_key` are removed (the
//!    baggage lines are replaced by one line holding the other members). Route: the
//!    routing header is set to the registry's cluster name (never the client's bytes). Unknown:
//!    the baseline, or a local 404 reply.
//! 4. Whenever the routing header was removed or set, the route cache is cleared so Envoy picks
//!    the route again.
//!
//! Per tick, with a dynamic registry: one shared-data read adopts the shared list when its
//! generation moved; when a fetch is due, one CAS update claims it (see [`crate::refresh`]), so
//! one worker dispatches the `GET` to the registry cluster; its response, routed by the kit to
//! that worker, records the new list (or the failure, keeping the last good list) in shared data.
//!
//! A routed request whose response says Envoy retried it (`x-envoy-attempt-count` above 1 in
//! the response, which the route's `include_attempt_count_in_response` adds) was served by the
//! baseline through the aggregate cluster's `previous_priorities` retry: it counts as
//! `fallback_to_baseline`.

use crate::baggage;
use crate::config::{RegistryConfig, SandboxConfig, UnknownKey};
use crate::policy::{source_ip, Decision, Policy, RequestKeys};
use crate::refresh::{parse_list, SharedRegistry};
use crate::registry::Registry;
use meshkit::clock::Timestamp;
use meshkit::config::ConfigError;
use meshkit::headers::HeaderMapKind;
use meshkit::kit::{Counter, Filter, Gauge, Host, Request, Setup, Verdict};
use meshkit::shared::SharedCell;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Filter name in logs and metric names (`mesh.sandbox_router.*`).
const FILTER: &str = "sandbox-router";
/// Most sandboxes with their own `routed.<sandbox>` counter per worker; routes to others count
/// in `routed_unlisted`, so hostile registries cannot grow the stats without bound.
pub const MAX_ROUTED_COUNTERS: usize = 64;
/// The status of the reply to an unknown key under `unknown_key: not_found`.
pub const UNKNOWN_KEY_STATUS: u32 = 404;
/// The response header Envoy sets to the number of upstream attempts.
const ATTEMPT_COUNT_HEADER: &str = "x-envoy-attempt-count";
/// The request header carrying W3C baggage.
const BAGGAGE_HEADER: &str = "baggage";
/// Retries of one shared-registry update after a CAS mismatch before giving up.
pub const CAS_RETRIES: u32 = 32;
/// Name of the shared-data cell of the dynamic registry (its layout version is added).
const REGISTRY_KEY: &str = "registry";
/// The longest tick period with a dynamic registry (shorter intervals tick 4 times per interval).
const MAX_TICK_PERIOD: Duration = Duration::from_secs(1);

/// The request's `baggage` as one list: the header's lines joined with `,` (a list field sent on
/// several lines means the same as one comma-joined line, and W3C Baggage allows several), so a
/// member on any line is read and stripped. `None` without the header; when it is on one line,
/// a single header read.
fn baggage_list(host: &dyn Host) -> Option<Vec<u8>> {
    let request = HeaderMapKind::RequestHeaders;
    let first = host.header(request, BAGGAGE_HEADER)?;
    let lines = host.header_values(request, BAGGAGE_HEADER);
    if lines.len() <= 1 {
        return Some(first);
    }
    Some(lines.join(&b","[..]))
}

/// The metrics one worker updates (Envoy shares a stat between the workers defining it).
struct Metrics {
    routed: HashMap<String, Counter>,
    routed_unlisted: Counter,
    unknown_key: Counter,
    fallback_to_baseline: Counter,
    untrusted_stripped: Counter,
    registry_refresh_ok: Counter,
    registry_refresh_failed: Counter,
    registry_size: Gauge,
}

impl Metrics {
    fn define(setup: &Setup<'_>) -> Metrics {
        Metrics {
            routed: HashMap::new(),
            routed_unlisted: setup.counter("routed_unlisted"),
            unknown_key: setup.counter("unknown_key"),
            fallback_to_baseline: setup.counter("fallback_to_baseline"),
            untrusted_stripped: setup.counter("untrusted_stripped"),
            registry_refresh_ok: setup.counter("registry_refresh_ok"),
            registry_refresh_failed: setup.counter("registry_refresh_failed"),
            registry_size: setup.gauge("registry_size"),
        }
    }
}

/// The dynamic registry's worker side: where it is shared, which generation this worker
/// adopted, and the fetch it dispatched.
struct DynamicRegistry {
    config: RegistryConfig,
    key: String,
    adopted: Option<u64>,
    /// The fetch this worker dispatched and when its lease ends (Envoy always answers by then;
    /// past it the fetch is forgotten).
    pending: Option<(u32, Timestamp)>,
}

/// One worker's sandbox router for one configuration.
pub struct SandboxRouter {
    config: SandboxConfig,
    policy: Policy,
    /// The configured (static) entries.
    fixed: Registry,
    /// The static entries merged with the dynamic registry's last good list.
    registry: Registry,
    dynamic: Option<DynamicRegistry>,
    metrics: Metrics,
    /// Stat name of `routed.<sandbox>` for each sandbox, computed by the setup's naming.
    routed_prefix: String,
}

/// One stream's state: whether the filter routed it to a sandbox.
#[derive(Debug, Default)]
pub struct RouterStream {
    routed: bool,
}

impl SandboxRouter {
    /// The registry requests are currently routed by.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one request routed to `sandbox`.
    fn count_routed(&mut self, host: &dyn Host, sandbox: &str) {
        let metrics = &mut self.metrics;
        if let Some(counter) = metrics.routed.get(sandbox) {
            counter.increment(host, 1);
        } else if metrics.routed.len() < MAX_ROUTED_COUNTERS {
            let segment: String = sandbox
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let counter = Counter::define(host, &format!("{}.{segment}", self.routed_prefix));
            counter.increment(host, 1);
            metrics.routed.insert(sandbox.to_owned(), counter);
        } else {
            metrics.routed_unlisted.increment(host, 1);
        }
    }

    /// Removes the key header and the baggage member named `baggage_key`.
    fn strip(&self, host: &dyn Host, baggage: Option<&[u8]>) {
        let request = HeaderMapKind::RequestHeaders;
        if let Some(name) = &self.config.key_header {
            if let Err(err) = host.remove_header(request, name.as_str()) {
                log::warn!("{FILTER}: cannot remove the key header: {err}");
            }
        }
        let (Some(baggage), Some(member)) = (baggage, self.config.baggage_key.as_deref()) else {
            return;
        };
        let result = match baggage::without_key(baggage, member.as_bytes()) {
            None => Ok(()),
            Some(rest) if rest.iter().all(|b| b.is_ascii_whitespace() || *b == b',') => {
                host.remove_header(request, BAGGAGE_HEADER)
            }
            Some(rest) => host.set_header(request, BAGGAGE_HEADER, &rest),
        };
        if let Err(err) = result {
            log::warn!("{FILTER}: cannot remove the baggage member: {err}");
        }
    }

    /// Routes by `shared`'s list from now on if its generation is not the one adopted.
    fn adopt(&mut self, host: &dyn Host, shared: &SharedRegistry) {
        let Some(dynamic) = &mut self.dynamic else {
            return;
        };
        if dynamic.adopted == Some(shared.generation) {
            return;
        }
        dynamic.adopted = Some(shared.generation);
        self.registry = self.fixed.merged_with(&shared.registry());
        let size = u64::try_from(self.registry.len()).unwrap_or(u64::MAX);
        self.metrics.registry_size.set(host, size);
    }

    /// Claims the fetch if it is due and dispatches it; a dispatch Envoy refuses is a failure.
    fn refresh(&mut self, host: &dyn Host) {
        let Some(dynamic) = &self.dynamic else {
            return;
        };
        let cell =
            SharedCell::<SharedRegistry, _, _>::new(host.shared_store(), dynamic.key.as_str(), 0);
        let shared = match cell.read() {
            Ok(shared) => shared.unwrap_or_default(),
            Err(err) => {
                log::warn!("{FILTER}: cannot read the shared registry: {err}");
                return;
            }
        };
        self.adopt(host, &shared);
        let Some(dynamic) = &self.dynamic else {
            return;
        };
        let (now, config) = (host.now(), &dynamic.config);
        let interval = config.refresh_interval_ms.as_duration();
        let timeout = config.timeout_ms.as_duration();
        let waiting = dynamic.pending.is_some_and(|(_, deadline)| now < deadline);
        if waiting || !shared.fetch_due(now, interval) {
            return;
        }
        let mut claimed = false;
        let cell = SharedCell::<SharedRegistry, _, _>::new(
            host.shared_store(),
            dynamic.key.as_str(),
            CAS_RETRIES,
        );
        let result = cell.update(|current| {
            let mut state = current.unwrap_or_default();
            claimed = state.claim(now, interval, timeout);
            state
        });
        if let Err(err) = result {
            log::debug!("{FILTER}: cannot claim the registry fetch: {err}");
            return;
        }
        if !claimed {
            return;
        }
        let authority = config.authority.as_deref().unwrap_or(&config.cluster);
        let headers: [(&str, &[u8]); 4] = [
            (":method", b"GET"),
            (":path", config.path.as_bytes()),
            (":authority", authority.as_bytes()),
            ("accept", b"application/json"),
        ];
        match host.dispatch_http_call(&config.cluster, &headers, b"", timeout) {
            Ok(token) => {
                if let Some(dynamic) = &mut self.dynamic {
                    dynamic.pending = Some((token, now.saturating_add(timeout)));
                }
            }
            Err(err) => {
                log::warn!(
                    "{FILTER}: cannot fetch the registry from cluster {}: {err}",
                    config.cluster
                );
                self.record(host, None);
            }
        }
    }

    /// Records a fetch's result in the shared registry (a failure keeps the last good list),
    /// counts it and adopts the result.
    fn record(&mut self, host: &dyn Host, entries: Option<BTreeMap<String, String>>) {
        let Some(dynamic) = &self.dynamic else {
            return;
        };
        match &entries {
            Some(_) => self.metrics.registry_refresh_ok.increment(host, 1),
            None => self.metrics.registry_refresh_failed.increment(host, 1),
        }
        let cell = SharedCell::<SharedRegistry, _, _>::new(
            host.shared_store(),
            dynamic.key.as_str(),
            CAS_RETRIES,
        );
        let result = cell.update(|current| {
            let mut state = current.unwrap_or_default();
            match &entries {
                Some(entries) => state.record_success(entries.clone()),
                None => state.record_failure(),
            }
            state
        });
        match result {
            Ok(shared) => self.adopt(host, &shared),
            // The lease expires by itself; the next due fetch tries again.
            Err(err) => log::warn!("{FILTER}: cannot record the registry fetch: {err}"),
        }
    }

    /// Answers an unknown key with 404.
    fn reply_unknown(&self, host: &dyn Host) {
        let headers = [("x-mesh-sandbox", "unknown")];
        let body = b"unknown sandbox: the sandbox key names no registered sandbox\n";
        if let Err(err) = host.send_http_reply(UNKNOWN_KEY_STATUS, &headers, body) {
            log::warn!("{FILTER}: cannot send the unknown-sandbox reply: {err}");
        }
    }
}

impl Filter for SandboxRouter {
    const NAME: &'static str = FILTER;
    type Config = SandboxConfig;
    type Stream = RouterStream;

    fn configure(config: SandboxConfig, setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        let registry = Registry::new(config.sandboxes.clone());
        let dynamic = match &config.registry {
            Some(registry) => {
                let key = setup
                    .shared_key(REGISTRY_KEY, u32::from(SharedRegistry::FORMAT_VERSION))
                    .map_err(|err| ConfigError::root(err.to_string()))?;
                setup.tick_every(
                    (registry.refresh_interval_ms.as_duration() / 4).min(MAX_TICK_PERIOD),
                );
                Some(DynamicRegistry {
                    config: registry.clone(),
                    key,
                    adopted: None,
                    pending: None,
                })
            }
            None => None,
        };
        let metrics = Metrics::define(setup);
        metrics.registry_size.set(
            setup.host(),
            u64::try_from(registry.len()).unwrap_or(u64::MAX),
        );
        log::info!(
            "{FILTER}: configured: {} static sandboxes, dynamic registry {:?}, {} trusted source ranges, signed keys {}, self {:?}",
            registry.len(),
            config.registry.as_ref().map(|r| format!("{}{}", r.cluster, r.path)),
            config.trusted_sources.len(),
            if config.signing_secret.is_some() { "on" } else { "off" },
            config.own_sandbox,
        );
        Ok(SandboxRouter {
            policy: Policy::new(&config),
            fixed: registry.clone(),
            registry,
            dynamic,
            metrics,
            routed_prefix: setup.metric_name("routed"),
            config,
        })
    }

    fn on_request_headers(
        &mut self,
        host: &dyn Host,
        _request: &Request,
        stream: &mut RouterStream,
    ) -> Verdict {
        let request = HeaderMapKind::RequestHeaders;
        let routing = self.config.routing_header.as_str();
        let mut route_changed = false;
        if host.header(request, routing).is_some() {
            if let Err(err) = host.remove_header(request, routing) {
                log::error!("{FILTER}: cannot remove the client's routing header: {err}");
                let _ = host.send_http_reply(500, &[], b"cannot sanitize the request\n");
                return Verdict::Replied;
            }
            route_changed = true;
        }
        let header = self
            .config
            .key_header
            .as_ref()
            .and_then(|name| host.header(request, name.as_str()));
        let baggage = self
            .config
            .baggage_key
            .as_ref()
            .and_then(|_| baggage_list(host));
        let source = if header.is_some() || baggage.is_some() {
            host.property(&["source", "address"])
                .and_then(|address| source_ip(&address))
        } else {
            None
        };
        let keys = RequestKeys {
            header: header.as_deref(),
            baggage: baggage.as_deref(),
            source,
        };
        let mut verdict = Verdict::Continue;
        match self.policy.decide(&keys, &self.registry) {
            Decision::Pass | Decision::OwnSandbox => {}
            Decision::Strip => {
                self.strip(host, baggage.as_deref());
                self.metrics.untrusted_stripped.increment(host, 1);
            }
            Decision::Unknown => {
                self.metrics.unknown_key.increment(host, 1);
                if self.policy.unknown_key() == UnknownKey::NotFound {
                    self.reply_unknown(host);
                    verdict = Verdict::Replied;
                }
            }
            Decision::Route { sandbox, cluster } => {
                let (sandbox, cluster) = (sandbox.to_owned(), cluster.to_owned());
                match host.set_header(request, routing, cluster.as_bytes()) {
                    Ok(()) => {
                        route_changed = true;
                        stream.routed = true;
                        self.count_routed(host, &sandbox);
                    }
                    Err(err) => log::warn!("{FILTER}: cannot set the routing header: {err}"),
                }
            }
        }
        if route_changed && verdict == Verdict::Continue {
            if let Err(err) = host.clear_route_cache() {
                log::warn!("{FILTER}: cannot clear the route cache: {err}");
            }
        }
        verdict
    }

    fn on_response_headers(&mut self, host: &dyn Host, stream: &mut RouterStream) {
        if !stream.routed {
            return;
        }
        let attempts = host.header(HeaderMapKind::ResponseHeaders, ATTEMPT_COUNT_HEADER);
        let retried = attempts
            .as_deref()
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(|value| value.trim().parse::<u32>().ok())
            .is_some_and(|attempts| attempts > 1);
        if retried {
            self.metrics.fallback_to_baseline.increment(host, 1);
        }
    }

    /// Adopts the shared registry and, when due, fetches it.
    fn on_tick(&mut self, host: &dyn Host) {
        self.refresh(host);
    }

    fn on_http_call_response(&mut self, host: &dyn Host, token: u32) {
        let Some(dynamic) = &mut self.dynamic else {
            return;
        };
        if dynamic.pending.map(|(pending, _)| pending) != Some(token) {
            return;
        }
        dynamic.pending = None;
        let status = host.http_call_response_header(":status");
        let entries = match status.as_deref() {
            Some(b"200") => parse_list(&host.http_call_response_body(), self.config.max_key_length),
            Some(other) => Err(format!("status {}", String::from_utf8_lossy(other))),
            None => Err("no response (reset, timeout or no healthy host)".to_owned()),
        };
        let entries = entries
            .inspect_err(|err| {
                log::warn!("{FILTER}: registry fetch failed, keeping the last good list: {err}");
            })
            .ok();
        self.record(host, entries);
    }

    fn has_pending_work(&self) -> bool {
        self.dynamic
            .as_ref()
            .is_some_and(|dynamic| dynamic.pending.is_some())
    }
}
