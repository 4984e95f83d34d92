//! The emulated proxy-wasm host driving the real `sandbox_router.wasm` (build it first with
//! `cargo xtask build`) on four workers in virtual time: routing by header and baggage with the
//! route cache cleared, spoofed routing headers removed, untrusted keys stripped, hostile bytes
//! without a trap, and the dynamic registry fetched once per interval across workers, shared,
//! kept on failure and picked up within one interval.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mesh_emulator::{built_module, EmulatedHost, HeaderMap, HostBuilder, HttpCallReply, Worker};

const WORKERS: usize = 4;
const INTERVAL: Duration = Duration::from_secs(1);
/// The tick period with a 1 s interval (a quarter of it).
const TICK: Duration = Duration::from_millis(250);
const ROUTING: &str = "x-mesh-sandbox-cluster";
const CONFIG: &str = r#"{"sandboxes": {"fixed": "sandbox_fixed"},
    "registry": {"cluster": "registry", "path": "/sandboxes", "refresh_interval_ms": 1000, "timeout_ms": 200},
    "trusted_sources": ["127.0.0.1/32"]}"#;

fn router(source: &str) -> HostBuilder {
    EmulatedHost::builder(built_module("sandbox-router").unwrap())
        .workers(WORKERS)
        .clusters(["registry"])
        .property("source.address", source.to_owned())
}

fn counter(host: &EmulatedHost, name: &str) -> u64 {
    host.counter(&format!("mesh.sandbox_router.{name}"))
        .unwrap_or(0)
}

/// Sends a request with `headers` on `worker`; the request headers as the upstream gets them.
fn send(worker: &Worker, headers: HeaderMap) -> HeaderMap {
    let mut stream = worker.http_stream().unwrap();
    let headers = headers
        .with(":method", "GET")
        .with(":path", "/")
        .with(":authority", "svc");
    stream.send_request_headers(headers, true).unwrap();
    assert!(stream.local_response().is_none());
    let sent = stream.request_headers().unwrap();
    stream.finish().unwrap();
    sent
}

fn routed(worker: &Worker, key: &str) -> Option<String> {
    let sent = send(worker, HeaderMap::new().with("x-sandbox", key));
    sent.get_str(ROUTING).map(str::to_owned)
}

/// Advances tick by tick until a registry fetch is in flight (at most two intervals); its token
/// and how long that took.
fn await_fetch(host: &EmulatedHost) -> (u32, Duration) {
    let mut waited = Duration::ZERO;
    while waited <= 2 * INTERVAL {
        if let Some(call) = host.pending_http_calls().pop() {
            assert_eq!(call.upstream, "registry");
            assert_eq!(call.headers.get(":path"), Some(&b"/sandboxes"[..]));
            assert_eq!(call.headers.get(":method"), Some(&b"GET"[..]));
            return (call.token, waited);
        }
        host.advance(TICK).unwrap();
        waited += TICK;
    }
    panic!("no registry fetch within two intervals");
}

/// Awaits the next fetch and answers it with `reply`; how long the wait took.
fn answer_next(host: &EmulatedHost, reply: HttpCallReply) -> Duration {
    let (token, waited) = await_fetch(host);
    host.respond_to_call(token, reply).unwrap();
    waited
}

fn list(body: &str) -> HttpCallReply {
    HttpCallReply::response(200, HeaderMap::new(), body)
}

#[test]
fn trusted_keys_route_on_every_worker_and_the_route_cache_is_cleared() {
    let host = router("127.0.0.1:5000")
        .plugin_config(CONFIG)
        .start()
        .unwrap();
    for worker in host.workers() {
        assert_eq!(routed(worker, "fixed").as_deref(), Some("sandbox_fixed"));
        let sent = send(
            worker,
            HeaderMap::new().with("baggage", "a=1, sandbox=fixed"),
        );
        assert_eq!(sent.get_str(ROUTING), Some("sandbox_fixed"));
        let spoofed = send(worker, HeaderMap::new().with(ROUTING, "admin"));
        assert_eq!(spoofed.get(ROUTING), None);
    }
    assert_eq!(counter(&host, "routed.fixed"), 2 * WORKERS as u64);
    assert_eq!(
        host.foreign_function_calls("clear_route_cache"),
        3 * WORKERS as u64
    );
}

