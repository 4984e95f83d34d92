//! The pure modules on a 32-bit target (`wasm32-unknown-unknown` under node), where `usize` is
//! 32 bits: timestamp math, sliding windows near the end of time, counters, byte decoding, config
//! and gRPC.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshkit::bytes::ByteReader;
use meshkit::clock::Timestamp;
use meshkit::config::{load_config, ConfigError, DurationMs, Validate, ROOT_PATH};
use meshkit::grpc::{is_grpc, parse_grpc_status, GrpcMethod, GrpcStatus};
use meshkit::shared::{
    CounterUpdate, MemoryStore, SharedCounter, SharedStore, SlidingWindowCounter, StoreError,
    UpdateError,
};
use meshkit::wire::{decode_header_map, encode_header_map};
use std::cell::Cell;
use std::time::Duration;
use wasm_bindgen_test::wasm_bindgen_test;

#[wasm_bindgen_test]
fn timestamp_math_saturates_near_u64_max() {
    let late = Timestamp::from_nanos(u64::MAX - 10);
    assert_eq!(
        late.saturating_add(Duration::from_secs(u64::MAX)),
        Timestamp::from_nanos(u64::MAX)
    );
    assert_eq!(
        late.saturating_duration_since(Timestamp::EPOCH),
        Duration::from_nanos(u64::MAX - 10)
    );
    assert_eq!(Timestamp::from_millis(u64::MAX / 2).as_nanos(), u64::MAX);
}

#[wasm_bindgen_test]
fn sliding_window_handles_timestamps_beyond_32_bits() {
    let store = MemoryStore::new();
    let mut window = SlidingWindowCounter::new("w", Duration::from_secs(10), 10).unwrap();
    let second = 1_000_000_000u64;
    let base = u64::MAX - 20 * second;
    assert_eq!(
        window.add(&store, Timestamp::from_nanos(base), 2).total(),
        Some(2)
    );
    let later = Timestamp::from_nanos(base + 9 * second);
    assert_eq!(window.add(&store, later, 3).total(), Some(5));
    assert_eq!(
        window.sum(&store, Timestamp::from_nanos(base + 10 * second)),
        Ok(3)
    );
    assert_eq!(window.sum(&store, Timestamp::from_nanos(u64::MAX)), Ok(0));
    // A gap of ~2^64 ns (far more than usize::MAX buckets on wasm32) resets the window.
    let _ = window.add(&store, Timestamp::EPOCH, 1);
    assert_eq!(
        window
            .add(&store, Timestamp::from_nanos(u64::MAX), 4)
            .total(),
        Some(4)
    );
}

/// A store that makes the first `losses` writes lose the CAS race.
struct RacingStore {
    inner: MemoryStore,
    losses: Cell<u32>,
}

impl SharedStore for RacingStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        if self.losses.get() > 0 {
            self.losses.set(self.losses.get() - 1);
            return Err(StoreError::CasMismatch);
        }
        self.inner.set(key, value, cas)
    }
}

#[wasm_bindgen_test]
fn shared_counter_defers_and_never_loses_increments() {
    let store = RacingStore {
        inner: MemoryStore::new(),
        losses: Cell::new(3),
    };
    let mut first = SharedCounter::new("c").with_max_retries(1);
    let mut second = SharedCounter::new("c").with_max_retries(1);
    for _ in 0..1_000 {
        let _ = first.add(&store, 1);
        let _ = second.add(&store, 2);
    }
    assert!(matches!(
        first.flush(&store),
        CounterUpdate::Applied { total: _ }
    ));
    assert!(second.flush(&store).total().is_some());
    assert_eq!(first.read(&store), Ok(3_000));

    let mut big = SharedCounter::new("big");
    assert_eq!(
        big.add(&store.inner, u64::MAX - 1).total(),
        Some(u64::MAX - 1)
    );
    assert_eq!(big.add(&store.inner, 3).total(), Some(u64::MAX));

    store.inner.set("junk", b"xyz", 0).unwrap();
    assert!(matches!(
        SharedCounter::new("junk").add(&store.inner, 1),
        CounterUpdate::Deferred {
            pending: 1,
            error: UpdateError::Decode(_)
        }
    ));
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Sample {
    timeout_ms: DurationMs,
    nested: Nested,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Nested {
    limit: u32,
}

impl Validate for Sample {
    fn validate(&self) -> Result<(), ConfigError> {
        meshkit::config::require_positive("timeout_ms", self.timeout_ms)
    }
}

#[wasm_bindgen_test]
fn config_errors_name_their_path() {
    let err = load_config::<Sample>(Some(br#"{"nested": {"limit": 4294967296}}"#)).unwrap_err();
    assert_eq!(err.path, "nested.limit");
    let err = load_config::<Sample>(Some(br#"{"nested": {"limt": 1}}"#)).unwrap_err();
    assert_eq!(err.path, "nested.limt");
    let err = load_config::<Sample>(Some(b"{")).unwrap_err();
    assert_eq!(err.path, ROOT_PATH);
    let err = load_config::<Sample>(None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration at `timeout_ms`: must be > 0 milliseconds (got 0)"
    );
    let ok = load_config::<Sample>(Some(br#"{"timeout_ms": 18446744073709551615}"#)).unwrap();
    assert_eq!(ok.timeout_ms.as_millis(), u64::MAX);
}

#[wasm_bindgen_test]
fn grpc_parsing_works_on_32_bit() {
    let method = GrpcMethod::parse(b"/pkg.Svc/Call").unwrap();
    assert_eq!((method.service(), method.method()), ("pkg.Svc", "Call"));
    assert_eq!(GrpcMethod::parse(b"/pkg.Svc/Call?x"), None);
    assert!(is_grpc(b"application/grpc+proto"));
    assert_eq!(parse_grpc_status(b"14"), Some(GrpcStatus::Unavailable));
    assert_eq!(parse_grpc_status(b"4294967310"), None);
    assert_eq!(GrpcStatus::from_code(u32::MAX), None);
}

#[wasm_bindgen_test]
fn header_maps_reject_lengths_that_overflow_32_bit_usize() {
    let mut encoded = encode_header_map(&[("k", "v")]);
    encoded[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_header_map(&encoded).is_err());
    let mut encoded = encode_header_map(&[("k", "v")]);
    encoded[..4].copy_from_slice(&(u32::MAX / 8).to_le_bytes());
    assert!(decode_header_map(&encoded).is_err());
}

#[wasm_bindgen_test]
fn byte_reads_past_a_32_bit_end_are_errors() {
    let bytes = [1u8, 0, 0, 0, 9];
    let mut input = ByteReader::new(&bytes, "test value");
    assert_eq!(input.u32(), Ok(1));
    assert!(input.take(usize::MAX).is_err());
    assert!(input.u64().is_err());
    assert_eq!(input.u8(), Ok(9));
    assert!(input.finish().is_ok());
}
