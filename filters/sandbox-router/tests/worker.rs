//! The shipped worker logic ([`SandboxRouter`] on the filter kit), natively against the kit's
//! fake host: routing by header and baggage, the client's routing header always removed,
//! untrusted keys stripped before the application sees them (from every `baggage` line), unknown
//! keys, `self`, fallback
//! counting, bounded per-sandbox counters, hostile bytes and several workers on several threads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshkit::headers::HeaderMapKind;
use meshkit::kit::chain::ChainStream;
use meshkit::kit::fake::FakeHost;
use meshkit::kit::{Chain, Host, MemberFactory, Verdict};
#[cfg(not(target_arch = "wasm32"))]
use meshkit::shared::MemoryStore;
use sandbox_router::worker::MAX_ROUTED_COUNTERS;
use sandbox_router::SandboxRouter;
#[cfg(not(target_arch = "wasm32"))]
use std::sync::Arc;

const ROUTING: &str = "x-mesh-sandbox-cluster";
const TRUSTED: &[u8] = b"127.0.0.1:40000";
const UNTRUSTED: &[u8] = b"127.0.0.2:40000";
const CONFIG: &str = r#"{"sandboxes": {"feature-x": "sandbox_x", "feature-y": "sandbox_y"},
                         "trusted_sources": ["127.0.0.1/32"]}"#;

fn router(host: &FakeHost, config: &str) -> Chain {
    Chain::standalone(
        MemberFactory::of::<SandboxRouter>(),
        Some(config.as_bytes()),
        host,
        "sandbox-router",
    )
    .unwrap()
}

/// Runs the request headers of a request from `source` carrying `headers`.
fn request(
    host: &FakeHost,
    chain: &mut Chain,
    source: &[u8],
    headers: &[(&str, &str)],
) -> (ChainStream, Verdict) {
    host.set_property(&["source", "address"], source);
    let mut all = vec![(":method", "GET"), (":path", "/"), (":authority", "svc")];
    all.extend_from_slice(headers);
    host.set_request_headers(&all);
    let mut stream = ChainStream::default();
    let verdict = chain.on_request_headers(host, &mut stream);
    (stream, verdict)
}

fn sent(host: &FakeHost, name: &str) -> Option<String> {
    host.header_of(HeaderMapKind::RequestHeaders, name)
        .map(|value| String::from_utf8(value).unwrap())
}

fn counter(host: &FakeHost, name: &str) -> u64 {
    host.counter(&format!("mesh.sandbox_router.{name}"))
}

#[test]
fn a_trusted_header_key_sets_the_routing_header_to_the_registry_cluster() {
    let host = FakeHost::new();
    let mut chain = router(&host, CONFIG);
    let (_, verdict) = request(&host, &mut chain, TRUSTED, &[("x-sandbox", "feature-x")]);
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(sent(&host, ROUTING).as_deref(), Some("sandbox_x"));
    assert_eq!(
        sent(&host, "x-sandbox").as_deref(),
        Some("feature-x"),
        "kept for the app"
    );
    assert_eq!(host.route_cache_clears(), 1);
    assert_eq!(counter(&host, "routed.feature_x"), 1);
    assert_eq!(counter(&host, "untrusted_stripped"), 0);
}

#[test]
fn a_trusted_baggage_key_routes_and_baggage_is_left_for_the_next_hop() {
    let host = FakeHost::new();
    let mut chain = router(&host, CONFIG);
    let baggage = "userId=alice, sandbox=feature-y;ttl=1";
    request(&host, &mut chain, TRUSTED, &[("baggage", baggage)]);
    assert_eq!(sent(&host, ROUTING).as_deref(), Some("sandbox_y"));
    assert_eq!(sent(&host, "baggage").as_deref(), Some(baggage));
    assert_eq!(counter(&host, "routed.feature_y"), 1);
}

