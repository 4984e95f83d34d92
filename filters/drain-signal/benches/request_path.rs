//! Cost of the per-request path through the filter kit and the fake host: an ordinary request
//! (no shared-data access), a health check while draining (one shared-data read and a 503) and
//! the state's decode.

use criterion::{criterion_group, criterion_main, Criterion};
use drain_signal::policy::{DrainState, Event, Policy};
use drain_signal::DrainSignal;
use meshkit::clock::Timestamp;
use meshkit::kit::chain::ChainStream;
use meshkit::kit::fake::FakeHost;
use meshkit::kit::{Chain, MemberFactory};
use meshkit::shared::SharedValue;
use std::hint::black_box;
use std::time::Duration;

fn chain(host: &FakeHost) -> Option<Chain> {
    Chain::standalone(
        MemberFactory::of::<DrainSignal>(),
        None,
        host,
        "drain-signal",
    )
    .ok()
}

fn request_path(c: &mut Criterion) {
    let host = FakeHost::new();
    let Some(mut chain) = chain(&host) else {
        return;
    };
    host.set_request_headers(&[(":method", "GET"), (":path", "/api/orders?id=7")]);
    c.bench_function("ordinary request", |b| {
        b.iter(|| {
            let mut stream = ChainStream::default();
            black_box(chain.on_request_headers(&host, &mut stream));
            chain.on_stream_end(&host, &mut stream);
        })
    });

    host.set_property(&["source", "address"], b"127.0.0.1:40000");
    host.set_request_headers(&[(":method", "POST"), (":path", "/.mesh/drain")]);
    let mut trigger = ChainStream::default();
    chain.on_request_headers(&host, &mut trigger);
    host.set_request_headers(&[(":method", "GET"), (":path", "/healthz")]);
    c.bench_function("health check while draining", |b| {
        b.iter(|| {
            let mut stream = ChainStream::default();
            black_box(chain.on_request_headers(&host, &mut stream));
            chain.on_stream_end(&host, &mut stream);
            black_box(host.take_replies());
        })
    });

    let policy = Policy {
        delay: Duration::from_secs(30),
        call_timeout: Duration::from_secs(5),
        gradual_window: None,
    };
    let (state, _) = DrainState::Idle.step(&policy, Event::Trigger, Timestamp::from_nanos(1));
    let encoded = state.encode();
    c.bench_function("state decode", |b| {
        b.iter(|| black_box(DrainState::decode(black_box(&encoded))))
    });
}

criterion_group!(benches, request_path);
criterion_main!(benches);
