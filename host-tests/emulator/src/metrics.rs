//! The host-wide stats store: metrics defined by any worker, looked up by name.
//!
//! Like Envoy's shared stats store, a name means one stat across all workers: counters are
//! summed, gauges hold the last value written, histograms keep every recorded sample.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::state::{lock, sorted_keys};

/// The kind of a metric, as passed to `proxy_define_metric`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Monotonic counter.
    Counter,
    /// Settable gauge.
    Gauge,
    /// Histogram of recorded samples.
    Histogram,
}

impl MetricKind {
    /// Maps the ABI's metric type number; `None` for an unknown number.
    pub fn from_abi(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::Counter),
            1 => Some(Self::Gauge),
            2 => Some(Self::Histogram),
            _ => None,
        }
    }
}

/// The current value of one metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricValue {
    /// A counter's total over all workers.
    Counter(u64),
    /// A gauge's last written value.
    Gauge(i64),
    /// Every sample recorded into a histogram, in order.
    Histogram(Vec<u64>),
}

/// Why a metric operation was refused (the host answers `BadArgument`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricError {
    /// The operation does not apply to this kind (e.g. a negative counter increment, or
    /// reading a histogram).
    BadArgument,
}

/// Metrics by name, shared by every worker of a host.
#[derive(Default)]
pub struct MetricsStore {
    values: Mutex<HashMap<String, MetricValue>>,
}

impl MetricsStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates `name` with a zero value unless it exists; redefining keeps the existing value.
    pub fn define(&self, name: &str, kind: MetricKind) {
        lock(&self.values)
            .entry(name.to_owned())
            .or_insert_with(|| match kind {
                MetricKind::Counter => MetricValue::Counter(0),
                MetricKind::Gauge => MetricValue::Gauge(0),
                MetricKind::Histogram => MetricValue::Histogram(Vec::new()),
            });
    }

    /// Adds `offset` to a counter (must be >= 0) or gauge.
    pub fn increment(&self, name: &str, offset: i64) -> Result<(), MetricError> {
        let mut values = lock(&self.values);
        match values.get_mut(name) {
            Some(MetricValue::Counter(total)) => {
                let offset = u64::try_from(offset).map_err(|_| MetricError::BadArgument)?;
                *total = total.saturating_add(offset);
                Ok(())
            }
            Some(MetricValue::Gauge(value)) => {
                *value = value.saturating_add(offset);
                Ok(())
            }
            _ => Err(MetricError::BadArgument),
        }
    }

    /// Records `value`: sets a gauge, appends a histogram sample, raises a counter to `value`
    /// when it is higher.
    pub fn record(&self, name: &str, value: u64) -> Result<(), MetricError> {
        let mut values = lock(&self.values);
        match values.get_mut(name) {
            Some(MetricValue::Counter(total)) => {
                *total = (*total).max(value);
                Ok(())
            }
            Some(MetricValue::Gauge(gauge)) => {
                *gauge = i64::from_ne_bytes(value.to_ne_bytes());
                Ok(())
            }
            Some(MetricValue::Histogram(samples)) => {
                samples.push(value);
                Ok(())
            }
            None => Err(MetricError::BadArgument),
        }
    }

    /// The value `proxy_get_metric` returns: a counter's total or a gauge's bits.
    pub fn read(&self, name: &str) -> Result<u64, MetricError> {
        match lock(&self.values).get(name) {
            Some(MetricValue::Counter(total)) => Ok(*total),
            Some(MetricValue::Gauge(value)) => Ok(u64::from_ne_bytes(value.to_ne_bytes())),
            _ => Err(MetricError::BadArgument),
        }
    }

    /// The metric called `name`, if any worker defined it.
    pub fn get(&self, name: &str) -> Option<MetricValue> {
        lock(&self.values).get(name).cloned()
    }

    /// Every defined metric name, sorted.
    pub fn names(&self) -> Vec<String> {
        sorted_keys(&lock(&self.values))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn counters_defined_by_several_workers_share_one_total() {
        let store = MetricsStore::new();
        store.define("mesh.f.requests", MetricKind::Counter);
        store.increment("mesh.f.requests", 2).unwrap();
        store.define("mesh.f.requests", MetricKind::Counter);
        store.increment("mesh.f.requests", 3).unwrap();
        assert_eq!(store.get("mesh.f.requests"), Some(MetricValue::Counter(5)));
        assert_eq!(
            store.increment("mesh.f.requests", -1),
            Err(MetricError::BadArgument)
        );
    }

    #[test]
    fn gauges_keep_the_last_value_and_accept_negative_steps() {
        let store = MetricsStore::new();
        store.define("g", MetricKind::Gauge);
        store.record("g", 10).unwrap();
        store.increment("g", -15).unwrap();
        assert_eq!(store.get("g"), Some(MetricValue::Gauge(-5)));
    }

    #[test]
    fn histograms_keep_samples_and_cannot_be_read_as_a_number() {
        let store = MetricsStore::new();
        store.define("h", MetricKind::Histogram);
        store.record("h", 7).unwrap();
        store.record("h", 9).unwrap();
        assert_eq!(store.get("h"), Some(MetricValue::Histogram(vec![7, 9])));
        assert_eq!(store.read("h"), Err(MetricError::BadArgument));
    }
}
