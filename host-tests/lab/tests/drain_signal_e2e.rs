//! drain_signal.wasm in the real Envoy (build it first with `cargo xtask build`), run with
//! `--drain-strategy immediate` and an admin cluster pointing at its own admin port: triggers
//! from outside the allow-list (a client bound to 127.0.0.2) or without the token are refused;
//! a trigger from 127.0.0.1 fails the health checks at once and, after the delay, Envoy tells
//! HTTP/1.1 keep-alive clients `Connection: close` and HTTP/2 clients GOAWAY; they reconnect
//! and no request fails.
//!
//! `shutdown()` fails a test on any wasm panic or trap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_configs::{
    Bootstrap, Cluster, Listener, Route, Thresholds, TrafficDirection, WasmFilter,
};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::Empty;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use mesh_envoy_harness::{self as envoy, DrainStrategy, EnvoyOptions, EnvoyProcess};
use mesh_lab::keepalive::{self, run_client, ClientEvent, KeepAlive};
use mesh_lab::upstream::{Upstream, UpstreamConfig};

const STAT_WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "e2e-token";
/// The drain delay: long enough to see requests served normally after the trigger.
const DELAY_MS: u64 = 2_000;
/// How long the clients may take to be closed and reconnect after the trigger.
const DRAIN_WAIT: Duration = Duration::from_secs(20);
const HTTP1_CLIENTS: usize = 4;
const HTTP2_CLIENTS: usize = 2;

fn stat(metric: &str) -> String {
    format!("wasmcustom.mesh.drain_signal.{metric}")
}

fn runtime() -> tokio::runtime::Runtime {
    mesh_lab::runtime().unwrap()
}

/// Envoy (two workers, immediate drain strategy) with the drain signal on an inbound listener
/// in front of `upstream`, and the admin cluster `envoy_admin`.
fn envoy_with_drain_signal(config: &Value, upstream: SocketAddr) -> EnvoyProcess {
    let module = envoy::wasm_module("drain-signal").unwrap_or_else(|err| panic!("{err}"));
    let bootstrap = Bootstrap::new(0)
        .admin_cluster("envoy_admin")
        .listener(
            Listener::http("ingress", 0)
                .traffic_direction(TrafficDirection::Inbound)
                // HTTP/2: the second, final GOAWAY one second after the first.
                .drain_timeout(Duration::from_secs(1))
                .wasm_filter(WasmFilter::new("drain-signal", module).configuration(config))
                .route(
                    Route::prefix("/")
                        .to_cluster("service")
                        .timeout(Duration::from_secs(10)),
                ),
        )
        .cluster(
            Cluster::static_cluster("service", [upstream]).circuit_breaker(Thresholds::unlimited()),
        );
    let options = EnvoyOptions {
        concurrency: 2,
        drain_strategy: Some(DrainStrategy::Immediate),
        // Listeners keep accepting (the clients' reconnects) for the whole test.
        drain_time: Some(Duration::from_secs(120)),
        ..EnvoyOptions::default()
    };
    EnvoyProcess::start(&bootstrap, options).unwrap_or_else(|err| panic!("{err}"))
}

/// One HTTP/1.1 request on a new connection from `source`.
async fn exchange(
    source: Ipv4Addr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "service");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    keepalive::exchange(source, addr, request.body(Empty::new()).unwrap())
        .await
        .unwrap()
}

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[test]
fn triggers_from_outside_the_allow_list_or_without_the_token_are_refused() {
    let runtime = runtime();
    let upstream = runtime
        .block_on(Upstream::start(UpstreamConfig::new("service")))
        .unwrap();
    let config = json!({"allowed_sources": ["127.0.0.1/32"], "token": TOKEN, "delay_ms": 0});
    let envoy = envoy_with_drain_signal(&config, upstream.addr());
    let ingress = envoy.listener_addr("ingress").unwrap();
    runtime.block_on(async {
        let outside = Ipv4Addr::new(127, 0, 0, 2);
        let refused = [
            (outside, Some(TOKEN)),
            (LOOPBACK, None),
            (LOOPBACK, Some("wrong")),
        ];
        for (source, token) in refused {
            let (status, _, _) = exchange(source, ingress, "POST", "/.mesh/drain", token).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{source} {token:?}");
        }
        let (status, _, _) = exchange(outside, ingress, "GET", "/.mesh/drain", None).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "the state needs an allowed source"
        );
        let (status, _, body) = exchange(LOOPBACK, ingress, "GET", "/.mesh/drain", None).await;
        assert_eq!(status, StatusCode::OK);
        let state: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(state["state"], "idle");
        let (status, headers, _) = exchange(LOOPBACK, ingress, "GET", "/healthz", None).await;
        assert_eq!(status, StatusCode::OK, "health passes: nothing changed");
        assert!(headers.get("x-mesh-draining").is_none());
    });
    assert_eq!(
        upstream.counters().received,
        1,
        "only the health check was forwarded"
    );
    envoy
        .wait_for_stat(&stat("drain_rejected"), STAT_WAIT, |n| n == 4)
        .unwrap();
    assert_eq!(envoy.stat(&stat("drain_triggered")).unwrap(), Some(0));
    assert_eq!(envoy.stat(&stat("admin_drain_calls_ok")).unwrap(), Some(0));
    envoy.shutdown();
}

