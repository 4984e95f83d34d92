//! Sandbox keys: what a valid sandbox name is ([`is_valid_name`]), the signed form
//! `<name>.<signature>` ([`split_signed`]) and its HMAC-SHA256 signature ([`Signer`]).
//!
//! A signature is the lowercase hex HMAC-SHA256 of the name's bytes under the shared secret; it
//! is verified in constant time. It binds the name only, so a signed key is a bearer token for
//! that sandbox: rotate the secret to revoke one.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The default `max_key_length` (a DNS label's).
pub const DEFAULT_MAX_LENGTH: usize = 63;
/// The largest `max_key_length` a configuration may set.
pub const MAX_MAX_LENGTH: usize = 128;
/// Separates a name from its signature in a signed key.
pub const SIGNATURE_SEPARATOR: u8 = b'.';
/// Hex digits of a signature (32 bytes).
pub const SIGNATURE_HEX_LEN: usize = 64;

/// Whether `name` is a valid sandbox name: 1 to `max_length` ASCII letters, digits, '-' or '_'.
pub fn is_valid_name(name: &[u8], max_length: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_length
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A key value split at its last '.' into name and signature; `None` when it has no '.'.
pub fn split_signed(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let dot = key.iter().rposition(|&b| b == SIGNATURE_SEPARATOR)?;
    Some((&key[..dot], &key[dot + 1..]))
}

/// Signs and verifies sandbox names under a shared secret.
#[derive(Clone)]
pub struct Signer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<secret>)")
    }
}

impl Signer {
    /// A signer with `secret`; `None` only if HMAC refused the key (it accepts every length).
    pub fn new(secret: &[u8]) -> Option<Signer> {
        let mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
        Some(Signer { mac })
    }

    /// The signed key `<name>.<hex signature>`.
    pub fn sign(&self, name: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(name.as_bytes());
        format!("{name}.{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Whether `signature` (hex, either case) is `name`'s signature; constant time in the
    /// signature's bytes.
    pub fn verify(&self, name: &[u8], signature: &[u8]) -> bool {
        if signature.len() != SIGNATURE_HEX_LEN {
            return false;
        }
        let Ok(tag) = hex::decode(signature) else {
            return false;
        };
        let mut mac = self.mac.clone();
        mac.update(name);
        mac.verify_slice(&tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_letters_digits_dashes_and_underscores_within_the_length() {
        assert!(is_valid_name(b"feature-x_2", 63));
        assert!(is_valid_name(&[b'a'; 63], 63));
        assert!(!is_valid_name(&[b'a'; 64], 63));
        for bad in [&b""[..], b"a.b", b"a b", b"a/b", b"\xff", b"a=b", b"%41"] {
            assert!(!is_valid_name(bad, 63), "{bad:?}");
        }
    }

    #[test]
    fn signatures_verify_for_their_name_and_secret_only() {
        let signer = Signer::new(b"0123456789abcdef0123456789abcdef").unwrap();
        let signed = signer.sign("feature-x");
        let (name, signature) = split_signed(signed.as_bytes()).unwrap();
        assert_eq!(name, b"feature-x");
        assert!(signer.verify(name, signature));
        assert!(signer.verify(name, signature.to_ascii_uppercase().as_slice()));
        assert!(!signer.verify(b"feature-y", signature));
        let other = Signer::new(b"another secret of thirty-two byte").unwrap();
        assert!(!other.verify(name, signature));
        assert!(!signer.verify(name, &signature[1..]));
        let mut flipped = signature.to_vec();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        assert!(!signer.verify(name, &flipped));
        assert!(!signer.verify(name, &[b'z'; SIGNATURE_HEX_LEN]));
    }

    #[test]
    fn rfc_4231_test_case_2() {
        // Key "Jefe", data "what do ya want for nothing?".
        let signer = Signer::new(b"Jefe").unwrap();
        let signed = signer.sign("what do ya want for nothing?");
        assert!(
            signed.ends_with(".5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn the_signature_follows_the_last_dot() {
        assert_eq!(split_signed(b"a.b.c"), Some((&b"a.b"[..], &b"c"[..])));
        assert_eq!(split_signed(b"abc"), None);
        assert_eq!(split_signed(b"."), Some((&b""[..], &b""[..])));
    }
}
