//! The shared state as the glue uses it: several workers updating one shared-data cell by
//! compare-and-swap, as Envoy's worker threads do.
// Threads: not on wasm32-wasip1, where `cargo xtask test` runs this crate's other tests.
#![cfg(not(target_os = "wasi"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use load_shedder::classify::{Criticality, Rank};
use load_shedder::config::ShedderConfig;
use load_shedder::policy::{Admission, Outcome, Policy, SharedState};
use meshkit::clock::Timestamp;
use meshkit::shared::{MemoryStore, SharedCell};
use std::time::Duration;

const KEY: &str = "mesh/load-shedder/state";
const WORKERS: usize = 4;
const REQUESTS: usize = 5_000;

#[test]
fn concurrent_workers_never_leak_or_overshoot_in_flight() {
    let policy = Policy::new(&ShedderConfig::default());
    let store = MemoryStore::new();
    let rank = Rank {
        criticality: Criticality::CriticalPlus,
        first_attempt: true,
    };
    let admitted_total: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let (policy, store) = (&policy, &store);
                scope.spawn(move || {
                    let mut admitted = 0;
                    let mut held = 0u32;
                    for request in 0..REQUESTS {
                        let now = Timestamp::from_millis((request * WORKERS + worker) as u64);
                        let mut decision = Admission::Shed;
                        let state =
                            SharedCell::<SharedState>::update(store, KEY, u32::MAX, |current| {
                                let mut state =
                                    current.unwrap_or_else(|| SharedState::new(policy, now));
                                decision = state.admit(policy, rank);
                                state
                            })
                            .unwrap();
                        assert!(state.in_flight() <= state.limit(policy));
                        if decision.is_admitted() {
                            admitted += 1;
                            held += 1;
                        }
                        // Each worker keeps up to 10 requests open (40 in all, above the limit of 20), then ends them.
                        if held == 10 || request + 1 == REQUESTS {
                            for _ in 0..held {
                                SharedCell::<SharedState>::update(
                                    store,
                                    KEY,
                                    u32::MAX,
                                    |current| {
                                        let mut state = current.unwrap();
                                        state.release(
                                            policy,
                                            now,
                                            Duration::from_millis(5),
                                            Outcome::Success,
                                        );
                                        state
                                    },
                                )
                                .unwrap();
                            }
                            held = 0;
                        }
                    }
                    admitted
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let state = SharedCell::<SharedState>::read(&store, KEY)
        .unwrap()
        .unwrap();
    assert_eq!(
        state.in_flight(),
        0,
        "every admitted request was released exactly once"
    );
    // How many are admitted depends on how the threads interleave; that some are is what makes
    // the accounting checks above meaningful.
    assert!(admitted_total > 0, "nothing was admitted");
}
