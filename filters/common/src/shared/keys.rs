//! Shared-data key names: [`KeySpace`] prefixes every key with `mesh/<namespace>/` so filters
//! and plugin instances cannot collide, and caps how many distinct keys one instance creates
//! (shared data is never freed while Envoy runs).

use std::collections::HashSet;
use std::fmt;

/// The longest key name (the part after the namespace), in bytes.
const MAX_KEY_NAME_LEN: usize = 128;

/// Why [`KeySpace::key`] refused a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The key space already holds its maximum number of distinct keys.
    LimitExceeded {
        /// The namespace that is full.
        namespace: String,
        /// Its key limit.
        max_keys: usize,
    },
    /// The name is empty, contains '/', or is longer than 128 bytes.
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::LimitExceeded {
                namespace,
                max_keys,
            } => write!(
                f,
                "shared-data namespace {namespace:?} already has its maximum of {max_keys} keys"
            ),
            KeyError::InvalidName { name, reason } => {
                write!(f, "invalid shared-data key name {name:?}: {reason}")
            }
        }
    }
}

impl std::error::Error for KeyError {}

/// A namespace of shared-data keys (`mesh/<namespace>/<name>`) with a bound on distinct names.
///
/// The namespace should identify the filter and its plugin instance (e.g. `"ratelimit.edge"`).
/// Names never contain '/', so keys of different namespaces cannot collide.
#[derive(Debug, Clone)]
pub struct KeySpace {
    namespace: String,
    max_keys: usize,
    names: HashSet<String>,
}

impl KeySpace {
    /// A key space for `namespace` that hands out at most `max_keys` distinct keys.
    pub fn new(namespace: impl Into<String>, max_keys: usize) -> KeySpace {
        KeySpace {
            namespace: namespace.into(),
            max_keys,
            names: HashSet::new(),
        }
    }

    /// The full key for `name`. Asking again for a known name is free; a new name counts
    /// against the limit.
    pub fn key(&mut self, name: &str) -> Result<String, KeyError> {
        let invalid = |reason| KeyError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if name.contains('/') {
            return Err(invalid("must not contain '/'"));
        }
        if name.len() > MAX_KEY_NAME_LEN {
            return Err(invalid("must be at most 128 bytes"));
        }
        if !self.names.contains(name) {
            if self.names.len() >= self.max_keys {
                return Err(KeyError::LimitExceeded {
                    namespace: self.namespace.clone(),
                    max_keys: self.max_keys,
                });
            }
            self.names.insert(name.to_owned());
        }
        Ok(format!("mesh/{}/{name}", self.namespace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced() {
        let mut keys = KeySpace::new("ratelimit.edge", 4);
        assert_eq!(keys.key("hits").unwrap(), "mesh/ratelimit.edge/hits");
    }

    #[test]
    fn limit_counts_distinct_names_only() {
        let mut keys = KeySpace::new("f", 2);
        keys.key("a").unwrap();
        keys.key("b").unwrap();
        keys.key("a").unwrap();
        let err = keys.key("c").unwrap_err();
        assert_eq!(
            err,
            KeyError::LimitExceeded {
                namespace: "f".into(),
                max_keys: 2
            }
        );
        assert_eq!(keys.key("b").unwrap(), "mesh/f/b", "known names still work");
    }

    #[test]
    fn invalid_names_are_rejected_without_using_the_budget() {
        let mut keys = KeySpace::new("f", 1);
        for bad in ["", "a/b", &"x".repeat(129)] {
            assert!(
                matches!(keys.key(bad), Err(KeyError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        assert!(
            keys.key(&"x".repeat(128)).is_ok(),
            "the one allowed key is still free"
        );
    }
}
