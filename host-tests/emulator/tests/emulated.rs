//! The emulated proxy-wasm host driving the real `host_fixture.wasm` (build it first with
//! `cargo build --release --target wasm32-wasip1 -p host-fixture`, or `cargo xtask build`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, UNIX_EPOCH};

use mesh_emulator::{
    built_module, Action, EmulatedHost, EmulatorError, HeaderMap, HostBuilder, HttpCallReply,
    HttpStream, LogLevel, MetricValue, Worker,
};

const COUNTER_KEY: &str = "mesh/fixture/requests";

fn fixture() -> HostBuilder {
    EmulatedHost::builder(built_module("host-fixture").unwrap())
}

fn start(workers: usize) -> EmulatedHost {
    fixture().workers(workers).start().unwrap()
}

fn request(action: &str, path: &str) -> HeaderMap {
    HeaderMap::from([
        (":method", "GET"),
        (":path", path),
        (":authority", "example.com"),
        ("x-fixture-action", action),
    ])
}

/// One request with `action`, response 200 without body; returns the ended stream.
fn exchange(worker: &Worker, action: &str) -> HttpStream {
    let mut stream = worker.http_stream().unwrap();
    stream
        .send_request_headers(request(action, "/"), true)
        .unwrap();
    if !stream.is_ended() {
        stream
            .send_response_headers([(":status", "200")], true)
            .unwrap();
    }
    assert!(stream.is_ended());
    stream
}

fn shared_counter(host: &EmulatedHost) -> u64 {
    let (bytes, _cas) = host.shared_data(COUNTER_KEY).expect("counter key exists");
    u64::from_le_bytes(bytes.try_into().expect("8-byte counter"))
}

#[test]
fn four_workers_on_four_threads_count_every_request_exactly_once() {
    /// Lost races injected on top of the real ones, so the retry path runs on every run.
    const INJECTED: u64 = 100;
    let host = start(4);
    host.fail_next_cas_sets(INJECTED, Some(COUNTER_KEY));
    std::thread::scope(|scope| {
        for worker in host.workers() {
            scope.spawn(move || {
                for _ in 0..10_000 {
                    exchange(worker, "count");
                }
            });
        }
    });
    // Every injected race was lost and retried (or deferred), besides whatever real races there were.
    assert_eq!(host.injected_cas_failures(), INJECTED);
    assert!(shared_counter(&host) <= 40_000);
    // The tick flushes increments a worker deferred after losing CAS races.
    host.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(shared_counter(&host), 40_000);
    assert_eq!(host.counter("mesh.fixture.requests"), Some(40_000));
    assert_eq!(host.gauge("mesh.fixture.shared_total"), Some(40_000));
}

#[test]
fn injected_cas_failures_make_the_module_retry_then_defer_to_the_tick() {
    let host = start(1);
    let worker = host.worker(0).unwrap();
    exchange(&worker, "count");
    assert_eq!(shared_counter(&host), 1);
    // A few lost races: the counter retries within the request.
    host.fail_next_cas_sets(3, Some(COUNTER_KEY));
    exchange(&worker, "count");
    assert_eq!(shared_counter(&host), 2);
    assert_eq!(host.injected_cas_failures(), 3);
    // Every attempt loses: the increment stays pending on the worker ...
    host.fail_next_cas_sets(1_000, Some(COUNTER_KEY));
    exchange(&worker, "count");
    assert_eq!(shared_counter(&host), 2);
    assert!(host.injected_cas_failures() > 3);
    assert!(host.pending_injected_cas_failures() < 1_000);
    // ... and the next tick applies it once the races stop.
    host.fail_next_cas_sets(0, None);
    host.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(shared_counter(&host), 3);
    assert_eq!(host.counter("mesh.fixture.requests"), Some(3));
    assert_eq!(host.shared_data_cas_mismatches(), 0, "no real race");
}

