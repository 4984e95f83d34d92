//! Property tests: every parser of client bytes (source address, bearer token) and of
//! configuration text (CIDR), and the shared state's decoder, on arbitrary input; the state
//! machine's invariants over arbitrary event sequences.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drain_signal::access::{bearer_token, parse_cidr, parse_source_address, Access};
use drain_signal::policy::{Decision, DrainState, Event, Phase, Policy};
use meshkit::clock::Timestamp;
use meshkit::shared::SharedValue;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

fn event() -> impl Strategy<Value = (u8, u64)> {
    (0u8..4, 0u64..5_000)
}

proptest! {
    #[test]
    fn source_addresses_parse_or_not_without_panicking(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_source_address(&raw);
        let access = Access::new(vec![parse_cidr("127.0.0.0/8").unwrap()], Some("t"));
        let _ = access.check_trigger(Some(&raw), Some(&raw));
    }

    #[test]
    fn socket_addresses_parse_to_their_ip(ip in any::<IpAddr>(), port in any::<u16>()) {
        let text = SocketAddr::new(ip, port).to_string();
        prop_assert_eq!(parse_source_address(text.as_bytes()), Some(ip.to_canonical()));
        prop_assert_eq!(parse_source_address(ip.to_string().as_bytes()), Some(ip.to_canonical()));
    }

    #[test]
    fn cidrs_parse_or_not_without_panicking(text in ".{0,48}") {
        let _ = parse_cidr(&text);
    }

    #[test]
    fn an_ipv4_cidr_contains_exactly_the_addresses_sharing_its_prefix(
        network in any::<u32>(), prefix in 0u8..=32, address in any::<u32>()
    ) {
        let net = parse_cidr(&format!("{}/{prefix}", Ipv4Addr::from(network))).unwrap();
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let inside = network & mask == address & mask;
        let source = format!("{}:80", Ipv4Addr::from(address));
        let access = Access::new(vec![net], None);
        prop_assert_eq!(access.check_source(Some(source.as_bytes())).is_ok(), inside);
    }

    #[test]
    fn bearer_tokens_parse_or_not_without_panicking(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Some(token) = bearer_token(&raw) {
            prop_assert!(!token.is_empty());
            prop_assert!(raw.len() > token.len() + 6);
        }
    }

    #[test]
    fn only_the_exact_token_is_accepted(token in "[!-~]{1,40}", presented in "[!-~]{0,40}") {
        let access = Access::new(vec![parse_cidr("0.0.0.0/0").unwrap()], Some(&token));
        let header = format!("Bearer {presented}");
        let accepted = access.check_trigger(Some(b"1.2.3.4:5"), Some(header.as_bytes())).is_ok();
        prop_assert_eq!(accepted, presented == token);
        let right = format!("bearer  {token} ");
        prop_assert!(access.check_trigger(Some(b"1.2.3.4:5"), Some(right.as_bytes())).is_ok());
        prop_assert!(access.check_trigger(Some(b"1.2.3.4:5"), None).is_err());
    }

    #[test]
    fn shared_state_bytes_decode_or_not_without_panicking(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Ok(state) = DrainState::decode(&raw) {
            prop_assert_eq!(state.encode(), raw);
        }
    }

    #[test]
    fn the_drain_only_moves_forward_and_claims_one_call_at_a_time(
        events in proptest::collection::vec(event(), 0..60)
    ) {
        let policy = Policy {
            delay: Duration::from_millis(1_000),
            call_timeout: Duration::from_millis(500),
            gradual_window: None,
        };
        let mut state = DrainState::Idle;
        let mut now = 0u64;
        let mut open_claim: Option<Timestamp> = None;
        for (kind, gap_ms) in events {
            now += gap_ms * 1_000_000;
            let at = Timestamp::from_nanos(now);
            let event = match kind {
                0 => Event::Trigger,
                1 => Event::Tick,
                2 => Event::AdminCallSucceeded { claimed_at: open_claim.unwrap_or(at) },
                _ => Event::AdminCallFailed { claimed_at: open_claim.unwrap_or(at) },
            };
            let before = state.phase();
            let (next, decision) = state.step(&policy, event, at);
            prop_assert!(next.phase() as u8 >= before as u8, "never moves back");
            if let Decision::DispatchAdminCall { claimed_at } = decision {
                prop_assert_eq!(before, Phase::HealthFailing);
                prop_assert!(at >= state.drain_due_at(&policy).unwrap(), "not before the delay");
                open_claim = Some(claimed_at);
            }
            if matches!(event, Event::AdminCallFailed { .. }) && next != state {
                open_claim = None;
            }
            prop_assert_eq!(next.started_at().is_some(), next.phase() != Phase::Idle);
            prop_assert_eq!(DrainState::decode(&next.encode()), Ok(next));
            state = next;
        }
    }
}
