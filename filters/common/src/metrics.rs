//! Envoy stats: the `mesh.<filter>.<metric>` naming scheme ([`metric_name`]). Filters define
//! and update their stats through the filter kit ([`crate::kit::Counter`],
//! [`crate::kit::Gauge`]).

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