#[test]
fn injected_cas_failures_for_another_key_leave_the_counter_alone() {
    let host = start(1);
    let worker = host.worker(0).unwrap();
    exchange(&worker, "count");
    host.fail_next_cas_sets(5, Some("mesh/other/key"));
    exchange(&worker, "count");
    assert_eq!(shared_counter(&host), 2);
    assert_eq!(host.injected_cas_failures(), 0);
    assert_eq!(host.pending_injected_cas_failures(), 5);
}

#[test]
fn virtual_time_fires_exactly_the_elapsed_ticks_on_every_worker() {
    let host = fixture()
        .workers(3)
        .plugin_config(r#"{"tick_period_ms": 1000}"#)
        .start()
        .unwrap();
    assert_eq!(
        host.worker(0).unwrap().tick_period(),
        Some(Duration::from_secs(1))
    );
    host.advance(Duration::from_millis(10_500)).unwrap();
    for worker in host.workers() {
        assert_eq!(worker.ticks_delivered(), 10, "worker {}", worker.index());
    }
    assert_eq!(host.counter("mesh.fixture.ticks"), Some(30));
    // Small steps reach the same instants: 0.5 s more crosses exactly one more period.
    for _ in 0..5 {
        host.advance(Duration::from_millis(100)).unwrap();
    }
    assert_eq!(host.counter("mesh.fixture.ticks"), Some(33));
}

#[test]
fn the_module_reads_virtual_time() {
    let host = start(1);
    host.advance(Duration::from_millis(2_345)).unwrap();
    let stream = exchange(&host.worker(0).unwrap(), "time");
    let expected_ms = host.now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    let local = stream.local_response().unwrap();
    assert_eq!(local.status, 200);
    assert_eq!(
        String::from_utf8(local.body).unwrap(),
        expected_ms.to_string()
    );
}

#[test]
fn non_utf8_header_reads_as_bytes_and_none_without_trapping() {
    let host = start(1);
    let worker = host.worker(0).unwrap();
    let mut stream = worker.http_stream().unwrap();
    let headers = request("bytes", "/bytes").with("x-bytes", [0xff, 0xfe]);
    assert_eq!(
        stream.send_request_headers(headers, true).unwrap(),
        Action::Continue
    );
    stream
        .send_response_headers([(":status", "200")], true)
        .unwrap();
    let response = stream.response_headers().unwrap();
    assert_eq!(response.get_str("x-fixture-bytes"), Some("fffe"));
    assert_eq!(response.get_str("x-fixture-str"), Some("none"));
    // The worker keeps serving.
    assert!(!worker.is_dead());
    exchange(&worker, "count");
    assert_eq!(host.counter("mesh.fixture.requests"), Some(2));
}

#[test]
fn bad_plugin_config_fails_the_load_and_the_error_names_the_field() {
    for (config, field) in [
        (r#"{"tick_period_ms": 0}"#, "tick_period_ms"),
        (r#"{"tick_period_ms": "soon"}"#, "tick_period_ms"),
        (r#"{"no_such_field": 1}"#, "no_such_field"),
    ] {
        let err = fixture().plugin_config(config).start().err().unwrap();
        let EmulatorError::ConfigureRejected { worker, errors } = &err else {
            panic!("expected ConfigureRejected for {config}, got {err}");
        };
        assert_eq!(*worker, 0);
        assert!(
            errors.iter().any(|e| e.contains(field)),
            "{config}: {errors:?}"
        );
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn reconfiguring_with_a_bad_config_is_rejected() {
    let host = start(2);
    host.reconfigure(r#"{"tick_period_ms": 250}"#).unwrap();
    assert_eq!(
        host.worker(1).unwrap().tick_period(),
        Some(Duration::from_millis(250))
    );
    let err = host.reconfigure(r#"{"upstream": 7}"#).unwrap_err();
    assert!(
        matches!(&err, EmulatorError::ConfigureRejected { errors, .. } if errors.iter().any(|e| e.contains("upstream"))),
        "{err}"
    );
}

#[test]
fn a_module_panic_is_an_err_with_the_panic_message_and_kills_only_that_worker() {
    let host = start(2);
    let worker = host.worker(0).unwrap();
    let mut stream = worker.http_stream().unwrap();
    let err = stream
        .send_request_headers(request("panic", "/"), true)
        .unwrap_err();
    let EmulatorError::Trap {
        worker: index,
        callback,
        panic_message,
        ..
    } = &err
    else {
        panic!("expected a trap, got {err}");
    };
    assert_eq!(*index, 0);
    assert_eq!(callback, "proxy_on_request_headers");
    assert!(panic_message
        .as_deref()
        .unwrap()
        .contains("fixture panic requested"));
    assert!(err.to_string().contains("fixture panic requested"), "{err}");
    // Like Envoy's default failure policy, the VM stays dead; other workers are unaffected.
    assert!(worker.is_dead());
    assert!(matches!(
        worker.http_stream().err(),
        Some(EmulatorError::WorkerDead { worker: 0, .. })
    ));
    exchange(&host.worker(1).unwrap(), "count");
}

#[test]
fn calling_an_import_the_host_lacks_traps_naming_it() {
    let host = start(1);
    let mut stream = host.worker(0).unwrap().http_stream().unwrap();
    let err = stream
        .send_request_headers(request("unimplemented", "/"), true)
        .unwrap_err();
    assert!(matches!(err, EmulatorError::Trap { .. }), "{err}");
    assert!(
        err.to_string().contains("proxy_register_shared_queue"),
        "{err}"
    );
}

#[test]
fn a_module_that_is_not_built_says_how_to_build_it() {
    let missing = std::env::temp_dir().join("mesh-emulator-test/no_such_filter.wasm");
    let err = EmulatedHost::builder(missing).start().err().unwrap();
    assert!(matches!(err, EmulatorError::ModuleNotBuilt { .. }));
    assert!(
        err.to_string().contains("run `cargo xtask build` first"),
        "{err}"
    );
}

#[test]
fn a_module_missing_from_the_catalog_is_named() {
    let err = built_module("no-such-filter").unwrap_err();
    assert!(matches!(err, EmulatorError::Module(_)), "{err}");
    assert!(err.to_string().contains("no-such-filter"), "{err}");
}

#[test]
fn header_mutations_reach_the_upstream_and_clear_the_route_cache() {
    let host = start(1);
    let mut stream = host.worker(0).unwrap().http_stream().unwrap();
    let headers = request("mutate", "/original").with("x-remove", "gone");
    stream.send_request_headers(headers, true).unwrap();
    let upstream = stream.request_headers().unwrap();
    assert_eq!(upstream.get_str("x-set"), Some("1"));
    assert_eq!(upstream.get_all("x-added"), [&b"a"[..], &b"b"[..]]);
    assert_eq!(upstream.get("x-remove"), None);
    assert_eq!(upstream.get_str(":path"), Some("/rewritten"));
    assert_eq!(upstream.get_str("x-unknown-foreign"), Some("NotFound"));
    assert_eq!(stream.route_cache_clears(), 1);
    assert_eq!(host.foreign_function_calls("clear_route_cache"), 1);
}

#[test]
fn a_local_response_ends_the_stream_after_passing_the_response_callbacks() {
    let host = start(1);
    let mut stream = host.worker(0).unwrap().http_stream().unwrap();
    let action = stream
        .send_request_headers(request("local", "/deny"), false)
        .unwrap();
    assert_eq!(action, Action::Pause);
    let local = stream.local_response().unwrap();
    assert_eq!(local.status, 403);
    assert_eq!(local.headers.get_str("x-fixture"), Some("denied"));
    assert_eq!(local.body, b"denied by fixture");
    assert_eq!(local.grpc_status, None);
    assert!(stream.is_ended());
    let client = stream.response_headers().unwrap();
    assert_eq!(client.get_str(":status"), Some("403"));
    assert_eq!(stream.response_body(), b"denied by fixture");
    assert!(host
        .log_messages(LogLevel::Info)
        .contains(&"fixture: local done, path=/deny".to_owned()));
    assert!(matches!(
        stream.send_request_body(b"late", true),
        Err(EmulatorError::StreamEnded { .. })
    ));
}

#[test]
fn a_grpc_local_response_is_trailers_only() {
    let host = start(1);
    let mut stream = host.worker(0).unwrap().http_stream().unwrap();
    let headers = request("grpc-deny", "/pkg.Svc/Method").with("content-type", "application/grpc");
    stream.send_request_headers(headers, false).unwrap();
    let local = stream.local_response().unwrap();
    assert_eq!(local.grpc_status, Some(7));
    // The host builds the gRPC headers from the status and the message (the body).
    assert_eq!(local.body, b"denied: 100%");
    assert_eq!(local.headers.get("grpc-status"), None);
    let client = stream.response_headers().unwrap();
    assert_eq!(client.get_str(":status"), Some("200"));
    assert_eq!(client.get_str("content-type"), Some("application/grpc"));
    assert_eq!(client.get_str("grpc-status"), Some("7"));
    assert!(stream.response_body().is_empty());
}

#[test]
fn an_http_call_reply_resumes_the_paused_request() {
    let host = start(2);
    let mut stream = host.worker(1).unwrap().http_stream().unwrap();
    let action = stream
        .send_request_headers(request("call", "/x"), true)
        .unwrap();
    assert_eq!(action, Action::Pause);
    assert!(stream.is_request_paused());
    let calls = host.pending_http_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.worker, 1);
    assert_eq!(call.context_id, stream.context_id());
    assert_eq!(call.upstream, "fixture-upstream");
    assert_eq!(call.headers.get_str(":path"), Some("/check"));
    assert_eq!(call.body, b"ping");
    assert_eq!(call.timeout, Duration::from_millis(500));

    host.respond_to_call(
        call.token,
        HttpCallReply::response(200, [("x-reply", "1")], "pong")
            .with_trailers([("x-reply-trailer", "2")]),
    )
    .unwrap();
    assert!(!stream.is_request_paused());
    let upstream = stream.request_headers().unwrap();
    assert_eq!(upstream.get_str("x-call-body"), Some("pong"));
    assert_eq!(upstream.get_str("x-reply"), Some("1"));
    assert_eq!(upstream.get_str("x-reply-trailer"), Some("2"));
    assert!(host.pending_http_calls().is_empty());
    assert!(matches!(
        host.respond_to_call(call.token, HttpCallReply::Failure),
        Err(EmulatorError::NoPendingCall { .. })
    ));
}

#[test]
fn a_failed_or_timed_out_http_call_reaches_the_module_as_a_failure() {
    let host = start(1);
    let worker = host.worker(0).unwrap();

    let mut failed = worker.http_stream().unwrap();
    failed
        .send_request_headers(request("call", "/a"), true)
        .unwrap();
    let token = host.pending_http_calls()[0].token;
    host.respond_to_call(token, HttpCallReply::Failure).unwrap();
    assert_eq!(failed.local_response().unwrap().status, 503);
    assert!(failed.is_ended());

    let mut timed_out = worker.http_stream().unwrap();
    timed_out
        .send_request_headers(request("call", "/b"), true)
        .unwrap();
    host.advance(Duration::from_millis(499)).unwrap();
    assert!(timed_out.local_response().is_none());
    host.advance(Duration::from_millis(1)).unwrap();
    let local = timed_out.local_response().unwrap();
    assert_eq!(
        (local.status, local.body.as_slice()),
        (503, &b"upstream call failed"[..])
    );
    assert!(host.pending_http_calls().is_empty());
}

#[test]
fn an_http_call_to_an_unknown_cluster_is_refused() {
    let host = fixture().clusters(["other"]).start().unwrap();
    let mut stream = host.worker(0).unwrap().http_stream().unwrap();
    stream
        .send_request_headers(request("call", "/"), true)
        .unwrap();
    let local = stream.local_response().unwrap();
    assert_eq!(local.status, 500);
    assert_eq!(local.body, b"dispatch failed: BadArgument");
    assert!(host.http_calls().is_empty());
}

#[test]
fn a_reset_runs_done_and_log_and_cancels_the_streams_calls() {
    let host = start(1);
    let mut stream = host.worker(0).unwrap().http_stream().unwrap();
    stream
        .send_request_headers(request("call", "/reset"), true)
        .unwrap();
    let token = host.pending_http_calls()[0].token;
    stream.reset().unwrap();
    assert!(stream.is_ended());
    assert!(host
        .log_messages(LogLevel::Info)
        .contains(&"fixture: call done, path=/reset".to_owned()));
    assert!(host.pending_http_calls().is_empty());
    assert!(matches!(
        host.respond_to_call(token, HttpCallReply::response(200, HeaderMap::new(), "")),
        Err(EmulatorError::NoPendingCall { .. })
    ));
}

#[test]
fn bodies_are_buffered_while_paused_and_rewritten_whole() {
    let host = start(1);
    let mut stream = host.worker(0).unwrap().http_stream().unwrap();
    stream
        .send_request_headers(request("body", "/upload"), false)
        .unwrap();
    assert_eq!(
        stream.send_request_body(b"hello ", false).unwrap(),
        Action::Pause
    );
    assert!(stream.request_body().is_empty());
    assert_eq!(
        stream.send_request_body(b"world", true).unwrap(),
        Action::Continue
    );
    assert_eq!(stream.request_body(), b"HELLO WORLD");

    stream
        .send_response_headers([(":status", "200")], false)
        .unwrap();
    stream.send_response_body(b"abc", true).unwrap();
    assert_eq!(stream.response_body(), b"[abc]");
    assert!(stream.is_ended());
    assert_eq!(
        host.metric("mesh.fixture.body_bytes"),
        Some(MetricValue::Histogram(vec![11, 3]))
    );
}

#[test]
fn trailers_are_delivered_and_mutable() {
    let host = start(1);
    let mut stream = host.worker(0).unwrap().http_stream().unwrap();
    stream
        .send_request_headers(request("body", "/t"), false)
        .unwrap();
    stream.send_request_trailers([("x-client", "1")]).unwrap();
    let request_trailers = stream.request_trailers().unwrap();
    assert_eq!(request_trailers.get_str("x-client"), Some("1"));
    assert_eq!(
        request_trailers.get_str("x-fixture-trailer-seen"),
        Some("1")
    );

    stream
        .send_response_headers([(":status", "200")], false)
        .unwrap();
    assert!(!stream.is_ended());
    stream
        .send_response_trailers([("grpc-status", "0")])
        .unwrap();
    let response_trailers = stream.response_trailers().unwrap();
    assert_eq!(response_trailers.get_str("x-fixture-trailer"), Some("done"));
    assert!(stream.is_ended());
}

#[test]
fn properties_are_readable_and_unset_ones_are_not_found() {
    let named = fixture()
        .property("plugin_name", "fixture-a")
        .start()
        .unwrap();
    assert!(named
        .log_messages(LogLevel::Info)
        .iter()
        .any(|m| m.contains("plugin_name=fixture-a")));
    let unnamed = start(1);
    assert!(unnamed
        .log_messages(LogLevel::Info)
        .iter()
        .any(|m| m.contains("plugin_name=<unset>")));
    assert!(unnamed.logs().iter().all(|r| r.worker == 0));
}
