//! The shipped worker logic ([`LoadShedder`] on the filter kit), natively against the kit's fake
//! host: exactly-once releases on every way a stream ends, fail-open admission under CAS
//! contention, deferred releases, replaced configurations, reply shapes, hostile bytes and
//! several workers on several threads sharing one store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use load_shedder::policy::SharedState;
use load_shedder::worker::CAS_RETRIES;
use load_shedder::LoadShedder;
use meshkit::grpc::GrpcStatus;
use meshkit::headers::HeaderMapKind;
use meshkit::kit::chain::ChainStream;
use meshkit::kit::fake::FakeHost;
use meshkit::kit::{Chain, MemberFactory, Verdict};
use meshkit::properties::namespace_of;
use meshkit::shared::{MemoryStore, SharedCell};
use std::sync::Arc;
use std::time::Duration;

/// A limit pinned at 10: critical-plus may fill 10.
const LIMIT_10: &str = r#"{"limit":{"min_limit":10,"initial_limit":10,"max_limit":10}}"#;

fn shedder(host: &FakeHost, plugin: &str, config: &str) -> Chain {
    Chain::standalone(
        MemberFactory::of::<LoadShedder>(),
        Some(config.as_bytes()),
        host,
        plugin,
    )
    .unwrap()
}

fn state_key(plugin: &str) -> String {
    format!(
        "mesh/load-shedder.{}/state.v{}",
        namespace_of(plugin.as_bytes()),
        SharedState::FORMAT_VERSION
    )
}

fn in_flight(host: &FakeHost, plugin: &str) -> u32 {
    SharedCell::<SharedState, _, _>::new(host.store(), state_key(plugin), 0)
        .read()
        .unwrap()
        .map_or(0, |state| state.in_flight())
}

/// Starts a critical-plus request (never shed while in-flight is below the limit).
fn open(host: &FakeHost, chain: &mut Chain) -> (ChainStream, Verdict) {
    open_with(
        host,
        chain,
        &[
            (":path", "/work"),
            ("x-request-criticality", "critical-plus"),
        ],
    )
}

fn open_with(
    host: &FakeHost,
    chain: &mut Chain,
    headers: &[(&str, &str)],
) -> (ChainStream, Verdict) {
    host.set_request_headers(headers);
    let mut stream = ChainStream::default();
    let verdict = chain.on_request_headers(host, &mut stream);
    (stream, verdict)
}

fn respond(host: &FakeHost, chain: &mut Chain, stream: &mut ChainStream, status: &str) {
    host.set_response_headers(&[(":status", status)]);
    chain.on_response_headers(host, stream, false);
    chain.on_response_body(stream, true);
}

#[test]
fn one_open_stream_leaves_in_flight_at_exactly_one_whatever_ended_the_others() {
    let host = FakeHost::new();
    let mut chain = shedder(&host, "load-shedder", LIMIT_10);
    let (_held, verdict) = open(&host, &mut chain);
    assert_eq!(verdict, Verdict::Continue);

    // Completed through the body's end, twice ended (on_done and on_log).
    let (mut body_end, _) = open(&host, &mut chain);
    respond(&host, &mut chain, &mut body_end, "200");
    chain.on_stream_end(&host, &mut body_end);
    chain.on_stream_end(&host, &mut body_end);
    // Completed by trailers.
    let (mut trailers, _) = open(&host, &mut chain);
    host.set_response_headers(&[(":status", "200")]);
    chain.on_response_headers(&host, &mut trailers, false);
    chain.on_response_trailers(&host, &mut trailers);
    chain.on_stream_end(&host, &mut trailers);
    // Headers-only response.
    let (mut headers_only, _) = open(&host, &mut chain);
    host.set_response_headers(&[(":status", "204")]);
    chain.on_response_headers(&host, &mut headers_only, true);
    chain.on_stream_end(&host, &mut headers_only);
    // Envoy's own local reply (an upstream timeout).
    let (mut local, _) = open(&host, &mut chain);
    host.set_property(&["response", "code_details"], b"upstream_response_timeout");
    respond(&host, &mut chain, &mut local, "504");
    chain.on_stream_end(&host, &mut local);
    // Reset mid-response, and abandoned by the client before any response.
    let (mut reset, _) = open(&host, &mut chain);
    host.set_response_headers(&[(":status", "200")]);
    chain.on_response_headers(&host, &mut reset, false);
    chain.on_stream_end(&host, &mut reset);
    let (mut abandoned, _) = open(&host, &mut chain);
    chain.on_stream_end(&host, &mut abandoned);
    chain.on_stream_end(&host, &mut abandoned);

    assert_eq!(in_flight(&host, "load-shedder"), 1);
    assert_eq!(host.counter("mesh.load_shedder.admitted"), 7);
}

