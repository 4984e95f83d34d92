//! The `drain` scenario: how a sidecar's shutdown reaches keep-alive clients. 50 HTTP/1.1 and 10
//! HTTP/2 keep-alive clients (20 requests per second each) and a health probe (every 500 ms)
//! against Envoy run with `--drain-strategy immediate`; at the trigger, side by side:
//! - `envoy-admin-drain`: Envoy's own drain as operators use it today, the admin call
//!   `POST /drain_listeners?graceful&inboundonly` by hand at the trigger;
//! - `drain-signal`: `POST /.mesh/drain` to drain_signal.wasm (`delay_ms` 2000), which fails the
//!   health checks at once and makes the same admin call 2 s later.
//!
//! Reported per variant: the time from the trigger until every client was closed by the server
//! (target: at most the delay + 2 s), the failed requests (target 0) and the time from the trigger
//! to the first health-check 503 (target: the next probe; Envoy's own drain never fails them, so
//! the pod stays in load balancers while its clients are told to go away).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_configs::{
    Bootstrap, Cluster, Listener, Route, Thresholds, TrafficDirection, WasmFilter,
};
use http::{Request, StatusCode};
use http_body_util::Empty;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{
    ExpectationResult, Report, RunMode, ScenarioError, INGRESS_LISTENER, UPSTREAM_CLUSTER,
};
use crate::keepalive::{exchange, run_client, ClientEvent, ClientReport, KeepAlive};
use crate::upstream::{Upstream, UpstreamConfig};
use mesh_envoy_harness::{DrainStrategy, EnvoyOptions, EnvoyProcess};

/// Name of the scenario.
pub const NAME: &str = "drain";
/// The admin cluster the drain signal calls.
const ADMIN_CLUSTER: &str = "envoy_admin";
/// Envoy's admin drain, as the drain signal sends it.
const ADMIN_DRAIN: &str = "/drain_listeners?graceful&inboundonly";
/// Longest wait, after the delay, for every client to be closed and reconnect.
const CLOSE_WAIT: Duration = Duration::from_secs(15);

/// How the drain is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Trigger {
    /// The admin drain call by hand (bare Envoy).
    AdminByHand,
    /// `POST /.mesh/drain` to drain_signal.wasm.
    DrainSignal,
}

/// One column of the comparison.
#[derive(Debug, Clone)]
pub struct DrainVariant {
    /// Shown in the report.
    pub name: &'static str,
    /// How the drain starts.
    pub trigger: Trigger,
}

/// The scenario's data.
#[derive(Debug, Clone)]
pub struct DrainScenario {
    /// What it shows.
    pub description: String,
    /// HTTP/1.1 keep-alive clients.
    pub http1_clients: usize,
    /// HTTP/2 clients.
    pub http2_clients: usize,
    /// Each client's pause between requests.
    pub request_interval: Duration,
    /// The drain signal's delay.
    pub delay: Duration,
    /// The health probe's period.
    pub probe_interval: Duration,
    /// Steady load before the trigger, once every client was served.
    pub steady: Duration,
    /// Envoy worker threads.
    pub envoy_concurrency: u32,
    /// The variants, run one after another.
    pub variants: Vec<DrainVariant>,
}

/// The scenario (see the module doc).
pub fn drain() -> DrainScenario {
    DrainScenario {
        description: "50 HTTP/1.1 + 10 HTTP/2 keep-alive clients at 20 rps each, health probe every 500 ms; \
                      Envoy's admin drain by hand vs drain_signal.wasm with a 2 s delay (--drain-strategy immediate)"
            .into(),
        http1_clients: 50,
        http2_clients: 10,
        request_interval: Duration::from_millis(50),
        delay: Duration::from_secs(2),
        probe_interval: Duration::from_millis(500),
        steady: Duration::from_secs(2),
        envoy_concurrency: 2,
        variants: vec![
            DrainVariant {
                name: "envoy-admin-drain",
                trigger: Trigger::AdminByHand,
            },
            DrainVariant {
                name: "drain-signal",
                trigger: Trigger::DrainSignal,
            },
        ],
    }
}

