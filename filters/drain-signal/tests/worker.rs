//! The shipped worker logic ([`DrainSignal`] on the filter kit), natively against the kit's fake
//! host: the trigger answered locally and only for allowed sources (the connection's address,
//! never a header) and the token; idempotence; failing health checks; exactly one admin drain
//! call across workers on threads sharing one store, retried after failures; a reloaded VM
//! continuing the drain; hostile bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drain_signal::config::ADMIN_CALL_TIMEOUT;
use drain_signal::policy::{retry_backoff, DrainState, Phase, CLAIM_GRACE};
use drain_signal::worker::{ADMIN_DRAIN_PATH, CAS_RETRIES, DRAINING_HEADER, TICK_PERIOD};
use drain_signal::DrainSignal;
use meshkit::headers::HeaderMapKind;
use meshkit::kit::chain::ChainStream;
use meshkit::kit::fake::{FakeHost, SentReply};
use meshkit::kit::{Chain, Host, MemberFactory, Verdict};
use meshkit::properties::namespace_of;
use meshkit::shared::{MemoryStore, SharedCell, SharedStore};
use std::sync::Arc;
use std::time::Duration;

/// A 2 s delay, as in the scenario.
const DELAY_2S: &str = r#"{"delay_ms": 2000}"#;
const LOOPBACK: &str = "127.0.0.1:51000";

fn drain(host: &FakeHost, config: &str) -> Chain {
    Chain::standalone(
        MemberFactory::of::<DrainSignal>(),
        Some(config.as_bytes()),
        host,
        "drain-signal",
    )
    .unwrap()
}

fn state_key() -> String {
    format!(
        "mesh/drain-signal.{}/state.v{}",
        namespace_of(b"drain-signal"),
        DrainState::FORMAT_VERSION
    )
}

fn state(host: &FakeHost) -> DrainState {
    SharedCell::<DrainState, _, _>::new(host.store(), state_key(), 0)
        .read()
        .unwrap()
        .unwrap_or_default()
}

/// Sends a request from `source` (none: no property) and ends its stream; returns the verdict
/// and the reply the filter sent, if any.
fn request(
    host: &FakeHost,
    chain: &mut Chain,
    source: Option<&str>,
    headers: &[(&str, &str)],
) -> (Verdict, Option<SentReply>) {
    host.take_replies();
    match source {
        Some(source) => host.set_property(&["source", "address"], source.as_bytes()),
        None => host.set_property(&["source", "address"], b""),
    }
    host.set_request_headers(headers);
    let mut stream = ChainStream::default();
    let verdict = chain.on_request_headers(host, &mut stream);
    chain.on_stream_end(host, &mut stream);
    let mut replies = host.take_replies();
    assert!(replies.len() <= 1, "{replies:?}");
    (verdict, replies.pop())
}

fn trigger(host: &FakeHost, chain: &mut Chain) -> SentReply {
    let (verdict, reply) = request(
        host,
        chain,
        Some(LOOPBACK),
        &[(":method", "POST"), (":path", "/.mesh/drain")],
    );
    assert_eq!(verdict, Verdict::Replied, "the trigger is never forwarded");
    reply.unwrap()
}

fn health(host: &FakeHost, chain: &mut Chain, path: &str) -> (Verdict, Option<SentReply>) {
    request(
        host,
        chain,
        Some("10.1.2.3:4000"),
        &[(":method", "GET"), (":path", path)],
    )
}

/// Ticks every `TICK_PERIOD` for `span`.
fn tick_for(host: &FakeHost, chain: &mut Chain, span: Duration) {
    let mut elapsed = Duration::ZERO;
    while elapsed < span {
        host.advance(TICK_PERIOD);
        elapsed += TICK_PERIOD;
        chain.on_tick(host);
    }
}

fn answer(host: &FakeHost, chain: &mut Chain, token: u32, status: &str) {
    host.set_http_call_response(&[(":status", status)], b"OK\n");
    chain.on_http_call_response(host, token);
}

