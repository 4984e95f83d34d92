//! Envoy stats: the `mesh.<filter>.<metric>` naming scheme ([`metric_name`]) and (wasm32)
//! [`Counter`], [`Gauge`] and [`Histogram`] handles that never panic: a metric the host refused
//! to define is logged once and its handle does nothing.

use std::fmt;

/// A filter or metric name that cannot form a stat name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMetricName {
    name: String,
    reason: &'static str,
}

impl fmt::Display for InvalidMetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid metric name {:?}: {}", self.name, self.reason)
    }
}

impl std::error::Error for InvalidMetricName {}

/// The stat name `mesh.<filter>.<metric>`, with '-' in the filter name turned into '_'.
///
/// The filter name may contain ASCII letters, digits, '_' and '-'; the metric name ASCII
/// letters, digits and '_', in '.'-separated non-empty segments (e.g. `requests.rejected`).
pub fn metric_name(filter: &str, metric: &str) -> Result<String, InvalidMetricName> {
    let invalid = |name: &str, reason| InvalidMetricName {
        name: name.to_owned(),
        reason,
    };
    if filter.is_empty() {
        return Err(invalid(filter, "filter name is empty"));
    }
    if !filter
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(invalid(
            filter,
            "filter names may only use ASCII letters, digits, '_' and '-'",
        ));
    }
    if metric.split('.').any(str::is_empty) {
        return Err(invalid(
            metric,
            "metric names need non-empty '.'-separated segments",
        ));
    }
    if !metric
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(invalid(
            metric,
            "metric names may only use ASCII letters, digits, '_' and '.'",
        ));
    }
    Ok(format!("mesh.{}.{metric}", filter.replace('-', "_")))
}

#[cfg(target_arch = "wasm32")]
pub use host::{Counter, Gauge, Histogram};

#[cfg(target_arch = "wasm32")]
mod host {
    use super::metric_name;
    use crate::ffi;
    use proxy_wasm::types::MetricType;

    /// Defines a metric, logging (not panicking) when the name or the host refuses it.
    fn define(metric_type: MetricType, filter: &str, metric: &str) -> Option<u32> {
        let name = match metric_name(filter, metric) {
            Ok(name) => name,
            Err(err) => {
                log::error!("{filter}: {err}; the metric will not be recorded");
                return None;
            }
        };
        match ffi::define_metric(metric_type as u32, &name) {
            Ok(id) => Some(id),
            Err(err) => {
                log::error!(
                    "{filter}: cannot define metric {name}: {err}; it will not be recorded"
                );
                None
            }
        }
    }

    fn report(result: Result<(), crate::error::HostError>, id: u32) {
        if let Err(err) = result {
            log::debug!("metric {id} not updated: {err}");
        }
    }

    /// A monotonically increasing counter stat.
    #[derive(Debug, Clone, Copy)]
    pub struct Counter {
        id: Option<u32>,
    }

    impl Counter {
        /// Defines `mesh.<filter>.<name>` as a counter; on failure, a handle that does nothing.
        pub fn define(filter: &str, name: &str) -> Self {
            Self {
                id: define(MetricType::Counter, filter, name),
            }
        }

        /// Adds `delta` (values above `i64::MAX` are clamped).
        pub fn increment(&self, delta: u64) {
            if let Some(id) = self.id {
                let delta = i64::try_from(delta).unwrap_or(i64::MAX);
                report(ffi::increment_metric(id, delta), id);
            }
        }
    }

    /// A gauge stat: a value that goes up and down.
    #[derive(Debug, Clone, Copy)]
    pub struct Gauge {
        id: Option<u32>,
    }

    impl Gauge {
        /// Defines `mesh.<filter>.<name>` as a gauge; on failure, a handle that does nothing.
        pub fn define(filter: &str, name: &str) -> Self {
            Self {
                id: define(MetricType::Gauge, filter, name),
            }
        }

        /// Sets the gauge to `value` (Envoy gauges are unsigned).
        pub fn set(&self, value: u64) {
            if let Some(id) = self.id {
                report(ffi::record_metric(id, value), id);
            }
        }
    }

    /// A histogram stat: a distribution of recorded samples.
    #[derive(Debug, Clone, Copy)]
    pub struct Histogram {
        id: Option<u32>,
    }

    impl Histogram {
        /// Defines `mesh.<filter>.<name>` as a histogram; on failure, a handle that does nothing.
        pub fn define(filter: &str, name: &str) -> Self {
            Self {
                id: define(MetricType::Histogram, filter, name),
            }
        }

        /// Records one sample.
        pub fn record(&self, value: u64) {
            if let Some(id) = self.id {
                report(ffi::record_metric(id, value), id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_mesh_scheme() {
        assert_eq!(
            metric_name("rate-limit", "requests.rejected").unwrap(),
            "mesh.rate_limit.requests.rejected"
        );
        assert_eq!(
            metric_name("authz", "denied_total").unwrap(),
            "mesh.authz.denied_total"
        );
    }

    #[test]
    fn rejects_names_that_would_break_stat_parsing() {
        for (filter, metric) in [
            ("", "m"),
            ("a.b", "m"),
            ("a b", "m"),
            ("f", ""),
            ("f", ".m"),
            ("f", "m."),
            ("f", "a..b"),
            ("f", "m-x"),
            ("f", "métric"),
        ] {
            assert!(
                metric_name(filter, metric).is_err(),
                "{filter:?} {metric:?} accepted"
            );
        }
    }
}