#[test]
fn a_client_routing_header_is_removed_and_the_route_picked_again() {
    let host = FakeHost::new();
    let mut chain = router(&host, CONFIG);
    // No key at all: the spoofed header goes, the route is re-picked.
    let (_, verdict) = request(&host, &mut chain, TRUSTED, &[(ROUTING, "sandbox_y")]);
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(sent(&host, ROUTING), None);
    assert_eq!(host.route_cache_clears(), 1);
    // With a key: the registry's cluster replaces the client's.
    request(
        &host,
        &mut chain,
        TRUSTED,
        &[(ROUTING, "admin"), ("x-sandbox", "feature-x")],
    );
    assert_eq!(sent(&host, ROUTING).as_deref(), Some("sandbox_x"));
    // From an untrusted source: removed too, and no key honoured.
    request(
        &host,
        &mut chain,
        UNTRUSTED,
        &[(ROUTING, "sandbox_x"), ("x-sandbox", "feature-x")],
    );
    assert_eq!(sent(&host, ROUTING), None);
    assert_eq!(host.route_cache_clears(), 3);
    // A request without routing header or key touches nothing.
    request(&host, &mut chain, TRUSTED, &[]);
    assert_eq!(host.route_cache_clears(), 3);
}

#[test]
fn untrusted_keys_are_stripped_from_header_and_baggage() {
    let host = FakeHost::new();
    let mut chain = router(&host, CONFIG);
    request(
        &host,
        &mut chain,
        UNTRUSTED,
        &[
            ("x-sandbox", "feature-x"),
            ("baggage", "userId=alice,sandbox=feature-x;p, b=2"),
        ],
    );
    assert_eq!(sent(&host, ROUTING), None);
    assert_eq!(sent(&host, "x-sandbox"), None);
    assert_eq!(sent(&host, "baggage").as_deref(), Some("userId=alice, b=2"));
    assert_eq!(counter(&host, "untrusted_stripped"), 1);

    // A baggage header holding only the key goes away entirely; malformed baggage that a
    // lenient tracing library might still read is stripped too.
    request(
        &host,
        &mut chain,
        UNTRUSTED,
        &[("baggage", "sandbox=feature-y")],
    );
    assert_eq!(sent(&host, "baggage"), None);
    request(
        &host,
        &mut chain,
        UNTRUSTED,
        &[("baggage", "sandbox=feature-y, bad member")],
    );
    assert_eq!(sent(&host, "baggage").as_deref(), Some(" bad member"));
    assert_eq!(counter(&host, "untrusted_stripped"), 3);
    assert_eq!(host.route_cache_clears(), 0);

    // Unrelated baggage from untrusted sources is left alone and not counted.
    request(&host, &mut chain, UNTRUSTED, &[("baggage", "userId=alice")]);
    assert_eq!(sent(&host, "baggage").as_deref(), Some("userId=alice"));
    assert_eq!(counter(&host, "untrusted_stripped"), 3);
}

#[test]
fn a_baggage_header_on_several_lines_is_one_list_routed_by_and_stripped_from_every_line() {
    let host = FakeHost::new();
    let mut chain = router(&host, CONFIG);
    let lines = [
        ("baggage", "userId=alice"),
        ("baggage", "sandbox=feature-y"),
    ];
    request(&host, &mut chain, TRUSTED, &lines);
    assert_eq!(sent(&host, ROUTING).as_deref(), Some("sandbox_y"));
    assert_eq!(
        host.header_values(HeaderMapKind::RequestHeaders, "baggage")
            .len(),
        2,
        "trusted baggage travels on untouched"
    );

    request(&host, &mut chain, UNTRUSTED, &lines);
    assert_eq!(sent(&host, ROUTING), None);
    assert_eq!(
        host.header_values(HeaderMapKind::RequestHeaders, "baggage"),
        [b"userId=alice".to_vec()],
        "the key on the second line is stripped"
    );
    assert_eq!(counter(&host, "untrusted_stripped"), 1);
}