#[test]
fn admission_fails_open_under_contention_and_the_request_is_never_released() {
    let host = FakeHost::new();
    let mut chain = shedder(&host, "load-shedder", LIMIT_10);
    let (_held, _) = open(&host, &mut chain);
    host.fail_next_cas_writes(CAS_RETRIES + 1);
    let (mut uncounted, verdict) = open(&host, &mut chain);
    assert_eq!(verdict, Verdict::Continue, "fail open");
    assert_eq!(host.failed_cas_writes(), u64::from(CAS_RETRIES + 1));
    assert_eq!(host.counter("mesh.load_shedder.admission_failed_open"), 1);
    respond(&host, &mut chain, &mut uncounted, "200");
    chain.on_stream_end(&host, &mut uncounted);
    assert_eq!(in_flight(&host, "load-shedder"), 1);
    assert_eq!(host.counter("mesh.load_shedder.admitted"), 1);
}

#[test]
fn a_deferred_release_is_applied_by_the_next_admission() {
    let host = FakeHost::new();
    let mut chain = shedder(&host, "load-shedder", LIMIT_10);
    let (_held, _) = open(&host, &mut chain);
    let (mut first, _) = open(&host, &mut chain);
    host.fail_next_cas_writes(CAS_RETRIES + 1);
    respond(&host, &mut chain, &mut first, "200");
    chain.on_stream_end(&host, &mut first);
    assert_eq!(host.counter("mesh.load_shedder.release_deferred"), 1);
    assert!(chain.has_pending_work());
    assert_eq!(in_flight(&host, "load-shedder"), 2, "not yet applied");
    let (_next, _) = open(&host, &mut chain);
    assert!(!chain.has_pending_work());
    assert_eq!(
        in_flight(&host, "load-shedder"),
        2,
        "held + next; first released"
    );
}

#[test]
fn a_replaced_configuration_releases_its_streams_to_its_own_key_on_its_ticks() {
    let host = FakeHost::new();
    let mut old = shedder(&host, "a", LIMIT_10);
    let (mut from_old, _) = open(&host, &mut old);
    // The new configuration lives under another key (another plugin name).
    let mut new = shedder(&host, "b", LIMIT_10);
    let (_from_new, _) = open(&host, &mut new);
    host.fail_next_cas_writes(CAS_RETRIES + 1);
    respond(&host, &mut old, &mut from_old, "200");
    old.on_stream_end(&host, &mut from_old);
    assert!(old.has_pending_work());
    assert_eq!(in_flight(&host, "a"), 1);
    old.on_tick(&host);
    assert!(!old.has_pending_work());
    assert_eq!(in_flight(&host, "a"), 0);
    assert_eq!(in_flight(&host, "b"), 1, "the other key is untouched");
}

