//! The pure decision: key sources and their priority, the trust decision (source networks and
//! signed keys), `self`, key validation and the registry lookup.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshkit::config::load_config;
use sandbox_router::config::SandboxConfig;
use sandbox_router::key::Signer;
use sandbox_router::policy::{source_ip, Decision, Policy, RequestKeys};
use sandbox_router::registry::Registry;
use std::net::IpAddr;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn setup(extra: &str) -> (Policy, Registry) {
    let raw = format!(
        r#"{{"sandboxes": {{"feature-x": "sandbox_x", "feature-y": "sandbox_y"}},
             "trusted_sources": ["127.0.0.1/32", "10.0.0.0/8"]{extra}}}"#
    );
    let config: SandboxConfig = load_config(Some(raw.as_bytes())).unwrap();
    (
        Policy::new(&config),
        Registry::new(config.sandboxes.clone()),
    )
}

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

fn keys<'a>(header: Option<&'a str>, baggage: Option<&'a str>, source: &str) -> RequestKeys<'a> {
    RequestKeys {
        header: header.map(str::as_bytes),
        baggage: baggage.map(str::as_bytes),
        source: ip(source),
    }
}

fn route<'r>(cluster: &'r str, sandbox: &'r str) -> Decision<'r> {
    Decision::Route { sandbox, cluster }
}

#[test]
fn a_trusted_header_key_routes_to_its_cluster() {
    let (policy, registry) = setup("");
    let decision = policy.decide(&keys(Some("feature-x"), None, "127.0.0.1"), &registry);
    assert_eq!(decision, route("sandbox_x", "feature-x"));
    let decision = policy.decide(&keys(Some(" \tfeature-y "), None, "10.1.2.3"), &registry);
    assert_eq!(decision, route("sandbox_y", "feature-y"));
}

#[test]
fn a_trusted_baggage_key_routes_and_the_header_has_priority() {
    let (policy, registry) = setup("");
    let baggage = "traceparent=1, sandbox = feature-y;ttl=5";
    assert_eq!(
        policy.decide(&keys(None, Some(baggage), "127.0.0.1"), &registry),
        route("sandbox_y", "feature-y")
    );
    assert_eq!(
        policy.decide(
            &keys(Some("feature-x"), Some(baggage), "127.0.0.1"),
            &registry
        ),
        route("sandbox_x", "feature-x")
    );
    assert_eq!(
        policy.decide(&keys(Some(""), Some(baggage), "127.0.0.1"), &registry),
        route("sandbox_y", "feature-y"),
        "an empty header is no key"
    );
    assert_eq!(
        policy.decide(
            &keys(None, Some("sandbox=feature%2Dx"), "127.0.0.1"),
            &registry
        ),
        route("sandbox_x", "feature-x"),
        "baggage values are percent-decoded"
    );
}

#[test]
fn malformed_baggage_is_no_key() {
    let (policy, registry) = setup("");
    for baggage in ["sandbox=feature-x,", "sandbox=feature x", "sandbox"] {
        assert_eq!(
            policy.decide(&keys(None, Some(baggage), "127.0.0.1"), &registry),
            Decision::Pass,
            "{baggage:?}"
        );
    }
}

#[test]
fn no_key_passes_from_anyone() {
    let (policy, registry) = setup("");
    for source in ["127.0.0.1", "192.0.2.1"] {
        assert_eq!(
            policy.decide(&keys(None, None, source), &registry),
            Decision::Pass
        );
        let other = keys(None, Some("userId=alice"), source);
        assert_eq!(policy.decide(&other, &registry), Decision::Pass);
    }
    assert_eq!(
        policy.decide(&RequestKeys::default(), &registry),
        Decision::Pass
    );
}

#[test]
fn keys_from_untrusted_or_unknown_sources_are_stripped() {
    let (policy, registry) = setup("");
    for source in ["127.0.0.2", "11.0.0.1", "::1"] {
        for (header, baggage) in [
            (Some("feature-x"), None),
            (None, Some("a=1,sandbox=feature-x")),
            (Some(""), None),
            (None, Some("sandbox=feature-x, broken member")),
            (None, Some("%73andbox=feature-x")),
        ] {
            assert_eq!(
                policy.decide(&keys(header, baggage, source), &registry),
                Decision::Strip,
                "{source} {header:?} {baggage:?}"
            );
        }
    }
    let unknown_source = RequestKeys {
        header: Some(b"feature-x"),
        ..RequestKeys::default()
    };
    assert_eq!(policy.decide(&unknown_source, &registry), Decision::Strip);
}