#[test]
fn a_trigger_fails_health_checks_then_envoy_closes_http1_and_http2_connections_without_failures() {
    let runtime = runtime();
    let upstream = runtime
        .block_on(Upstream::start(UpstreamConfig::new("service")))
        .unwrap();
    let config = json!({"allowed_sources": ["127.0.0.1/32"], "token": TOKEN, "delay_ms": DELAY_MS});
    let envoy = envoy_with_drain_signal(&config, upstream.addr());
    let ingress = envoy.listener_addr("ingress").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (events, mut client_events) = mpsc::unbounded_channel();
    let (triggered_at, reports) = runtime.block_on(async {
        let clients: Vec<_> = (0..HTTP1_CLIENTS + HTTP2_CLIENTS)
            .map(|index| {
                let protocol = if index < HTTP1_CLIENTS {
                    KeepAlive::Http1
                } else {
                    KeepAlive::Http2
                };
                tokio::spawn(run_client(
                    protocol,
                    ingress,
                    "/work",
                    Duration::from_millis(20),
                    Arc::clone(&stop),
                    events.clone(),
                ))
            })
            .collect();
        // Every client is served before the trigger, and so are health checks.
        let mut served = 0;
        while served < clients.len() {
            let event = tokio::time::timeout(DRAIN_WAIT, client_events.recv())
                .await
                .expect("every client is served")
                .unwrap();
            assert_eq!(event, ClientEvent::Served);
            served += 1;
        }
        let (status, _, _) = exchange(LOOPBACK, ingress, "GET", "/healthz", None).await;
        assert_eq!(status, StatusCode::OK);

        let triggered_at = Instant::now();
        let (status, _, body) =
            exchange(LOOPBACK, ingress, "POST", "/.mesh/drain", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let state: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(state["state"], "health_failing");
        let (status, headers, _) = exchange(LOOPBACK, ingress, "GET", "/healthz", None).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "health fails at once"
        );
        assert_eq!(headers.get("x-mesh-draining").unwrap(), "true");

        let mut reconnected = 0;
        while reconnected < clients.len() {
            let event = tokio::time::timeout(DRAIN_WAIT, client_events.recv())
                .await
                .expect("every client is closed by the server and reconnects")
                .unwrap();
            if event == ClientEvent::Reconnected {
                reconnected += 1;
            }
        }
        stop.store(true, Ordering::SeqCst);
        let mut reports = Vec::new();
        for client in clients {
            reports.push(client.await.unwrap());
        }
        (triggered_at, reports)
    });
    for (index, report) in reports.iter().enumerate() {
        let kind = if index < HTTP1_CLIENTS {
            "HTTP/1.1"
        } else {
            "HTTP/2"
        };
        assert!(
            report.failed.is_empty(),
            "{kind} client {index}: {report:?}"
        );
        assert!(
            report.closed_by_server >= 1 && report.connections >= 2,
            "{kind}: {report:?}"
        );
        let first_close = report.first_close.unwrap().duration_since(triggered_at);
        assert!(
            first_close >= Duration::from_millis(DELAY_MS),
            "{kind} client {index} closed {first_close:?} after the trigger, before the delay"
        );
    }
    envoy
        .wait_for_stat(&stat("admin_drain_calls_ok"), STAT_WAIT, |n| n == 1)
        .unwrap();
    assert_eq!(
        envoy.stat(&stat("admin_drain_calls_failed")).unwrap(),
        Some(0)
    );
    assert_eq!(envoy.stat(&stat("drain_triggered")).unwrap(), Some(1));
    assert_eq!(envoy.stat(&stat("drain_state")).unwrap(), Some(2));
    envoy.shutdown();
}
