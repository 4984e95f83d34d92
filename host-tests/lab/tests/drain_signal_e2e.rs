//! drain_signal.wasm in the real Envoy (build it first with `cargo xtask build`), run with
//! `--drain-strategy immediate` and an admin cluster pointing at its own admin port: triggers
//! from outside the allow-list (a client bound to 127.0.0.2) or without the token are refused;
//! a trigger from 127.0.0.1 fails the health checks at once and, after the delay, Envoy tells
//! HTTP/1.1 keep-alive clients `Connection: close` and HTTP/2 clients GOAWAY; they reconnect
//! and no request fails.
//!
//! `shutdown()` fails a test on any wasm panic or trap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_configs::{
    Bootstrap, Cluster, Listener, Route, Thresholds, TrafficDirection, WasmFilter,
};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use mesh_envoy_harness::{self as envoy, DrainStrategy, EnvoyOptions, EnvoyProcess};
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
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
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

/// A connection to `addr` from `source` (any free port).
async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// One HTTP/1.1 request on a new connection from `source`: status, headers, body.
async fn exchange(
    source: Ipv4Addr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, HeaderMap, Bytes) {
    let stream = connect_from(source, addr).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "service");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
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

/// What one client saw.
#[derive(Debug, Default)]
struct ClientReport {
    ok: u64,
    failed: Vec<String>,
    connections: u64,
    /// HTTP/1.1: responses carrying `Connection: close`; HTTP/2: connections the server ended
    /// gracefully (GOAWAY).
    closed_by_server: u64,
    /// When the server first closed (from the trigger).
    first_close: Option<Instant>,
}

/// Keeps requesting `/work` every 20 ms over keep-alive connections, reconnecting whenever the
/// server closes one, until `stop`. Reports on `reconnected` once it has been served on a new
/// connection after the server closed one.
async fn client(
    http2: bool,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    reconnected: mpsc::UnboundedSender<()>,
) -> ClientReport {
    let mut report = ClientReport::default();
    let mut announced = false;
    while !stop.load(Ordering::SeqCst) {
        let stream = connect_from(LOOPBACK, addr).await;
        report.connections += 1;
        let io = TokioIo::new(stream);
        let mut served_here = 0u64;
        if http2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            let conn = tokio::spawn(conn);
            while !stop.load(Ordering::SeqCst) && !conn.is_finished() {
                if sender.ready().await.is_err() {
                    break;
                }
                let request = Request::get(format!("http://{addr}/work"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                match sender.send_request(request).await {
                    Ok(response) if response.status() == StatusCode::OK => {
                        response.into_body().collect().await.unwrap();
                        report.ok += 1;
                        served_here += 1;
                    }
                    Ok(response) => report.failed.push(format!("status {}", response.status())),
                    Err(err) => report.failed.push(format!("h2: {err}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(sender);
            if !stop.load(Ordering::SeqCst) {
                match conn.await.unwrap() {
                    Ok(()) => {
                        report.closed_by_server += 1;
                        report.first_close.get_or_insert_with(Instant::now);
                    }
                    Err(err) => report.failed.push(format!("h2 connection: {err}")),
                }
            }
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            while !stop.load(Ordering::SeqCst) {
                if sender.ready().await.is_err() {
                    break;
                }
                let request = Request::get("/work")
                    .header("host", "service")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                match sender.send_request(request).await {
                    Ok(response) => {
                        let close = response
                            .headers()
                            .get("connection")
                            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
                        let status = response.status();
                        response.into_body().collect().await.unwrap();
                        if status == StatusCode::OK {
                            report.ok += 1;
                            served_here += 1;
                        } else {
                            report.failed.push(format!("status {status}"));
                        }
                        if close {
                            report.closed_by_server += 1;
                            report.first_close.get_or_insert_with(Instant::now);
                            break;
                        }
                    }
                    Err(err) => {
                        report.failed.push(format!("http/1.1: {err}"));
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if report.closed_by_server > 0 && report.connections > 1 && served_here > 0 && !announced {
            announced = true;
            let _ = reconnected.send(());
        }
    }
    report
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
    let (reconnected, mut reconnects) = mpsc::unbounded_channel();
    let (triggered_at, reports) = runtime.block_on(async {
        let clients: Vec<_> = (0..HTTP1_CLIENTS + HTTP2_CLIENTS)
            .map(|index| {
                let http2 = index >= HTTP1_CLIENTS;
                tokio::spawn(client(
                    http2,
                    ingress,
                    Arc::clone(&stop),
                    reconnected.clone(),
                ))
            })
            .collect();
        // Every client is served before the trigger.
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

        for _ in 0..clients.len() {
            tokio::time::timeout(DRAIN_WAIT, reconnects.recv())
                .await
                .expect("every client is closed by the server and reconnects")
                .unwrap();
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
