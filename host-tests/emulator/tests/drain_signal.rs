//! The emulated proxy-wasm host driving the real `drain_signal.wasm` (build it first with
//! `cargo xtask build`) on several workers in virtual time: a trigger on one worker is seen by
//! every worker, the admin drain call is dispatched exactly once across them and retried after
//! a failure or timeout, an unknown admin cluster never traps, a reconfiguration continues the
//! drain, and hostile bytes are refused without a trap.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mesh_emulator::{
    built_module, EmulatedHost, HeaderMap, HostBuilder, HttpCall, HttpCallReply, LocalResponse,
    Worker,
};

const WORKERS: usize = 4;
/// A 2 s delay through cluster `envoy_admin`.
const CONFIG: &str = r#"{"delay_ms": 2000}"#;

fn drain() -> HostBuilder {
    EmulatedHost::builder(built_module("drain-signal").unwrap())
        .workers(WORKERS)
        .clusters(["envoy_admin"])
        .property("source.address", "127.0.0.1:43210")
}

fn counter(host: &EmulatedHost, name: &str) -> u64 {
    host.counter(&format!("mesh.drain_signal.{name}"))
        .unwrap_or(0)
}

/// Sends one request on `worker`; the local response, if the filter answered it.
fn send(worker: &Worker, headers: HeaderMap) -> Option<LocalResponse> {
    let mut stream = worker.http_stream().unwrap();
    stream.send_request_headers(headers, true).unwrap();
    let reply = stream.local_response();
    stream.finish().unwrap();
    reply
}

fn request(method: &str, path: &str) -> HeaderMap {
    HeaderMap::from([(":method", method), (":path", path), (":authority", "svc")])
}

fn trigger(worker: &Worker) -> LocalResponse {
    send(worker, request("POST", "/.mesh/drain")).expect("answered locally")
}

fn admin_calls(host: &EmulatedHost) -> Vec<HttpCall> {
    host.http_calls()
}

#[test]
fn a_trigger_on_one_worker_fails_health_checks_on_every_worker() {
    let host = drain().plugin_config(CONFIG).start().unwrap();
    for worker in host.workers() {
        assert!(
            send(worker, request("GET", "/healthz")).is_none(),
            "passes before"
        );
    }
    let reply = trigger(&host.worker(2).unwrap());
    assert_eq!(reply.status, 202);
    for worker in host.workers() {
        for path in ["/healthz", "/readyz"] {
            let reply = send(worker, request("GET", path)).expect("health check answered");
            assert_eq!(reply.status, 503);
            assert_eq!(reply.headers.get("x-mesh-draining"), Some(&b"true"[..]));
        }
        assert!(
            send(worker, request("GET", "/api")).is_none(),
            "served normally"
        );
        let again = trigger(worker);
        assert_eq!(again.status, 200, "idempotent on every worker");
    }
    assert_eq!(counter(&host, "drain_triggered"), 1);
    assert_eq!(counter(&host, "health_fail_responses"), 2 * WORKERS as u64);
}

#[test]
fn the_admin_drain_call_is_dispatched_exactly_once_across_workers() {
    let host = drain().plugin_config(CONFIG).start().unwrap();
    trigger(&host.worker(0).unwrap());
    host.advance(Duration::from_millis(1_900)).unwrap();
    assert!(admin_calls(&host).is_empty(), "not before the delay");
    // Every worker ticks several times past the deadline while the call is unanswered.
    host.advance(Duration::from_secs(3)).unwrap();
    let calls = admin_calls(&host);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.upstream, "envoy_admin");
    assert_eq!(call.headers.get(":method"), Some(&b"POST"[..]));
    assert_eq!(
        call.headers.get(":path"),
        Some(&b"/drain_listeners?graceful&inboundonly"[..])
    );
    host.respond_to_call(
        call.token,
        HttpCallReply::response(200, HeaderMap::new(), "OK\n"),
    )
    .unwrap();
    host.advance(Duration::from_secs(60)).unwrap();
    assert_eq!(admin_calls(&host).len(), 1, "exactly once");
    assert_eq!(counter(&host, "admin_drain_calls_ok"), 1);
    assert_eq!(host.gauge("mesh.drain_signal.drain_state"), Some(2));
    let state = send(&host.worker(3).unwrap(), request("GET", "/.mesh/drain")).unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state.body).unwrap();
    assert_eq!(state["state"], "draining");
}

