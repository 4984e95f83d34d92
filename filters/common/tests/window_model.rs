//! Property tests: [`SlidingWindowCounter`] over [`MemoryStore`] agrees with a naive model that
//! remembers every event, for arbitrary (also backwards-moving) timestamps, including near
//! `u64::MAX`. Native only: proptest needs an OS random source.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshkit::clock::Timestamp;
use meshkit::shared::{MemoryStore, SlidingWindowCounter};
use proptest::prelude::*;
use std::time::Duration;

fn at(nanos: u64) -> Timestamp {
    Timestamp::from_nanos(nanos)
}

/// The obvious model: remember every event with the bucket it was credited to.
#[derive(Default)]
struct NaiveWindow {
    events: Vec<(u64, u64)>,
    newest: Option<u64>,
}

impl NaiveWindow {
    fn add(&mut self, bucket: u64, n: u64) {
        // Adding nothing writes nothing: it is a read.
        if n == 0 {
            return;
        }
        let credited = self.newest.map_or(bucket, |newest| newest.max(bucket));
        self.newest = Some(credited);
        self.events.push((credited, n));
    }

    fn sum(&self, bucket: u64, buckets: u64) -> u64 {
        let Some(newest) = self.newest else { return 0 };
        let reference = newest.max(bucket);
        self.events
            .iter()
            .filter(|(credited, _)| {
                u128::from(*credited) + u128::from(buckets) > u128::from(reference)
            })
            .map(|(_, n)| n)
            .sum()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add { nanos: u64, n: u64 },
    Sum { nanos: u64 },
}

fn op(base: u64, span: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..span, 0u64..1000).prop_map(move |(t, n)| Op::Add {
            nanos: base.saturating_add(t),
            n
        }),
        (0..span).prop_map(move |t| Op::Sum {
            nanos: base.saturating_add(t)
        }),
    ]
}

fn check_against_model(buckets: u32, bucket_nanos: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let store = MemoryStore::new();
    let window_len = Duration::from_nanos(bucket_nanos * u64::from(buckets));
    let mut window = SlidingWindowCounter::new("w", window_len, buckets).unwrap();
    let mut model = NaiveWindow::default();
    for op in ops {
        match op {
            Op::Add { nanos, n } => {
                model.add(nanos / bucket_nanos, n);
                let total = window.add(&store, at(nanos), n).total();
                prop_assert_eq!(
                    total,
                    Some(model.sum(nanos / bucket_nanos, u64::from(buckets)))
                );
            }
            Op::Sum { nanos } => {
                prop_assert_eq!(
                    window.sum(&store, at(nanos)),
                    Ok(model.sum(nanos / bucket_nanos, u64::from(buckets)))
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn matches_a_naive_model(
        buckets in 1u32..12,
        bucket_nanos in 1u64..5,
        ops in prop::collection::vec(op(0, 80), 1..60),
    ) {
        check_against_model(buckets, bucket_nanos, ops)?;
    }

    #[test]
    fn matches_a_naive_model_near_the_end_of_time(
        buckets in 1u32..12,
        bucket_nanos in 1u64..1000,
        ops in prop::collection::vec(op(u64::MAX - 20_000, 20_000), 1..60),
    ) {
        check_against_model(buckets, bucket_nanos, ops)?;
    }
}
