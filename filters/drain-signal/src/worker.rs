//! [`DrainSignal`]: one Envoy worker's drain signal on the filter kit, plain Rust over the kit's
//! [`Host`], so it is tested natively against the fake host and runs unchanged in
//! `drain_signal.wasm` and `mesh_suite.wasm`.
//!
//! Per request:
//! - The trigger path is answered here, never forwarded: `POST` from an allowed source address
//!   (the connection's `source.address` property) with the token, if one is configured, applies
//!   [`Event::Trigger`] to the shared [`DrainState`] in one CAS update (202 when it started the
//!   drain, 200 when one was already under way, both with the JSON state); `GET` from an allowed
//!   source returns the JSON state; anything else gets 403 (or 405 for other methods) and changes
//!   nothing.
//! - A health path reads the shared state once and, from the trigger on, is answered 503 with
//!   `x-mesh-draining: true`.
//! - Every other request passes without touching shared data.
//!
//! Per tick, each worker reads the state once (the `drain_state` gauge); when the admin call is
//! due, a CAS update claims it, so exactly one worker dispatches `POST
//! /drain_listeners?graceful&inboundonly` to the admin cluster. Its response (routed by the kit to
//! this worker) records success or failure; a failed call is claimed again after a backoff, and a
//! claim whose worker vanished (VM reload) expires. A result that cannot be recorded (contention)
//! is kept and applied on the next tick.

use crate::access::Access;
use crate::config::{DrainConfig, ADMIN_CALL_TIMEOUT};
use crate::policy::{Decision, DrainState, Event, Policy};
use meshkit::clock::Timestamp;
use meshkit::config::ConfigError;
use meshkit::headers::HeaderMapKind;
use meshkit::kit::{Counter, Filter, Gauge, Host, Request, Setup, Verdict};
use meshkit::shared::{SharedCell, UpdateError};
use std::time::Duration;

/// Filter name in logs and metric names (`mesh.drain_signal.*`).
const FILTER: &str = "drain-signal";
/// Retries of one shared-state update after a CAS mismatch before giving up.
pub const CAS_RETRIES: u32 = 32;
/// How often each worker reads the drain state (and may claim the admin call).
pub const TICK_PERIOD: Duration = Duration::from_millis(250);
/// Name of the shared-data cell within the instance's key space (its layout version is added).
const STATE_KEY: &str = "state";
/// The admin request that drains inbound listeners gracefully.
pub const ADMIN_DRAIN_PATH: &str = "/drain_listeners?graceful&inboundonly";
/// The header on health-check answers while draining.
pub const DRAINING_HEADER: &str = "x-mesh-draining";

/// The metrics one worker updates (Envoy shares a stat between the workers defining it).
struct Metrics {
    drain_state: Gauge,
    drain_triggered: Counter,
    drain_rejected: Counter,
    health_fail_responses: Counter,
    admin_drain_calls_ok: Counter,
    admin_drain_calls_failed: Counter,
}

impl Metrics {
    fn define(setup: &Setup<'_>) -> Metrics {
        Metrics {
            drain_state: setup.gauge("drain_state"),
            drain_triggered: setup.counter("drain_triggered"),
            drain_rejected: setup.counter("drain_rejected"),
            health_fail_responses: setup.counter("health_fail_responses"),
            admin_drain_calls_ok: setup.counter("admin_drain_calls_ok"),
            admin_drain_calls_failed: setup.counter("admin_drain_calls_failed"),
        }
    }
}

/// One worker's drain signal for one configuration.
pub struct DrainSignal {
    config: DrainConfig,
    policy: Policy,
    access: Access,
    /// The shared-data key of the [`DrainState`] all workers share.
    key: String,
    metrics: Metrics,
    /// The admin call this worker dispatched: its token and claim.
    admin_call: Option<(u32, Timestamp)>,
    /// An admin call result whose update failed, applied on the next tick.
    unrecorded: Option<(Event, Timestamp)>,
}

/// What a request is to the drain signal.
enum Target {
    Control,
    Health,
    Other,
}

impl DrainSignal {
    /// The shared-data key of the drain state.
    pub fn state_key(&self) -> &str {
        &self.key
    }

