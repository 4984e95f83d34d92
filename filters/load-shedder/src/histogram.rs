//! [`LatencyHistogram`]: the fixed-size latency summary of one measurement window.
//!
//! Latencies are kept in microseconds in log-linear buckets (the HdrHistogram layout with three
//! sub-bucket bits): values below 8 µs are exact, and every power of two above is split into 8
//! equal buckets, so a bucket is at most 12.5 % wide. Values from 2^27 µs (~134 s) up share the
//! last bucket. Counts are `u16` (a window closes long before 65,535 samples, see
//! [`crate::config::LimitConfig::window_max_samples`]) and saturate rather than wrap.
//!
//! A general-purpose histogram crate is not used because this one must be a few hundred bytes
//! with a fixed little-endian encoding: it lives inside the shared-data cell every worker
//! rewrites on each request.

use meshkit::bytes::{ByteReader, ByteWriter, DecodeError};

/// Sub-bucket bits: each power of two is split into `2^SUB_BITS` buckets.
const SUB_BITS: u32 = 3;
/// Buckets per power of two.
const SUB_COUNT: u64 = 1 << SUB_BITS;
/// The highest power of two with its own buckets; larger values land in the last bucket.
const TOP_MSB: u32 = 26;
/// Number of buckets.
pub const BUCKETS: usize =
    (SUB_COUNT as usize) + ((TOP_MSB - SUB_BITS + 1) as usize) * (SUB_COUNT as usize);
/// Size of [`LatencyHistogram::encode_into`]'s output in bytes.
pub const ENCODED_LEN: usize = BUCKETS * 2;

/// Counts of latency samples in log-linear microsecond buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: [u16; BUCKETS],
    total: u32,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS],
            total: 0,
        }
    }
}

impl LatencyHistogram {
    /// Records one sample of `micros` microseconds.
    pub fn record(&mut self, micros: u64) {
        let slot = &mut self.counts[bucket_index(micros)];
        if *slot < u16::MAX {
            *slot += 1;
            self.total += 1;
        }
    }

