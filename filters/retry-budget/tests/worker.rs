//! The shipped worker logic ([`RetryBudget`] on the filter kit), natively against the kit's fake
//! host: both roles, reserve-then-settle through response attempt counts, pushback, budget keys
//! and their bound, shared-data failures, hostile bytes, and several workers on several threads
//! drawing on one budget.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshkit::grpc::GrpcStatus;
use meshkit::headers::HeaderMapKind;
use meshkit::kit::chain::ChainStream;
use meshkit::kit::fake::FakeHost;
use meshkit::kit::{Chain, MemberFactory, Verdict};
use meshkit::shared::MemoryStore;
use retry_budget::worker::CAS_RETRIES;
use retry_budget::RetryBudget;
use std::sync::Arc;
use std::time::Duration;

const REQUEST: HeaderMapKind = HeaderMapKind::RequestHeaders;

fn filter(host: &FakeHost, config: &str) -> Chain {
    Chain::standalone(
        MemberFactory::of::<RetryBudget>(),
        Some(config.as_bytes()),
        host,
        "retry-budget",
    )
    .unwrap()
}

fn open(host: &FakeHost, chain: &mut Chain, headers: &[(&str, &str)]) -> (ChainStream, Verdict) {
    host.set_request_headers(headers);
    let mut stream = ChainStream::default();
    let verdict = chain.on_request_headers(host, &mut stream);
    (stream, verdict)
}

/// Sends a request to cluster `cluster` and returns the `x-envoy-max-retries` it leaves with.
fn request_to(host: &FakeHost, chain: &mut Chain, cluster: &str) -> (ChainStream, u32) {
    host.set_property(&["xds", "cluster_name"], cluster.as_bytes());
    let (stream, verdict) = open(host, chain, &[(":path", "/pay"), (":authority", "pay")]);
    assert_eq!(verdict, Verdict::Continue, "the client role never answers");
    let retries = host.header_of(REQUEST, "x-envoy-max-retries").unwrap();
    (
        stream,
        std::str::from_utf8(&retries).unwrap().parse().unwrap(),
    )
}

fn respond(host: &FakeHost, chain: &mut Chain, stream: &mut ChainStream, headers: &[(&str, &str)]) {
    host.set_response_headers(headers);
    chain.on_response_headers(host, stream, true);
    chain.on_stream_end(host, stream);
}

/// One retry token (the cap: 1 retry/s for one second, one retry per request), refilled at 1/s,
/// and nothing from traffic.
const ONE_TOKEN: &str = r#"{"ratio": 0, "min_retries_per_second": 1, "max_retries": 1}"#;

#[test]
fn the_client_role_replaces_the_clients_retry_count_with_what_the_budget_affords() {
    let host = FakeHost::new();
    let mut chain = filter(&host, "{}");
    host.set_property(&["xds", "cluster_name"], b"payments");
    open(
        &host,
        &mut chain,
        &[(":path", "/"), ("x-envoy-max-retries", "50")],
    );
    assert_eq!(
        host.header_of(REQUEST, "x-envoy-max-retries"),
        Some(b"3".to_vec())
    );
    assert_eq!(host.counter("mesh.retry_budget.requests"), 1);
    assert_eq!(host.counter("mesh.retry_budget.retries_allowed"), 3);
    assert_eq!(host.counter("mesh.retry_budget.retries_denied"), 0);
    // The full budget (the cap: one second of 10 retries/s) less the 3 reserved.
    assert_eq!(
        host.gauge("mesh.retry_budget.budget_available.payments"),
        Some(7)
    );
}

