//! The dynamic registry, pure: the shared state every worker reads and the fetching worker
//! writes ([`SharedRegistry`]), the lease that makes one fetch per interval across workers
//! ([`SharedRegistry::claim`]), and the registry's answer ([`parse_list`]).
//!
//! A worker whose tick finds a fetch due (`refresh_interval` since the last claim) and no lease
//! held claims it in one CAS update: it records the claim time and holds the lease for the fetch
//! timeout, so exactly one worker dispatches the callout. A success replaces the entries (the
//! generation moves when they changed) and releases the lease; a failure, a non-200 answer or
//! garbage releases it and keeps the last good entries. A fetcher that vanished (VM reload)
//! loses its lease when the timeout passes.

use crate::key::is_valid_name;
use crate::registry::{is_valid_cluster, Registry};
use meshkit::bytes::{ByteReader, ByteWriter, DecodeError};
use meshkit::clock::Timestamp;
use meshkit::shared::SharedValue;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Most sandboxes a dynamic registry may list.
pub const MAX_DYNAMIC_SANDBOXES: usize = 1024;

/// The dynamic registry as all workers share it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedRegistry {
    /// Moves on every change of `entries`, so workers rebuild their registry only then.
    pub generation: u64,
    /// When the last fetch was claimed; `None` before the first.
    pub claimed_at: Option<Timestamp>,
    /// The claiming worker's fetch is in flight until then.
    pub lease_until: Option<Timestamp>,
    /// The last good list: sandbox name -> cluster.
    pub entries: BTreeMap<String, String>,
}

impl SharedRegistry {
    /// The layout version, part of the shared-data key.
    pub const FORMAT_VERSION: u8 = 1;

    /// Whether a fetch is due at `now` (a claim `interval` old, or none yet) and no lease is
    /// held.
    pub fn fetch_due(&self, now: Timestamp, interval: Duration) -> bool {
        let due = self
            .claimed_at
            .is_none_or(|claimed| now >= claimed.saturating_add(interval));
        let free = self.lease_until.is_none_or(|until| now >= until);
        due && free
    }

    /// Claims the fetch at `now` for `timeout` if it is due; `true` when this caller claimed it.
    pub fn claim(&mut self, now: Timestamp, interval: Duration, timeout: Duration) -> bool {
        if !self.fetch_due(now, interval) {
            return false;
        }
        self.claimed_at = Some(now);
        self.lease_until = Some(now.saturating_add(timeout));
        true
    }

    /// Records a successful fetch of `entries`, releasing the lease.
    pub fn record_success(&mut self, entries: BTreeMap<String, String>) {
        self.lease_until = None;
        if entries != self.entries {
            self.entries = entries;
            self.generation = self.generation.wrapping_add(1);
        }
    }

    /// Records a failed fetch, releasing the lease and keeping the last good entries.
    pub fn record_failure(&mut self) {
        self.lease_until = None;
    }

    /// The entries as a registry.
    pub fn registry(&self) -> Registry {
        Registry::new(self.entries.clone())
    }
}

fn nanos(time: Option<Timestamp>) -> u64 {
    time.map_or(0, Timestamp::as_nanos)
}

fn time(nanos: u64) -> Option<Timestamp> {
    (nanos != 0).then(|| Timestamp::from_nanos(nanos))
}

fn put_text(out: &mut ByteWriter, text: &str) {
    out.u32(u32::try_from(text.len()).unwrap_or(u32::MAX));
    out.bytes(text.as_bytes());
}

fn take_text(input: &mut ByteReader<'_>) -> Result<String, DecodeError> {
    let length = usize::try_from(input.u32()?).unwrap_or(usize::MAX);
    let bytes = input.take(length)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| DecodeError::new("sandbox registry", "an entry is not UTF-8"))
}

impl SharedValue for SharedRegistry {
    fn encode(&self) -> Vec<u8> {
        let mut out = ByteWriter::new();
        out.u8(Self::FORMAT_VERSION)
            .u64(self.generation)
            .u64(nanos(self.claimed_at))
            .u64(nanos(self.lease_until))
            .u32(u32::try_from(self.entries.len()).unwrap_or(u32::MAX));
        for (name, cluster) in &self.entries {
            put_text(&mut out, name);
            put_text(&mut out, cluster);
        }
        out.into_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = ByteReader::new(bytes, "sandbox registry");
        let version = input.u8()?;
        if version != Self::FORMAT_VERSION {
            return Err(DecodeError::new(
                "sandbox registry",
                format!("layout version {version}"),
            ));
        }
        let generation = input.u64()?;
        let claimed_at = time(input.u64()?);
        let lease_until = time(input.u64()?);
        let count = usize::try_from(input.u32()?).unwrap_or(usize::MAX);
        if count > MAX_DYNAMIC_SANDBOXES {
            return Err(DecodeError::new(
                "sandbox registry",
                format!("{count} entries"),
            ));
        }
        let mut entries = BTreeMap::new();
        for _ in 0..count {
            let name = take_text(&mut input)?;
            let cluster = take_text(&mut input)?;
            entries.insert(name, cluster);
        }
        input.finish()?;
        Ok(SharedRegistry {
            generation,
            claimed_at,
            lease_until,
            entries,
        })
    }
}

/// One entry of the registry's answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListedSandbox {
    name: String,
    cluster: String,
}