    /// Number of samples recorded (saturated buckets stop counting).
    pub fn count(&self) -> u32 {
        self.total
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The `quantile` (0.0..=1.0, clamped) of the recorded samples in microseconds, interpolated
    /// linearly inside the bucket that holds it; `None` when the histogram is empty.
    pub fn quantile(&self, quantile: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let q = if quantile.is_nan() {
            1.0
        } else {
            quantile.clamp(0.0, 1.0)
        };
        // 1-based rank of the wanted sample; at least the first.
        let rank = ((q * f64::from(self.total)).ceil() as u64).clamp(1, u64::from(self.total));
        let mut below = 0u64;
        for (index, &count) in self.counts.iter().enumerate() {
            let count = u64::from(count);
            if count == 0 {
                continue;
            }
            if below + count >= rank {
                let (low, width) = bucket_bounds(index);
                // Place the k-th of `count` samples at the centre of its 1/count slice.
                let offset = width * (2 * (rank - below) - 1) / (2 * count);
                return Some(low + offset);
            }
            below += count;
        }
        None
    }

    /// Appends the little-endian encoding ([`ENCODED_LEN`] bytes: one `u16` per bucket).
    pub fn encode_into(&self, out: &mut ByteWriter) {
        let mut bytes = [0u8; ENCODED_LEN];
        for (pair, count) in bytes.chunks_exact_mut(2).zip(&self.counts) {
            pair.copy_from_slice(&count.to_le_bytes());
        }
        out.bytes(&bytes);
    }

    /// Reads the [`ENCODED_LEN`] bytes [`LatencyHistogram::encode_into`] wrote.
    pub fn decode(input: &mut ByteReader) -> Result<Self, DecodeError> {
        let bytes = input.take(ENCODED_LEN)?;
        let mut histogram = Self::default();
        for (slot, pair) in histogram.counts.iter_mut().zip(bytes.chunks_exact(2)) {
            *slot = u16::from_le_bytes([pair[0], pair[1]]);
        }
        histogram.total = histogram.counts.iter().map(|&c| u32::from(c)).sum();
        Ok(histogram)
    }
}

/// The bucket holding `micros`.
fn bucket_index(micros: u64) -> usize {
    if micros < SUB_COUNT {
        return micros as usize;
    }
    let msb = 63 - micros.leading_zeros();
    if msb > TOP_MSB {
        return BUCKETS - 1;
    }
    let sub = (micros >> (msb - SUB_BITS)) & (SUB_COUNT - 1);
    (SUB_COUNT + u64::from(msb - SUB_BITS) * SUB_COUNT + sub) as usize
}

/// The lowest value and the width of bucket `index`.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB_COUNT {
        return (index, 1);
    }
    let octave = (index - SUB_COUNT) / SUB_COUNT;
    let sub = (index - SUB_COUNT) % SUB_COUNT;
    let shift = octave as u32;
    ((SUB_COUNT + sub) << shift, 1 << shift)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_values_are_exact() {
        let mut histogram = LatencyHistogram::default();
        for value in [0, 3, 7] {
            histogram.record(value);
        }
        assert_eq!(histogram.quantile(0.0), Some(0));
        assert_eq!(histogram.quantile(0.5), Some(3));
        assert_eq!(histogram.quantile(1.0), Some(7));
    }

    #[test]
    fn quantiles_of_a_uniform_spread_are_within_bucket_precision() {
        let mut histogram = LatencyHistogram::default();
        for value in 1..=10_000u64 {
            histogram.record(value * 10);
        }
        for (q, expected) in [(0.5, 50_000.0), (0.9, 90_000.0), (0.99, 99_000.0)] {
            let got = histogram.quantile(q).unwrap() as f64;
            assert!((got - expected).abs() / expected < 0.125, "q{q}: {got}");
        }
    }

    #[test]
    fn empty_histogram_has_no_quantile() {
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
    }

    #[test]
    fn huge_values_share_the_last_bucket_without_overflow() {
        let mut histogram = LatencyHistogram::default();
        histogram.record(u64::MAX);
        let top = histogram.quantile(1.0).unwrap();
        assert!(top >= 1 << TOP_MSB, "{top}");
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        let mut histogram = LatencyHistogram::default();
        for _ in 0..70_000 {
            histogram.record(5);
        }
        assert_eq!(histogram.count(), u32::from(u16::MAX));
        assert_eq!(histogram.quantile(0.5), Some(5));
    }

    #[test]
    fn decode_rejects_short_input() {
        let short = [0; ENCODED_LEN - 1];
        assert!(LatencyHistogram::decode(&mut ByteReader::new(&short, "histogram")).is_err());
        assert!(LatencyHistogram::decode(&mut ByteReader::new(&[], "histogram")).is_err());
    }

    proptest! {
        #[test]
        fn a_value_lands_in_a_bucket_that_contains_it(micros in 0u64..(1 << (TOP_MSB + 1))) {
            let (low, width) = bucket_bounds(bucket_index(micros));
            prop_assert!(low <= micros && micros < low + width);
            prop_assert!(width == 1 || width * SUB_COUNT <= low);
        }

        #[test]
        fn single_sample_quantile_is_within_bucket_error(micros in 1u64..(1 << TOP_MSB)) {
            let mut histogram = LatencyHistogram::default();
            histogram.record(micros);
            let got = histogram.quantile(0.5).unwrap();
            let error = got.abs_diff(micros) as f64 / micros as f64;
            prop_assert!(error <= 0.125, "{micros} -> {got}");
        }

        #[test]
        fn encoding_round_trips(samples in proptest::collection::vec(0u64..10_000_000, 0..100)) {
            let mut histogram = LatencyHistogram::default();
            samples.iter().for_each(|&v| histogram.record(v));
            prop_assert_eq!(histogram.count() as usize, samples.len());
            let mut out = ByteWriter::new();
            histogram.encode_into(&mut out);
            let bytes = out.into_vec();
            prop_assert_eq!(bytes.len(), ENCODED_LEN);
            let mut input = ByteReader::new(&bytes, "histogram");
            prop_assert_eq!(LatencyHistogram::decode(&mut input), Ok(histogram));
            prop_assert!(input.finish().is_ok());
        }
    }
}
