//! The load shedder in the real Envoy, as `load_shedder.wasm` and inside `mesh_suite.wasm` (every test
//! runs for both; build them first with `cargo xtask build`): HTTP and gRPC requests over a pinned limit
//! are shed with the documented replies and never reach the upstream, the metrics in `/stats/prometheus`
//! count exactly the requests the test sent, and 1,000 client resets mid-request leave nothing in
//! flight.
//!
//! Each test runs its own Envoy (two workers, so admissions race through shared data) in front of a
//! `mesh_lab::upstream` that holds admitted requests (a stall fault) until the test releases them;
//! `shutdown()` fails the test on any wasm panic or trap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_configs::{Bootstrap, Cluster, Listener, Route, Thresholds, WasmFilter};
use futures::future::join_all;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use mesh_envoy_harness::{self as envoy, EnvoyOptions, EnvoyProcess};
use mesh_lab::grpc_wire::{raw_grpc_get, RawGrpcResponse};
use mesh_lab::upstream::proto::echo_client::EchoClient;
use mesh_lab::upstream::proto::EchoRequest;
use mesh_lab::upstream::{Fault, Upstream, UpstreamConfig, UpstreamHandle};

/// How long to wait for stats that a finished request updates.
const STAT_WAIT: Duration = Duration::from_secs(10);

/// The admin name of a shedder metric (Envoy files wasm-defined stats under `wasmcustom.`;
/// `/stats/prometheus` drops that prefix).
fn stat(metric: &str) -> String {
    format!("wasmcustom.mesh.load_shedder.{metric}")
}

/// The module carrying the shedder: alone, or as the only section of the suite (named after the
/// filter, so its metrics are the same).
#[derive(Clone, Copy, Debug)]
enum Module {
    Standalone,
    Suite,
}

impl Module {
    /// The plugin running the shedder with `config`.
    fn filter(self, config: &Value) -> WasmFilter {
        match self {
            Self::Standalone => {
                WasmFilter::new("load-shedder", built("load-shedder")).configuration(config)
            }
            Self::Suite => WasmFilter::new("mesh-suite", built("mesh-suite"))
                .configuration(&json!({"filters": [{"filter": "load-shedder", "config": config}]})),
        }
    }
}

fn built(crate_name: &str) -> std::path::PathBuf {
    envoy::wasm_module(crate_name).unwrap_or_else(|err| panic!("{err}"))
}

/// Each test, once per [`Module`].
macro_rules! for_each_module {
    ($($test:ident),* $(,)?) => {
        mod standalone {
            $(#[test]
            fn $test() {
                super::$test(super::Module::Standalone);
            })*
        }
        mod suite {
            $(#[test]
            fn $test() {
                super::$test(super::Module::Suite);
            })*
        }
    };
}

for_each_module!(
    http_and_grpc_requests_over_the_limit_are_shed_before_the_upstream_and_counted_exactly,
    a_thousand_client_resets_mid_request_leave_nothing_in_flight,
);

fn runtime() -> tokio::runtime::Runtime {
    mesh_lab::runtime().unwrap()
}

/// Envoy with two workers and the shedder (configured with `config`, in `module`) in front of
/// `upstream`, spoken to over HTTP/2 so plain HTTP and gRPC share the cluster.
fn envoy_with_shedder(module: Module, config: &Value, upstream: SocketAddr) -> EnvoyProcess {
    let bootstrap = Bootstrap::new(0)
        .listener(
            Listener::http("ingress", 0)
                .wasm_filter(module.filter(config))
                .route(
                    Route::prefix("/")
                        .to_cluster("service")
                        .timeout(Duration::from_secs(30)),
                ),
        )
        .cluster(
            Cluster::static_cluster("service", [upstream])
                .http2()
                .circuit_breaker(Thresholds::unlimited()),
        );
    let options = EnvoyOptions {
        concurrency: 2,
        ..EnvoyOptions::default()
    };
    EnvoyProcess::start(&bootstrap, options).unwrap_or_else(|err| panic!("{err}"))
}