fn json(reply: &SentReply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).unwrap()
}

#[test]
fn ordinary_requests_pass_without_touching_shared_data() {
    let host = FakeHost::new();
    let mut chain = drain(&host, "{}");
    for path in ["/", "/api?x=1", "/healthz/deep", "/.mesh/drainage"] {
        let (verdict, reply) = request(&host, &mut chain, Some(LOOPBACK), &[(":path", path)]);
        assert_eq!((verdict, reply), (Verdict::Continue, None), "{path}");
    }
    let (verdict, _) = health(&host, &mut chain, "/healthz");
    assert_eq!(verdict, Verdict::Continue, "health passes before a trigger");
    assert_eq!(state(&host), DrainState::Idle);
    assert_eq!(
        host.store().get(&state_key()),
        Ok(None),
        "nothing was written"
    );
}

#[test]
fn a_trigger_from_loopback_fails_health_checks_at_once_and_nothing_else() {
    let host = FakeHost::new();
    let mut chain = drain(&host, DELAY_2S);
    let reply = trigger(&host, &mut chain);
    assert_eq!(reply.status, 202);
    let body = json(&reply);
    assert_eq!(body["state"], "health_failing");
    let started = body["started_at_ms"].as_u64().unwrap();
    assert_eq!(body["drain_at_ms"].as_u64().unwrap(), started + 2_000);
    assert!(body["drained_at_ms"].is_null());
    assert_eq!(host.counter("mesh.drain_signal.drain_triggered"), 1);
    assert_eq!(host.gauge("mesh.drain_signal.drain_state"), Some(1));

    for path in ["/healthz", "/readyz", "/readyz?verbose"] {
        let (verdict, reply) = health(&host, &mut chain, path);
        let reply = reply.unwrap();
        assert_eq!((verdict, reply.status), (Verdict::Replied, 503), "{path}");
        assert!(reply
            .headers
            .contains(&(DRAINING_HEADER.to_owned(), "true".to_owned())));
    }
    assert_eq!(host.counter("mesh.drain_signal.health_fail_responses"), 3);
    let (verdict, reply) = request(&host, &mut chain, Some(LOOPBACK), &[(":path", "/api")]);
    assert_eq!((verdict, reply), (Verdict::Continue, None));
    assert!(
        host.dispatched_calls().is_empty(),
        "no admin call before the delay"
    );
}

#[test]
fn triggers_are_idempotent() {
    let host = FakeHost::new();
    let mut chain = drain(&host, DELAY_2S);
    let first = json(&trigger(&host, &mut chain));
    host.advance(Duration::from_millis(500));
    let again = trigger(&host, &mut chain);
    assert_eq!(again.status, 200);
    assert_eq!(json(&again), first, "the drain keeps its start");
    assert_eq!(host.counter("mesh.drain_signal.drain_triggered"), 1);
}

