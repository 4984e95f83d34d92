//! entity_cache.wasm in the real Envoy (build it first with `cargo xtask build`) on a caller's
//! egress listener, with tonic clients and lab upstreams as the entity cache and the origin; the
//! topology is the cache-failover scenario's (mesh_lab::scenario::cache_failover): the aggregate
//! cluster [cache, origin] whose route retries on the origin (`previous_priorities`, gRPC
//! `retry_on` conditions). `Echo/Get` is cacheable, `Echo/Slow` is not.
//!
//! Shown here: cacheable calls reach the cache and the others (spoofed routing header or not)
//! never do; a trailers-only UNAVAILABLE from the cache is retried on the origin within the call,
//! and so is an UNAVAILABLE in trailers (the aggregate's upstream filter copies it into the held
//! response headers, where Envoy's router sees it), counted in `/stats/prometheus`;
//! three such calls open the breaker, after which calls go to the origin until the cool-down, when the cache takes traffic again; the cache killed under
//! load fails no call.
//!
//! Each test runs its own Envoy (two workers share the breaker): the first with
//! `entity_cache.wasm`, the second with the filter inside `mesh_suite.wasm`; `shutdown()` fails
//! the test on any wasm panic or trap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tonic::transport::Channel;

use mesh_envoy_harness::{EnvoyOptions, EnvoyProcess};
use mesh_lab::load::{self, GrpcMethod, LoadConfig, Protocol, RequestClass};
use mesh_lab::scenario::cache_failover::{
    egress_bootstrap, entity_cache_config, Steering, BREAKER_STATE_STAT, EGRESS_LISTENER,
    ROUTING_HEADER,
};
use mesh_lab::upstream::proto::echo_client::EchoClient;
use mesh_lab::upstream::proto::{EchoRequest, SlowRequest};
use mesh_lab::upstream::{Fault, GrpcStatusDelivery, Upstream, UpstreamConfig, UpstreamHandle};

/// How long to wait for a stat or a breaker transition.
const WAIT: Duration = Duration::from_secs(10);

fn stat(metric: &str) -> String {
    format!("wasmcustom.mesh.entity_cache.{metric}")
}

fn runtime() -> tokio::runtime::Runtime {
    mesh_lab::runtime().unwrap()
}