    fn cell<'a>(
        &'a self,
        host: &'a dyn Host,
    ) -> SharedCell<DrainState, &'a dyn meshkit::shared::SharedStore, &'a str> {
        SharedCell::new(host.shared_store(), self.key.as_str(), CAS_RETRIES)
    }

    /// The shared state (idle when never triggered).
    fn read(&self, host: &dyn Host) -> Result<DrainState, UpdateError> {
        Ok(self.cell(host).read()?.unwrap_or_default())
    }

    /// Applies `event` at `now` in one CAS update; returns the new state and the decision.
    fn apply(
        &self,
        host: &dyn Host,
        event: Event,
        now: Timestamp,
    ) -> Result<(DrainState, Decision), UpdateError> {
        let mut decision = Decision::None;
        let state = self.cell(host).update(|current| {
            let (next, made) = current.unwrap_or_default().step(&self.policy, event, now);
            decision = made;
            next
        })?;
        self.metrics.drain_state.set(host, state.phase() as u64);
        Ok((state, decision))
    }

    fn target(&self, host: &dyn Host) -> Target {
        let raw = host
            .header(HeaderMapKind::RequestHeaders, ":path")
            .unwrap_or_default();
        let path = raw.split(|&b| b == b'?').next().unwrap_or_default();
        if path == self.config.path.as_bytes() {
            Target::Control
        } else if self
            .config
            .health_paths
            .iter()
            .any(|health| health.as_bytes() == path)
        {
            Target::Health
        } else {
            Target::Other
        }
    }

    fn reply(&self, host: &dyn Host, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        if let Err(err) = host.send_http_reply(status, headers, body) {
            log::warn!("{FILTER}: cannot send the {status} reply: {err}");
        }
    }

    fn reply_state(&self, host: &dyn Host, status: u32, state: &DrainState) {
        let body = state_json(state, &self.policy);
        self.reply(
            host,
            status,
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
    }

    /// Answers a request to the trigger path.
    fn serve_control(&self, host: &dyn Host) {
        let method = host.header(HeaderMapKind::RequestHeaders, ":method");
        let source = host.property(&["source", "address"]);
        let access = match method.as_deref() {
            Some(b"POST") => {
                let authorization = host.header(HeaderMapKind::RequestHeaders, "authorization");
                self.access
                    .check_trigger(source.as_deref(), authorization.as_deref())
            }
            Some(b"GET" | b"HEAD") => self.access.check_source(source.as_deref()),
            _ => {
                self.reply(
                    host,
                    405,
                    &[("allow", "GET, POST")],
                    b"use POST to trigger, GET to read the drain state\n",
                );
                return;
            }
        };
        if let Err(refusal) = access {
            log::info!(
                "{FILTER}: refused a request to {} from {}: {}",
                self.config.path,
                String::from_utf8_lossy(source.as_deref().unwrap_or(b"an unknown source")),
                refusal.reason()
            );
            self.metrics.drain_rejected.increment(host, 1);
            self.reply(host, 403, &[], b"forbidden\n");
            return;
        }
        if method.as_deref() != Some(b"POST") {
            match self.read(host) {
                Ok(state) => self.reply_state(host, 200, &state),
                Err(err) => self.unavailable(host, &err),
            }
            return;
        }
        let now = host.now();
        match self.apply(host, Event::Trigger, now) {
            Ok((state, Decision::Started)) => {
                log::warn!(
                    "{FILTER}: drain triggered: health checks fail from now; Envoy's inbound listeners drain in {} ms",
                    self.config.delay_ms.as_millis()
                );
                self.metrics.drain_triggered.increment(host, 1);
                self.reply_state(host, 202, &state);
            }
            Ok((state, _)) => self.reply_state(host, 200, &state),
            Err(err) => self.unavailable(host, &err),
        }
    }

    /// The state could not be read or written: 503, so the caller retries.
    fn unavailable(&self, host: &dyn Host, err: &UpdateError) {
        log::warn!("{FILTER}: the drain state is unavailable: {err}");
        self.reply(
            host,
            503,
            &[("retry-after", "1")],
            b"the drain state is unavailable; retry\n",
        );
    }

    /// Answers a health check 503 once draining; `false` to let it pass.
    fn serve_health(&self, host: &dyn Host) -> bool {
        match self.read(host) {
            Ok(state) if state.fails_health_checks() => {
                self.metrics.health_fail_responses.increment(host, 1);
                self.reply(
                    host,
                    503,
                    &[(DRAINING_HEADER, "true"), ("content-type", "text/plain")],
                    b"draining\n",
                );
                true
            }
            Ok(_) => false,
            Err(err) => {
                log::debug!("{FILTER}: health check passes: cannot read the drain state: {err}");
                false
            }
        }
    }

    /// Dispatches the admin drain call under claim `claimed_at`.
    fn dispatch_admin_call(&mut self, host: &dyn Host, claimed_at: Timestamp) {
        let cluster = self.config.admin_cluster.as_str();
        let headers: [(&str, &[u8]); 3] = [
            (":method", b"POST"),
            (":path", ADMIN_DRAIN_PATH.as_bytes()),
            (":authority", cluster.as_bytes()),
        ];
        match host.dispatch_http_call(cluster, &headers, b"", ADMIN_CALL_TIMEOUT) {
            Ok(token) => {
                log::info!(
                    "{FILTER}: asking Envoy to drain its inbound listeners (cluster {cluster})"
                );
                self.admin_call = Some((token, claimed_at));
            }
            Err(err) => {
                log::error!(
                    "{FILTER}: cannot call the admin cluster {cluster:?} ({err}); is it defined?"
                );
                self.record(host, Event::AdminCallFailed { claimed_at });
            }
        }
    }

    /// Records an admin call's result, counting it; kept for the next tick if the update fails.
    fn record(&mut self, host: &dyn Host, event: Event) {
        match event {
            Event::AdminCallSucceeded { .. } => {
                self.metrics.admin_drain_calls_ok.increment(host, 1)
            }
            _ => self.metrics.admin_drain_calls_failed.increment(host, 1),
        }
        let now = host.now();
        if let Err(err) = self.apply(host, event, now) {
            log::debug!("{FILTER}: admin call result deferred: {err}");
            self.unrecorded = Some((event, now));
        }
    }
}