#[test]
fn shed_requests_get_the_configured_reply_and_are_counted_by_criticality() {
    let host = FakeHost::new();
    let config = r#"{"limit":{"min_limit":1,"initial_limit":1,"max_limit":1},
        "rejection":{"grpc_status":"RESOURCE_EXHAUSTED","retry_after_seconds":3}}"#;
    let mut chain = shedder(&host, "load-shedder", config);
    let (_held, _) = open(&host, &mut chain);
    let (_, verdict) = open_with(
        &host,
        &mut chain,
        &[(":path", "/x"), ("x-request-criticality", "sheddable")],
    );
    assert_eq!(verdict, Verdict::Replied);
    let (_, verdict) = open_with(
        &host,
        &mut chain,
        &[
            (":path", "/pkg.Svc/M"),
            ("content-type", "application/grpc"),
        ],
    );
    assert_eq!(verdict, Verdict::Replied);
    let replies = host.replies();
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0].status, 503);
    assert!(replies[0]
        .headers
        .contains(&("retry-after".to_owned(), "3".to_owned())));
    assert!(replies[0]
        .headers
        .contains(&("x-mesh-shed".to_owned(), "1".to_owned())));
    assert_eq!(replies[1].grpc_status, Some(GrpcStatus::ResourceExhausted));
    assert!(replies[1]
        .headers
        .contains(&("grpc-retry-pushback-ms".to_owned(), "3000".to_owned())));
    assert_eq!(host.counter("mesh.load_shedder.shed_sheddable"), 1);
    assert_eq!(host.counter("mesh.load_shedder.shed_critical"), 1);
    assert_eq!(
        in_flight(&host, "load-shedder"),
        1,
        "shed requests are not counted"
    );
}

#[test]
fn hostile_header_bytes_are_read_as_bytes() {
    let host = FakeHost::new();
    let mut chain = shedder(&host, "load-shedder", LIMIT_10);
    host.set_request_headers(&[]);
    for (name, value) in [
        (":path", &b"/\xff\xfe"[..]),
        ("x-request-criticality", b"\xc3\x28critical"),
        ("x-envoy-attempt-count", b"\xff"),
        ("content-type", b"application/grpc\xff"),
    ] {
        host.add_header_bytes(HeaderMapKind::RequestHeaders, name, value);
    }
    let mut stream = ChainStream::default();
    assert_eq!(
        chain.on_request_headers(&host, &mut stream),
        Verdict::Continue
    );
    host.set_response_headers(&[]);
    host.add_header_bytes(HeaderMapKind::ResponseHeaders, ":status", b"\xff\xff");
    chain.on_response_headers(&host, &mut stream, true);
    chain.on_stream_end(&host, &mut stream);
    assert_eq!(in_flight(&host, "load-shedder"), 0);
}

// WASI has no threads: this one runs natively only.
#[cfg(not(target_os = "wasi"))]
#[test]
fn workers_on_threads_sharing_one_store_account_exactly() {
    const WORKERS: usize = 4;
    const REQUESTS: usize = 2_000;
    let store = Arc::new(MemoryStore::new());
    let totals: Vec<(u64, u64)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let store = Arc::clone(&store);
                scope.spawn(move || {
                    let host = FakeHost::with_store(store);
                    let mut chain = shedder(&host, "load-shedder", "{}");
                    for _ in 0..REQUESTS {
                        let (mut stream, verdict) = open(&host, &mut chain);
                        host.advance(Duration::from_millis(1));
                        if verdict == Verdict::Continue {
                            respond(&host, &mut chain, &mut stream, "200");
                        }
                        chain.on_stream_end(&host, &mut stream);
                    }
                    chain.on_tick(&host);
                    assert!(!chain.has_pending_work());
                    (
                        host.counter("mesh.load_shedder.admitted")
                            + host.counter("mesh.load_shedder.admission_failed_open"),
                        host.counter("mesh.load_shedder.shed_critical_plus"),
                    )
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let decided: u64 = totals.iter().map(|(passed, shed)| passed + shed).sum();
    assert_eq!(decided, (WORKERS * REQUESTS) as u64);
    let state = SharedCell::<SharedState, _, _>::new(&*store, state_key("load-shedder"), 0)
        .read()
        .unwrap()
        .unwrap();
    assert_eq!(state.in_flight(), 0);
}
