//! The emulated proxy-wasm host driving the real `retry_budget.wasm` (build it first with
//! `cargo build --release --target wasm32-wasip1 -p retry-budget`, or `cargo xtask build`):
//! configuration, several workers drawing on one budget through shared data (both roles),
//! refunds on the tick, refill in virtual time, pushback across workers and hostile bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mesh_emulator::{built_module, EmulatedHost, HeaderMap, HostBuilder, HttpStream, Worker};

fn retry_budget() -> HostBuilder {
    EmulatedHost::builder(built_module("retry-budget").unwrap())
        .property("xds.cluster_name", "payments")
}

fn counter(host: &EmulatedHost, name: &str) -> u64 {
    host.counter(&format!("mesh.retry_budget.{name}"))
        .unwrap_or(0)
}

fn request(attempt: u32) -> HeaderMap {
    HeaderMap::from([
        (":method", "GET"),
        (":path", "/pay"),
        (":authority", "payments"),
        ("x-envoy-max-retries", "25"),
    ])
    .with("x-envoy-attempt-count", attempt.to_string())
}

fn open(worker: &Worker, headers: HeaderMap) -> HttpStream {
    let mut stream = worker.http_stream().unwrap();
    stream.send_request_headers(headers, true).unwrap();
    stream
}

/// The `x-envoy-max-retries` the request left the filter with.
fn max_retries(stream: &HttpStream) -> u32 {
    let headers = stream.request_headers().unwrap();
    let all = headers.get_all("x-envoy-max-retries");
    assert_eq!(all.len(), 1, "the client's value is replaced, not added to");
    std::str::from_utf8(all[0]).unwrap().parse().unwrap()
}

/// The upstream answers after `attempts` attempts, ending the stream.
fn respond(stream: &mut HttpStream, status: u16, attempts: u32, extra: &[(&str, &str)]) {
    let mut headers = HeaderMap::from([(":status", status.to_string())])
        .with("x-envoy-attempt-count", attempts.to_string());
    for (name, value) in extra {
        headers = headers.with(name, *value);
    }
    stream.send_response_headers(headers, true).unwrap();
    assert!(stream.is_ended());
}