#[test]
fn trust_comes_from_the_connection_never_from_headers() {
    let host = FakeHost::new();
    let mut chain = router(&host, CONFIG);
    request(
        &host,
        &mut chain,
        UNTRUSTED,
        &[
            ("x-sandbox", "feature-x"),
            ("x-forwarded-for", "127.0.0.1"),
            ("x-envoy-external-address", "127.0.0.1"),
            ("forwarded", "for=127.0.0.1"),
        ],
    );
    assert_eq!(sent(&host, ROUTING), None);
    assert_eq!(counter(&host, "untrusted_stripped"), 1);
    // Without a source address property nobody is trusted.
    let host = FakeHost::new();
    let mut chain = router(&host, CONFIG);
    host.set_request_headers(&[(":path", "/"), ("x-sandbox", "feature-x")]);
    chain.on_request_headers(&host, &mut ChainStream::default());
    assert_eq!(sent(&host, ROUTING), None);
    assert_eq!(counter(&host, "untrusted_stripped"), 1);
}

#[test]
fn unknown_keys_go_to_the_baseline_or_get_404() {
    let host = FakeHost::new();
    let mut chain = router(&host, CONFIG);
    let (_, verdict) = request(&host, &mut chain, TRUSTED, &[("x-sandbox", "feature-z")]);
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(sent(&host, ROUTING), None);
    assert_eq!(counter(&host, "unknown_key"), 1);
    assert!(host.replies().is_empty());

    let host = FakeHost::new();
    let config = r#"{"sandboxes": {"feature-y": "sandbox_y"}, "trusted_sources": ["127.0.0.1/32"],
                     "unknown_key": "not_found"}"#;
    let mut chain = router(&host, config);
    let (_, verdict) = request(&host, &mut chain, TRUSTED, &[("x-sandbox", "feature-z")]);
    assert_eq!(verdict, Verdict::Replied);
    let replies = host.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].status, 404);
    assert!(
        !String::from_utf8_lossy(&replies[0].body).contains("feature-z"),
        "no echo"
    );
    assert_eq!(counter(&host, "unknown_key"), 1);
    // Registered keys still route under not_found.
    request(&host, &mut chain, TRUSTED, &[("x-sandbox", "feature-y")]);
    assert_eq!(sent(&host, ROUTING).as_deref(), Some("sandbox_y"));
}

#[test]
fn the_sandbox_own_sidecar_never_reroutes_but_still_strips() {
    let host = FakeHost::new();
    let config = r#"{"sandboxes": {"feature-x": "sandbox_x"}, "trusted_sources": ["127.0.0.1/32"], "self": "feature-x"}"#;
    let mut chain = router(&host, config);
    request(&host, &mut chain, TRUSTED, &[("x-sandbox", "feature-x")]);
    assert_eq!(sent(&host, ROUTING), None);
    assert_eq!(sent(&host, "x-sandbox").as_deref(), Some("feature-x"));
    assert_eq!(host.route_cache_clears(), 0);
    request(&host, &mut chain, UNTRUSTED, &[("x-sandbox", "feature-x")]);
    assert_eq!(sent(&host, "x-sandbox"), None);
    assert_eq!(counter(&host, "untrusted_stripped"), 1);
}

#[test]
fn routed_requests_retried_to_the_baseline_count_as_fallbacks_once() {
    let host = FakeHost::new();
    let mut chain = router(&host, CONFIG);
    let respond = |chain: &mut Chain, stream: &mut ChainStream, attempts: &str| {
        host.set_response_headers(&[(":status", "200"), ("x-envoy-attempt-count", attempts)]);
        chain.on_response_headers(&host, stream, true);
        chain.on_stream_end(&host, stream);
    };
    let (mut routed, _) = request(&host, &mut chain, TRUSTED, &[("x-sandbox", "feature-x")]);
    respond(&mut chain, &mut routed, "2");
    let (mut first_try, _) = request(&host, &mut chain, TRUSTED, &[("x-sandbox", "feature-x")]);
    respond(&mut chain, &mut first_try, "1");
    let (mut baseline, _) = request(&host, &mut chain, TRUSTED, &[]);
    respond(&mut chain, &mut baseline, "3");
    let (mut garbage, _) = request(&host, &mut chain, TRUSTED, &[("x-sandbox", "feature-y")]);
    respond(&mut chain, &mut garbage, "\u{ff}2");
    assert_eq!(counter(&host, "fallback_to_baseline"), 1);
}