/// The egress Envoy (two workers) steered per `steering`.
fn egress(steering: &Steering, cache: SocketAddr, origin: SocketAddr) -> EnvoyProcess {
    let bootstrap = egress_bootstrap(steering, cache, origin).unwrap_or_else(|e| panic!("{e}"));
    let options = EnvoyOptions {
        concurrency: 2,
        ..EnvoyOptions::default()
    };
    EnvoyProcess::start(&bootstrap, options).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts the cache and the origin upstreams.
fn upstreams(runtime: &tokio::runtime::Runtime) -> (UpstreamHandle, UpstreamHandle) {
    let cache = runtime
        .block_on(Upstream::start(UpstreamConfig::new("cache")))
        .unwrap();
    let origin = runtime
        .block_on(Upstream::start(UpstreamConfig::new("origin")))
        .unwrap();
    (cache, origin)
}

/// Calls `Echo/Get` with `metadata`; the answering upstream's name, or the status.
async fn get(
    client: &mut EchoClient<Channel>,
    metadata: &[(&'static str, &'static str)],
) -> Result<String, tonic::Status> {
    let mut request = tonic::Request::new(EchoRequest {
        message: "get".into(),
    });
    for (name, value) in metadata {
        request.metadata_mut().insert(*name, value.parse().unwrap());
    }
    Ok(client.get(request).await?.into_inner().upstream)
}

/// Calls `Echo/Slow` (no delay) with `metadata`; the answering upstream's name.
async fn slow(
    client: &mut EchoClient<Channel>,
    metadata: &[(&'static str, &'static str)],
) -> String {
    let mut request = tonic::Request::new(SlowRequest {
        message: "slow".into(),
        delay_ms: 0,
    });
    for (name, value) in metadata {
        request.metadata_mut().insert(*name, value.parse().unwrap());
    }
    client.slow(request).await.unwrap().into_inner().upstream
}

#[test]
fn methods_route_spoofed_headers_are_ignored_and_an_error_in_trailers_opens_the_breaker_until_the_cool_down(
) {
    let runtime = runtime();
    let (cache, origin) = upstreams(&runtime);
    // Long enough for the checks of the open breaker to finish inside it on a busy machine.
    let cool_down = Duration::from_secs(2);
    let breaker = json!({
        "consecutive_failures": 3,
        "min_requests": 1000,
        "cool_down_ms": 2000,
        "half_open_share": 1.0,
        "successes_to_close": 2,
        "latency_threshold_ms": null,
    });
    let steering = Steering::EntityCache(entity_cache_config(&breaker));
    let envoy = egress(&steering, cache.addr(), origin.addr());
    let egress_addr = envoy.listener_addr(EGRESS_LISTENER).unwrap();
    let mut client = runtime
        .block_on(EchoClient::connect(format!("http://{egress_addr}")))
        .unwrap();
    let received = || (cache.counters().received, origin.counters().received);

    // Cacheable calls reach the cache; the others, and a bypassed call, the origin.
    for _ in 0..5 {
        assert_eq!(runtime.block_on(get(&mut client, &[])).unwrap(), "cache");
    }
    for _ in 0..5 {
        assert_eq!(runtime.block_on(slow(&mut client, &[])), "origin");
    }
    let bypass = [("x-entity-cache", "bypass")];
    assert_eq!(
        runtime.block_on(get(&mut client, &bypass)).unwrap(),
        "origin"
    );
    // A client-sent routing header is removed first: a non-cacheable call naming the cache (or
    // its hosts) still goes to the origin.
    for spoofed in ["entity-cache", "entity-cache-hosts"] {
        let header = [(ROUTING_HEADER, spoofed)];
        assert_eq!(runtime.block_on(slow(&mut client, &header)), "origin");
    }
    assert_eq!(
        received(),
        (5, 8),
        "non-cacheable calls never reach the cache"
    );
    envoy
        .wait_for_stat(&stat("to_cache"), WAIT, |n| n == 5)
        .unwrap();
    assert_eq!(envoy.stat(&stat("to_origin")).unwrap(), Some(1));

    // A trailers-only UNAVAILABLE from the cache is retried on the origin in the same call.
    cache.set_fault(Fault::grpc_error(
        1.0,
        tonic::Code::Unavailable,
        GrpcStatusDelivery::Headers,
    ));
    assert_eq!(runtime.block_on(get(&mut client, &[])).unwrap(), "origin");
    assert_eq!(received(), (6, 9));
    envoy
        .wait_for_stat(&stat("fallbacks"), WAIT, |n| n == 1)
        .unwrap();
    assert_eq!(envoy.stat(&stat("cache_errors.retried")).unwrap(), Some(1));
    // A success ends the run of failures.
    cache.clear_fault();
    assert_eq!(runtime.block_on(get(&mut client, &[])).unwrap(), "cache");
    envoy
        .wait_for_stat(&stat("to_cache"), WAIT, |n| n == 7)
        .unwrap();

    // UNAVAILABLE in trailers: Envoy decides retries on response headers, so the aggregate's
    // upstream filter holds the cache's response and copies the status into its headers; the
    // route retries the call on the origin and the client never sees the failure. The filter
    // counts each as a retried cache call; three in a row open the breaker.
    cache.set_fault(Fault::grpc_error(
        1.0,
        tonic::Code::Unavailable,
        GrpcStatusDelivery::Trailers,
    ));
    let mut last_failure_sent = Instant::now();
    for failures in 1..=3 {
        last_failure_sent = Instant::now();
        assert_eq!(runtime.block_on(get(&mut client, &[])).unwrap(), "origin");
        envoy
            .wait_for_stat(&stat("cache_errors.retried"), WAIT, |n| n == failures + 1)
            .unwrap();
    }
    envoy
        .wait_for_stat(&stat("breaker_opened"), WAIT, |n| n == 1)
        .unwrap();
    // The breaker opened after the third failure was sent.
    let opened = last_failure_sent;
    assert_eq!(envoy.stat(BREAKER_STATE_STAT).unwrap(), Some(1));
    assert_eq!(
        envoy
            .prometheus_value("mesh_entity_cache_cache_errors_retried")
            .unwrap(),
        Some(4.0),
        "the retried cache calls are in /stats/prometheus"
    );
    // Open: cacheable calls go to the origin, and succeed.
    let cache_calls = cache.counters().received;
    for _ in 0..3 {
        assert_eq!(runtime.block_on(get(&mut client, &[])).unwrap(), "origin");
    }
    assert_eq!(cache.counters().received, cache_calls);

    // The cache recovers; after the cool-down the probes close the breaker and the cache takes
    // the traffic again.
    cache.clear_fault();
    let back = loop {
        if runtime.block_on(get(&mut client, &[])).unwrap() == "cache"
            && envoy.stat(BREAKER_STATE_STAT).unwrap() == Some(0)
        {
            break opened.elapsed();
        }
        assert!(opened.elapsed() < WAIT, "the breaker never closed");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(back >= cool_down, "closed before the cool-down: {back:?}");
    assert_eq!(runtime.block_on(get(&mut client, &[])).unwrap(), "cache");
    envoy.shutdown();
}

#[test]
fn in_the_suite_the_cache_killed_under_load_fails_no_call_and_takes_traffic_again_after_the_cool_down(
) {
    let runtime = runtime();
    let (mut cache, origin) = upstreams(&runtime);
    let breaker = json!({"cool_down_ms": 1000, "half_open_share": 0.5, "successes_to_close": 3});
    // Inside the suite, so the suite's composition is shown in the real Envoy too.
    let steering = Steering::Suite(entity_cache_config(&breaker));
    let envoy = egress(&steering, cache.addr(), origin.addr());
    let egress_addr = envoy.listener_addr(EGRESS_LISTENER).unwrap();

    // 200 calls/s for 6 s, three cacheable for one other, while the cache is killed and restarted.
    let mut config = LoadConfig::new(egress_addr, Protocol::Grpc, 200.0, Duration::from_secs(6));
    config.connections = 4;
    config.classes = vec![
        RequestClass::new("cacheable", 3, &[]),
        RequestClass::new("other", 1, &[]).calling(GrpcMethod::Slow),
    ];
    let load = runtime.spawn(async move { load::run(&config).await });
    let await_until = |what: &str, condition: &dyn Fn() -> bool| {
        let deadline = Instant::now() + WAIT;
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    await_until("the cache to serve", &|| cache.counters().received >= 50);
    runtime.block_on(cache.kill());
    envoy
        .wait_for_stat(&stat("breaker_opened"), WAIT, |n| n >= 1)
        .unwrap();
    runtime.block_on(cache.restart()).unwrap();
    let restarted = cache.counters().received;
    await_until("the cache to take traffic again", &|| {
        cache.counters().received >= restarted + 20
            && envoy.stat(BREAKER_STATE_STAT).unwrap() == Some(0)
    });
    let report = runtime.block_on(load).unwrap().unwrap();
    assert_eq!(
        report.totals.successes,
        report.sent_requests(),
        "failed calls: {:?}",
        report.totals.errors
    );
    assert!(
        envoy.stat(&stat("fallbacks")).unwrap().unwrap_or(0) >= 1,
        "calls in flight at the kill were answered by the origin"
    );
    assert!(origin.counters().received > report.sent_requests() / 4);
    envoy.shutdown();
}
