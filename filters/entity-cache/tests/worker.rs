//! The shipped worker logic ([`EntityCache`] on the filter kit), natively against the kit's fake
//! host: routing by rule, bypass and breaker; the spoofed routing header; outcomes from headers,
//! trailers, Envoy's replies and retries; the breaker's cycle in virtual time; hostile bytes;
//! and several workers on several threads feeding one breaker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use entity_cache::policy::BreakerState;
use entity_cache::EntityCache;
use meshkit::headers::HeaderMapKind;
use meshkit::kit::chain::ChainStream;
use meshkit::kit::fake::FakeHost;
use meshkit::kit::{Chain, MemberFactory, Setup, Verdict};
use meshkit::shared::SharedStore;
use std::time::Duration;

const REQUEST: HeaderMapKind = HeaderMapKind::RequestHeaders;
const ROUTING: &str = "x-entity-cache-cluster";

const CONFIG: &str = r#"{"rules": [
    {"grpc_method": "users.Users/GetUser", "cache_cluster": "cache", "origin_cluster": "users"},
    {"grpc_method": "catalog.Catalog/*", "cache_cluster": "cache", "origin_cluster": "catalog"},
    {"path_prefix": "/v1/items/", "cache_cluster": "cache", "origin_cluster": "items"}
  ],
  "breaker": {"consecutive_failures": 3, "min_requests": 1000, "cool_down_ms": 1000,
              "half_open_share": 0.5, "successes_to_close": 2, "latency_threshold_ms": 200}}"#;

fn filter(host: &FakeHost, config: &str) -> Chain {
    Chain::standalone(
        MemberFactory::of::<EntityCache>(),
        Some(config.as_bytes()),
        host,
        "entity-cache",
    )
    .unwrap()
}

fn grpc(path: &str) -> Vec<(&str, &str)> {
    vec![
        (":method", "POST"),
        (":path", path),
        ("content-type", "application/grpc"),
    ]
}

/// Sends request `headers`; returns the stream and the routing header it leaves with.
fn send(
    host: &FakeHost,
    chain: &mut Chain,
    headers: &[(&str, &str)],
) -> (ChainStream, Option<String>) {
    host.set_request_headers(headers);
    let mut stream = ChainStream::default();
    assert_eq!(
        chain.on_request_headers(host, &mut stream),
        Verdict::Continue
    );
    let routed = host
        .header_of(REQUEST, ROUTING)
        .map(|value| String::from_utf8(value).unwrap());
    (stream, routed)
}

/// Ends `stream` with a gRPC response whose status comes in the trailers.
fn answer_in_trailers(
    host: &FakeHost,
    chain: &mut Chain,
    stream: &mut ChainStream,
    grpc_status: &str,
) {
    host.set_response_headers(&[(":status", "200"), ("content-type", "application/grpc")]);
    chain.on_response_headers(host, stream, false);
    host.set_response_trailers(&[("grpc-status", grpc_status)]);
    chain.on_response_trailers(host, stream);
    chain.on_stream_end(host, stream);
}

/// One cacheable gRPC call answered with `grpc_status` in the trailers; where it went.
fn call(host: &FakeHost, chain: &mut Chain, grpc_status: &str) -> String {
    let (mut stream, routed) = send(host, chain, &grpc("/catalog.Catalog/GetProduct"));
    answer_in_trailers(host, chain, &mut stream, grpc_status);
    routed.unwrap()
}

fn counter(host: &FakeHost, name: &str) -> u64 {
    host.counter(&format!("mesh.entity_cache.{name}"))
}