#[test]
fn untrusted_sources_are_stripped_and_hostile_bytes_never_trap() {
    let host = router("127.0.0.2:5000")
        .plugin_config(CONFIG)
        .start()
        .unwrap();
    let worker = host.worker(1).unwrap();
    let sent = send(
        &worker,
        HeaderMap::new()
            .with("x-sandbox", "fixed")
            .with("baggage", "userId=alice,sandbox=fixed")
            .with(ROUTING, "sandbox_fixed"),
    );
    assert_eq!(sent.get(ROUTING), None);
    assert_eq!(sent.get("x-sandbox"), None);
    assert_eq!(sent.get_str("baggage"), Some("userId=alice"));
    for value in [&b"\xff\xfe"[..], b"fixed\x00", &[b'a'; 9000]] {
        let sent = send(
            &worker,
            HeaderMap::new()
                .with("x-sandbox", value)
                .with("baggage", value),
        );
        assert_eq!(sent.get(ROUTING), None);
    }
    assert!(host.workers().iter().all(|w| !w.is_dead()));
    assert_eq!(counter(&host, "untrusted_stripped"), 4);
}

#[test]
fn the_registry_is_fetched_once_per_interval_across_workers_and_shared() {
    let host = router("127.0.0.1:5000")
        .plugin_config(CONFIG)
        .start()
        .unwrap();
    answer_next(
        &host,
        list(r#"[{"name": "feature-x", "cluster": "sandbox_x"}]"#),
    );
    assert_eq!(
        host.http_calls().len(),
        1,
        "one fetch across {WORKERS} workers"
    );
    // Ten intervals of ticks on every worker, each fetch answered as soon as it is in flight.
    for _ in 0..10 * 4 {
        host.advance(TICK).unwrap();
        if let Some(call) = host.pending_http_calls().pop() {
            let reply = list(r#"[{"name": "feature-x", "cluster": "sandbox_x"}]"#);
            host.respond_to_call(call.token, reply).unwrap();
        }
    }
    assert_eq!(host.http_calls().len(), 11, "one fetch per interval");
    assert_eq!(counter(&host, "registry_refresh_ok"), 11);
    for worker in host.workers() {
        assert_eq!(routed(worker, "feature-x").as_deref(), Some("sandbox_x"));
    }
    assert_eq!(host.gauge("mesh.sandbox_router.registry_size"), Some(2));
}

#[test]
fn the_last_good_list_is_kept_when_the_registry_fails_or_answers_garbage() {
    let host = router("127.0.0.1:5000")
        .plugin_config(CONFIG)
        .start()
        .unwrap();
    answer_next(
        &host,
        list(r#"[{"name": "feature-x", "cluster": "sandbox_x"}]"#),
    );
    for reply in [
        HttpCallReply::Failure,
        HttpCallReply::response(503, HeaderMap::new(), "down"),
        list("<html>"),
        list(r#"[{"name": "feature-x", "cluster": "bad cluster"}]"#),
    ] {
        answer_next(&host, reply);
        host.advance(TICK).unwrap();
        for worker in host.workers() {
            assert_eq!(routed(worker, "feature-x").as_deref(), Some("sandbox_x"));
        }
    }
    assert_eq!(counter(&host, "registry_refresh_failed"), 4);
    // An unanswered fetch times out (Envoy reports a failure): counted, the list kept, and the
    // next interval fetches again.
    await_fetch(&host);
    let before = host.http_calls().len();
    host.advance(TICK).unwrap();
    assert_eq!(counter(&host, "registry_refresh_failed"), 5);
    await_fetch(&host);
    assert_eq!(host.http_calls().len(), before + 1);
    assert_eq!(
        routed(&host.worker(0).unwrap(), "feature-x").as_deref(),
        Some("sandbox_x")
    );
}

#[test]
fn an_add_and_a_remove_are_picked_up_within_one_interval() {
    let host = router("127.0.0.1:5000")
        .plugin_config(CONFIG)
        .start()
        .unwrap();
    answer_next(&host, list(r#"[{"name": "a", "cluster": "sandbox_a"}]"#));
    // The registry changes now: the next fetch comes within one interval, and every worker
    // routes by the new list after one more tick.
    let waited = answer_next(&host, list(r#"[{"name": "b", "cluster": "sandbox_b"}]"#));
    host.advance(TICK).unwrap();
    assert!(waited <= INTERVAL, "fetched after {waited:?}");
    for worker in host.workers() {
        assert_eq!(routed(worker, "b").as_deref(), Some("sandbox_b"));
        assert_eq!(routed(worker, "a"), None);
    }
}
