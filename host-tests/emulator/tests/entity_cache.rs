//! The emulated proxy-wasm host driving the real `entity_cache.wasm` (build it first with
//! `cargo build --release --target wasm32-wasip1 -p entity-cache`, or `cargo xtask build`):
//! configuration, routing with the spoofed header removed, and several workers on threads
//! feeding one breaker with gRPC errors in response trailers, then its recovery in virtual time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mesh_emulator::{built_module, EmulatedHost, HeaderMap, HostBuilder, Worker};

const ROUTING: &str = "x-entity-cache-cluster";

const CONFIG: &str = r#"{"rules": [
    {"grpc_method": "catalog.Catalog/*", "cache_cluster": "cache", "origin_cluster": "catalog"}],
  "breaker": {"consecutive_failures": 1000, "min_requests": 40, "error_rate": 0.5,
              "cool_down_ms": 1000, "half_open_share": 1.0, "successes_to_close": 4}}"#;

fn entity_cache() -> HostBuilder {
    EmulatedHost::builder(built_module("entity-cache").unwrap())
}

fn counter(host: &EmulatedHost, name: &str) -> u64 {
    host.counter(&format!("mesh.entity_cache.{name}"))
        .unwrap_or(0)
}

fn grpc_request(path: &str) -> HeaderMap {
    HeaderMap::from([
        (":method", "POST"),
        (":path", path),
        ("content-type", "application/grpc"),
        (ROUTING, "spoofed"),
    ])
}

/// One gRPC call answered with `grpc_status` in the response trailers; where it was routed and
/// how often the route cache was cleared for it.
fn call(worker: &Worker, path: &str, grpc_status: &str) -> (Option<String>, u32) {
    let mut stream = worker.http_stream().unwrap();
    stream
        .send_request_headers(grpc_request(path), true)
        .unwrap();
    let routed = stream
        .request_headers()
        .unwrap()
        .get(ROUTING)
        .map(|value| String::from_utf8(value.to_vec()).unwrap());
    let clears = stream.route_cache_clears();
    stream
        .send_response_headers(HeaderMap::from([(":status", "200")]), false)
        .unwrap();
    stream
        .send_response_trailers(HeaderMap::from([("grpc-status", grpc_status)]))
        .unwrap();
    assert!(stream.is_ended());
    (routed, clears)
}

#[test]
fn loads_with_an_empty_object_and_rejects_a_bad_configuration_naming_the_field() {
    let host = entity_cache().plugin_config("{}").start().unwrap();
    let (routed, clears) = call(&host.worker(0).unwrap(), "/catalog.Catalog/Get", "0");
    assert_eq!(
        (routed, clears),
        (None, 0),
        "no rules: the spoofed header is removed"
    );
    for (config, field) in [
        (
            r#"{"rules": [{"grpc_method": "x", "cache_cluster": "c", "origin_cluster": "o"}]}"#,
            "rules[0].grpc_method",
        ),
        (
            r#"{"breaker": {"cool_down_ms": 1}}"#,
            "breaker.cool_down_ms",
        ),
        (r#"{"routing": "x"}"#, "routing"),
    ] {
        let errors = entity_cache()
            .plugin_config(config)
            .start_rejected()
            .unwrap_or_else(|why| panic!("{config}: {why}"));
        assert!(
            errors.iter().any(|line| line.contains(field)),
            "{config}: {errors:?}"
        );
    }
}

#[test]
fn workers_on_threads_feed_one_breaker_through_trailers_and_it_recovers() {
    const WORKERS: usize = 4;
    let host = entity_cache()
        .workers(WORKERS)
        .plugin_config(CONFIG)
        .start()
        .unwrap();
    // Non-cacheable methods are untouched; the spoofed routing header never survives.
    let worker = host.worker(0).unwrap();
    assert_eq!(call(&worker, "/users.Users/Get", "0"), (None, 0));
    // Each worker: 16 calls, half failing with UNAVAILABLE in the trailers. No worker alone
    // reaches the 40-call volume; together they do, and the breaker opens once.
    let routed: Vec<Option<String>> = std::thread::scope(|scope| {
        let threads: Vec<_> = host
            .workers()
            .iter()
            .map(|worker| {
                scope.spawn(move || {
                    (0..16)
                        .map(|i| {
                            let status = if i % 2 == 0 { "14" } else { "0" };
                            let (routed, clears) = call(worker, "/catalog.Catalog/Get", status);
                            assert_eq!(clears, 1);
                            routed
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    assert!(routed
        .iter()
        .all(|r| matches!(r.as_deref(), Some("cache" | "catalog"))));
    assert_eq!(counter(&host, "breaker_opened"), 1);
    let to_cache = counter(&host, "to_cache");
    assert!(
        (40..=40 + WORKERS as u64 * 2).contains(&to_cache),
        "to_cache {to_cache}"
    );
    assert_eq!(counter(&host, "to_cache") + counter(&host, "to_origin"), 64);
    assert!(counter(&host, "cache_errors.grpc_unavailable") >= 20);
    // Every worker sees it open after its tick, whether or not it wrote last.
    for worker in host.workers() {
        worker.tick().unwrap();
        assert_eq!(
            call(worker, "/catalog.Catalog/Get", "0").0.as_deref(),
            Some("catalog")
        );
    }
    assert_eq!(host.gauge("mesh.entity_cache.breaker_state.cache"), Some(1));
    // After the cool-down every call probes (share 1.0); four successes on any workers close it.
    host.advance(Duration::from_millis(1_000)).unwrap();
    for worker in host.workers() {
        assert_eq!(
            call(worker, "/catalog.Catalog/Get", "0").0.as_deref(),
            Some("cache")
        );
    }
    for worker in host.workers() {
        worker.tick().unwrap();
    }
    assert_eq!(host.gauge("mesh.entity_cache.breaker_state.cache"), Some(0));
    assert_eq!(counter(&host, "breaker_opened"), 1);
    assert!(host.workers().iter().all(|worker| !worker.is_dead()));
}
