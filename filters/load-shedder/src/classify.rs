//! Request ranking: [`classify`] turns a request's criticality header, path and attempt number
//! into a [`RequestClass`] — either [`RequestClass::Bypass`] (never counted nor shed) or a
//! [`Rank`] that orders requests for shedding.
//!
//! Precedence: a bypass path wins; then a *known* criticality header value; then the longest
//! matching `criticality.routes` rule; then `critical`. The header wins over the mapping because
//! criticality is propagated along a call chain from the request that started it, while the
//! mapping is the service owner's default for callers that say nothing; operators who do not
//! trust callers set `criticality.header` to `null`.
//!
//! Every input is arbitrary bytes (non-UTF-8, huge): classification never panics and never
//! allocates.

use crate::config::ShedderConfig;
use serde::{Deserialize, Serialize};

/// How important a request is; later variants are more important and are shed last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Criticality {
    /// Shed first: work nobody waits for (batch, prefetch).
    Sheddable,
    /// Shed before `critical`: degradable work.
    SheddablePlus,
    /// The default: user-facing work.
    Critical,
    /// Shed last: work whose failure is worse than the overload.
    CriticalPlus,
}

impl Criticality {
    /// Every criticality, least important first.
    pub const ALL: [Criticality; 4] = [
        Criticality::Sheddable,
        Criticality::SheddablePlus,
        Criticality::Critical,
        Criticality::CriticalPlus,
    ];

    /// The header value naming this criticality, e.g. `critical-plus`.
    pub fn name(self) -> &'static str {
        match self {
            Criticality::Sheddable => "sheddable",
            Criticality::SheddablePlus => "sheddable-plus",
            Criticality::Critical => "critical",
            Criticality::CriticalPlus => "critical-plus",
        }
    }

    /// Parses a header value: surrounding whitespace ignored, ASCII case-insensitive, `_` and
    /// `-` interchangeable (so `CRITICAL_PLUS` works). `None` for anything else.
    pub fn parse(value: &[u8]) -> Option<Criticality> {
        let value = value.trim_ascii();
        Criticality::ALL.into_iter().find(|criticality| {
            let name = criticality.name().as_bytes();
            name.len() == value.len()
                && name.iter().zip(value).all(|(&expected, &got)| {
                    let got = if got == b'_' {
                        b'-'
                    } else {
                        got.to_ascii_lowercase()
                    };
                    expected == got
                })
        })
    }
}

/// A counted request's place in the shedding order: by criticality, then first attempts above
/// retries. Ordered: `a < b` means `a` is shed no later than `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    /// The request's criticality.
    pub criticality: Criticality,
    /// `true` for a first attempt, `false` for a retry (so first attempts order higher).
    pub first_attempt: bool,
}

impl Rank {
    /// Number of distinct ranks.
    pub const COUNT: usize = 8;

    /// A dense index in `0..Rank::COUNT`, in rank order.
    pub fn index(self) -> usize {
        (self.criticality as usize) * 2 + usize::from(self.first_attempt)
    }
}

/// What the shedder does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestClass {
    /// A bypass path: neither counted nor shed.
    Bypass,
    /// Counted, and shed according to its rank.
    Ranked(Rank),
}

/// Classifies a request from its criticality header value, `:path` and attempt-count header
/// value (see the module doc for precedence).
pub fn classify(
    header: Option<&[u8]>,
    path: &[u8],
    attempt: Option<&[u8]>,
    config: &ShedderConfig,
) -> RequestClass {
    let without_query = path.split(|&b| b == b'?').next().unwrap_or_default();
    if config
        .bypass_paths
        .iter()
        .any(|bypass| bypass.as_bytes() == without_query)
    {
        return RequestClass::Bypass;
    }
    let from_header = if config.criticality.header.is_some() {
        header.and_then(Criticality::parse)
    } else {
        None
    };
    let criticality = from_header
        .or_else(|| mapped_criticality(path, config))
        .unwrap_or(Criticality::Critical);
    let first_attempt = config.criticality.attempt_header.is_none() || !is_retry(attempt);
    RequestClass::Ranked(Rank {
        criticality,
        first_attempt,
    })
}

/// The criticality of the longest `criticality.routes` rule matching `path`.
fn mapped_criticality(path: &[u8], config: &ShedderConfig) -> Option<Criticality> {
    let mut best: Option<(usize, Criticality)> = None;
    for route in &config.criticality.routes {
        let matched_len = match (&route.path_prefix, &route.grpc_method) {
            (Some(prefix), _) => path.starts_with(prefix.as_bytes()).then_some(prefix.len()),
            (None, Some(method)) => {
                let exact = path.first() == Some(&b'/') && &path[1..] == method.as_bytes();
                exact.then_some(path.len())
            }
            (None, None) => None,
        };
        if let Some(len) = matched_len {
            if best.is_none_or(|(best_len, _)| len > best_len) {
                best = Some((len, route.criticality));
            }
        }
    }
    best.map(|(_, criticality)| criticality)
}

