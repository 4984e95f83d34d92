//! The sidecar `cargo xtask up` runs: the payment-service example spec (and the HTTP
//! notification-service one) rendered by the composer,
//! in the real Envoy (build the modules first with `cargo xtask build`), with lab upstreams for
//! the app, its dependencies (the entity cache among them) and its sandbox. Every check the
//! demo prints passes (each filter acting as the spec says), a cacheable call whose cache
//! answers UNAVAILABLE in its trailers is served by the origin, and the rendered sidecar's drain
//! (what drain-signal and the preStop hook call) closes ingress connections while the app's
//! calls out keep their egress connections.
//!
//! `shutdown()` fails a test on any wasm panic or trap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::response::Parts;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use mesh_envoy_harness::EnvoyProcess;
use mesh_lab::grpc_wire::{raw_grpc_call, GrpcCall};
use mesh_lab::keepalive::connect_from;
use mesh_lab::spec_demo::{Check, Ports, SpecDemo, DEFAULT_SPEC};
use mesh_lab::upstream::{Fault, GrpcStatusDelivery, UPSTREAM_NAME_HEADER};

/// How long a declared health check may take to pass: one interval more than the first check
/// (the examples check every 5 s and 10 s), in case that one times out on a busy machine.
const HEALTH_WAIT: Duration = Duration::from_secs(25);

fn start() -> (tokio::runtime::Runtime, SpecDemo, EnvoyProcess) {
    start_spec(DEFAULT_SPEC)
}

/// The sidecar of the spec at `path` (relative to the workspace root), on free ports.
fn start_spec(path: &str) -> (tokio::runtime::Runtime, SpecDemo, EnvoyProcess) {
    let runtime = mesh_lab::runtime().unwrap();
    let spec = mesh_catalog::workspace_root().join(path);
    let demo = runtime
        .block_on(SpecDemo::start(&spec, Ports::Free))
        .unwrap_or_else(|err| panic!("{err}"));
    let envoy = EnvoyProcess::start(&demo.rendered.bootstrap, SpecDemo::envoy_options())
        .unwrap_or_else(|err| panic!("{err}"));
    (runtime, demo, envoy)
}

/// The demo's checks, asserting that every one passed.
fn passing_checks(
    runtime: &tokio::runtime::Runtime,
    demo: &SpecDemo,
    envoy: &EnvoyProcess,
) -> Vec<Check> {
    let checks = runtime.block_on(demo.check());
    let failed: Vec<_> = checks
        .iter()
        .filter(|check| check.outcome.is_err())
        .collect();
    assert!(failed.is_empty(), "{failed:#?}\n{}", envoy.log());
    checks
}

#[test]
fn the_payment_service_sidecar_passes_every_demo_check() {
    let (runtime, demo, envoy) = start();
    let checks = passing_checks(&runtime, &demo, &envoy);
    for filter in [
        "drain-signal",
        "load-shedder",
        "retry-budget",
        "sandbox-router",
        "entity-cache",
    ] {
        assert!(
            checks.iter().any(|check| check.filter == filter),
            "nothing checked {filter}: {checks:#?}"
        );
    }
    // The ledger's declared gRPC health check passes against its stand-in.
    envoy
        .wait_for_stat(
            "cluster.egress_ledger.membership_healthy",
            HEALTH_WAIT,
            |healthy| healthy == 1,
        )
        .unwrap_or_else(|err| panic!("{err}"));
    // The rendered entity-cache fallback covers a failure status in the cache's trailers too.
    let cache = demo.upstream("entity-cache").unwrap();
    cache.set_fault(Fault::grpc_error(
        1.0,
        tonic::Code::Unavailable,
        GrpcStatusDelivery::Trailers,
    ));
    let call = GrpcCall::new(demo.egress(), "/ledger.Ledger/GetAccount").authority("ledger");
    let answer = runtime.block_on(raw_grpc_call(&call)).unwrap();
    assert_eq!(
        (answer.grpc_status(), answer.header(UPSTREAM_NAME_HEADER)),
        (Some(0), Some("ledger")),
        "{answer:?}"
    );
    assert_eq!(cache.counters().injected_errors, 1);
    cache.clear_fault();
    let guide = demo.guide(&checks);
    assert!(
        !guide.contains("FAIL") && guide.contains("x-sandbox: pr-4121"),
        "{guide}"
    );
    envoy.shutdown();
}

#[test]
fn the_http_notification_service_sidecar_passes_every_demo_check() {
    let (runtime, demo, envoy) =
        start_spec("envoy-configs/examples/notification-service/spec.yaml");
    let checks = passing_checks(&runtime, &demo, &envoy);
    let dependencies = checks
        .iter()
        .filter(|check| check.expected.contains("through the egress"))
        .count();
    assert_eq!(dependencies, demo.spec.dependencies.len(), "{checks:#?}");
    // The declared health checks (HTTP/1.1 and HTTP/2) pass against the stand-ins: a host of a
    // health-checked cluster counts as healthy only once a check has passed.
    for dependency in ["email-gateway", "user-profile"] {
        envoy
            .wait_for_stat(
                &format!("cluster.egress_{dependency}.membership_healthy"),
                HEALTH_WAIT,
                |healthy| healthy == 1,
            )
            .unwrap_or_else(|err| panic!("{err}"));
    }
    envoy.shutdown();
}

/// A keep-alive HTTP/1.1 connection to `addr`.
async fn keep_alive(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = connect_from(Ipv4Addr::LOCALHOST, addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn get(sender: &mut SendRequest<Empty<Bytes>>, host: &str) -> Parts {
    let request = Request::get("/hello")
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    body.collect().await.unwrap();
    parts
}

fn closes(response: &Parts) -> bool {
    response
        .headers
        .get("connection")
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"))
}

#[test]
fn draining_the_rendered_sidecar_closes_ingress_connections_and_keeps_the_egress() {
    let (runtime, demo, envoy) = start();
    runtime.block_on(async {
        let mut ingress = keep_alive(demo.ingress()).await;
        let mut egress = keep_alive(demo.egress()).await;
        assert!(get(&mut ingress, "payment-service")
            .await
            .status
            .is_success());
        assert!(get(&mut egress, "ledger").await.status.is_success());

        envoy
            .post_admin("/drain_listeners?graceful&inboundonly")
            .unwrap_or_else(|err| panic!("{err}"));

        let answer = get(&mut ingress, "payment-service").await;
        assert!(answer.status.is_success() && closes(&answer), "{answer:?}");
        let answer = get(&mut egress, "ledger").await;
        assert!(answer.status.is_success() && !closes(&answer), "{answer:?}");
    });
    envoy.shutdown();
}
