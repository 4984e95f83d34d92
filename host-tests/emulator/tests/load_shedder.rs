//! The emulated proxy-wasm host driving the real `load_shedder.wasm` (build it first with
//! `cargo build --release --target wasm32-wasip1 -p load-shedder`, or `cargo xtask build`):
//! configuration, exact cross-worker accounting, shedding order and reply shapes, dry run,
//! bypass paths, adaptation in virtual time, hostile header bytes, and (with injected CAS
//! failures) contention, fail-open admissions, deferred releases and releases pending across a
//! reconfiguration of `mesh_suite.wasm`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use load_shedder::policy::SharedState;
use load_shedder::worker::CAS_RETRIES;
use mesh_emulator::{built_module, EmulatedHost, HeaderMap, HostBuilder, HttpStream, Worker};
use meshkit::shared::SharedValue;

/// Shared-data key of the state when the host reports no plugin name (the empty name is `_`;
/// the state's layout version is part of the key).
const DEFAULT_KEY: &str = "mesh/load-shedder._/state.v2";
/// A limit pinned at 10: critical-plus may fill 10, critical 9, sheddable-plus 8, sheddable 5.
const LIMIT_10: &str = r#"{"limit":{"min_limit":10,"initial_limit":10,"max_limit":10}}"#;

/// A limit pinned at 2: only critical-plus may fill all of it.
const LIMIT_2: &str = r#"{"limit":{"min_limit":2,"initial_limit":2,"max_limit":2}}"#;

fn shedder() -> HostBuilder {
    EmulatedHost::builder(built_module("load-shedder").unwrap())
}

fn start(config: &str) -> EmulatedHost {
    shedder().plugin_config(config).start().unwrap()
}

fn metric(name: &str) -> String {
    format!("mesh.load_shedder.{name}")
}

fn counter(host: &EmulatedHost, name: &str) -> u64 {
    host.counter(&metric(name)).unwrap_or(0)
}

/// The gauge after the next tick (which refreshes it from the shared state).
fn gauge_after_tick(host: &EmulatedHost, name: &str) -> i64 {
    host.advance(Duration::from_secs(1)).unwrap();
    host.gauge(&metric(name)).unwrap()
}

/// In-flight requests in the shared state at `key`, as the module wrote it (no tick needed).
fn in_flight(host: &EmulatedHost, key: &str) -> u32 {
    let (bytes, _cas) = host.shared_data(key).unwrap();
    SharedState::decode(&bytes).unwrap().in_flight()
}

/// Lost CAS races that make one shared-state update give up (its first try and every retry).
fn every_try_of_one_update() -> u64 {
    u64::from(CAS_RETRIES) + 1
}

fn request(path: &str, criticality: Option<&str>) -> HeaderMap {
    let headers = HeaderMap::from([
        (":method", "GET"),
        (":path", path),
        (":authority", "service"),
    ]);
    match criticality {
        Some(value) => headers.with("x-request-criticality", value),
        None => headers,
    }
}

/// Starts a request; it is still running unless it was shed.
fn open(worker: &Worker, headers: HeaderMap) -> HttpStream {
    let mut stream = worker.http_stream().unwrap();
    stream.send_request_headers(headers, true).unwrap();
    stream
}

fn is_shed(stream: &HttpStream) -> bool {
    stream.local_response().is_some()
}

/// The upstream answers `status` with no body, ending the stream.
fn respond(stream: &mut HttpStream, status: u16) {
    stream
        .send_response_headers([(":status", status.to_string())], true)
        .unwrap();
    assert!(stream.is_ended());
}

#[test]
fn loads_with_an_empty_object_and_with_no_configuration() {
    for config in ["{}", ""] {
        let host = start(config);
        let mut stream = open(&host.worker(0).unwrap(), request("/", None));
        assert!(!is_shed(&stream), "config {config:?}");
        respond(&mut stream, 200);
        assert_eq!(counter(&host, "admitted"), 1);
        // Defaults: the limit starts at 20.
        assert_eq!(gauge_after_tick(&host, "limit"), 20);
        assert!(host.shared_data(DEFAULT_KEY).is_some());
    }
}