#[test]
fn cacheable_calls_go_to_the_cache_and_the_rest_are_untouched() {
    let host = FakeHost::new();
    let mut chain = filter(&host, CONFIG);
    let (_, routed) = send(&host, &mut chain, &grpc("/users.Users/GetUser"));
    assert_eq!(routed.as_deref(), Some("cache"));
    assert_eq!(host.route_cache_clears(), 1, "the route is picked again");
    let (_, routed) = send(&host, &mut chain, &grpc("/users.Users/DeleteUser"));
    assert_eq!(routed, None, "a non-cacheable method is left alone");
    let (_, routed) = send(
        &host,
        &mut chain,
        &[(":method", "GET"), (":path", "/v1/items/1")],
    );
    assert_eq!(routed.as_deref(), Some("cache"));
    let (_, routed) = send(
        &host,
        &mut chain,
        &[(":method", "POST"), (":path", "/v1/items/1")],
    );
    assert_eq!(routed, None);
    assert_eq!(
        host.route_cache_clears(),
        2,
        "only routed requests clear the route cache"
    );
    assert_eq!(counter(&host, "to_cache"), 2);
    assert_eq!(counter(&host, "to_origin"), 0);
}

#[test]
fn a_spoofed_routing_header_is_removed_from_every_request() {
    let host = FakeHost::new();
    let mut chain = filter(&host, CONFIG);
    let mut spoofed = grpc("/users.Users/DeleteUser");
    spoofed.push((ROUTING, "cache"));
    let (_, routed) = send(&host, &mut chain, &spoofed);
    assert_eq!(
        routed, None,
        "a non-cacheable call cannot steer itself to the cache"
    );
    let mut spoofed = grpc("/users.Users/GetUser");
    spoofed.push((ROUTING, "admin-cluster"));
    let (_, routed) = send(&host, &mut chain, &spoofed);
    assert_eq!(routed.as_deref(), Some("cache"));
    // Even with no rules at all.
    let host = FakeHost::new();
    let mut chain = filter(&host, "{}");
    let (_, routed) = send(&host, &mut chain, &[(":path", "/"), (ROUTING, "cache")]);
    assert_eq!(routed, None);
}

#[test]
fn the_bypass_header_sends_a_cacheable_call_to_its_origin() {
    let host = FakeHost::new();
    let mut chain = filter(&host, CONFIG);
    let mut bypass = grpc("/users.Users/GetUser");
    bypass.push(("x-entity-cache", "bypass"));
    let (_, routed) = send(&host, &mut chain, &bypass);
    assert_eq!(routed.as_deref(), Some("users"));
    let mut other = grpc("/users.Users/GetUser");
    other.push(("x-entity-cache", "please"));
    let (_, routed) = send(&host, &mut chain, &other);
    assert_eq!(routed.as_deref(), Some("cache"));
    assert_eq!(counter(&host, "to_origin"), 1);
    assert_eq!(counter(&host, "to_cache"), 1);
}

#[test]
fn error_statuses_in_trailers_open_the_breaker_and_it_recovers_after_the_cool_down() {
    let host = FakeHost::new();
    let mut chain = filter(&host, CONFIG);
    assert_eq!(host.gauge("mesh.entity_cache.breaker_state.cache"), Some(0));
    assert_eq!(call(&host, &mut chain, "14"), "cache");
    assert_eq!(call(&host, &mut chain, "0"), "cache");
    assert_eq!(call(&host, &mut chain, "4"), "cache");
    assert_eq!(call(&host, &mut chain, "13"), "cache");
    assert_eq!(counter(&host, "breaker_opened"), 0);
    assert_eq!(call(&host, &mut chain, "14"), "cache");
    assert_eq!(counter(&host, "breaker_opened"), 1, "three in a row");
    assert_eq!(host.gauge("mesh.entity_cache.breaker_state.cache"), Some(1));
    assert_eq!(counter(&host, "cache_errors.grpc_unavailable"), 2);
    assert_eq!(counter(&host, "cache_errors.grpc_deadline_exceeded"), 1);
    assert_eq!(counter(&host, "cache_errors.grpc_internal"), 1);
    // Open: every cacheable call goes to its origin, and makes no shared-data update.
    for _ in 0..4 {
        assert_eq!(call(&host, &mut chain, "0"), "catalog");
    }
    assert_eq!(counter(&host, "to_origin"), 4);
    // After the cool-down, half of the calls probe; two successful probes close it.
    host.advance(Duration::from_millis(1_000));
    chain.on_tick(&host);
    assert_eq!(host.gauge("mesh.entity_cache.breaker_state.cache"), Some(2));
    let routes: Vec<String> = (0..4).map(|_| call(&host, &mut chain, "0")).collect();
    assert_eq!(routes, ["catalog", "cache", "catalog", "cache"]);
    assert_eq!(host.gauge("mesh.entity_cache.breaker_state.cache"), Some(0));
    assert_eq!(call(&host, &mut chain, "0"), "cache");
    assert_eq!(counter(&host, "breaker_opened"), 1);
}

