//! Cost of the per-request path on the pure shared state: the client role's reserve plus its
//! settlement (refund), the server role's admission, and the encode/decode round trip the glue
//! performs per shared-data update.

use criterion::{criterion_group, criterion_main, Criterion};
use meshkit::clock::Timestamp;
use meshkit::shared::SharedValue;
use retry_budget::config::RetryBudgetConfig;
use retry_budget::policy::{Budget, BudgetState};
use std::hint::black_box;

fn per_request(c: &mut Criterion) {
    let budget = Budget::new(&RetryBudgetConfig::default());
    let mut state = BudgetState::new(&budget, b"payments", Timestamp::EPOCH);
    let mut now = 0u64;
    c.bench_function("reserve+refund", |b| {
        b.iter(|| {
            now += 1_000_000;
            let at = Timestamp::from_nanos(now);
            let reservation = state.reserve(&budget, at);
            state.refund(&budget, at, reservation.settle(black_box(0)));
        })
    });
    c.bench_function("server admission", |b| {
        b.iter(|| {
            now += 1_000_000;
            let at = Timestamp::from_nanos(now);
            if black_box(now.is_multiple_of(10_000_000)) {
                black_box(state.admit_retry(&budget, at));
            } else {
                state.first_attempt(&budget, at);
            }
        })
    });
    let encoded = state.encode();
    c.bench_function("decode+encode", |b| {
        b.iter(|| {
            let decoded = BudgetState::decode(black_box(&encoded));
            black_box(decoded.map(|state| state.encode()).ok())
        })
    });
}

criterion_group!(benches, per_request);
criterion_main!(benches);
