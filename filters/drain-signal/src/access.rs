//! Who may trigger a drain: [`Access`] checks the connection's source address (Envoy's
//! `source.address` property, never a header) against allowed CIDRs, and the bearer token of the
//! `authorization` header in constant time. Every parser here takes raw bytes and never panics.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use subtle::ConstantTimeEq;

/// Why a request may not touch the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The connection has no IP source address (absent, a pipe, or unparseable).
    NoSourceAddress,
    /// The source address is outside every allowed CIDR.
    SourceNotAllowed,
    /// A token is configured and the request carries none, or another one.
    BadToken,
}

impl Refusal {
    /// For logs.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NoSourceAddress => "the connection has no IP source address",
            Refusal::SourceNotAllowed => "the source address is not allowed",
            Refusal::BadToken => "the bearer token is missing or wrong",
        }
    }
}

/// The allowed sources and the optional token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    allowed: Vec<IpNet>,
    token: Option<Vec<u8>>,
}

impl Access {
    /// Sources in `allowed` may read the state; with `token`, triggering also needs
    /// `authorization: Bearer <token>`.
    pub fn new(allowed: Vec<IpNet>, token: Option<&str>) -> Self {
        Access {
            allowed,
            token: token.map(|token| token.as_bytes().to_vec()),
        }
    }

    /// Whether the connection's source address (the `source.address` property's bytes) is
    /// allowed.
    pub fn check_source(&self, source: Option<&[u8]>) -> Result<(), Refusal> {
        let address = source
            .and_then(parse_source_address)
            .ok_or(Refusal::NoSourceAddress)?;
        if self.allowed.iter().any(|net| net.contains(&address)) {
            Ok(())
        } else {
            Err(Refusal::SourceNotAllowed)
        }
    }

    /// Whether the source is allowed and, when a token is configured, the `authorization`
    /// header's bytes carry it (compared in constant time).
    pub fn check_trigger(
        &self,
        source: Option<&[u8]>,
        authorization: Option<&[u8]>,
    ) -> Result<(), Refusal> {
        self.check_source(source)?;
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let presented = authorization.and_then(bearer_token).unwrap_or_default();
        if bool::from(presented.ct_eq(expected.as_slice())) {
            Ok(())
        } else {
            Err(Refusal::BadToken)
        }
    }
}

/// The IP of a `source.address` value: `ip:port`, `[ipv6]:port` or a bare IP; an IPv4-mapped
/// IPv6 address is its IPv4 address. `None` for anything else (e.g. a pipe's path).
pub fn parse_source_address(raw: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(raw).ok()?;
    let ip = match text.parse::<SocketAddr>() {
        Ok(socket) => socket.ip(),
        Err(_) => text.parse::<IpAddr>().ok()?,
    };
    Some(ip.to_canonical())
}

/// An allowed-source entry: a CIDR (`10.0.0.0/8`, `::1/128`) or a single IP; host bits are
/// ignored (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_cidr(text: &str) -> Option<IpNet> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(text.parse::<IpAddr>().ok()?),
    };
    Some(net.trunc())
}

/// The token of an `authorization: Bearer <token>` value (scheme case-insensitive, spaces
/// around the token ignored); `None` for any other value.
pub fn bearer_token(raw: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let scheme = raw.get(..SCHEME.len())?;
    let rest = raw.get(SCHEME.len()..)?;
    if !scheme.eq_ignore_ascii_case(SCHEME) || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Whether `token` may be configured: visible ASCII without spaces (what a bearer token is).
pub fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}