#[test]
fn a_failed_probe_opens_the_breaker_again() {
    let host = FakeHost::new();
    let mut chain = filter(&host, CONFIG);
    for _ in 0..3 {
        call(&host, &mut chain, "14");
    }
    host.advance(Duration::from_millis(1_000));
    assert_eq!(call(&host, &mut chain, "0"), "catalog");
    assert_eq!(call(&host, &mut chain, "14"), "cache", "a probe");
    assert_eq!(counter(&host, "breaker_opened"), 2);
    assert_eq!(call(&host, &mut chain, "0"), "catalog");
    assert_eq!(call(&host, &mut chain, "0"), "catalog");
}

#[test]
fn envoy_replies_retries_and_slow_answers_count_as_cache_failures() {
    let host = FakeHost::new();
    let mut chain = filter(&host, CONFIG);
    // Envoy could not connect: its own 503.
    let (mut stream, _) = send(
        &host,
        &mut chain,
        &[(":method", "GET"), (":path", "/v1/items/1")],
    );
    host.set_property(
        &["response", "code_details"],
        b"upstream_reset_before_response_started{connection_failure}",
    );
    host.set_response_headers(&[(":status", "503")]);
    chain.on_response_headers(&host, &mut stream, true);
    chain.on_stream_end(&host, &mut stream);
    assert_eq!(counter(&host, "cache_errors.connect_failure"), 1);
    // The cache attempt failed and Envoy's retry got the answer from the origin: a fallback.
    let (mut stream, _) = send(&host, &mut chain, &grpc("/users.Users/GetUser"));
    host.set_response_headers(&[(":status", "200"), ("x-envoy-attempt-count", "2")]);
    chain.on_response_headers(&host, &mut stream, false);
    host.set_response_trailers(&[("grpc-status", "0")]);
    chain.on_response_trailers(&host, &mut stream);
    chain.on_stream_end(&host, &mut stream);
    assert_eq!(counter(&host, "cache_errors.retried"), 1);
    assert_eq!(counter(&host, "fallbacks"), 1);
    assert_eq!(counter(&host, "breaker_opened"), 0);
    // A slow success: the third failure in a row.
    let (mut stream, _) = send(&host, &mut chain, &grpc("/users.Users/GetUser"));
    host.advance(Duration::from_millis(201));
    answer_in_trailers(&host, &mut chain, &mut stream, "0");
    assert_eq!(counter(&host, "cache_errors.slow"), 1);
    assert_eq!(counter(&host, "breaker_opened"), 1);
    assert_eq!(counter(&host, "fallbacks"), 1, "each fallback counted once");
}

#[test]
fn a_client_that_goes_away_says_nothing_about_the_cache() {
    let host = FakeHost::new();
    let mut chain = filter(&host, CONFIG);
    for _ in 0..5 {
        let (mut stream, _) = send(&host, &mut chain, &grpc("/users.Users/GetUser"));
        host.set_property(
            &["response", "code_details"],
            b"downstream_remote_disconnect",
        );
        chain.on_stream_end(&host, &mut stream);
    }
    assert_eq!(counter(&host, "cache_errors.reset"), 0);
    assert_eq!(counter(&host, "breaker_opened"), 0);
}

