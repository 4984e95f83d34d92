//! [`Registry`]: which cluster serves each sandbox. The configured (static) entries, merged with
//! the dynamic registry's last good list, static entries winning a name both have.

use std::collections::BTreeMap;

/// The longest cluster name a registry entry may carry.
pub const MAX_CLUSTER_LENGTH: usize = 255;

/// Whether `cluster` can be an Envoy cluster name carried in the routing header: 1 to
/// [`MAX_CLUSTER_LENGTH`] ASCII letters, digits, '-', '_', '.', ':' or '|' (Istio's `outbound|80||svc`).
pub fn is_valid_cluster(cluster: &str) -> bool {
    !cluster.is_empty()
        && cluster.len() <= MAX_CLUSTER_LENGTH
        && cluster
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:|".contains(&b))
}

/// Sandbox name -> cluster name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    entries: BTreeMap<String, String>,
}

impl Registry {
    /// A registry of `entries` (name -> cluster), validated by the caller.
    pub fn new(entries: BTreeMap<String, String>) -> Registry {
        Registry { entries }
    }

    /// This registry with `dynamic`'s entries added where this one has no entry of that name.
    pub fn merged_with(&self, dynamic: &Registry) -> Registry {
        let mut entries = dynamic.entries.clone();
        entries.extend(
            self.entries
                .iter()
                .map(|(name, cluster)| (name.clone(), cluster.clone())),
        );
        Registry { entries }
    }

    /// The registered name and its cluster, for a name given as bytes.
    pub fn lookup(&self, name: &[u8]) -> Option<(&str, &str)> {
        let name = std::str::from_utf8(name).ok()?;
        self.entries
            .get_key_value(name)
            .map(|(name, cluster)| (name.as_str(), cluster.as_str()))
    }

    /// How many sandboxes are registered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no sandbox is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in name order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|(name, cluster)| (name.as_str(), cluster.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(entries: &[(&str, &str)]) -> Registry {
        Registry::new(
            entries
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_string()))
                .collect(),
        )
    }

    #[test]
    fn static_entries_win_over_dynamic_ones() {
        let fixed = registry(&[("a", "static_a")]);
        let dynamic = registry(&[("a", "dynamic_a"), ("b", "dynamic_b")]);
        let merged = fixed.merged_with(&dynamic);
        assert_eq!(merged.lookup(b"a"), Some(("a", "static_a")));
        assert_eq!(merged.lookup(b"b"), Some(("b", "dynamic_b")));
        assert_eq!(merged.lookup(b"c"), None);
        assert_eq!(merged.lookup(b"\xff"), None);
        assert_eq!(merged.len(), 2);
    }

    #[test]
    fn cluster_names_are_header_safe() {
        assert!(is_valid_cluster("sandbox_feature-x.v1:80"));
        assert!(is_valid_cluster("outbound|80||b.svc"));
        for bad in ["", "a b", "a\nb", "a/b", "é"] {
            assert!(!is_valid_cluster(bad), "{bad:?}");
        }
        assert!(!is_valid_cluster(&"a".repeat(MAX_CLUSTER_LENGTH + 1)));
    }
}