#[test]
fn validly_signed_keys_are_honoured_from_any_source() {
    let (policy, registry) = setup(&format!(r#", "signing_secret": "{SECRET}""#));
    let signed = Signer::new(SECRET.as_bytes()).unwrap().sign("feature-y");
    assert_eq!(
        policy.decide(&keys(Some(&signed), None, "192.0.2.1"), &registry),
        route("sandbox_y", "feature-y")
    );
    let baggage = format!("sandbox={signed}");
    assert_eq!(
        policy.decide(&keys(None, Some(&baggage), "192.0.2.1"), &registry),
        route("sandbox_y", "feature-y")
    );
    // Signed for another name, under another secret, truncated: untrusted.
    let forged = signed.replace("feature-y", "feature-x");
    let other = Signer::new(b"another secret, thirty-two bytes!")
        .unwrap()
        .sign("feature-y");
    for bad in [forged.as_str(), other.as_str(), &signed[..signed.len() - 1]] {
        assert_eq!(
            policy.decide(&keys(Some(bad), None, "192.0.2.1"), &registry),
            Decision::Strip,
            "{bad}"
        );
        assert_eq!(
            policy.decide(&keys(Some(bad), None, "127.0.0.1"), &registry),
            Decision::Unknown,
            "a trusted source's bad signature is an invalid key: {bad}"
        );
    }
}

#[test]
fn signed_keys_mean_nothing_without_a_secret() {
    let (policy, registry) = setup("");
    let signed = Signer::new(SECRET.as_bytes()).unwrap().sign("feature-y");
    assert_eq!(
        policy.decide(&keys(Some(&signed), None, "192.0.2.1"), &registry),
        Decision::Strip
    );
    assert_eq!(
        policy.decide(&keys(Some(&signed), None, "127.0.0.1"), &registry),
        Decision::Unknown
    );
}

#[test]
fn invalid_and_unregistered_keys_are_unknown() {
    let (policy, registry) = setup(r#", "max_key_length": 9"#);
    for key in [
        "feature-z",
        "feature-xx",
        "a/b",
        "feature.x",
        "\u{e9}t\u{e9}",
        "sandbox_x",
    ] {
        assert_eq!(
            policy.decide(&keys(Some(key), None, "127.0.0.1"), &registry),
            Decision::Unknown,
            "{key:?}"
        );
    }
}

#[test]
fn the_sandbox_own_sidecar_never_reroutes() {
    let (policy, registry) = setup(r#", "self": "feature-x""#);
    for key in ["feature-x", "feature-y", "nope"] {
        assert_eq!(
            policy.decide(&keys(Some(key), None, "127.0.0.1"), &registry),
            Decision::OwnSandbox
        );
    }
    assert_eq!(
        policy.decide(&keys(Some("feature-y"), None, "192.0.2.1"), &registry),
        Decision::Strip,
        "untrusted keys are still stripped"
    );
}

#[test]
fn disabled_key_sources_are_ignored() {
    let (policy, registry) = setup(r#", "baggage_key": null"#);
    assert_eq!(
        policy.decide(
            &keys(None, Some("sandbox=feature-x"), "127.0.0.1"),
            &registry
        ),
        Decision::Pass
    );
    assert_eq!(
        policy.decide(
            &keys(None, Some("sandbox=feature-x"), "192.0.2.1"),
            &registry
        ),
        Decision::Pass,
        "nothing to strip when baggage is not a key source"
    );
}

#[test]
fn source_addresses_parse_from_the_property_forms() {
    assert_eq!(source_ip(b"127.0.0.2:41234"), ip("127.0.0.2"));
    assert_eq!(source_ip(b"[::1]:80"), ip("::1"));
    assert_eq!(source_ip(b"10.0.0.1"), ip("10.0.0.1"));
    assert_eq!(
        source_ip(b"[::ffff:10.0.0.1]:80"),
        ip("10.0.0.1"),
        "IPv4-mapped"
    );
    for bad in [
        &b""[..],
        b"localhost:80",
        b"\xff\xfe",
        b"1.2.3.4:99999",
        b"envoy://internal",
    ] {
        assert_eq!(source_ip(bad), None, "{bad:?}");
    }
}
