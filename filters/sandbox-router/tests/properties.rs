//! Property tests: every parser of client bytes on arbitrary bytes (no panic, limits hold), the
//! baggage parser on generated well-formed headers (members read back exactly, removal leaves
//! no key), and the decision's invariants (only registry clusters, untrusted keys never routed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshkit::config::load_config;
use proptest::prelude::*;
use sandbox_router::baggage::{self, MAX_BYTES, MAX_MEMBERS};
use sandbox_router::config::SandboxConfig;
use sandbox_router::key::Signer;
use sandbox_router::policy::{source_ip, Decision, Policy, RequestKeys};
use sandbox_router::registry::Registry;
use std::net::IpAddr;

/// Bytes drawn mostly from the characters baggage syntax cares about.
fn baggage_like() -> impl Strategy<Value = Vec<u8>> {
    let alphabet: Vec<u8> = b"sandbox=,; \t%2Fa\"\\\x00\xff=".to_vec();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec(proptest::sample::select(alphabet), 0..200),
    ]
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$&'*+.^_`|~-]{1,12}"
}

/// A raw value: baggage-octets, including percent-escapes.
fn raw_value() -> impl Strategy<Value = String> {
    "([!#-+--:<-\\[\\]-~]|%[0-9A-F]{2}){0,16}"
}

fn ows() -> impl Strategy<Value = String> {
    "[ \t]{0,2}"
}

/// A well-formed member: key, value, properties, with optional whitespace around each part.
fn member() -> impl Strategy<Value = (String, String, String)> {
    (
        token(),
        raw_value(),
        proptest::collection::vec((token(), proptest::option::of(raw_value())), 0..3),
        ows(),
        ows(),
    )
        .prop_map(|(key, value, properties, a, b)| {
            let mut text = format!("{a}{key}{b}={a}{value}{b}");
            for (pkey, pvalue) in properties {
                text.push_str(&format!("{a};{b}{pkey}"));
                if let Some(pvalue) = pvalue {
                    text.push_str(&format!("{b}={a}{pvalue}"));
                }
            }
            (key, value, text)
        })
}

fn policy_and_registry() -> (Policy, Registry) {
    let config: SandboxConfig = load_config(Some(
        br#"{"sandboxes": {"feature-x": "sandbox_x", "b": "sandbox_b"},
             "trusted_sources": ["127.0.0.1/32"],
             "signing_secret": "0123456789abcdef0123456789abcdef"}"#,
    ))
    .unwrap();
    (
        Policy::new(&config),
        Registry::new(config.sandboxes.clone()),
    )
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_respect_the_limits(bytes in baggage_like()) {
        if let Ok(members) = baggage::parse(&bytes) {
            prop_assert!(bytes.len() <= MAX_BYTES);
            prop_assert!(!members.is_empty() && members.len() <= MAX_MEMBERS);
            for member in &members {
                prop_assert!(!member.key().is_empty());
                let _ = member.properties().count();
                prop_assert!(std::str::from_utf8(&member.value()).is_ok());
            }
        }
        let _ = baggage::value_of(&bytes, b"sandbox");
        if let Some(rest) = baggage::without_key(&bytes, b"sandbox") {
            prop_assert!(rest.len() <= bytes.len());
            prop_assert_eq!(baggage::without_key(&rest, b"sandbox"), None);
            prop_assert_eq!(baggage::value_of(&rest, b"sandbox"), None);
        }
        let _ = source_ip(&bytes);
    }

    #[test]
    fn well_formed_headers_read_back_every_member(
        members in proptest::collection::vec(member(), 1..10),
        separator in "[ \t]{0,2},[ \t]{0,2}",
    ) {
        let header = members.iter().map(|(_, _, text)| text.as_str()).collect::<Vec<_>>().join(&separator);
        let parsed = baggage::parse(header.as_bytes()).unwrap();
        prop_assert_eq!(parsed.len(), members.len());
        for (parsed, (key, value, _)) in parsed.iter().zip(&members) {
            prop_assert_eq!(parsed.key(), key.as_bytes());
            prop_assert_eq!(parsed.raw_value(), value.as_bytes());
        }
        let (first_key, first_value, _) = &members[0];
        let expected = percent_encoding::percent_decode(first_value.as_bytes()).decode_utf8_lossy().into_owned();
        prop_assert_eq!(baggage::value_of(header.as_bytes(), first_key.as_bytes()), Some(expected.into_bytes()));
    }

    #[test]
    fn removal_keeps_every_other_member(
        members in proptest::collection::vec(member(), 1..10),
        keyed in proptest::collection::vec(any::<bool>(), 10),
    ) {
        let texts: Vec<String> = members.iter().zip(&keyed).map(|((_, _, text), &keyed)| {
            if keyed { format!("sandbox={}", "x") } else { text.clone() }
        }).collect();
        let header = texts.join(",");
        let result = baggage::without_key(header.as_bytes(), b"sandbox");
        let others: Vec<&str> = members.iter().zip(&keyed)
            .filter(|((key, _, _), &keyed)| !keyed && key != "sandbox")
            .map(|((_, _, text), _)| text.as_str())
            .collect();
        match result {
            Some(rest) => prop_assert_eq!(rest, others.join(",").into_bytes()),
            None => prop_assert_eq!(others.len(), members.len()),
        }
    }

    #[test]
    fn decisions_route_only_to_registry_clusters_and_only_trusted_keys(
        header in proptest::option::of(baggage_like()),
        baggage in proptest::option::of(baggage_like()),
        source in proptest::option::of(any::<[u8; 4]>()),
    ) {
        let (policy, registry) = policy_and_registry();
        let source = source.map(IpAddr::from);
        let keys = RequestKeys { header: header.as_deref(), baggage: baggage.as_deref(), source };
        match policy.decide(&keys, &registry) {
            Decision::Route { sandbox, cluster } => {
                prop_assert_eq!(registry.lookup(sandbox.as_bytes()), Some((sandbox, cluster)));
                // Arbitrary bytes never carry a valid signature: only the trusted source routes.
                prop_assert!(policy.is_trusted(source));
            }
            Decision::Strip => prop_assert!(!policy.is_trusted(source)),
            Decision::Unknown => prop_assert!(policy.is_trusted(source)),
            Decision::Pass | Decision::OwnSandbox => {}
        }
    }

    #[test]
    fn signed_registered_names_route_from_anywhere(
        name in proptest::sample::select(vec!["feature-x", "b"]),
        source in any::<[u8; 4]>(),
    ) {
        let (policy, registry) = policy_and_registry();
        let signed = Signer::new(b"0123456789abcdef0123456789abcdef").unwrap().sign(name);
        let keys = RequestKeys { header: Some(signed.as_bytes()), baggage: None, source: Some(IpAddr::from(source)) };
        let decision = policy.decide(&keys, &registry);
        let routed = matches!(decision, Decision::Route { sandbox, .. } if sandbox == name);
        prop_assert!(routed, "{:?}", decision);
    }
}
