//! retry_budget.wasm in the real Envoy (build it first with `cargo build --release --target
//! wasm32-wasip1 -p retry-budget`, or `cargo xtask build`), in front of an upstream that fails
//! on purpose: the client role makes Envoy's router stop retrying once the budget is spent and
//! retry again once its floor refills it; the server role rejects retries past the ratio (HTTP and gRPC)
//! while first attempts pass; the metrics reach `/stats/prometheus`.
//!
//! Each test runs its own Envoy (two workers, so the budget is shared through shared data);
//! `shutdown()` fails the test on any wasm panic or trap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_configs::{
    Bootstrap, Cluster, Listener, RetryOn, RetryPolicy, Route, Thresholds, WasmFilter,
};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use mesh_envoy_harness::{self as envoy, EnvoyOptions, EnvoyProcess};
use mesh_lab::upstream::proto::echo_client::EchoClient;
use mesh_lab::upstream::proto::EchoRequest;
use mesh_lab::upstream::{Fault, Upstream, UpstreamConfig};

/// How long to wait for a stat a finished request updates, or for the budget to refill.
const WAIT: Duration = Duration::from_secs(10);

/// The admin name of a retry-budget metric.
fn stat(metric: &str) -> String {
    format!("wasmcustom.mesh.retry_budget.{metric}")
}

fn runtime() -> tokio::runtime::Runtime {
    mesh_lab::runtime().unwrap()
}

/// Envoy with two workers and the retry budget (configured with `config`) in front of cluster
/// `payments` at `upstream`, whose route retries 5xx up to 3 times and reports attempt counts.
fn envoy_with_budget(config: &Value, upstream: SocketAddr) -> EnvoyProcess {
    let module = envoy::wasm_module("retry-budget").unwrap_or_else(|err| panic!("{err}"));
    let route = Route::prefix("/")
        .to_cluster("payments")
        .timeout(Duration::from_secs(10))
        .retry_policy(RetryPolicy::new([RetryOn::FiveXx], 3));
    let bootstrap = Bootstrap::new(0)
        .listener(
            Listener::http("sidecar", 0)
                .wasm_filter(WasmFilter::new("retry-budget", module).configuration(config))
                .route(route)
                .include_attempt_counts(),
        )
        .cluster(
            Cluster::static_cluster("payments", [upstream])
                .http2()
                .circuit_breaker(Thresholds::unlimited()),
        );
    let options = EnvoyOptions {
        concurrency: 2,
        ..EnvoyOptions::default()
    };
    EnvoyProcess::start(&bootstrap, options).unwrap_or_else(|err| panic!("{err}"))
}

/// What the client saw of one request: status, attempts Envoy made, `retry-after`.
struct Answer {
    status: StatusCode,
    attempts: u32,
    retry_after: Option<String>,
}