/// The registry's answer — a JSON list of `{"name": ..., "cluster": ...}` — as name -> cluster;
/// an error saying why when it is not that, has more than [`MAX_DYNAMIC_SANDBOXES`] entries, or
/// any entry has an invalid name (charset, `max_key_length`) or cluster, or repeats a name.
pub fn parse_list(body: &[u8], max_key_length: usize) -> Result<BTreeMap<String, String>, String> {
    let listed: Vec<ListedSandbox> = serde_json::from_slice(body)
        .map_err(|err| format!("not a JSON list of {{name, cluster}}: {err}"))?;
    if listed.len() > MAX_DYNAMIC_SANDBOXES {
        return Err(format!(
            "{} sandboxes, more than {MAX_DYNAMIC_SANDBOXES}",
            listed.len()
        ));
    }
    let mut entries = BTreeMap::new();
    for (index, entry) in listed.into_iter().enumerate() {
        if !is_valid_name(entry.name.as_bytes(), max_key_length) {
            return Err(format!(
                "[{index}].name {:?} is not a sandbox name",
                entry.name
            ));
        }
        if !is_valid_cluster(&entry.cluster) {
            return Err(format!(
                "[{index}].cluster {:?} is not a cluster name",
                entry.cluster
            ));
        }
        if entries.insert(entry.name.clone(), entry.cluster).is_some() {
            return Err(format!("[{index}].name {:?} is listed twice", entry.name));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn at(seconds: u64) -> Timestamp {
        Timestamp::from_nanos(seconds * 1_000_000_000)
    }

    #[test]
    fn one_claim_per_interval_and_none_while_a_lease_is_held() {
        let mut state = SharedRegistry::default();
        assert!(state.claim(at(1), 10 * SECOND, 2 * SECOND));
        assert!(
            !state.claim(at(1), 10 * SECOND, 2 * SECOND),
            "already claimed"
        );
        state.record_success(BTreeMap::new());
        assert!(!state.claim(at(10), 10 * SECOND, 2 * SECOND), "not yet due");
        assert!(state.claim(at(11), 10 * SECOND, 2 * SECOND));
        // The fetcher vanished: its lease expires, and the next claim waits for the interval.
        assert!(!state.claim(at(12), 10 * SECOND, 2 * SECOND));
        assert!(!state.claim(at(20), 10 * SECOND, 2 * SECOND));
        assert!(state.claim(at(21), 10 * SECOND, 2 * SECOND));
    }

    #[test]
    fn a_long_timeout_holds_the_lease_past_the_interval() {
        let mut state = SharedRegistry::default();
        assert!(state.claim(at(1), SECOND, 5 * SECOND));
        assert!(!state.claim(at(3), SECOND, 5 * SECOND));
        assert!(state.claim(at(6), SECOND, 5 * SECOND));
    }

    #[test]
    fn failures_keep_the_last_good_entries_and_changes_move_the_generation() {
        let mut state = SharedRegistry::default();
        let list = BTreeMap::from([("a".to_owned(), "c_a".to_owned())]);
        state.claim(at(1), SECOND, SECOND / 2);
        state.record_success(list.clone());
        assert_eq!(state.generation, 1);
        state.claim(at(2), SECOND, SECOND / 2);
        state.record_failure();
        assert_eq!((state.generation, &state.entries), (1, &list));
        assert_eq!(state.lease_until, None);
        state.record_success(list.clone());
        assert_eq!(state.generation, 1, "unchanged list");
        state.record_success(BTreeMap::new());
        assert_eq!(state.generation, 2);
    }

    #[test]
    fn the_shared_encoding_round_trips_and_rejects_garbage() {
        let state = SharedRegistry {
            generation: 7,
            claimed_at: Some(at(3)),
            lease_until: None,
            entries: BTreeMap::from([
                ("a".to_owned(), "c_a".to_owned()),
                ("b-2".to_owned(), "outbound|80||b".to_owned()),
            ]),
        };
        let encoded = state.encode();
        assert_eq!(SharedRegistry::decode(&encoded), Ok(state));
        for cut in 0..encoded.len() {
            assert!(SharedRegistry::decode(&encoded[..cut]).is_err(), "{cut}");
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert!(SharedRegistry::decode(&longer).is_err());
        let mut other_version = encoded;
        other_version[0] = 2;
        assert!(SharedRegistry::decode(&other_version).is_err());
    }

    #[test]
    fn the_registry_answer_is_validated_entry_by_entry() {
        let list = parse_list(
            br#"[{"name": "feature-x", "cluster": "sandbox_x"}, {"name": "b", "cluster": "c_b"}]"#,
            63,
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list["feature-x"], "sandbox_x");
        assert_eq!(parse_list(b"[]", 63), Ok(BTreeMap::new()));
        for (bad, needle) in [
            (&b"<html>"[..], "not a JSON list"),
            (br#"{"name": "a", "cluster": "c"}"#, "not a JSON list"),
            (br#"[{"name": "a"}]"#, "not a JSON list"),
            (
                br#"[{"name": "a", "cluster": "c", "x": 1}]"#,
                "not a JSON list",
            ),
            (br#"[{"name": "a.b", "cluster": "c"}]"#, "[0].name"),
            (br#"[{"name": "abcd", "cluster": "c"}]"#, "[0].name"),
            (br#"[{"name": "a", "cluster": "c d"}]"#, "[0].cluster"),
            (
                br#"[{"name": "a", "cluster": "c"}, {"name": "a", "cluster": "d"}]"#,
                "listed twice",
            ),
            (b"\xff\xfe", "not a JSON list"),
        ] {
            let err = parse_list(bad, 3).unwrap_err();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
        let many: Vec<String> = (0..=MAX_DYNAMIC_SANDBOXES)
            .map(|i| format!(r#"{{"name": "s{i}", "cluster": "c"}}"#))
            .collect();
        let err = parse_list(format!("[{}]", many.join(",")).as_bytes(), 63).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }
}