#[test]
fn a_failed_or_timed_out_call_is_retried_by_one_worker() {
    let host = drain().plugin_config(CONFIG).start().unwrap();
    trigger(&host.worker(1).unwrap());
    host.advance(Duration::from_millis(2_250)).unwrap();
    let first = admin_calls(&host);
    assert_eq!(first.len(), 1);
    host.respond_to_call(
        first[0].token,
        HttpCallReply::response(503, HeaderMap::new(), ""),
    )
    .unwrap();
    assert_eq!(counter(&host, "admin_drain_calls_failed"), 1);
    host.advance(Duration::from_millis(1_250)).unwrap();
    let second = admin_calls(&host);
    assert_eq!(second.len(), 2, "retried once after 1 s");
    // Unanswered: the host fails it at its 5 s timeout; the retry waits 2 s more.
    host.advance(Duration::from_millis(5_000)).unwrap();
    assert_eq!(counter(&host, "admin_drain_calls_failed"), 2);
    host.advance(Duration::from_millis(2_250)).unwrap();
    let third = admin_calls(&host);
    assert_eq!(third.len(), 3);
    host.respond_to_call(
        third[2].token,
        HttpCallReply::response(200, HeaderMap::new(), ""),
    )
    .unwrap();
    host.advance(Duration::from_secs(40)).unwrap();
    assert_eq!(admin_calls(&host).len(), 3);
    assert_eq!(counter(&host, "admin_drain_calls_ok"), 1);
}

#[test]
fn an_unknown_admin_cluster_is_counted_and_never_traps() {
    let host = drain()
        .clusters(["another"])
        .plugin_config(CONFIG)
        .start()
        .unwrap();
    trigger(&host.worker(0).unwrap());
    host.advance(Duration::from_secs(5)).unwrap();
    assert!(admin_calls(&host).is_empty());
    assert!(counter(&host, "admin_drain_calls_failed") >= 2);
    assert!(host.workers().iter().all(|worker| !worker.is_dead()));
    let reply = send(&host.worker(0).unwrap(), request("GET", "/healthz")).unwrap();
    assert_eq!(reply.status, 503, "health checks keep failing");
}

#[test]
fn a_reconfiguration_continues_the_drain() {
    let host = drain().plugin_config(CONFIG).start().unwrap();
    trigger(&host.worker(0).unwrap());
    host.advance(Duration::from_secs(1)).unwrap();
    host.reconfigure(CONFIG).unwrap();
    let reply = send(&host.worker(1).unwrap(), request("GET", "/readyz")).unwrap();
    assert_eq!(reply.status, 503);
    host.advance(Duration::from_millis(1_250)).unwrap();
    assert_eq!(admin_calls(&host).len(), 1, "due at the original deadline");
}

#[test]
fn sources_outside_the_allow_list_and_hostile_bytes_are_refused_without_a_trap() {
    let host = drain()
        .plugin_config(r#"{"allowed_sources": ["10.0.0.0/8"], "token": "t0k"}"#)
        .start()
        .unwrap();
    let worker = host.worker(0).unwrap();
    let forged = request("POST", "/.mesh/drain")
        .with("x-forwarded-for", "10.0.0.1")
        .with("authorization", "Bearer t0k");
    assert_eq!(send(&worker, forged).unwrap().status, 403);
    let hostile = HeaderMap::from([(":method", "POST")])
        .with(":path", [b'/', b'.', 0xff, b'?', 0xfe])
        .with("authorization", [0xff, 0x00, 0x80]);
    assert!(send(&worker, hostile).is_none());
    let hostile = request("POST", "/.mesh/drain").with("authorization", [b'B', 0xc3, 0x28]);
    assert_eq!(send(&worker, hostile).unwrap().status, 403);
    assert_eq!(counter(&host, "drain_rejected"), 2);
    assert!(send(&worker, request("GET", "/healthz")).is_none());
    assert!(!worker.is_dead());
}