#[test]
fn a_bad_configuration_is_rejected_naming_the_field() {
    for (config, field) in [
        (r#"{"limit":{"min_limit":0}}"#, "limit.min_limit"),
        (r#"{"limit":{"max_limt":5}}"#, "limit"),
        (
            r#"{"rejection":{"grpc_status":"NOT_FOUND"}}"#,
            "rejection.grpc_status",
        ),
        (r#"{"bypass_paths":["healthz"]}"#, "bypass_paths[0]"),
    ] {
        let errors = shedder()
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
fn the_shared_state_key_is_namespaced_by_the_plugin_name() {
    let host = shedder()
        .plugin_config("{}")
        .property("plugin_name", "ingress/edge")
        .start()
        .unwrap();
    let mut stream = open(&host.worker(0).unwrap(), request("/", None));
    respond(&mut stream, 200);
    assert_eq!(
        host.shared_data_keys(),
        vec!["mesh/load-shedder.ingress_2Fedge/state.v2".to_owned()]
    );
}

#[test]
fn four_workers_on_four_threads_account_exactly_under_contention() {
    const REQUESTS_PER_WORKER: usize = 3_000;
    const HELD_PER_WORKER: usize = 24;
    /// Lost races injected on top of the real ones, so the retry path runs on every run (fewer
    /// than one update can absorb, so none fails open).
    const INJECTED: u64 = 16;
    let host = shedder().workers(4).plugin_config("{}").start().unwrap();
    host.fail_next_cas_sets(INJECTED, Some(DEFAULT_KEY));
    let outcomes: Vec<(u64, u64)> = std::thread::scope(|scope| {
        let threads: Vec<_> = host
            .workers()
            .iter()
            .map(|worker| {
                scope.spawn(move || {
                    let (mut admitted, mut shed) = (0, 0);
                    let mut held = Vec::new();
                    for index in 0..REQUESTS_PER_WORKER {
                        // Every fifth request is a sheddable one, so both ranks race.
                        let criticality = (index % 5 == 0).then_some("sheddable");
                        let stream = open(worker, request("/work", criticality));
                        if is_shed(&stream) {
                            shed += 1;
                            continue;
                        }
                        admitted += 1;
                        held.push(stream);
                        // 4 workers x 24 held = 96 in flight, above what the initial limit of
                        // 20 admits in slow start (its share of twice a limit doubled once).
                        if held.len() == HELD_PER_WORKER {
                            for (n, mut stream) in held.drain(..).enumerate() {
                                match n % 4 {
                                    0 => stream.reset().unwrap(),
                                    1 => respond(&mut stream, 503),
                                    _ => respond(&mut stream, 200),
                                }
                            }
                        }
                    }
                    for mut stream in held {
                        respond(&mut stream, 200);
                    }
                    (admitted, shed)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let admitted: u64 = outcomes.iter().map(|(a, _)| a).sum();
    let shed: u64 = outcomes.iter().map(|(_, s)| s).sum();
    assert_eq!(admitted + shed, 4 * REQUESTS_PER_WORKER as u64);
    assert!(shed > 0, "32 held requests never met the limit");
    assert_eq!(
        host.injected_cas_failures(),
        INJECTED,
        "every injected race was retried"
    );
    assert_eq!(counter(&host, "admission_failed_open"), 0);
    assert_eq!(counter(&host, "admitted"), admitted);
    let shed_counted: u64 = ["sheddable", "sheddable_plus", "critical", "critical_plus"]
        .iter()
        .map(|rank| counter(&host, &format!("shed_{rank}")))
        .sum();
    assert_eq!(shed_counted, shed);
    assert_eq!(gauge_after_tick(&host, "in_flight"), 0);
}

#[test]
fn shedding_starts_with_the_lowest_criticality_and_ends_with_critical_plus() {
    let host = start(LIMIT_10);
    let worker = host.worker(0).unwrap();
    let mut running = Vec::new();
    // (criticality, requests admitted before the first refusal): shares of 10 are 5, 8, 9, 10.
    for (criticality, admitted) in [
        ("sheddable", 5),
        ("sheddable-plus", 3),
        ("critical", 1),
        ("critical-plus", 1),
    ] {
        for _ in 0..admitted {
            let stream = open(&worker, request("/", Some(criticality)));
            assert!(!is_shed(&stream), "{criticality} shed too early");
            running.push(stream);
        }
        let refused = open(&worker, request("/", Some(criticality)));
        let reply = refused.local_response().expect("shed");
        assert_eq!(reply.status, 503);
        assert_eq!(reply.headers.get_str("retry-after"), Some("1"));
        assert_eq!(reply.headers.get_str("x-mesh-shed"), Some("1"));
        assert_eq!(reply.grpc_status, None);
        assert!(refused.is_ended());
    }
    for rank in ["sheddable", "sheddable_plus", "critical", "critical_plus"] {
        assert_eq!(counter(&host, &format!("shed_{rank}")), 1, "{rank}");
    }
    assert_eq!(counter(&host, "admitted"), 10);
    assert_eq!(gauge_after_tick(&host, "in_flight"), 10);

    // A finished request frees its slot for the most important waiting kind.
    respond(&mut running.pop().unwrap(), 200);
    assert!(!is_shed(&open(
        &worker,
        request("/", Some("critical-plus"))
    )));
    assert!(is_shed(&open(&worker, request("/", Some("critical")))));
}

#[test]
fn a_retry_ranks_below_a_first_attempt_of_the_same_criticality() {
    let host = start(LIMIT_10);
    let worker = host.worker(0).unwrap();
    // 6 in flight: a sheddable-plus first attempt (share 0.75 -> 8) fits, its retry (midway to
    // sheddable's 0.5: 0.625 -> 6) does not.
    let _held: Vec<_> = (0..6)
        .map(|_| open(&worker, request("/", Some("critical-plus"))))
        .collect();
    let retry = open(
        &worker,
        request("/", Some("sheddable-plus")).with("x-envoy-attempt-count", "2"),
    );
    assert!(is_shed(&retry));
    assert!(!is_shed(&open(
        &worker,
        request("/", Some("sheddable-plus"))
    )));
}

#[test]
fn a_shed_grpc_request_gets_a_trailers_only_reply_with_the_configured_status() {
    for (config, code) in [
        (
            r#"{"limit":{"min_limit":1,"initial_limit":1,"max_limit":1}}"#,
            14,
        ),
        (
            r#"{"limit":{"min_limit":1,"initial_limit":1,"max_limit":1},
                "rejection":{"grpc_status":"RESOURCE_EXHAUSTED","retry_after_seconds":2}}"#,
            8,
        ),
    ] {
        let host = start(config);
        let worker = host.worker(0).unwrap();
        let grpc =
            || request("/mesh.test.v1.Echo/Get", None).with("content-type", "application/grpc");
        let _held = open(&worker, grpc());
        let refused = open(&worker, grpc());
        let reply = refused.local_response().expect("shed");
        assert_eq!(reply.grpc_status, Some(code));
        assert_eq!(reply.headers.get_str("x-mesh-shed"), Some("1"));
        assert!(reply.headers.get("grpc-status").is_none());
        assert!(reply.headers.get("content-type").is_none());
        let client = refused.response_headers().unwrap();
        assert_eq!(client.get_str(":status"), Some("200"));
        assert_eq!(
            client.get_all("grpc-status"),
            vec![code.to_string().as_bytes()]
        );
        assert_eq!(
            client.get_all("content-type"),
            vec![&b"application/grpc"[..]]
        );
        assert_eq!(client.get_str("x-mesh-shed"), Some("1"));
        let pushback = if code == 8 { "2000" } else { "1000" };
        assert_eq!(client.get_str("grpc-retry-pushback-ms"), Some(pushback));
        assert!(refused.response_body().is_empty());
    }
}

#[test]
fn dry_run_admits_everything_but_counts_what_it_would_shed() {
    let host = start(r#"{"dry_run":true,"limit":{"min_limit":1,"initial_limit":1,"max_limit":1}}"#);
    let worker = host.worker(0).unwrap();
    let mut streams: Vec<_> = (0..3).map(|_| open(&worker, request("/", None))).collect();
    assert!(streams.iter().all(|stream| !is_shed(stream)));
    assert_eq!(counter(&host, "admitted"), 3);
    assert_eq!(counter(&host, "would_shed"), 2);
    assert_eq!(counter(&host, "shed_critical"), 0);
    assert_eq!(gauge_after_tick(&host, "in_flight"), 3);
    for stream in &mut streams {
        respond(stream, 200);
    }
    assert_eq!(gauge_after_tick(&host, "in_flight"), 0);
}

#[test]
fn bypass_paths_are_neither_counted_nor_shed() {
    let host = start(
        r#"{"bypass_paths":["/healthz"],"limit":{"min_limit":1,"initial_limit":1,"max_limit":1}}"#,
    );
    let worker = host.worker(0).unwrap();
    let _held = open(&worker, request("/work", None));
    for _ in 0..3 {
        let mut health = open(&worker, request("/healthz?verbose=1", Some("sheddable")));
        assert!(!is_shed(&health));
        respond(&mut health, 200);
    }
    assert!(is_shed(&open(&worker, request("/healthzz", None))));
    assert_eq!(counter(&host, "admitted"), 1);
    assert_eq!(gauge_after_tick(&host, "in_flight"), 1);
}

#[test]
fn every_end_of_a_stream_releases_its_slot_exactly_once() {
    let host = start(r#"{"limit":{"min_limit":2,"initial_limit":2,"max_limit":2}}"#);
    let worker = host.worker(0).unwrap();
    let grpc =
        request("/pkg.Svc/M", Some("critical-plus")).with("content-type", "application/grpc");
    // Client reset, upstream 503, trailers-only gRPC error, gRPC OK in trailers, abandoned
    // stream, body-terminated response: each frees its slot once.
    for round in 0..5 {
        let mut first = open(&worker, request("/", Some("critical-plus")));
        let mut second = open(&worker, grpc.clone());
        assert!(!is_shed(&first) && !is_shed(&second), "round {round}");
        assert!(is_shed(&open(&worker, request("/", Some("critical-plus")))));
        match round {
            0 => {
                first.reset().unwrap();
                second.reset().unwrap();
            }
            1 => {
                respond(&mut first, 503);
                second
                    .send_response_headers([(":status", "200"), ("grpc-status", "14")], true)
                    .unwrap();
            }
            2 => {
                first
                    .send_response_headers([(":status", "200")], false)
                    .unwrap();
                first.send_response_body(b"partial", false).unwrap();
                first.reset().unwrap();
                second
                    .send_response_headers([(":status", "200")], false)
                    .unwrap();
                second.send_response_body(b"msg", false).unwrap();
                second
                    .send_response_trailers([("grpc-status", "0")])
                    .unwrap();
            }
            3 => {
                first.finish().unwrap();
                second.finish().unwrap();
            }
            _ => {
                first
                    .send_response_headers([(":status", "200")], false)
                    .unwrap();
                first.send_response_body(b"done", true).unwrap();
                second
                    .send_response_headers([(":status", "200")], false)
                    .unwrap();
                second
                    .send_response_trailers([("grpc-status", "13")])
                    .unwrap();
            }
        }
        assert!(first.is_ended() && second.is_ended(), "round {round}");
        // Ending an ended stream again changes nothing.
        first.finish().unwrap();
        assert_eq!(gauge_after_tick(&host, "in_flight"), 0, "round {round}");
    }
    assert_eq!(counter(&host, "admitted"), 10);
}

#[test]
fn a_release_that_cannot_be_written_is_applied_later_and_fail_open_requests_are_not_counted() {
    let host = start(r#"{"limit":{"min_limit":1,"initial_limit":1,"max_limit":1}}"#);
    let worker = host.worker(0).unwrap();
    let mut admitted = open(&worker, request("/", None));
    assert!(!is_shed(&admitted));
    let (state, _cas) = host.shared_data(DEFAULT_KEY).unwrap();

    // The shared state becomes unreadable: the release is kept, a new request passes uncounted.
    host.set_shared_data(DEFAULT_KEY, b"not a shedder state");
    respond(&mut admitted, 200);
    assert_eq!(counter(&host, "release_deferred"), 1);
    let mut passed = open(&worker, request("/", None));
    assert!(!is_shed(&passed), "fails open");
    assert_eq!(counter(&host, "admission_failed_open"), 1);
    respond(&mut passed, 200);

    // Once it is readable again the next tick applies the owed release.
    host.set_shared_data(DEFAULT_KEY, &state);
    assert_eq!(gauge_after_tick(&host, "in_flight"), 0);
    let held = open(&worker, request("/", None));
    assert!(!is_shed(&held));
    assert!(
        is_shed(&open(&worker, request("/", None))),
        "the limit of 1 is full again"
    );
    assert_eq!(gauge_after_tick(&host, "in_flight"), 1);
}

#[test]
fn an_admission_that_loses_cas_races_retries_and_counts_the_request_once() {
    let host = start(LIMIT_10);
    let worker = host.worker(0).unwrap();
    let _first = open(&worker, request("/", None));
    host.fail_next_cas_sets(u64::from(CAS_RETRIES), Some(DEFAULT_KEY));
    let second = open(&worker, request("/", None));
    assert!(!is_shed(&second));
    assert_eq!(host.injected_cas_failures(), u64::from(CAS_RETRIES));
    assert_eq!(counter(&host, "admission_failed_open"), 0);
    assert_eq!(counter(&host, "admitted"), 2);
    assert_eq!(in_flight(&host, DEFAULT_KEY), 2);
}

#[test]
fn an_admission_that_loses_every_cas_race_fails_open_and_is_never_released() {
    let host = start(LIMIT_2);
    let worker = host.worker(0).unwrap();
    let _held = open(&worker, request("/", Some("critical-plus")));
    host.fail_next_cas_sets(every_try_of_one_update(), Some(DEFAULT_KEY));
    let mut uncounted = open(&worker, request("/", Some("critical-plus")));
    assert!(!is_shed(&uncounted), "fails open");
    assert_eq!(host.pending_injected_cas_failures(), 0);
    assert_eq!(counter(&host, "admission_failed_open"), 1);
    assert_eq!(in_flight(&host, DEFAULT_KEY), 1);
    // Ending the uncounted request releases nothing: the held one is still counted.
    respond(&mut uncounted, 200);
    assert_eq!(in_flight(&host, DEFAULT_KEY), 1);
    assert_eq!(counter(&host, "admitted"), 1);
    assert_eq!(counter(&host, "release_deferred"), 0);
}

#[test]
fn a_release_that_loses_every_cas_race_is_applied_by_the_next_admission() {
    let host = start(LIMIT_2);
    let worker = host.worker(0).unwrap();
    let _held = open(&worker, request("/", Some("critical-plus")));
    let mut first = open(&worker, request("/", Some("critical-plus")));
    assert!(!is_shed(&first));
    host.fail_next_cas_sets(every_try_of_one_update(), Some(DEFAULT_KEY));
    respond(&mut first, 200);
    assert_eq!(counter(&host, "release_deferred"), 1);
    assert_eq!(in_flight(&host, DEFAULT_KEY), 2, "not applied yet");
    // No tick: the next admission applies the owed release in its own update, so it fits.
    let next = open(&worker, request("/", Some("critical-plus")));
    assert!(!is_shed(&next));
    assert_eq!(in_flight(&host, DEFAULT_KEY), 2, "held and next");
    assert!(
        is_shed(&open(&worker, request("/", Some("critical-plus")))),
        "the limit of 2 is full: the release was applied once"
    );
    assert_eq!(counter(&host, "admitted"), 3);
}

#[test]
fn releases_pending_across_a_reconfiguration_land_on_the_key_they_were_admitted_under() {
    let section = |name: &str| {
        format!(
            r#"{{"filters":[{{"filter":"load-shedder","name":"{name}","config":{LIMIT_10}}}]}}"#
        )
    };
    // The instance is the plugin name (none: `_`) and the section name.
    let old_key = "mesh/load-shedder._~old/state.v2";
    let new_key = "mesh/load-shedder._~new/state.v2";
    let host = EmulatedHost::builder(built_module("mesh-suite").unwrap())
        .plugin_config(section("old"))
        .start()
        .unwrap();
    let worker = host.worker(0).unwrap();
    let mut from_old = open(&worker, request("/", None));
    assert!(!is_shed(&from_old));

    // The section is renamed: new streams count under the new key, open ones stay with the old.
    host.reconfigure(section("new")).unwrap();
    let _from_new = open(&worker, request("/", None));
    assert_eq!(host.shared_data_keys(), [new_key, old_key]);
    host.fail_next_cas_sets(every_try_of_one_update(), Some(old_key));
    respond(&mut from_old, 200);
    assert_eq!(
        host.counter("mesh.load_shedder.old.release_deferred"),
        Some(1)
    );
    assert_eq!(in_flight(&host, old_key), 1, "not applied yet");

    // An admission under the new configuration does not apply the old one's release ...
    let _also_new = open(&worker, request("/", None));
    assert_eq!(in_flight(&host, new_key), 2);
    assert_eq!(in_flight(&host, old_key), 1);
    // ... the replaced configuration's tick applies it, to its own key.
    host.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(in_flight(&host, old_key), 0);
    assert_eq!(in_flight(&host, new_key), 2);
}

#[test]
fn rising_latency_over_windows_shrinks_the_limit_in_virtual_time() {
    let host = start(r#"{"limit":{"initial_limit":20,"window_ms":100}}"#);
    let worker = host.worker(0).unwrap();
    // One round: `concurrent` requests start together and all take `latency(admitted)`.
    let round = |concurrent: usize, latency: &dyn Fn(usize) -> Duration| {
        let mut streams: Vec<_> = (0..concurrent)
            .map(|_| open(&worker, request("/", Some("critical"))))
            .collect();
        let admitted = streams.iter().filter(|stream| !is_shed(stream)).count();
        host.advance(latency(admitted)).unwrap();
        for stream in streams.iter_mut().filter(|stream| !is_shed(stream)) {
            respond(stream, 200);
        }
    };
    let limit = || host.gauge(&metric("limit")).unwrap();

    // Healthy: 10 ms at 16 concurrent requests (80 % of 20) for 1 s of windows: slow start.
    for _ in 0..100 {
        round(16, &|_| Duration::from_millis(10));
    }
    let healthy_limit = limit();
    assert!(
        healthy_limit >= 40,
        "slow start grew the limit: {healthy_limit}"
    );
    let baseline = host.gauge(&metric("baseline_latency_us")).unwrap();
    assert!(
        (9_000..=11_000).contains(&baseline),
        "baseline {baseline} µs"
    );

    // Overload at a service of 4 workers: far more requests than the limit, queueing for the
    // workers (10 ms each), so latency grows with the admitted count: the limit shrinks window
    // by window towards the minimum, and latency with it.
    let queueing = |admitted: usize| Duration::from_millis(10 * admitted.max(4) as u64 / 4);
    for _ in 0..40 {
        round(4 * healthy_limit as usize, &queueing);
    }
    let window = host.gauge(&metric("window_latency_us")).unwrap();
    assert!(window <= 25_000, "window latency {window} µs");
    let overloaded_limit = limit();
    assert!(
        overloaded_limit <= healthy_limit / 4,
        "limit {healthy_limit} -> {overloaded_limit}"
    );
    assert!(counter(&host, "shed_critical") > 0);
}

#[test]
fn hostile_header_bytes_never_trap() {
    let host = start(LIMIT_10);
    let worker = host.worker(0).unwrap();
    let hostile = HeaderMap::from([(":method", "GET"), (":authority", "service")])
        .with(":path", [b'/', 0xff, 0xfe, b'?', 0xc3])
        .with("x-request-criticality", [0xff, 0xfe, 0x00])
        .with("x-envoy-attempt-count", [0x39; 4096])
        .with("content-type", [0xff]);
    let mut stream = open(&worker, hostile);
    assert!(!is_shed(&stream), "unknown criticality is critical");
    stream
        .send_response_headers(
            HeaderMap::from([(":status", "2\u{0}0")]).with("grpc-status", [0xff]),
            true,
        )
        .unwrap();
    assert!(!worker.is_dead());
    // No request headers at all (e.g. a host that lost them) is not a trap either.
    let mut bare = open(&worker, HeaderMap::new());
    respond(&mut bare, 200);
    assert!(!worker.is_dead());
    assert_eq!(counter(&host, "admitted"), 2);
    assert_eq!(gauge_after_tick(&host, "in_flight"), 0);
}