#[test]
fn hostile_bytes_never_trap_and_match_nothing() {
    let host = FakeHost::new();
    let mut chain = filter(&host, CONFIG);
    let hostile: [&[u8]; 5] = [
        b"\xff\xfe",
        b"/catalog.Catalog/\xff",
        b"",
        b"/\0/\0",
        &[0x80; 300],
    ];
    for value in hostile {
        host.set_request_headers(&[("content-type", "application/grpc")]);
        host.add_header_bytes(REQUEST, ":path", value);
        host.add_header_bytes(REQUEST, ":method", value);
        host.add_header_bytes(REQUEST, "x-entity-cache", value);
        host.add_header_bytes(REQUEST, ROUTING, value);
        let mut stream = ChainStream::default();
        assert_eq!(
            chain.on_request_headers(&host, &mut stream),
            Verdict::Continue
        );
        let routed = host.header_of(REQUEST, ROUTING);
        assert!(
            routed.is_none() || routed.as_deref() == Some(&b"cache"[..]),
            "only configured names are routed to: {routed:?}"
        );
    }
    // The one hostile path under a cacheable service is a (valid) method name in bytes.
    assert_eq!(counter(&host, "to_cache"), 1);
    // Hostile response bytes are classified without a trap.
    let (mut stream, _) = send(&host, &mut chain, &grpc("/users.Users/GetUser"));
    host.set_response_headers(&[]);
    for name in [":status", "grpc-status", "x-envoy-attempt-count"] {
        host.add_header_bytes(HeaderMapKind::ResponseHeaders, name, b"\xff9");
    }
    chain.on_response_headers(&host, &mut stream, false);
    host.set_response_trailers(&[]);
    host.add_header_bytes(HeaderMapKind::ResponseTrailers, "grpc-status", b"\xff");
    chain.on_response_trailers(&host, &mut stream);
    chain.on_stream_end(&host, &mut stream);
}

#[test]
fn garbage_in_shared_data_is_not_trusted() {
    let host = FakeHost::new();
    let mut chain = filter(&host, CONFIG);
    let key = shared_key(&host);
    host.store().set(&key, b"garbage", 0).unwrap();
    chain.on_tick(&host);
    assert_eq!(
        call(&host, &mut chain, "14"),
        "cache",
        "an unreadable breaker routes as closed"
    );
    assert_eq!(counter(&host, "update_failed"), 1);
}

/// The breaker's shared-data key of cache cluster `cache`, as the kit names it.
fn shared_key(host: &FakeHost) -> String {
    let mut setup = Setup::new(host, "entity-cache", "entity-cache", None);
    let version = u32::from(BreakerState::FORMAT_VERSION);
    setup.shared_key("breaker.cache", version).unwrap()
}

// WASI has no threads: the test below runs natively only.
#[cfg(not(target_os = "wasi"))]
#[test]
fn workers_on_several_threads_feed_one_breaker() {
    use meshkit::shared::MemoryStore;
    use std::sync::Arc;
    const WORKERS: usize = 4;
    let store = Arc::new(MemoryStore::new());
    // Consecutive failures would open early; the error rate needs the workers' outcomes summed.
    let config = r#"{"rules": [{"grpc_method": "catalog.Catalog/*", "cache_cluster": "cache", "origin_cluster": "catalog"}],
        "breaker": {"consecutive_failures": 1000, "min_requests": 400, "error_rate": 0.4}}"#;
    let handles: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let host = FakeHost::with_store(store);
                let mut chain = filter(&host, config);
                // Each worker: 200 calls, every second one failing (50 %).
                for i in 0..200 {
                    let status = if (i + worker) % 2 == 0 { "14" } else { "0" };
                    call(&host, &mut chain, status);
                }
                (counter(&host, "to_cache"), counter(&host, "breaker_opened"))
            })
        })
        .collect();
    let results: Vec<(u64, u64)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let sent: u64 = results.iter().map(|r| r.0).sum();
    let opened: u64 = results.iter().map(|r| r.1).sum();
    // No worker alone reaches the 400-call volume: the breaker opened only because it counts
    // every worker's outcomes, and exactly once.
    assert_eq!(opened, 1, "{results:?}");
    // Each worker learns of the opening with its next write: at most one more cache call each.
    assert!(
        sent <= 402 + WORKERS as u64,
        "calls after opening went to the origin: {sent}"
    );
    // A worker that sent nothing sees it open from its tick.
    let host = FakeHost::with_store(store);
    let mut chain = filter(&host, config);
    chain.on_tick(&host);
    assert_eq!(call(&host, &mut chain, "0"), "catalog");
    assert_eq!(host.gauge("mesh.entity_cache.breaker_state.cache"), Some(1));
}