/// Sends `GET /pay` with `headers` through `sidecar`.
async fn get(sidecar: SocketAddr, headers: &[(&str, &str)]) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = Request::get(format!("http://{sidecar}/pay"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    body.collect().await.unwrap();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    Answer {
        status: parts.status,
        attempts: header("x-envoy-attempt-count").map_or(1, |n| n.parse().unwrap()),
        retry_after: header("retry-after"),
    }
}

#[test]
fn the_client_role_stops_envoys_retries_when_the_budget_is_spent_and_resumes_once_it_refills() {
    let runtime = runtime();
    let upstream = runtime
        .block_on(Upstream::start(UpstreamConfig {
            fault: Fault::http_error(1.0, StatusCode::SERVICE_UNAVAILABLE),
            ..UpstreamConfig::new("payments")
        }))
        .unwrap();
    // A full budget of 3 tokens (its cap: max_retries), refilled at 1 retry/s, nothing from
    // traffic: the first failing request spends it.
    let config = json!({"ratio": 0, "min_retries_per_second": 1});
    let envoy = envoy_with_budget(&config, upstream.addr());
    let sidecar = envoy.listener_addr("sidecar").unwrap();

    let started = Instant::now();
    // The client's own retry count is ignored: the budget decides.
    let first = runtime.block_on(get(sidecar, &[("x-envoy-max-retries", "10")]));
    assert_eq!(
        (first.status, first.attempts),
        (StatusCode::SERVICE_UNAVAILABLE, 4)
    );
    assert_eq!(
        runtime.block_on(get(sidecar, &[])).attempts,
        1,
        "spent: no retry"
    );
    assert_eq!(runtime.block_on(get(sidecar, &[])).attempts, 1);
    let counters = upstream.counters();
    assert_eq!((counters.received, counters.retries), (6, 3));

    // Once the floor has refilled a token, Envoy retries again.
    let refilled = loop {
        let answer = runtime.block_on(get(sidecar, &[]));
        if answer.attempts > 1 {
            break answer;
        }
        assert!(started.elapsed() < WAIT, "the budget never refilled");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(refilled.attempts, 2, "one token");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "refilled faster than 1 retry/s: {:?}",
        started.elapsed()
    );

    envoy
        .wait_for_stat(&stat("retries_observed"), WAIT, |n| n == 3 + 1)
        .unwrap();
    assert_eq!(envoy.stat(&stat("retries_allowed")).unwrap(), Some(4));
    assert!(
        envoy
            .stat(&stat("budget_available.payments"))
            .unwrap()
            .is_some(),
        "the budget is keyed by the route's cluster"
    );
    let prometheus = envoy.prometheus().unwrap();
    for metric in [
        "requests",
        "retries_observed",
        "retries_allowed",
        "retries_denied",
        "pushbacks_honoured",
        "budget_available_payments",
    ] {
        assert!(
            prometheus.contains(&format!("mesh_retry_budget_{metric}")),
            "{metric} missing from /stats/prometheus"
        );
    }
    envoy.shutdown();
}

#[test]
fn the_server_role_rejects_retries_past_the_ratio_and_lets_first_attempts_through() {
    let runtime = runtime();
    let upstream = runtime
        .block_on(Upstream::start(UpstreamConfig::new("payments")))
        .unwrap();
    // Half a retry per first attempt, no per-second minimum, over a minute; a full budget of 5
    // tokens (its cap: max_retries).
    let config = json!({"role": "server", "ratio": 0.5, "min_retries_per_second": 0,
        "ttl_ms": 60000, "max_retries": 5});
    let envoy = envoy_with_budget(&config, upstream.addr());
    let sidecar = envoy.listener_addr("sidecar").unwrap();

    for _ in 0..5 {
        let answer = runtime.block_on(get(sidecar, &[("x-envoy-attempt-count", "2")]));
        assert_eq!(answer.status, StatusCode::OK, "the full budget");
    }
    for _ in 0..10 {
        assert_eq!(runtime.block_on(get(sidecar, &[])).status, StatusCode::OK);
    }
    let retries: Vec<Answer> = (0..10)
        .map(|_| runtime.block_on(get(sidecar, &[("x-envoy-attempt-count", "2")])))
        .collect();
    let admitted = retries
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .count();
    assert_eq!(admitted, 5, "10 first attempts pay for 5 retries");
    for rejected in retries.iter().filter(|a| a.status != StatusCode::OK) {
        assert_eq!(rejected.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rejected.retry_after.as_deref(), Some("1"));
    }
    assert_eq!(
        runtime.block_on(get(sidecar, &[])).status,
        StatusCode::OK,
        "first attempts pass"
    );
    // (The route's router numbers its own attempts, so the upstream sees every request as a first
    // attempt: count them all.)
    assert_eq!(upstream.counters().received, 21);

    // A gRPC client that retries on its own is told not to.
    let mut client = runtime
        .block_on(EchoClient::connect(format!("http://{sidecar}")))
        .unwrap();
    let mut request = tonic::Request::new(EchoRequest {
        message: "retry".to_owned(),
    });
    request
        .metadata_mut()
        .insert("grpc-previous-rpc-attempts", "1".parse().unwrap());
    let status = runtime.block_on(client.get(request)).unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "-1"
    );

    envoy
        .wait_for_stat(&stat("retries_denied"), WAIT, |n| n == 6)
        .unwrap();
    assert_eq!(envoy.stat(&stat("pushbacks_sent")).unwrap(), Some(6));
    assert_eq!(envoy.stat(&stat("retries_allowed")).unwrap(), Some(10));
    envoy.shutdown();
}