#[test]
fn loads_with_an_empty_object_and_rejects_a_bad_configuration_naming_the_field() {
    for config in ["{}", ""] {
        let host = retry_budget().plugin_config(config).start().unwrap();
        let stream = open(&host.worker(0).unwrap(), request(1));
        assert_eq!(max_retries(&stream), 3, "config {config:?}");
    }
    for (config, field) in [
        (r#"{"ratio": 2}"#, "ratio"),
        (r#"{"role": "edge"}"#, "role"),
        (r#"{"retry_header": "x-retry"}"#, "retry_header"),
        (r#"{"ttl_ms": 5}"#, "ttl_ms"),
    ] {
        let errors = retry_budget()
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
fn client_workers_on_threads_reserve_exactly_the_budget_then_get_it_back() {
    // A full budget of 40 tokens (its cap: max_retries), refilled at 1 retry/s, nothing from
    // traffic; a request may take all 40.
    let config = r#"{"ratio": 0, "min_retries_per_second": 1, "max_retries": 40}"#;
    let host = retry_budget()
        .workers(4)
        .plugin_config(config)
        .start()
        .unwrap();
    let reserve_all = |worker: &Worker, requests: usize| {
        (0..requests)
            .map(|_| {
                let stream = open(worker, request(1));
                let retries = max_retries(&stream);
                (stream, retries)
            })
            .collect::<Vec<_>>()
    };
    let streams: Vec<(HttpStream, u32)> = std::thread::scope(|scope| {
        let threads: Vec<_> = host
            .workers()
            .iter()
            .map(|worker| scope.spawn(move || reserve_all(worker, 30)))
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    let reserved: u32 = streams.iter().map(|(_, retries)| retries).sum();
    assert_eq!(
        reserved, 40,
        "never more than the budget, all of it under demand"
    );
    assert_eq!(counter(&host, "retries_allowed"), 40);
    assert_eq!(counter(&host, "retries_denied"), 120 * 40 - 40);

    // No request needed a retry: every worker refunds on its tick, and the whole budget is
    // there again (the floor alone would have refilled one token).
    for (mut stream, _) in streams {
        respond(&mut stream, 200, 1, &[]);
    }
    host.advance(Duration::from_secs(1)).unwrap();
    let again: u32 = reserve_all(&host.worker(2).unwrap(), 20)
        .iter()
        .map(|(_, retries)| retries)
        .sum();
    assert_eq!(again, 40);
    assert_eq!(counter(&host, "retries_observed"), 0);
}

#[test]
fn retries_made_stay_spent_until_the_floor_refills_the_budget() {
    // A full budget of 3 tokens (one second of 3 retries/s), nothing from traffic.
    let config = r#"{"ratio": 0, "min_retries_per_second": 3}"#;
    let host = retry_budget()
        .workers(2)
        .plugin_config(config)
        .start()
        .unwrap();
    let (a, b) = (host.worker(0).unwrap(), host.worker(1).unwrap());
    let mut failing = open(&a, request(1));
    assert_eq!(max_retries(&failing), 3);
    respond(&mut failing, 503, 4, &[]);
    assert_eq!(counter(&host, "retries_observed"), 3);
    assert_eq!(
        max_retries(&open(&b, request(1))),
        0,
        "spent, on every worker"
    );
    host.advance(Duration::from_millis(500)).unwrap();
    assert_eq!(max_retries(&open(&b, request(1))), 1, "1.5 tokens");
    host.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(
        max_retries(&open(&b, request(1))),
        3,
        "refilled to the cap by the floor"
    );
}

#[test]
fn a_pushback_seen_by_one_worker_stops_every_workers_retries() {
    let host = retry_budget()
        .workers(2)
        .plugin_config("{}")
        .start()
        .unwrap();
    let (a, b) = (host.worker(0).unwrap(), host.worker(1).unwrap());
    let mut shed = open(&a, request(1));
    respond(
        &mut shed,
        503,
        1,
        &[("x-mesh-shed", "1"), ("retry-after", "2")],
    );
    assert_eq!(counter(&host, "pushbacks_honoured"), 1);
    assert_eq!(max_retries(&open(&b, request(1))), 0);
    host.advance(Duration::from_secs(2)).unwrap();
    assert_eq!(max_retries(&open(&b, request(1))), 3);
}

/// Sends `each` requests of attempt number `attempt` from every worker on its own thread at once;
/// returns how many got through (no local reply).
fn admitted_on_threads(host: &EmulatedHost, attempt: u32, each: usize) -> usize {
    std::thread::scope(|scope| {
        let threads: Vec<_> = host
            .workers()
            .iter()
            .map(|worker| {
                scope.spawn(move || {
                    (0..each)
                        .filter(|_| open(worker, request(attempt)).local_response().is_none())
                        .count()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    })
}

#[test]
fn server_workers_on_threads_admit_exactly_the_budgets_retries_and_every_first_attempt() {
    // A full budget of 50 tokens (one second of 50 retries/s); virtual time stands still, so the
    // floor adds nothing.
    let config =
        r#"{"role": "server", "ratio": 0.2, "min_retries_per_second": 50, "ttl_ms": 10000}"#;
    let host = retry_budget()
        .workers(4)
        .plugin_config(config)
        .start()
        .unwrap();
    assert_eq!(admitted_on_threads(&host, 2, 20), 50, "the full budget");
    assert_eq!(
        admitted_on_threads(&host, 1, 50),
        200,
        "first attempts always pass"
    );
    assert_eq!(
        admitted_on_threads(&host, 2, 20),
        40,
        "20 % of the 200 first attempts"
    );
    assert_eq!(counter(&host, "retries_denied"), 160 - 90);
    assert_eq!(counter(&host, "pushbacks_sent"), 160 - 90);
    let rejection = open(&host.worker(0).unwrap(), request(3))
        .local_response()
        .unwrap();
    assert_eq!(rejection.status, 503);
    assert_eq!(rejection.headers.get_str("retry-after"), Some("1"));
}

#[test]
fn the_server_role_rejects_grpc_retries_with_a_do_not_retry_pushback() {
    // Its cap (max_retries: 1) admits the first retry.
    let config =
        r#"{"role": "server", "ratio": 0.1, "min_retries_per_second": 0, "max_retries": 1}"#;
    let host = retry_budget().plugin_config(config).start().unwrap();
    let headers = HeaderMap::from([
        (":method", "POST"),
        (":path", "/pkg.Pay/Charge"),
        ("content-type", "application/grpc"),
        ("grpc-previous-rpc-attempts", "1"),
    ]);
    let worker = host.worker(0).unwrap();
    assert!(open(&worker, headers.clone()).local_response().is_none());
    let reply = open(&worker, headers).local_response().unwrap();
    assert_eq!(reply.grpc_status, Some(14), "UNAVAILABLE");
    assert_eq!(reply.headers.get_str("grpc-retry-pushback-ms"), Some("-1"));
}

#[test]
fn hostile_header_bytes_never_kill_the_vm() {
    for config in ["{}", r#"{"role": "server", "key": "authority"}"#] {
        let host = retry_budget().plugin_config(config).start().unwrap();
        let worker = host.worker(0).unwrap();
        for value in [
            &b"\xff\xfe"[..],
            b"\x00",
            b"-1",
            b"99999999999999999999999999",
            &[b'a'; 8192],
        ] {
            let mut headers = HeaderMap::from([(":method", "GET"), (":path", "/")]);
            for name in [
                ":authority",
                "x-envoy-attempt-count",
                "grpc-previous-rpc-attempts",
            ] {
                headers.add(name, value);
            }
            let mut stream = worker.http_stream().unwrap();
            stream.send_request_headers(headers, true).unwrap();
            if stream.local_response().is_none() {
                let mut response = HeaderMap::from([(":status", "503")]);
                for name in [
                    "x-envoy-attempt-count",
                    "retry-after",
                    "grpc-retry-pushback-ms",
                    "x-mesh-shed",
                ] {
                    response.add(name, value);
                }
                stream.send_response_headers(response, true).unwrap();
            }
            assert!(!worker.is_dead(), "{config}: {value:?}");
        }
        assert_eq!(counter(&host, "requests"), 5);
    }
}
