//! Where each mesh filter sits in the sidecar, and what a dead VM of it means for traffic
//! (its failure policy, with the reason). A filter joins with its slot(s) here.

use crate::FailurePolicy;

/// Which listener a filter runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Inbound: requests other services send to this one.
    Ingress,
    /// Outbound: requests this service's app sends to its dependencies.
    Egress,
}

impl Side {
    /// `ingress` or `egress`: the listener's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// One filter's place in one listener's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The filter (crate, catalog entry, suite section name).
    pub filter: &'static str,
    /// Its listener.
    pub side: Side,
    /// What it does to traffic there, in one sentence.
    pub does: &'static str,
    /// What requests get while its VM is dead.
    pub failure_policy: FailurePolicy,
    /// Why that policy.
    pub failure_reason: &'static str,
}

/// Both chains, each in request order (the router follows the last filter of each listener).
pub const CHAIN: &[Slot] = &[
    Slot {
        filter: "drain-signal",
        side: Side::Ingress,
        does: "on shutdown, fails health checks, then makes clients reconnect elsewhere",
        failure_policy: FailurePolicy::FailOpen,
        failure_reason: "a dead drain signal must not refuse traffic; Envoy's own drain still closes connections",
    },
    Slot {
        filter: "load-shedder",
        side: Side::Ingress,
        does: "admits requests up to an adaptive concurrency limit and sheds the least critical first (503 / gRPC UNAVAILABLE with retry-after)",
        failure_policy: FailurePolicy::FailOpen,
        failure_reason: "a protection must not become the outage: without it the service is as unprotected as without the mesh, not down",
    },
    Slot {
        filter: "retry-budget",
        side: Side::Ingress,
        does: "server role: counts this service's inbound retries against its budget",
        failure_policy: FailurePolicy::FailOpen,
        failure_reason: "counting only: traffic must flow without it",
    },
    Slot {
        filter: "sandbox-router",
        side: Side::Ingress,
        does: "sends requests carrying a sandbox key to that sandbox's deployment",
        failure_policy: FailurePolicy::FailClosed,
        failure_reason: "a sandbox request must never reach production; 503s are visible, leaked test traffic is not",
    },
    // First on egress: the retry budget then keys on the cluster the sandbox router picked, and
    // the fail-closed filter needs one suite plugin of its own, not one between two others.
    Slot {
        filter: "sandbox-router",
        side: Side::Egress,
        does: "keeps a sandbox request's calls inside the sandbox",
        failure_policy: FailurePolicy::FailClosed,
        failure_reason: "a sandbox request must never reach production; 503s are visible, leaked test traffic is not",
    },
    Slot {
        filter: "retry-budget",
        side: Side::Egress,
        does: "client role: allows a retry only while retries stay within a fraction of traffic",
        failure_policy: FailurePolicy::FailOpen,
        failure_reason: "without it retries fall back to each route's bounded retry count",
    },
    Slot {
        filter: "entity-cache",
        side: Side::Egress,
        does: "serves cacheable gRPC methods from the entity cache, falling back to the origin",
        failure_policy: FailurePolicy::FailOpen,
        failure_reason: "the origin serves every request the cache would have",
    },
];

/// Whether `filter` runs on both listeners (its instances are then named per listener).
pub fn on_both_sides(filter: &str) -> bool {
    let mut sides = CHAIN
        .iter()
        .filter(|slot| slot.filter == filter)
        .map(|slot| slot.side);
    matches!((sides.next(), sides.next()), (Some(a), Some(b)) if a != b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_slot_names_a_filter_the_spec_has_a_section_for() {
        let all = r#"{"drain_signal": {}, "load_shedder": {}, "retry_budget": {"server": {}, "client": {}},
                      "sandbox_router": {}, "entity_cache": {}}"#;
        let specs: crate::compose::spec::FilterSpecs = serde_json::from_str(all).unwrap();
        let sections = specs.sections().unwrap();
        for slot in CHAIN {
            assert!(
                sections.iter().any(|section| section.filter == slot.filter),
                "{} has no spec section",
                slot.filter
            );
        }
    }

    #[test]
    fn ingress_slots_come_before_egress_slots() {
        let first_egress = CHAIN
            .iter()
            .position(|s| s.side == Side::Egress)
            .unwrap_or(CHAIN.len());
        assert!(CHAIN[first_egress..].iter().all(|s| s.side == Side::Egress));
        assert!(on_both_sides("retry-budget"));
        assert!(!on_both_sides("load-shedder"));
    }
}
