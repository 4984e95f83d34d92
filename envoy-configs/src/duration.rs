//! `google.protobuf.Duration` JSON encoding (`"1.500s"`) for `std::time::Duration` fields.

use serde::Serializer;
use std::time::Duration;

/// Formats a duration as proto3 JSON: whole seconds, then 3, 6 or 9 fractional digits if needed.
pub(crate) fn to_proto_json(duration: Duration) -> String {
    let (secs, nanos) = (duration.as_secs(), duration.subsec_nanos());
    if nanos == 0 {
        format!("{secs}s")
    } else if nanos % 1_000_000 == 0 {
        format!("{secs}.{:03}s", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!("{secs}.{:06}s", nanos / 1_000)
    } else {
        format!("{secs}.{nanos:09}s")
    }
}

/// `serialize_with` for a required `Duration` field.
pub(crate) fn serialize<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&to_proto_json(*duration))
}

/// `serialize_with` for an `Option<Duration>` field (pair it with `skip_serializing_if`).
pub(crate) fn serialize_opt<S: Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serialize(duration, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_the_shortest_proto_fraction() {
        assert_eq!(to_proto_json(Duration::from_secs(5)), "5s");
        assert_eq!(to_proto_json(Duration::from_millis(250)), "0.250s");
        assert_eq!(to_proto_json(Duration::from_micros(1_000_500)), "1.000500s");
        assert_eq!(to_proto_json(Duration::from_nanos(7)), "0.000000007s");
    }
}