impl DrainScenario {
    /// The scenario as a smoke run (about two seconds): a few clients, short delay and steady
    /// load; its figures mean nothing.
    fn smoke(&self) -> DrainScenario {
        DrainScenario {
            http1_clients: self.http1_clients.min(4),
            http2_clients: self.http2_clients.min(2),
            delay: Duration::from_millis(300),
            probe_interval: Duration::from_millis(100),
            steady: Duration::from_millis(100),
            ..self.clone()
        }
    }
}

/// One variant's figures.
#[derive(Debug, Clone, Serialize)]
pub struct DrainResult {
    /// The variant.
    pub variant: String,
    /// From the trigger until the server had closed a connection of every client (ms).
    pub all_closed_after_ms: Option<u64>,
    /// From the trigger until the first client was closed (ms).
    pub first_closed_after_ms: Option<u64>,
    /// From the trigger to the first health-check 503 (ms); `None`: never while observed.
    pub first_health_503_after_ms: Option<u64>,
    /// Requests served.
    pub served: u64,
    /// Requests failed.
    pub failed: u64,
    /// A few of the failures.
    pub failures: Vec<String>,
    /// Clients the server closed, of all clients.
    pub clients_closed: usize,
    /// Clients.
    pub clients: usize,
}

/// The timing the drain scenario's table and targets refer to.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DrainParameters {
    /// The drain signal's delay (ms).
    pub delay_ms: u64,
    /// The health probe's period (ms).
    pub probe_interval_ms: u64,
}

/// The run's rows (one per variant) and targets.
pub type DrainReport = Report<DrainResult, DrainParameters>;

impl Report<DrainResult, DrainParameters> {
    /// The row of `variant`.
    pub fn result(&self, variant: &str) -> Option<&DrainResult> {
        self.results.iter().find(|r| r.variant == variant)
    }

    /// A fixed-width table with the targets.
    pub fn table(&self) -> String {
        let mut out = self.heading();
        let _ = writeln!(
            out,
            "targets: every client closed <= {} ms after the trigger, 0 failed, first health 503 <= {} ms",
            self.parameters.delay_ms + 2_000,
            self.parameters.probe_interval_ms
        );
        let _ = writeln!(
            out,
            "{:<20} {:>14} {:>15} {:>16} {:>9} {:>7} {:>9}",
            "variant",
            "all_closed_ms",
            "first_close_ms",
            "health_503_ms",
            "served",
            "failed",
            "closed"
        );
        let ms = |value: Option<u64>| value.map_or("never".to_owned(), |v| v.to_string());
        for r in &self.results {
            let _ = writeln!(
                out,
                "{:<20} {:>14} {:>15} {:>16} {:>9} {:>7} {:>9}",
                r.variant,
                ms(r.all_closed_after_ms),
                ms(r.first_closed_after_ms),
                ms(r.first_health_503_after_ms),
                r.served,
                r.failed,
                format!("{}/{}", r.clients_closed, r.clients),
            );
        }
        self.write_expectations(&mut out);
        out
    }
}

/// Runs every variant of `scenario`.
pub fn run(scenario: &DrainScenario, mode: RunMode) -> Result<DrainReport, ScenarioError> {
    let scenario = match mode {
        RunMode::Full => scenario.clone(),
        RunMode::Smoke { .. } => scenario.smoke(),
    };
    let runtime = crate::runtime().map_err(ScenarioError::Runtime)?;
    let mut results = Vec::new();
    for variant in &scenario.variants {
        results.push(run_variant(&runtime, &scenario, variant)?);
    }
    let expectations = expectations(&scenario, &results);
    Ok(DrainReport {
        name: NAME.into(),
        description: scenario.description.clone(),
        smoke: mode != RunMode::Full,
        parameters: DrainParameters {
            delay_ms: millis(scenario.delay),
            probe_interval_ms: millis(scenario.probe_interval),
        },
        results,
        expectations,
    })
}

