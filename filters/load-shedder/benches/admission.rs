//! Cost of the per-request path: one admit plus one release on the pure shared state, with a
//! window closing (and the limit updating) every `window_max_samples` requests as in production.
//! Also the encode/decode round trip the glue performs per shared-data update.

use criterion::{criterion_group, criterion_main, Criterion};
use load_shedder::classify::{Criticality, Rank};
use load_shedder::config::ShedderConfig;
use load_shedder::policy::{Outcome, Policy, SharedState};
use meshkit::clock::Timestamp;
use meshkit::shared::SharedValue;
use std::hint::black_box;
use std::time::Duration;

fn admit_and_release(c: &mut Criterion) {
    let policy = Policy::new(&ShedderConfig::default());
    let rank = Rank {
        criticality: Criticality::Critical,
        first_attempt: true,
    };
    let mut state = SharedState::new(&policy, Timestamp::EPOCH);
    let mut now = 0u64;
    c.bench_function("admit+release", |b| {
        b.iter(|| {
            now += 10_000;
            let admission = state.admit(&policy, black_box(rank));
            if admission.is_admitted() {
                let closed = state.release(
                    &policy,
                    Timestamp::from_nanos(now),
                    black_box(Duration::from_micros(900 + now % 200)),
                    Outcome::Success,
                );
                black_box(closed);
            }
        })
    });

    let encoded = state.encode();
    c.bench_function("decode+encode", |b| {
        b.iter(|| {
            let decoded = SharedState::decode(black_box(&encoded));
            black_box(decoded.map(|state| state.encode()).ok())
        })
    });
}

criterion_group!(benches, admit_and_release);
criterion_main!(benches);