#[test]
fn an_empty_budget_stops_retries_and_unused_reservations_come_back() {
    let host = FakeHost::new();
    let mut chain = filter(&host, ONE_TOKEN);
    let (mut first, retries) = request_to(&host, &mut chain, "payments");
    assert_eq!(retries, 1);
    let (mut second, retries) = request_to(&host, &mut chain, "payments");
    assert_eq!(
        retries, 0,
        "the one token is reserved by the request in flight"
    );
    assert_eq!(host.counter("mesh.retry_budget.retries_denied"), 1);
    // The first request needed no retry: its token is refunded with the next request.
    respond(
        &host,
        &mut chain,
        &mut first,
        &[(":status", "200"), ("x-envoy-attempt-count", "1")],
    );
    respond(
        &host,
        &mut chain,
        &mut second,
        &[(":status", "200"), ("x-envoy-attempt-count", "1")],
    );
    assert!(chain.has_pending_work());
    let (mut third, retries) = request_to(&host, &mut chain, "payments");
    assert_eq!(retries, 1);
    assert!(
        !chain.has_pending_work(),
        "applied by the request's own update"
    );
    // This one used its retry: nothing comes back until the floor refills the budget.
    respond(
        &host,
        &mut chain,
        &mut third,
        &[(":status", "503"), ("x-envoy-attempt-count", "2")],
    );
    assert_eq!(host.counter("mesh.retry_budget.retries_observed"), 1);
    assert_eq!(request_to(&host, &mut chain, "payments").1, 0);
    host.advance(Duration::from_secs(1));
    assert_eq!(
        request_to(&host, &mut chain, "payments").1,
        1,
        "refilled by a second of the floor"
    );
}

#[test]
fn a_stream_without_an_attempt_count_spends_its_whole_reservation() {
    let host = FakeHost::new();
    let mut chain = filter(&host, ONE_TOKEN);
    let (mut reset, retries) = request_to(&host, &mut chain, "payments");
    assert_eq!(retries, 1);
    chain.on_stream_end(&host, &mut reset);
    assert!(!chain.has_pending_work());
    let (mut local, _) = request_to(&host, &mut chain, "payments");
    respond(&host, &mut chain, &mut local, &[(":status", "504")]);
    assert_eq!(request_to(&host, &mut chain, "payments").1, 0);
    assert_eq!(host.counter("mesh.retry_budget.retries_observed"), 0);
}

#[test]
fn pending_refunds_are_written_on_the_tick() {
    let store = Arc::new(MemoryStore::new());
    let host = FakeHost::with_store(store.clone());
    let mut chain = filter(&host, ONE_TOKEN);
    let (mut stream, _) = request_to(&host, &mut chain, "payments");
    respond(
        &host,
        &mut chain,
        &mut stream,
        &[(":status", "200"), ("x-envoy-attempt-count", "1")],
    );
    assert!(chain.has_pending_work());
    assert_eq!(chain.tick_period(), Some(Duration::from_secs(1)));
    chain.on_tick(&host);
    assert!(!chain.has_pending_work());
    // Another worker (same store) sees the refunded token.
    let other = FakeHost::with_store(store);
    let mut other_chain = filter(&other, ONE_TOKEN);
    assert_eq!(request_to(&other, &mut other_chain, "payments").1, 1);
}

#[test]
fn pushback_stops_every_workers_retries_to_that_upstream_for_its_duration() {
    let store = Arc::new(MemoryStore::new());
    let host = FakeHost::with_store(store.clone());
    let peer = FakeHost::with_store(store);
    let mut chain = filter(&host, "{}");
    let mut peer_chain = filter(&peer, "{}");
    let (mut stream, _) = request_to(&host, &mut chain, "payments");
    respond(
        &host,
        &mut chain,
        &mut stream,
        &[
            (":status", "503"),
            ("retry-after", "2"),
            ("x-envoy-attempt-count", "1"),
        ],
    );
    assert_eq!(host.counter("mesh.retry_budget.pushbacks_honoured"), 1);
    assert_eq!(request_to(&peer, &mut peer_chain, "payments").1, 0);
    assert_eq!(
        request_to(&host, &mut chain, "other").1,
        3,
        "other upstreams retry"
    );
    peer.advance(Duration::from_millis(1_999));
    assert_eq!(request_to(&peer, &mut peer_chain, "payments").1, 0);
    peer.advance(Duration::from_millis(1));
    assert_eq!(request_to(&peer, &mut peer_chain, "payments").1, 3);
}