/// A limit pinned at `limit` (a critical request may fill 90 % of it, critical-plus all of it).
fn pinned_limit(limit: u32) -> Value {
    json!({"limit": {"min_limit": limit, "initial_limit": limit, "max_limit": limit}})
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_upstream_in_flight(upstream: &UpstreamHandle, expected: u64) {
    wait_until(
        &format!("{expected} requests in flight at the upstream"),
        STAT_WAIT,
        || upstream.counters().in_flight == expected,
    );
}

fn http_and_grpc_requests_over_the_limit_are_shed_before_the_upstream_and_counted_exactly(
    module: Module,
) {
    let runtime = runtime();
    // Admitted requests stay at the upstream until the test clears the stall: the shed ones all
    // arrive while the limit is full.
    let upstream = runtime
        .block_on(Upstream::start(UpstreamConfig {
            fault: Fault::stall(),
            ..UpstreamConfig::new("held")
        }))
        .unwrap();
    let envoy = envoy_with_shedder(module, &pinned_limit(2), upstream.addr());
    let ingress = envoy.listener_addr("ingress").unwrap();

    // Plain HTTP/1.1: two requests fill the limit of 2, four more are shed at once.
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = || {
        let client = client.clone();
        async move {
            let request = Request::get(format!("http://{ingress}/work"))
                .body(Empty::new())
                .unwrap();
            let response = client.request(request).await.unwrap();
            let (parts, body) = response.into_parts();
            body.collect().await.unwrap();
            parts
        }
    };
    let admitted: Vec<_> = (0..2).map(|_| runtime.spawn(get())).collect();
    wait_for_upstream_in_flight(&upstream, 2);
    let shed = runtime.block_on(join_all((0..4).map(|_| get())));
    for reply in &shed {
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.headers["retry-after"], "1");
        assert_eq!(reply.headers["x-mesh-shed"], "1");
    }
    assert_eq!(
        upstream.counters().received,
        2,
        "a shed request reached the upstream"
    );
    upstream.clear_fault();
    for reply in runtime.block_on(join_all(admitted)) {
        let reply = reply.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert!(!reply.headers.contains_key("x-mesh-shed"));
    }
    envoy
        .wait_for_stat(&stat("in_flight"), STAT_WAIT, |n| n == 0)
        .unwrap();

    // gRPC: a tonic client sees UNAVAILABLE with the shed marker; on the wire the reply is
    // trailers-only with exactly one grpc-status and one content-type.
    upstream.set_fault(Fault::stall());
    let channel = runtime
        .block_on(EchoClient::connect(format!("http://{ingress}")))
        .unwrap();
    let call = |message: &str| {
        let mut client = channel.clone();
        let request = EchoRequest {
            message: message.to_owned(),
        };
        async move { client.get(request).await }
    };
    let admitted: Vec<_> = (0..2).map(|_| runtime.spawn(call("held"))).collect();
    wait_for_upstream_in_flight(&upstream, 2);
    for result in runtime.block_on(join_all((0..3).map(|_| call("shed")))) {
        let status = result.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert_eq!(status.metadata().get("x-mesh-shed").unwrap(), "1");
    }
    let RawGrpcResponse {
        status,
        headers,
        trailers,
    } = runtime.block_on(raw_grpc_get(ingress)).unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get_all("grpc-status").iter().collect::<Vec<_>>(),
        ["14"]
    );
    assert_eq!(
        headers.get_all("content-type").iter().collect::<Vec<_>>(),
        ["application/grpc"]
    );
    assert_eq!(headers["x-mesh-shed"], "1");
    assert_eq!(headers["grpc-retry-pushback-ms"], "1000");
    assert!(
        trailers.as_ref().is_none_or(HeaderMap::is_empty),
        "{trailers:?}"
    );
    assert_eq!(
        upstream.counters().received,
        4,
        "a shed call reached the upstream"
    );
    upstream.clear_fault();
    for result in runtime.block_on(join_all(admitted)) {
        assert_eq!(result.unwrap().unwrap().into_inner().message, "held");
    }

    // 4 admitted (2 HTTP, 2 gRPC) and 8 shed (4 HTTP, 4 gRPC), all at the default criticality.
    envoy
        .wait_for_stat(&stat("in_flight"), STAT_WAIT, |n| n == 0)
        .unwrap();
    let prometheus = envoy.prometheus().unwrap();
    let expected = [
        ("limit", 2),
        ("in_flight", 0),
        ("admitted", 4),
        ("shed_critical_plus", 0),
        ("shed_critical", 8),
        ("shed_sheddable_plus", 0),
        ("shed_sheddable", 0),
        ("would_shed", 0),
        ("admission_failed_open", 0),
    ];
    for (metric, value) in expected {
        let name = format!("mesh_load_shedder_{metric}");
        assert_eq!(
            envoy::prometheus_sample(&prometheus, &name),
            Some(f64::from(value)),
            "{name} in /stats/prometheus:\n{prometheus}"
        );
    }
    for metric in [
        "baseline_latency_us",
        "window_latency_us",
        "release_deferred",
    ] {
        let name = format!("mesh_load_shedder_{metric}");
        assert!(
            envoy::prometheus_sample(&prometheus, &name).is_some(),
            "{name} missing from /stats/prometheus"
        );
    }
    assert_eq!(upstream.counters().received, 4);
    envoy.shutdown();
}

fn a_thousand_client_resets_mid_request_leave_nothing_in_flight(module: Module) {
    const CLIENTS: u64 = 1_000;
    let runtime = runtime();
    let upstream = runtime
        .block_on(Upstream::start(UpstreamConfig {
            fault: Fault::stall(),
            ..UpstreamConfig::new("stalled")
        }))
        .unwrap();
    let envoy = envoy_with_shedder(module, &pinned_limit(1_000), upstream.addr());
    let ingress = envoy.listener_addr("ingress").unwrap();

    let clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|index| {
            let mut stream = TcpStream::connect(ingress).unwrap();
            let request = format!(
                "GET /stall/{index} HTTP/1.1\r\nhost: service\r\n\
                 x-request-criticality: critical-plus\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).unwrap();
            stream
        })
        .collect();
    wait_for_upstream_in_flight(&upstream, CLIENTS);
    envoy
        .wait_for_stat(&stat("in_flight"), STAT_WAIT, |n| n == CLIENTS)
        .unwrap();

    drop(clients);
    envoy
        .wait_for_stat(&stat("in_flight"), STAT_WAIT, |n| n == 0)
        .unwrap();
    assert_eq!(envoy.stat(&stat("admitted")).unwrap(), Some(CLIENTS));
    assert_eq!(envoy.stat(&stat("admission_failed_open")).unwrap(), Some(0));
    envoy.shutdown();
}