/// The JSON state a `GET` (or a trigger) returns; times in Unix milliseconds, `null` when not
/// reached.
pub fn state_json(state: &DrainState, policy: &Policy) -> String {
    let millis = |at: Option<Timestamp>| at.map(|at| at.as_nanos() / 1_000_000);
    serde_json::json!({
        "state": state.phase().name(),
        "started_at_ms": millis(state.started_at()),
        "drain_at_ms": millis(state.drain_due_at(policy)),
        "drained_at_ms": millis(state.drained_at()),
        "closes_by_ms": millis(state.closes_by(policy)),
        "admin_call_failures": state.admin_call_failures(),
    })
    .to_string()
}

impl Filter for DrainSignal {
    const NAME: &'static str = FILTER;
    type Config = DrainConfig;
    type Stream = ();

    fn configure(config: DrainConfig, setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        let key = setup
            .shared_key(STATE_KEY, u32::from(DrainState::FORMAT_VERSION))
            .map_err(|err| ConfigError::root(err.to_string()))?;
        setup.tick_every(TICK_PERIOD);
        log::info!(
            "{FILTER}: configured: trigger {} from {:?}{}, health paths {:?}, delay {} ms, admin cluster {:?}, shared state {key}",
            config.path,
            config.allowed_sources,
            if config.token.is_some() { " with a token" } else { "" },
            config.health_paths,
            config.delay_ms.as_millis(),
            config.admin_cluster,
        );
        Ok(DrainSignal {
            policy: config.policy(),
            access: config.access(),
            metrics: Metrics::define(setup),
            config,
            key,
            admin_call: None,
            unrecorded: None,
        })
    }

    fn on_request_headers(
        &mut self,
        host: &dyn Host,
        _request: &Request,
        _stream: &mut (),
    ) -> Verdict {
        match self.target(host) {
            Target::Control => {
                self.serve_control(host);
                Verdict::Replied
            }
            Target::Health if self.serve_health(host) => Verdict::Replied,
            Target::Health | Target::Other => Verdict::Continue,
        }
    }

    /// Reads the state (the gauge); claims and dispatches the admin call when it is due.
    fn on_tick(&mut self, host: &dyn Host) {
        if let Some((event, at)) = self.unrecorded.take() {
            if let Err(err) = self.apply(host, event, at) {
                log::debug!("{FILTER}: admin call result still deferred: {err}");
                self.unrecorded = Some((event, at));
            }
        }
        let state = match self.read(host) {
            Ok(state) => state,
            Err(err) => {
                log::debug!("{FILTER}: tick cannot read the drain state: {err}");
                return;
            }
        };
        self.metrics.drain_state.set(host, state.phase() as u64);
        let now = host.now();
        let (_, decision) = state.step(&self.policy, Event::Tick, now);
        if decision == Decision::None {
            return;
        }
        match self.apply(host, Event::Tick, now) {
            Ok((_, Decision::DispatchAdminCall { claimed_at })) => {
                self.dispatch_admin_call(host, claimed_at);
            }
            Ok(_) => {}
            Err(err) => log::debug!("{FILTER}: cannot claim the admin call: {err}"),
        }
    }

    fn on_http_call_response(&mut self, host: &dyn Host, token: u32) {
        let Some((_, claimed_at)) = self.admin_call.take_if(|(own, _)| *own == token) else {
            return;
        };
        let status = host.http_call_response_header(":status");
        let ok = status
            .as_deref()
            .is_some_and(|status| status.first() == Some(&b'2'));
        if ok {
            log::warn!("{FILTER}: Envoy is draining its inbound listeners");
            self.record(host, Event::AdminCallSucceeded { claimed_at });
        } else {
            let body = host.http_call_response_body();
            log::error!(
                "{FILTER}: the admin drain call failed: status {}, {}",
                String::from_utf8_lossy(status.as_deref().unwrap_or(b"none (no response)")),
                String::from_utf8_lossy(body.get(..200).unwrap_or(&body)),
            );
            self.record(host, Event::AdminCallFailed { claimed_at });
        }
    }

    fn has_pending_work(&self) -> bool {
        self.unrecorded.is_some()
    }
}