#[test]
fn grpc_pushback_in_trailers_and_the_shed_marker_are_honoured() {
    let host = FakeHost::new();
    let mut chain = filter(&host, r#"{"default_pushback_ms": 500}"#);
    let (mut stream, _) = request_to(&host, &mut chain, "search");
    host.set_response_headers(&[(":status", "200"), ("content-type", "application/grpc")]);
    chain.on_response_headers(&host, &mut stream, false);
    host.set_response_trailers(&[("grpc-status", "14"), ("grpc-retry-pushback-ms", "-1")]);
    chain.on_response_trailers(&host, &mut stream);
    chain.on_stream_end(&host, &mut stream);
    assert_eq!(request_to(&host, &mut chain, "search").1, 0);
    host.advance(Duration::from_millis(500));
    let (mut shed, retries) = request_to(&host, &mut chain, "search");
    assert_eq!(retries, 3);
    respond(
        &host,
        &mut chain,
        &mut shed,
        &[(":status", "503"), ("x-mesh-shed", "1")],
    );
    assert_eq!(request_to(&host, &mut chain, "search").1, 0);
    assert_eq!(host.counter("mesh.retry_budget.pushbacks_honoured"), 2);
}

#[test]
fn a_failed_reservation_gives_no_retries() {
    let host = FakeHost::new();
    let mut chain = filter(&host, "{}");
    request_to(&host, &mut chain, "payments");
    host.fail_next_cas_writes(CAS_RETRIES + 1);
    let (mut stream, retries) = request_to(&host, &mut chain, "payments");
    assert_eq!(retries, 0);
    assert_eq!(host.counter("mesh.retry_budget.update_failed"), 1);
    respond(
        &host,
        &mut chain,
        &mut stream,
        &[(":status", "200"), ("x-envoy-attempt-count", "1")],
    );
    assert!(
        !chain.has_pending_work(),
        "nothing was reserved, nothing to refund"
    );
}

#[test]
fn budgets_are_per_cluster_and_keys_past_max_keys_share_the_overflow_budget() {
    let host = FakeHost::new();
    let config = r#"{"ratio": 0, "min_retries_per_second": 2, "max_retries": 2, "ttl_ms": 1000,
        "max_keys": 1}"#;
    let mut chain = filter(&host, config);
    assert_eq!(request_to(&host, &mut chain, "a").1, 2);
    assert_eq!(request_to(&host, &mut chain, "a").1, 0);
    assert_eq!(
        request_to(&host, &mut chain, "b").1,
        2,
        "b: the overflow budget"
    );
    assert_eq!(request_to(&host, &mut chain, "c").1, 0, "c shares it");
    assert_eq!(host.counter("mesh.retry_budget.overflow_requests"), 2);
    assert_eq!(
        host.gauge("mesh.retry_budget.budget_available._overflow"),
        Some(0)
    );
    // Once a's budget is idle (no request for a ttl) its slot goes to the next new key.
    host.advance(Duration::from_secs(2));
    let (_, retries) = request_to(&host, &mut chain, "d");
    assert_eq!(retries, 2);
    assert_eq!(host.counter("mesh.retry_budget.overflow_requests"), 2);
    assert_eq!(
        request_to(&host, &mut chain, "a").1,
        2,
        "a: now the overflow"
    );
    assert_eq!(host.counter("mesh.retry_budget.overflow_requests"), 3);
    // Refunds and pushbacks written for overflowed keys are not requests.
    let (mut stream, _) = request_to(&host, &mut chain, "a");
    respond(
        &host,
        &mut chain,
        &mut stream,
        &[
            (":status", "503"),
            ("x-envoy-attempt-count", "1"),
            ("retry-after", "1"),
        ],
    );
    chain.on_tick(&host);
    assert_eq!(host.counter("mesh.retry_budget.pushbacks_honoured"), 1);
    assert_eq!(host.counter("mesh.retry_budget.overflow_requests"), 4);
}

