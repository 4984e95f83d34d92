//! The pure routing decision: from a request's key header, `baggage` header and connection source
//! address (all bytes) and the registry, what the filter does ([`Decision`]). No hostcalls.
//!
//! 1. The key is the key header's value (OWS trimmed) when present and non-empty, else the value
//!    of the first `baggage` member named `baggage_key` (a malformed baggage header has none).
//! 2. Trust: a key is honoured when the source address is in `trusted_sources`, or when it is
//!    signed (`<name>.<hex HMAC-SHA256>`) with a valid signature under `signing_secret`. From any
//!    other source the decision is [`Decision::Strip`] whenever the request carries the key
//!    header or a baggage member named `baggage_key` (even one only a lenient parser would read),
//!    so the application and the next hops never see an untrusted key.
//! 3. The sandbox's own sidecar (`self`) never re-routes: [`Decision::OwnSandbox`].
//! 4. A key that is not a valid name (charset, `max_key_length`; a signed form without a valid
//!    signature) or names no registered sandbox is [`Decision::Unknown`]; a registered one is
//!    [`Decision::Route`] to its cluster.

use crate::baggage;
use crate::config::{Cidr, SandboxConfig, UnknownKey};
use crate::key::{is_valid_name, split_signed, Signer};
use crate::registry::Registry;
use std::net::{IpAddr, SocketAddr};

/// What the filter does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'r> {
    /// No key: the request passes untouched (to the baseline).
    Pass,
    /// A key from an untrusted source: remove the key header and the baggage member, then pass.
    Strip,
    /// A trusted key at the sandbox's own sidecar: pass, never re-route.
    OwnSandbox,
    /// A trusted key that is invalid or names no registered sandbox.
    Unknown,
    /// A trusted key naming a registered sandbox: route to its cluster.
    Route {
        /// The sandbox's registered name.
        sandbox: &'r str,
        /// The cluster serving it.
        cluster: &'r str,
    },
}

/// A request's inputs to the decision, as the host gave them.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestKeys<'a> {
    /// The key header's value.
    pub header: Option<&'a [u8]>,
    /// The `baggage` header's value.
    pub baggage: Option<&'a [u8]>,
    /// The connection's source address (the `source.address` property).
    pub source: Option<IpAddr>,
}

/// The configured decision rules.
#[derive(Debug, Clone)]
pub struct Policy {
    baggage_key: Option<Vec<u8>>,
    trusted: Vec<Cidr>,
    signer: Option<Signer>,
    own_sandbox: Option<String>,
    unknown_key: UnknownKey,
    max_key_length: usize,
}

impl Policy {
    /// The rules of a validated configuration.
    pub fn new(config: &SandboxConfig) -> Policy {
        Policy {
            baggage_key: config
                .baggage_key
                .as_ref()
                .map(|key| key.as_bytes().to_vec()),
            trusted: config.trusted_sources.clone(),
            signer: config
                .signing_secret
                .as_ref()
                .and_then(|secret| Signer::new(secret.as_bytes())),
            own_sandbox: config.own_sandbox.clone(),
            unknown_key: config.unknown_key,
            max_key_length: config.max_key_length,
        }
    }

    /// What an unknown key gets.
    pub fn unknown_key(&self) -> UnknownKey {
        self.unknown_key
    }

    /// The key `keys` carry, if any: the header's (trimmed, non-empty), else the baggage
    /// member's decoded value.
    pub fn key(&self, keys: &RequestKeys<'_>) -> Option<Vec<u8>> {
        let header = keys.header.map(trim_ows).filter(|value| !value.is_empty());
        if let Some(value) = header {
            return Some(value.to_vec());
        }
        let (baggage, member) = (keys.baggage?, self.baggage_key.as_deref()?);
        baggage::value_of(baggage, member)
    }

    /// Whether `keys` carry anything a key could be read from: the key header, or a baggage
    /// member named `baggage_key` as a lenient parser would see it.
    pub fn carries_key(&self, keys: &RequestKeys<'_>) -> bool {
        keys.header.is_some()
            || match (keys.baggage, self.baggage_key.as_deref()) {
                (Some(baggage), Some(member)) => baggage::without_key(baggage, member).is_some(),
                _ => false,
            }
    }

    /// Whether `source` is a trusted downstream.
    pub fn is_trusted(&self, source: Option<IpAddr>) -> bool {
        source.is_some_and(|ip| self.trusted.iter().any(|cidr| cidr.contains(&ip)))
    }

    /// The name a key value stands for, if it is valid: a plain name, or a signed one whose
    /// signature verifies. `signed` says which.
    fn name_of<'k>(&self, key: &'k [u8]) -> Option<(&'k [u8], bool)> {
        if is_valid_name(key, self.max_key_length) {
            return Some((key, false));
        }
        let (name, signature) = split_signed(key)?;
        let signer = self.signer.as_ref()?;
        (is_valid_name(name, self.max_key_length) && signer.verify(name, signature))
            .then_some((name, true))
    }

    /// The decision for one request against `registry`.
    pub fn decide<'r>(&self, keys: &RequestKeys<'_>, registry: &'r Registry) -> Decision<'r> {
        let key = self.key(keys);
        let name = key.as_deref().and_then(|key| self.name_of(key));
        let signed = name.is_some_and(|(_, signed)| signed);
        if !signed && !self.is_trusted(keys.source) {
            return if self.carries_key(keys) {
                Decision::Strip
            } else {
                Decision::Pass
            };
        }
        if key.is_none() {
            return Decision::Pass;
        }
        if self.own_sandbox.is_some() {
            return Decision::OwnSandbox;
        }
        match name.and_then(|(name, _)| registry.lookup(name)) {
            Some((sandbox, cluster)) => Decision::Route { sandbox, cluster },
            None => Decision::Unknown,
        }
    }
}

/// The IP address of a `source.address` property value (`10.1.2.3:5678`, `[::1]:80`, or a bare
/// address); IPv4-mapped IPv6 addresses become IPv4. `None` for anything else.
pub fn source_ip(property: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(property).ok()?;
    let ip = text
        .parse::<SocketAddr>()
        .map(|address| address.ip())
        .or_else(|_| text.parse::<IpAddr>())
        .ok()?;
    Some(ip.to_canonical())
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}
