//! Cost of the per-request path: the rule lookup on a request's path and method, the routing
//! decision, the classification of the response, and the breaker update with the
//! encode/decode round trip the glue performs on shared data; then the whole path through the
//! filter on the fake host.

use criterion::{criterion_group, criterion_main, Criterion};
use entity_cache::config::BreakerConfig;
use entity_cache::policy::{
    classify, Breaker, BreakerState, CacheResponse, Matcher, Pattern, ProbeGate,
};
use entity_cache::EntityCache;
use meshkit::clock::Timestamp;
use meshkit::kit::chain::ChainStream;
use meshkit::kit::fake::FakeHost;
use meshkit::kit::{Chain, MemberFactory};
use meshkit::shared::SharedValue;
use std::hint::black_box;
use std::time::Duration;

const CONFIG: &str = r#"{"rules": [
    {"grpc_method": "users.Users/GetUser", "cache_cluster": "cache", "origin_cluster": "users"},
    {"grpc_method": "catalog.Catalog/*", "cache_cluster": "cache", "origin_cluster": "catalog"},
    {"path_prefix": "/v1/items/", "cache_cluster": "cache", "origin_cluster": "items"}
]}"#;

fn per_request(c: &mut Criterion) {
    let matcher = Matcher::new(vec![
        Pattern::grpc("users.Users/GetUser"),
        Pattern::grpc("catalog.Catalog/*"),
        Pattern::Http {
            method: None,
            path_prefix: b"/v1/items/".to_vec(),
        },
    ]);
    c.bench_function("match", |b| {
        b.iter(|| {
            black_box(matcher.find(
                black_box(b"/catalog.Catalog/GetProduct"),
                black_box(b"POST"),
                true,
            ))
        })
    });
    let breaker = Breaker::new(&BreakerConfig::default());
    let mut state = BreakerState::new(&breaker, Timestamp::EPOCH);
    let mut gate = ProbeGate::default();
    let mut now = 0u64;
    c.bench_function("route+classify+record", |b| {
        b.iter(|| {
            now += 1_000_000;
            let at = Timestamp::from_nanos(now);
            black_box(gate.route(state.phase(&breaker, at), breaker.half_open_share()));
            let response = CacheResponse {
                status: Some(b"200"),
                grpc_status: Some(b"0"),
                latency: Duration::from_millis(3),
                ..CacheResponse::default()
            };
            let failure = classify(black_box(&response), Some(Duration::from_secs(1)))
                != entity_cache::policy::Observation::Success;
            black_box(state.record(&breaker, at, failure));
        })
    });
    let encoded = state.encode();
    c.bench_function("decode+encode", |b| {
        b.iter(|| {
            let decoded = BreakerState::decode(black_box(&encoded));
            black_box(decoded.map(|state| state.encode()).ok())
        })
    });
    let host = FakeHost::new();
    let mut chain = Chain::standalone(
        MemberFactory::of::<EntityCache>(),
        Some(CONFIG.as_bytes()),
        &host,
        "entity-cache",
    )
    .ok();
    c.bench_function("filter: cacheable gRPC call", |b| {
        b.iter(|| {
            let Some(chain) = chain.as_mut() else { return };
            host.set_request_headers(&[
                (":method", "POST"),
                (":path", "/catalog.Catalog/GetProduct"),
                ("content-type", "application/grpc"),
            ]);
            let mut stream = ChainStream::default();
            chain.on_request_headers(&host, &mut stream);
            host.set_response_headers(&[(":status", "200")]);
            chain.on_response_headers(&host, &mut stream, false);
            host.set_response_trailers(&[("grpc-status", "0")]);
            chain.on_response_trailers(&host, &mut stream);
            chain.on_stream_end(&host, &mut stream);
            host.advance(Duration::from_millis(1));
        })
    });
}

criterion_group!(benches, per_request);
criterion_main!(benches);