#[test]
fn budget_gauges_are_bounded_by_max_keys() {
    let host = FakeHost::new();
    let mut chain = filter(&host, r#"{"max_keys": 2}"#);
    for cluster in 0..20 {
        request_to(&host, &mut chain, &format!("cluster-{cluster}"));
    }
    let gauges = host
        .metric_names()
        .into_iter()
        .filter(|name| name.starts_with("mesh.retry_budget.budget_available."))
        .count();
    assert_eq!(gauges, 3, "two keys and the overflow");
}

#[test]
fn authority_keys_and_hostile_bytes_never_trap() {
    let host = FakeHost::new();
    let mut chain = filter(&host, r#"{"key": "authority"}"#);
    for value in [&b"\xff\xfe\x00"[..], b"", b"-1", b"99999999999999999999999"] {
        let long = vec![b'a'; 4096];
        host.set_request_headers(&[(":path", "/")]);
        host.add_header_bytes(
            REQUEST,
            ":authority",
            if value.is_empty() { &long } else { value },
        );
        let mut stream = ChainStream::default();
        assert_eq!(
            chain.on_request_headers(&host, &mut stream),
            Verdict::Continue
        );
        host.set_response_headers(&[]);
        let response = HeaderMapKind::ResponseHeaders;
        for name in [
            ":status",
            "x-envoy-attempt-count",
            "retry-after",
            "grpc-retry-pushback-ms",
            "x-mesh-shed",
        ] {
            host.add_header_bytes(response, name, value);
        }
        chain.on_response_headers(&host, &mut stream, true);
        chain.on_stream_end(&host, &mut stream);
    }
    assert_eq!(host.counter("mesh.retry_budget.requests"), 4);
    assert!(
        host.counter("mesh.retry_budget.overflow_requests") >= 1,
        "4 KiB authority"
    );
}

const SERVER: &str = r#"{"role": "server", "ratio": 0.5, "min_retries_per_second": 1,
    "max_retries": 1, "ttl_ms": 1000, "retry_header": "x-retry"}"#;

#[test]
fn the_server_role_admits_retries_within_the_ratio_and_rejects_the_rest() {
    let host = FakeHost::new();
    let mut chain = filter(&host, SERVER);
    let retry = [
        (":path", "/pay"),
        (":authority", "pay"),
        ("x-envoy-attempt-count", "2"),
    ];
    // The full budget (its cap: one retry) admits one retry.
    assert_eq!(open(&host, &mut chain, &retry).1, Verdict::Continue);
    let (mut rejected, verdict) = open(&host, &mut chain, &retry);
    assert_eq!(verdict, Verdict::Replied);
    let reply = host.replies().pop().unwrap();
    assert_eq!(reply.status, 503);
    assert!(reply
        .headers
        .contains(&("retry-after".to_owned(), "1".to_owned())));
    chain.on_stream_end(&host, &mut rejected);
    // First attempts always pass; each pair buys one more retry (ratio 0.5).
    for header in [
        ("x-envoy-attempt-count", "3"),
        ("grpc-previous-rpc-attempts", "1"),
    ] {
        for _ in 0..2 {
            let first = [
                (":path", "/pay"),
                (":authority", "pay"),
                ("x-envoy-attempt-count", "1"),
            ];
            assert_eq!(open(&host, &mut chain, &first).1, Verdict::Continue);
        }
        assert_eq!(
            open(&host, &mut chain, &[(":authority", "pay"), header]).1,
            Verdict::Continue
        );
    }
    assert_eq!(
        open(
            &host,
            &mut chain,
            &[(":authority", "pay"), ("x-retry", "1")]
        )
        .1,
        Verdict::Continue,
        "attempt 1 of the configured header is a first attempt"
    );
    assert_eq!(
        open(
            &host,
            &mut chain,
            &[(":authority", "pay"), ("x-retry", "2")]
        )
        .1,
        Verdict::Replied
    );
    assert_eq!(host.counter("mesh.retry_budget.requests"), 10);
    assert_eq!(host.counter("mesh.retry_budget.retries_observed"), 5);
    assert_eq!(host.counter("mesh.retry_budget.retries_allowed"), 3);
    assert_eq!(host.counter("mesh.retry_budget.retries_denied"), 2);
    assert_eq!(host.counter("mesh.retry_budget.pushbacks_sent"), 2);
}

#[test]
fn the_server_role_tells_grpc_callers_not_to_retry() {
    let host = FakeHost::new();
    let mut chain = filter(
        &host,
        r#"{"role": "server", "ratio": 0.1, "min_retries_per_second": 0, "max_retries": 1}"#,
    );
    let retry = [
        (":path", "/pkg.Pay/Charge"),
        ("content-type", "application/grpc"),
        ("grpc-previous-rpc-attempts", "2"),
    ];
    assert_eq!(
        open(&host, &mut chain, &retry).1,
        Verdict::Continue,
        "the cap's one token"
    );
    assert_eq!(open(&host, &mut chain, &retry).1, Verdict::Replied);
    let reply = host.replies().pop().unwrap();
    assert_eq!(reply.grpc_status, Some(GrpcStatus::Unavailable));
    assert!(reply
        .headers
        .contains(&("grpc-retry-pushback-ms".to_owned(), "-1".to_owned())));
}

#[test]
fn the_server_role_fails_open_and_hostile_attempt_counts_are_first_attempts() {
    let host = FakeHost::new();
    let mut chain = filter(&host, r#"{"role": "server", "min_retries_per_second": 1}"#);
    for value in [&b"\xff"[..], b"2\x00", b"-5", b"0"] {
        host.set_request_headers(&[(":path", "/")]);
        host.add_header_bytes(REQUEST, "x-envoy-attempt-count", value);
        host.add_header_bytes(REQUEST, "grpc-previous-rpc-attempts", value);
        let mut stream = ChainStream::default();
        assert_eq!(
            chain.on_request_headers(&host, &mut stream),
            Verdict::Continue,
            "{value:?}"
        );
    }
    host.fail_next_cas_writes(CAS_RETRIES + 1);
    let (_, verdict) = open(
        &host,
        &mut chain,
        &[(":path", "/"), ("x-envoy-attempt-count", "2")],
    );
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(host.counter("mesh.retry_budget.update_failed"), 1);
    assert_eq!(
        host.counter("mesh.retry_budget.retries_observed"),
        1,
        "only this one"
    );
}

// WASI has no threads: the two tests below run natively only.
#[cfg(not(target_os = "wasi"))]
#[test]
fn workers_on_several_threads_draw_on_one_budget_exactly() {
    const WORKERS: usize = 4;
    const RETRIES_EACH: usize = 40;
    let store = Arc::new(MemoryStore::new());
    let barrier = Arc::new(std::sync::Barrier::new(WORKERS));
    // A full budget of 50 tokens (one second of 50 retries/s), spent by 160 retries racing on 4
    // threads.
    let config = r#"{"role": "server", "ratio": 0, "min_retries_per_second": 50, "ttl_ms": 1000}"#;
    let admitted: usize = (0..WORKERS)
        .map(|_| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let host = FakeHost::with_store(store);
                let mut chain = filter(&host, config);
                barrier.wait();
                (0..RETRIES_EACH)
                    .filter(|_| {
                        let headers = [(":authority", "pay"), ("x-envoy-attempt-count", "2")];
                        open(&host, &mut chain, &headers).1 == Verdict::Continue
                    })
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|worker| worker.join().unwrap())
        .sum();
    assert_eq!(admitted, 50);
}

#[cfg(not(target_os = "wasi"))]
#[test]
fn client_workers_on_several_threads_never_reserve_more_than_the_budget() {
    const WORKERS: usize = 4;
    let store = Arc::new(MemoryStore::new());
    let barrier = Arc::new(std::sync::Barrier::new(WORKERS));
    // A full budget of 30 tokens; each request may reserve 3; 4 × 20 requests in flight want 240.
    let config = r#"{"ratio": 0, "min_retries_per_second": 30, "ttl_ms": 1000}"#;
    let reserved: u32 = (0..WORKERS)
        .map(|_| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let host = FakeHost::with_store(store);
                let mut chain = filter(&host, config);
                barrier.wait();
                let mut held = Vec::new();
                let mut total = 0;
                for _ in 0..20 {
                    let (stream, retries) = request_to(&host, &mut chain, "payments");
                    held.push(stream);
                    total += retries;
                }
                total
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|worker| worker.join().unwrap())
        .sum();
    assert_eq!(reserved, 30);
}