/// The targets for the drain signal, and the directions both variants show in any run.
fn expectations(scenario: &DrainScenario, results: &[DrainResult]) -> Vec<ExpectationResult> {
    let row = |trigger: Trigger| {
        let name = scenario
            .variants
            .iter()
            .find(|v| v.trigger == trigger)?
            .name;
        results.iter().find(|r| r.variant == name)
    };
    let ms = |value: Option<u64>| value.map_or("never".to_owned(), |v| format!("{v} ms"));
    let check = |description: String, in_smoke: bool, outcome: Option<(bool, String)>| {
        let (holds, figures) = outcome.unwrap_or((false, "a row it needs is missing".to_owned()));
        ExpectationResult {
            description,
            in_smoke,
            holds,
            figures,
        }
    };
    let delay = millis(scenario.delay);
    let probe = millis(scenario.probe_interval);
    let signal = row(Trigger::DrainSignal);
    let by_hand = row(Trigger::AdminByHand);
    vec![
        check(
            format!(
                "drain-signal: every client closed <= delay + 2 s ({} ms)",
                delay + 2_000
            ),
            false,
            signal.map(|r| {
                let closed = r.all_closed_after_ms.is_some_and(|ms| ms <= delay + 2_000);
                (closed, ms(r.all_closed_after_ms))
            }),
        ),
        check(
            "drain-signal: 0 failed requests".into(),
            false,
            signal.map(|r| {
                (
                    r.failed == 0,
                    format!("{} failed {:?}", r.failed, r.failures),
                )
            }),
        ),
        check(
            format!("drain-signal: first health-check 503 by the next probe ({probe} ms)"),
            false,
            signal.map(|r| {
                let next_probe = r.first_health_503_after_ms.is_some_and(|ms| ms <= probe);
                (next_probe, ms(r.first_health_503_after_ms))
            }),
        ),
        check(
            "every client of both variants is closed by the server".into(),
            true,
            signal.zip(by_hand).map(|(s, b)| {
                let all = s.clients_closed == s.clients && b.clients_closed == b.clients;
                (
                    all,
                    format!(
                        "drain-signal {}/{}, by hand {}/{}",
                        s.clients_closed, s.clients, b.clients_closed, b.clients
                    ),
                )
            }),
        ),
        check(
            "drain-signal closes no client before its delay; health checks fail only with it"
                .into(),
            true,
            signal.zip(by_hand).map(|(s, b)| {
                let after_delay = s.first_closed_after_ms.is_some_and(|ms| ms >= delay);
                let health =
                    s.first_health_503_after_ms.is_some() && b.first_health_503_after_ms.is_none();
                (
                    after_delay && health,
                    format!(
                        "first close {}, health 503: drain-signal {}, by hand {}",
                        ms(s.first_closed_after_ms),
                        ms(s.first_health_503_after_ms),
                        ms(b.first_health_503_after_ms)
                    ),
                )
            }),
        ),
    ]
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Envoy for `variant`: an inbound listener (with the drain signal for its variant) in front of
/// `upstream`, the admin cluster, the immediate drain strategy.
fn envoy_for(
    scenario: &DrainScenario,
    variant: &DrainVariant,
    upstream: SocketAddr,
) -> Result<EnvoyProcess, ScenarioError> {
    let mut listener = Listener::http(INGRESS_LISTENER, 0)
        .traffic_direction(TrafficDirection::Inbound)
        .drain_timeout(Duration::from_secs(1));
    if variant.trigger == Trigger::DrainSignal {
        let module = mesh_catalog::built("drain-signal")?;
        let config = serde_json::json!({
            "delay_ms": millis(scenario.delay),
            "admin_cluster": ADMIN_CLUSTER,
        });
        listener =
            listener.wasm_filter(WasmFilter::new("drain-signal", module).configuration(&config));
    }
    let listener = listener.route(
        Route::prefix("/")
            .to_cluster(UPSTREAM_CLUSTER)
            .timeout(Duration::from_secs(10)),
    );
    let bootstrap = Bootstrap::new(0)
        .admin_cluster(ADMIN_CLUSTER)
        .listener(listener)
        .cluster(
            Cluster::static_cluster(UPSTREAM_CLUSTER, [upstream])
                .circuit_breaker(Thresholds::unlimited()),
        );
    let options = EnvoyOptions {
        concurrency: scenario.envoy_concurrency,
        drain_strategy: Some(DrainStrategy::Immediate),
        // Listeners keep accepting the reconnects for the whole run.
        drain_time: Some(Duration::from_secs(300)),
        ..EnvoyOptions::default()
    };
    Ok(EnvoyProcess::start(&bootstrap, options)?)
}

fn run_variant(
    runtime: &tokio::runtime::Runtime,
    scenario: &DrainScenario,
    variant: &DrainVariant,
) -> Result<DrainResult, ScenarioError> {
    let upstream = runtime.block_on(Upstream::start(UpstreamConfig::new("service")))?;
    let envoy = envoy_for(scenario, variant, upstream.addr())?;
    let ingress = envoy.listener_addr(INGRESS_LISTENER)?;
    let clients = scenario.http1_clients + scenario.http2_clients;
    let stop = Arc::new(AtomicBool::new(false));
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let handles: Vec<_> = (0..clients)
        .map(|index| {
            let protocol = if index < scenario.http1_clients {
                KeepAlive::Http1
            } else {
                KeepAlive::Http2
            };
            runtime.spawn(run_client(
                protocol,
                ingress,
                "/work",
                scenario.request_interval,
                Arc::clone(&stop),
                events_tx.clone(),
            ))
        })
        .collect();
    drop(events_tx);
    // Every client is served before the steady stretch starts.
    runtime.block_on(async {
        let mut served = 0;
        while served < clients {
            match tokio::time::timeout(CLOSE_WAIT, events.recv()).await {
                Ok(Some(ClientEvent::Served)) => served += 1,
                Ok(Some(ClientEvent::Reconnected)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        tokio::time::sleep(scenario.steady).await;
    });

    let triggered_at = Instant::now();
    match variant.trigger {
        Trigger::AdminByHand => {
            envoy.post_admin(ADMIN_DRAIN)?;
        }
        Trigger::DrainSignal => {
            let request = Request::post("/.mesh/drain")
                .header("host", "service")
                .body(Empty::<Bytes>::new())
                .unwrap_or_default();
            let result = runtime.block_on(exchange(Ipv4Addr::LOCALHOST, ingress, request));
            if !matches!(result, Ok((StatusCode::ACCEPTED, _, _))) {
                eprintln!("drain scenario: the trigger was not accepted: {result:?}");
            }
        }
    }
    let probe_stop = Arc::new(AtomicBool::new(false));
    let probe = runtime.spawn(probe_health(
        ingress,
        scenario.probe_interval,
        Arc::clone(&probe_stop),
    ));
    // Every client closed by the server and reconnected, or the wait is over.
    runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + scenario.delay + CLOSE_WAIT;
        let mut reconnected = 0;
        while reconnected < clients {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(ClientEvent::Reconnected)) => reconnected += 1,
                Ok(Some(ClientEvent::Served)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    });
    stop.store(true, Ordering::SeqCst);
    probe_stop.store(true, Ordering::SeqCst);
    let reports: Vec<ClientReport> = runtime.block_on(async {
        let mut reports = Vec::with_capacity(handles.len());
        for handle in handles {
            reports.push(handle.await.unwrap_or_default());
        }
        reports
    });
    let first_503 = runtime.block_on(probe).unwrap_or_default();
    envoy.shutdown();

    let after = |at: Instant| millis(at.saturating_duration_since(triggered_at));
    let closes: Vec<u64> = reports
        .iter()
        .filter_map(|r| r.first_close.map(after))
        .collect();
    let failures: Vec<String> = reports.iter().flat_map(|r| r.failed.clone()).collect();
    Ok(DrainResult {
        variant: variant.name.into(),
        all_closed_after_ms: (closes.len() == clients)
            .then(|| closes.iter().copied().max())
            .flatten(),
        first_closed_after_ms: closes.iter().copied().min(),
        first_health_503_after_ms: first_503.map(after),
        served: reports.iter().map(|r| r.ok).sum(),
        failed: u64::try_from(failures.len()).unwrap_or(u64::MAX),
        failures: failures.into_iter().take(5).collect(),
        clients_closed: closes.len(),
        clients,
    })
}

/// Probes `/healthz` every `interval` until `stop`; when it first answered 503.
async fn probe_health(
    addr: SocketAddr,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> Option<Instant> {
    let mut ticker = tokio::time::interval(interval);
    while !stop.load(Ordering::SeqCst) {
        ticker.tick().await;
        let request = Request::get("/healthz")
            .header("host", "service")
            .body(Empty::<Bytes>::new())
            .unwrap_or_default();
        let at = Instant::now();
        if let Ok((StatusCode::SERVICE_UNAVAILABLE, _, _)) =
            exchange(Ipv4Addr::LOCALHOST, addr, request).await
        {
            return Some(at);
        }
    }
    None
}