#[test]
fn per_sandbox_counters_are_bounded() {
    let host = FakeHost::new();
    let sandboxes: Vec<String> = (0..MAX_ROUTED_COUNTERS + 6)
        .map(|i| format!(r#""s{i}": "cluster_{i}""#))
        .collect();
    let config = format!(
        r#"{{"sandboxes": {{{}}}, "trusted_sources": ["127.0.0.1"]}}"#,
        sandboxes.join(",")
    );
    let mut chain = router(&host, &config);
    for i in 0..MAX_ROUTED_COUNTERS + 6 {
        let key = format!("s{i}");
        request(&host, &mut chain, TRUSTED, &[("x-sandbox", &key)]);
        assert_eq!(sent(&host, ROUTING), Some(format!("cluster_{i}")));
        request(&host, &mut chain, TRUSTED, &[("x-sandbox", &key)]);
    }
    let routed = host
        .metric_names()
        .into_iter()
        .filter(|name| name.starts_with("mesh.sandbox_router.routed."))
        .count();
    assert_eq!(routed, MAX_ROUTED_COUNTERS);
    assert_eq!(counter(&host, "routed.s0"), 2);
    assert_eq!(counter(&host, "routed_unlisted"), 12);
    assert_eq!(host.gauge("mesh.sandbox_router.registry_size"), Some(70));
}

#[test]
fn hostile_bytes_never_trap_and_never_route() {
    let host = FakeHost::new();
    let mut chain = router(&host, CONFIG);
    let hostile: [&[u8]; 6] = [
        b"\xff\xfe\x00",
        b"feature-x\x00",
        b"feature-x\r\nx-mesh-sandbox-cluster: admin",
        &[b'a'; 9000],
        b"%66eature-x",
        b"",
    ];
    for source in [TRUSTED, UNTRUSTED, b"\xff:1", b""] {
        for value in hostile {
            host.set_property(&["source", "address"], source);
            host.set_request_headers(&[(":path", "/")]);
            let request = HeaderMapKind::RequestHeaders;
            host.add_header_bytes(request, "x-sandbox", value);
            host.add_header_bytes(request, "baggage", value);
            host.add_header_bytes(request, ROUTING, value);
            let verdict = chain.on_request_headers(&host, &mut ChainStream::default());
            assert_eq!(verdict, Verdict::Continue);
            assert_eq!(sent(&host, ROUTING), None, "{value:?} from {source:?}");
        }
    }
    assert_eq!(
        counter(&host, "unknown_key"),
        5,
        "the trusted source's non-empty values"
    );
}

// WASI has no threads: this one runs natively only.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn workers_on_several_threads_route_independently() {
    let store = Arc::new(MemoryStore::new());
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let host = FakeHost::with_store(store);
                let mut chain = router(&host, CONFIG);
                for i in 0..200 {
                    let (key, cluster, source) = match (i + worker) % 3 {
                        0 => ("feature-x", Some("sandbox_x"), TRUSTED),
                        1 => ("feature-y", Some("sandbox_y"), TRUSTED),
                        _ => ("feature-x", None, UNTRUSTED),
                    };
                    request(
                        &host,
                        &mut chain,
                        source,
                        &[("x-sandbox", key), (ROUTING, "evil")],
                    );
                    assert_eq!(sent(&host, ROUTING).as_deref(), cluster);
                }
                (
                    counter(&host, "routed.feature_x") + counter(&host, "routed.feature_y"),
                    counter(&host, "untrusted_stripped"),
                )
            })
        })
        .collect();
    let (mut routed, mut stripped) = (0, 0);
    for worker in workers {
        let (r, s) = worker.join().unwrap();
        routed += r;
        stripped += s;
    }
    let untrusted = (0..4u64)
        .map(|worker| (0..200u64).filter(|i| (i + worker) % 3 == 2).count() as u64)
        .sum::<u64>();
    assert_eq!(stripped, untrusted);
    assert_eq!(routed, 800 - untrusted);
}