/// Whether an attempt-count header value says this is a retry: a decimal number above 1
/// (surrounding whitespace ignored). Anything unparseable is a first attempt.
fn is_retry(attempt: Option<&[u8]>) -> bool {
    let Some(value) = attempt.map(<[u8]>::trim_ascii) else {
        return false;
    };
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return false;
    }
    // Any number with a nonzero digit before the last position is >= 10; otherwise compare
    // the last digit.
    let (last, leading) = value.split_last().unwrap_or((&b'0', &[]));
    leading.iter().any(|&d| d != b'0') || *last > b'1'
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::config::CriticalityRoute;
    use proptest::prelude::*;

    fn rank(criticality: Criticality, first_attempt: bool) -> RequestClass {
        RequestClass::Ranked(Rank {
            criticality,
            first_attempt,
        })
    }

    fn config_with_routes() -> ShedderConfig {
        let mut config = ShedderConfig {
            bypass_paths: vec!["/healthz".into()],
            ..ShedderConfig::default()
        };
        config.criticality.routes = vec![
            CriticalityRoute {
                path_prefix: Some("/api/".into()),
                grpc_method: None,
                criticality: Criticality::SheddablePlus,
            },
            CriticalityRoute {
                path_prefix: Some("/api/batch/".into()),
                grpc_method: None,
                criticality: Criticality::Sheddable,
            },
            CriticalityRoute {
                path_prefix: None,
                grpc_method: Some("pkg.Pay/Charge".into()),
                criticality: Criticality::CriticalPlus,
            },
        ];
        config
    }

    #[test]
    fn header_values_parse_leniently() {
        for (value, expected) in [
            (&b"critical-plus"[..], Some(Criticality::CriticalPlus)),
            (b"CRITICAL_PLUS", Some(Criticality::CriticalPlus)),
            (b" sheddable ", Some(Criticality::Sheddable)),
            (b"Sheddable-Plus", Some(Criticality::SheddablePlus)),
            (b"critical", Some(Criticality::Critical)),
            (b"critical-plus-plus", None),
            (b"", None),
            (&[0xff, 0xfe][..], None),
        ] {
            assert_eq!(Criticality::parse(value), expected, "{value:?}");
        }
    }

    #[test]
    fn absent_or_unknown_header_is_critical() {
        let config = ShedderConfig::default();
        assert_eq!(
            classify(None, b"/", None, &config),
            rank(Criticality::Critical, true)
        );
        assert_eq!(
            classify(Some(b"urgent"), b"/", None, &config),
            rank(Criticality::Critical, true)
        );
    }

    #[test]
    fn longest_matching_route_wins_and_grpc_methods_match_exactly() {
        let config = config_with_routes();
        let of = |path: &[u8]| classify(None, path, None, &config);
        assert_eq!(of(b"/api/users"), rank(Criticality::SheddablePlus, true));
        assert_eq!(of(b"/api/batch/jobs"), rank(Criticality::Sheddable, true));
        assert_eq!(
            of(b"/pkg.Pay/Charge"),
            rank(Criticality::CriticalPlus, true)
        );
        assert_eq!(of(b"/pkg.Pay/ChargeAll"), rank(Criticality::Critical, true));
        assert_eq!(of(b"/other"), rank(Criticality::Critical, true));
    }

    #[test]
    fn known_header_wins_over_mapping_unless_header_is_disabled() {
        let mut config = config_with_routes();
        assert_eq!(
            classify(Some(b"critical-plus"), b"/api/batch/x", None, &config),
            rank(Criticality::CriticalPlus, true)
        );
        assert_eq!(
            classify(Some(b"bogus"), b"/api/batch/x", None, &config),
            rank(Criticality::Sheddable, true)
        );
        config.criticality.header = None;
        assert_eq!(
            classify(Some(b"critical-plus"), b"/api/batch/x", None, &config),
            rank(Criticality::Sheddable, true)
        );
    }

    #[test]
    fn bypass_paths_ignore_the_query_and_match_exactly() {
        let config = config_with_routes();
        assert_eq!(
            classify(None, b"/healthz", None, &config),
            RequestClass::Bypass
        );
        assert_eq!(
            classify(None, b"/healthz?full=1", None, &config),
            RequestClass::Bypass
        );
        assert_eq!(
            classify(None, b"/healthzz", None, &config),
            rank(Criticality::Critical, true)
        );
    }

    #[test]
    fn attempts_above_one_are_retries() {
        let config = ShedderConfig::default();
        let retry = |value: &[u8]| classify(None, b"/", Some(value), &config);
        for first in [&b"1"[..], b"0", b"001", b"", b"x", b"-3", b"1.5"] {
            assert_eq!(retry(first), rank(Criticality::Critical, true), "{first:?}");
        }
        for again in [
            &b"2"[..],
            b" 3 ",
            b"10",
            b"0002",
            b"99999999999999999999999999",
        ] {
            assert_eq!(
                retry(again),
                rank(Criticality::Critical, false),
                "{again:?}"
            );
        }
        let mut ignoring = ShedderConfig::default();
        ignoring.criticality.attempt_header = None;
        assert_eq!(
            classify(None, b"/", Some(b"5"), &ignoring),
            rank(Criticality::Critical, true)
        );
    }

    #[test]
    fn rank_order_puts_retries_below_first_attempts_of_the_same_criticality() {
        let mut ranks: Vec<Rank> = Criticality::ALL
            .into_iter()
            .flat_map(|criticality| {
                [false, true].map(|first_attempt| Rank {
                    criticality,
                    first_attempt,
                })
            })
            .collect();
        let by_index: Vec<usize> = ranks.iter().map(|r| r.index()).collect();
        assert_eq!(by_index, (0..Rank::COUNT).collect::<Vec<_>>());
        ranks.reverse();
        ranks.sort();
        assert_eq!(
            ranks.iter().map(|r| r.index()).collect::<Vec<_>>(),
            by_index
        );
    }

    proptest! {
        #[test]
        fn classify_never_panics_on_arbitrary_bytes(
            header in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            path in proptest::collection::vec(any::<u8>(), 0..64),
            attempt in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        ) {
            let config = config_with_routes();
            let _ = classify(header.as_deref(), &path, attempt.as_deref(), &config);
        }
    }

    #[test]
    fn huge_values_are_handled() {
        let config = config_with_routes();
        let huge = vec![b'9'; 1 << 20];
        let class = classify(Some(&huge), &huge, Some(&huge), &config);
        assert_eq!(class, rank(Criticality::Critical, false));
    }
}