#[test]
fn only_allowed_source_addresses_may_trigger_whatever_the_headers_say() {
    let host = FakeHost::new();
    let mut chain = drain(&host, r#"{"allowed_sources": ["127.0.0.1/32"]}"#);
    let forged = [
        (":method", "POST"),
        (":path", "/.mesh/drain"),
        ("x-forwarded-for", "127.0.0.1"),
        ("x-envoy-external-address", "127.0.0.1"),
    ];
    for source in [
        Some("127.0.0.2:40000"),
        Some("10.0.0.1:1"),
        Some("[::1]:80"),
        None,
        Some("/tmp/sock"),
    ] {
        let (verdict, reply) = request(&host, &mut chain, source, &forged);
        assert_eq!(verdict, Verdict::Replied, "{source:?}: never forwarded");
        assert_eq!(reply.unwrap().status, 403, "{source:?}");
    }
    assert_eq!(host.counter("mesh.drain_signal.drain_rejected"), 5);
    assert_eq!(state(&host), DrainState::Idle, "a refusal changes nothing");
    assert_eq!(health(&host, &mut chain, "/healthz").0, Verdict::Continue);
    // IPv4-mapped IPv6 is the IPv4 address.
    let (_, reply) = request(&host, &mut chain, Some("[::ffff:127.0.0.1]:9"), &forged);
    assert_eq!(reply.unwrap().status, 202);
}

#[test]
fn with_a_token_a_trigger_needs_it() {
    let host = FakeHost::new();
    let mut chain = drain(&host, r#"{"token": "s3cret"}"#);
    fn post(auth: Option<&str>) -> Vec<(&str, &str)> {
        let mut headers = vec![(":method", "POST"), (":path", "/.mesh/drain")];
        if let Some(auth) = auth {
            headers.push(("authorization", auth));
        }
        headers
    }
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cre"),
        Some("Basic s3cret"),
        Some("s3cret"),
    ] {
        let (_, reply) = request(&host, &mut chain, Some(LOOPBACK), &post(auth));
        assert_eq!(reply.unwrap().status, 403, "{auth:?}");
    }
    assert_eq!(state(&host), DrainState::Idle);
    // Reading the state needs an allowed source only.
    let (_, reply) = request(
        &host,
        &mut chain,
        Some(LOOPBACK),
        &[(":method", "GET"), (":path", "/.mesh/drain")],
    );
    assert_eq!(reply.unwrap().status, 200);
    let (_, reply) = request(
        &host,
        &mut chain,
        Some(LOOPBACK),
        &post(Some("Bearer s3cret")),
    );
    assert_eq!(reply.unwrap().status, 202);
    assert_eq!(host.counter("mesh.drain_signal.drain_rejected"), 5);
}

#[test]
fn get_returns_the_state_and_other_methods_are_refused() {
    let host = FakeHost::new();
    let mut chain = drain(&host, "{}");
    let get = [(":method", "GET"), (":path", "/.mesh/drain?pretty")];
    let (verdict, reply) = request(&host, &mut chain, Some(LOOPBACK), &get);
    let reply = reply.unwrap();
    assert_eq!((verdict, reply.status), (Verdict::Replied, 200));
    assert_eq!(json(&reply)["state"], "idle");
    assert!(reply
        .headers
        .contains(&("content-type".to_owned(), "application/json".to_owned())));
    let (_, reply) = request(&host, &mut chain, Some("192.0.2.1:1"), &get);
    assert_eq!(reply.unwrap().status, 403);
    let (verdict, reply) = request(
        &host,
        &mut chain,
        Some(LOOPBACK),
        &[(":method", "DELETE"), (":path", "/.mesh/drain")],
    );
    assert_eq!((verdict, reply.unwrap().status), (Verdict::Replied, 405));
    assert_eq!(state(&host), DrainState::Idle);
}

#[test]
fn after_the_delay_one_admin_drain_call_and_then_draining() {
    let host = FakeHost::new();
    let mut chain = drain(&host, r#"{"delay_ms": 2000, "admin_cluster": "admin"}"#);
    trigger(&host, &mut chain);
    tick_for(&host, &mut chain, Duration::from_millis(1_750));
    assert!(host.dispatched_calls().is_empty());
    tick_for(&host, &mut chain, Duration::from_secs(3));
    let calls = host.dispatched_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.upstream, "admin");
    assert_eq!(call.header(":method"), Some(&b"POST"[..]));
    assert_eq!(call.header(":path"), Some(ADMIN_DRAIN_PATH.as_bytes()));
    assert_eq!(ADMIN_DRAIN_PATH, "/drain_listeners?graceful&inboundonly");
    assert_eq!(call.timeout, ADMIN_CALL_TIMEOUT);
    answer(&host, &mut chain, call.token, "200");
    assert_eq!(state(&host).phase(), Phase::Draining);
    assert_eq!(host.counter("mesh.drain_signal.admin_drain_calls_ok"), 1);
    tick_for(&host, &mut chain, Duration::from_secs(60));
    assert_eq!(host.dispatched_calls().len(), 1, "exactly one call");
    assert_eq!(host.gauge("mesh.drain_signal.drain_state"), Some(2));
    let (_, reply) = health(&host, &mut chain, "/healthz");
    assert_eq!(
        reply.unwrap().status,
        503,
        "health keeps failing while draining"
    );
    let (_, reply) = request(
        &host,
        &mut chain,
        Some(LOOPBACK),
        &[(":method", "GET"), (":path", "/.mesh/drain")],
    );
    assert_eq!(json(&reply.unwrap())["state"], "draining");
}

#[test]
fn a_failed_admin_call_is_retried_after_its_backoff_and_counted() {
    let host = FakeHost::new();
    let mut chain = drain(&host, r#"{"delay_ms": 0}"#);
    trigger(&host, &mut chain);
    tick_for(&host, &mut chain, TICK_PERIOD);
    let first = host.dispatched_calls()[0].token;
    answer(&host, &mut chain, first, "503");
    host.set_http_call_failure();
    assert_eq!(
        host.counter("mesh.drain_signal.admin_drain_calls_failed"),
        1
    );
    assert_eq!(state(&host).admin_call_failures(), 1);
    tick_for(&host, &mut chain, retry_backoff(1) - TICK_PERIOD);
    assert_eq!(host.dispatched_calls().len(), 1, "waits for the backoff");
    tick_for(&host, &mut chain, TICK_PERIOD);
    let calls = host.dispatched_calls();
    assert_eq!(calls.len(), 2);
    // A failed callout (no response at all) counts as failed too.
    host.set_http_call_failure();
    chain.on_http_call_response(&host, calls[1].token);
    assert_eq!(
        host.counter("mesh.drain_signal.admin_drain_calls_failed"),
        2
    );
    tick_for(&host, &mut chain, retry_backoff(2));
    let third = host.dispatched_calls()[2].token;
    answer(&host, &mut chain, third, "200");
    assert_eq!(state(&host).phase(), Phase::Draining);
}

#[test]
fn an_unknown_admin_cluster_counts_failures_and_keeps_health_failing() {
    let host = FakeHost::new();
    host.refuse_cluster("envoy_admin");
    let mut chain = drain(&host, r#"{"delay_ms": 0}"#);
    trigger(&host, &mut chain);
    tick_for(&host, &mut chain, Duration::from_secs(4));
    // Claimed at 0.25 s, 1.25 s and 3.25 s (backoff 1 s, then 2 s).
    assert_eq!(
        host.counter("mesh.drain_signal.admin_drain_calls_failed"),
        3
    );
    assert_eq!(state(&host).phase(), Phase::HealthFailing);
    assert!(host.dispatched_calls().is_empty());
}

#[test]
fn a_result_that_cannot_be_recorded_is_recorded_on_the_next_tick() {
    let host = FakeHost::new();
    let mut chain = drain(&host, r#"{"delay_ms": 0}"#);
    trigger(&host, &mut chain);
    tick_for(&host, &mut chain, TICK_PERIOD);
    let token = host.dispatched_calls()[0].token;
    host.fail_next_cas_writes(CAS_RETRIES + 1);
    answer(&host, &mut chain, token, "200");
    assert!(chain.has_pending_work());
    assert_eq!(state(&host).phase(), Phase::HealthFailing);
    chain.on_tick(&host);
    assert!(!chain.has_pending_work());
    assert_eq!(state(&host).phase(), Phase::Draining);
    assert_eq!(host.dispatched_calls().len(), 1);
}

#[test]
fn a_reloaded_vm_continues_the_drain_and_reclaims_a_vanished_call() {
    let store = Arc::new(MemoryStore::new());
    let old = FakeHost::with_store(Arc::clone(&store));
    let mut old_chain = drain(&old, DELAY_2S);
    trigger(&old, &mut old_chain);
    tick_for(&old, &mut old_chain, Duration::from_millis(2_250));
    assert_eq!(old.dispatched_calls().len(), 1);
    // The VM is reloaded before the call answers: its claim is never reported.
    drop(old_chain);
    let new = FakeHost::with_store(store);
    new.set_now(old.now());
    let mut chain = drain(&new, DELAY_2S);
    assert_eq!(health(&new, &mut chain, "/healthz").1.unwrap().status, 503);
    tick_for(
        &new,
        &mut chain,
        ADMIN_CALL_TIMEOUT + CLAIM_GRACE - TICK_PERIOD * 2,
    );
    assert!(
        new.dispatched_calls().is_empty(),
        "the old claim still stands"
    );
    tick_for(&new, &mut chain, TICK_PERIOD);
    let calls = new.dispatched_calls();
    assert_eq!(calls.len(), 1);
    answer(&new, &mut chain, calls[0].token, "200");
    assert_eq!(state(&new).phase(), Phase::Draining);
}

#[test]
fn hostile_bytes_never_panic_and_are_refused() {
    let host = FakeHost::new();
    let mut chain = drain(&host, r#"{"token": "t"}"#);
    host.set_property(&["source", "address"], &[0xff, 0xfe, b':', b'1']);
    host.set_request_headers(&[(":method", "POST"), (":path", "/.mesh/drain")]);
    let request = HeaderMapKind::RequestHeaders;
    host.add_header_bytes(request, "authorization", &[b'B', 0xff, 0x00]);
    let mut stream = ChainStream::default();
    assert_eq!(
        chain.on_request_headers(&host, &mut stream),
        Verdict::Replied
    );
    assert_eq!(host.take_replies()[0].status, 403);
    host.set_request_headers(&[]);
    host.add_header_bytes(request, ":path", &[b'/', 0xc3, 0x28, b'?', 0xff]);
    let mut stream = ChainStream::default();
    assert_eq!(
        chain.on_request_headers(&host, &mut stream),
        Verdict::Continue
    );
    host.store()
        .set(
            &format!(
                "mesh/drain-signal.{}/state.v1",
                namespace_of(b"drain-signal")
            ),
            b"garbage",
            0,
        )
        .unwrap();
    let (verdict, _) = health(&host, &mut chain, "/healthz");
    assert_eq!(verdict, Verdict::Continue, "an unreadable state fails open");
    chain.on_tick(&host);
}

// WASI has no threads: this one runs natively only.
#[cfg(not(target_os = "wasi"))]
#[test]
fn workers_on_threads_sharing_one_store_dispatch_the_admin_call_exactly_once() {
    use std::sync::Barrier;
    const WORKERS: usize = 4;
    for round in 0..20 {
        let store = Arc::new(MemoryStore::new());
        let trigger_host = FakeHost::with_store(Arc::clone(&store));
        let mut trigger_chain = drain(&trigger_host, DELAY_2S);
        trigger(&trigger_host, &mut trigger_chain);
        // Every worker ticks past the deadline before any call is answered, so a worker that
        // dispatched without winning the claim would show up as a second call.
        // Then every call is answered before any worker ticks on (an unanswered claim expires).
        let (past_deadline, answered) = (Barrier::new(WORKERS), Barrier::new(WORKERS));
        let calls: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..WORKERS)
                .map(|_| {
                    let store = Arc::clone(&store);
                    let (past_deadline, answered) = (&past_deadline, &answered);
                    scope.spawn(move || {
                        let host = FakeHost::with_store(store);
                        let mut chain = drain(&host, DELAY_2S);
                        tick_for(&host, &mut chain, Duration::from_secs(3));
                        past_deadline.wait();
                        for call in host.dispatched_calls() {
                            answer(&host, &mut chain, call.token, "200");
                        }
                        answered.wait();
                        tick_for(&host, &mut chain, Duration::from_secs(30));
                        assert_eq!(health(&host, &mut chain, "/readyz").1.unwrap().status, 503);
                        assert_eq!(
                            host.counter("mesh.drain_signal.admin_drain_calls_failed"),
                            0
                        );
                        host.dispatched_calls().len()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(calls, 1, "round {round}");
        assert_eq!(state(&trigger_host).phase(), Phase::Draining);
    }
}
