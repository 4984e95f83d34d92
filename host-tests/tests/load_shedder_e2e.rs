//! load_shedder.wasm in the real Envoy (build it first with `cargo build --release --target
//! wasm32-wasip1 -p load-shedder`, or `cargo xtask build`): HTTP and gRPC requests over a pinned
//! limit are shed with the documented replies, 1,000 client resets mid-request leave nothing in
//! flight, and the metrics reach `/stats/prometheus`.
//!
//! Each test runs its own Envoy (two workers, so admissions race through shared data) in front
//! of a `host_tests::upstream`; `shutdown()` fails the test on any wasm panic or trap.
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

use host_tests::envoy::{self, EnvoyOptions, EnvoyProcess};
use host_tests::grpc_wire::{raw_grpc_get, RawGrpcResponse};
use host_tests::upstream::proto::echo_client::EchoClient;
use host_tests::upstream::proto::EchoRequest;
use host_tests::upstream::{Fault, ServiceTime, Upstream, UpstreamConfig, UpstreamHandle};

/// How long to wait for stats that a tick (1 s) or a finished request updates.
const STAT_WAIT: Duration = Duration::from_secs(10);

/// The admin name of a shedder metric (Envoy files wasm-defined stats under `wasmcustom.`;
/// `/stats/prometheus` drops that prefix).
fn stat(metric: &str) -> String {
    format!("wasmcustom.mesh.load_shedder.{metric}")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Envoy with two workers and the shedder (configured with `config`) in front of `upstream`,
/// spoken to over HTTP/2 so plain HTTP and gRPC share the cluster.
fn envoy_with_shedder(config: &Value, upstream: SocketAddr) -> EnvoyProcess {
    let module = envoy::wasm_module("load-shedder").unwrap_or_else(|err| panic!("{err}"));
    let bootstrap = Bootstrap::new(0)
        .listener(
            Listener::http("ingress", 0)
                .wasm_filter(WasmFilter::new("load-shedder", module).configuration(config))
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

#[test]
fn http_and_grpc_requests_over_the_limit_are_shed_and_metrics_reach_prometheus() {
    let runtime = runtime();
    // Admitted requests hold the limit for a second: the shed ones all arrive meanwhile.
    let upstream = runtime
        .block_on(Upstream::start(UpstreamConfig {
            service_time: ServiceTime::Constant(Duration::from_secs(1)),
            ..UpstreamConfig::new("slow")
        }))
        .unwrap();
    let envoy = envoy_with_shedder(&pinned_limit(2), upstream.addr());
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
    for reply in runtime.block_on(join_all(admitted)) {
        let reply = reply.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert!(!reply.headers.contains_key("x-mesh-shed"));
    }

    // gRPC: a tonic client sees UNAVAILABLE with the shed marker; on the wire the reply is
    // trailers-only with exactly one grpc-status and one content-type.
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
    for result in runtime.block_on(join_all(admitted)) {
        assert_eq!(result.unwrap().unwrap().into_inner().message, "held");
    }

    envoy
        .wait_for_stat(&stat("in_flight"), STAT_WAIT, |n| n == 0)
        .unwrap();
    assert_eq!(envoy.stat(&stat("admitted")).unwrap(), Some(4));
    assert_eq!(envoy.stat(&stat("shed_critical")).unwrap(), Some(8));
    let prometheus = envoy.prometheus().unwrap();
    for metric in [
        "limit",
        "in_flight",
        "admitted",
        "shed_critical_plus",
        "shed_critical",
        "shed_sheddable_plus",
        "shed_sheddable",
        "would_shed",
        "baseline_latency_us",
        "window_latency_us",
    ] {
        assert!(
            prometheus.contains(&format!("mesh_load_shedder_{metric}")),
            "{metric} missing from /stats/prometheus"
        );
    }
    envoy.shutdown();
}

#[test]
fn a_thousand_client_resets_mid_request_leave_nothing_in_flight() {
    const CLIENTS: u64 = 1_000;
    let runtime = runtime();
    let upstream = runtime
        .block_on(Upstream::start(UpstreamConfig {
            fault: Fault::stall(),
            ..UpstreamConfig::new("stalled")
        }))
        .unwrap();
    let envoy = envoy_with_shedder(&pinned_limit(1_000), upstream.addr());
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
