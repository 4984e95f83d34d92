//! The W3C `baggage` header (<https://www.w3.org/TR/baggage/>) over raw bytes: a strict parser
//! ([`parse`], [`value_of`]) and a lenient member removal ([`without_key`]).
//!
//! ```text
//! baggage-string = list-member 0*179( OWS "," OWS list-member )
//! list-member    = key OWS "=" OWS value *( OWS ";" OWS property )
//! property       = key OWS "=" OWS value / key OWS
//! key            = token                      ; RFC 7230 section 3.2.6
//! value          = *baggage-octet             ; %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
//! OWS            = *( SP / HTAB )
//! ```
//!
//! Parsing is all or nothing: a header that breaks the grammar, is longer than [`MAX_BYTES`] or
//! has more than [`MAX_MEMBERS`] members (the spec's limits) is malformed and yields no member,
//! so a client's broken header means "no key", never an error. Values are percent-decoded as
//! UTF-8, invalid sequences becoming U+FFFD, as the spec requires.
//!
//! Removal is deliberately lenient: it drops every comma-separated segment whose key (trimmed,
//! percent-decoded) is the given one, even in a malformed header, because a lenient parser further
//! down the call graph (a tracing library) might still read such a member.

use percent_encoding::percent_decode;

/// The longest header the parser accepts, in bytes (the spec's minimum to propagate).
pub const MAX_BYTES: usize = 8192;
/// The most list members the parser accepts (the spec's minimum to propagate).
pub const MAX_MEMBERS: usize = 64;

/// The header does not follow the baggage grammar or exceeds the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// One list member, borrowing the header's bytes, with OWS trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    key: &'a [u8],
    value: &'a [u8],
    properties: &'a [u8],
}

/// One property of a list member: a key with an optional value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Property<'a> {
    /// The property's key.
    pub key: &'a [u8],
    /// Its raw (still percent-encoded) value, if it has one.
    pub value: Option<&'a [u8]>,
}

impl<'a> Member<'a> {
    /// The member's key.
    pub fn key(&self) -> &'a [u8] {
        self.key
    }

    /// The raw, still percent-encoded value.
    pub fn raw_value(&self) -> &'a [u8] {
        self.value
    }

    /// The percent-decoded value (invalid UTF-8 replaced by U+FFFD).
    pub fn value(&self) -> Vec<u8> {
        decode(self.value)
    }

    /// The member's properties, in order.
    pub fn properties(&self) -> impl Iterator<Item = Property<'a>> {
        let properties = self.properties;
        properties
            .split(|&b| b == b';')
            .skip(1)
            .filter_map(|raw| parse_property(raw).ok())
    }
}

/// Every list member of a baggage header, in order; [`Malformed`] if any part breaks the
/// grammar or the header exceeds [`MAX_BYTES`] or [`MAX_MEMBERS`].
pub fn parse(header: &[u8]) -> Result<Vec<Member<'_>>, Malformed> {
    let mut members = Vec::new();
    for_each_member(header, |member| {
        members.push(member);
        true
    })?;
    Ok(members)
}

/// The decoded value of the first member named `key`, if the header is well-formed and has one.
pub fn value_of(header: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    let mut found = None;
    for_each_member(header, |member| {
        if found.is_none() && member.key == key {
            found = Some(member);
        }
        true
    })
    .ok()?;
    found.map(|member| member.value())
}

/// The header without any member named `key` (compared after trimming and percent-decoding, in
/// well-formed and malformed headers alike): `None` when no member had that key; `Some` of the
/// remaining members joined by ',' (empty when none remain) otherwise.
pub fn without_key(header: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    let mut removed = false;
    let kept: Vec<&[u8]> = header
        .split(|&b| b == b',')
        .filter(|segment| {
            let end = segment
                .iter()
                .position(|&b| b == b'=' || b == b';')
                .unwrap_or(segment.len());
            let matches = decode(trim_ows(&segment[..end])) == key;
            removed |= matches;
            !matches
        })
        .collect();
    removed.then(|| kept.join(&b","[..]))
}

/// Runs `visit` on each member of a well-formed header until it returns `false`; the whole
/// header is checked first, so `visit` never sees a member of a malformed header.
fn for_each_member<'a>(
    header: &'a [u8],
    mut visit: impl FnMut(Member<'a>) -> bool,
) -> Result<(), Malformed> {
    if header.len() > MAX_BYTES {
        return Err(Malformed);
    }
    let mut count = 0usize;
    for raw in header.split(|&b| b == b',') {
        count += 1;
        if count > MAX_MEMBERS {
            return Err(Malformed);
        }
        parse_member(raw)?;
    }
    for raw in header.split(|&b| b == b',') {
        if !visit(parse_member(raw)?) {
            break;
        }
    }
    Ok(())
}

fn parse_member(raw: &[u8]) -> Result<Member<'_>, Malformed> {
    let raw = trim_ows(raw);
    let head_end = raw.iter().position(|&b| b == b';').unwrap_or(raw.len());
    let (head, properties) = raw.split_at(head_end);
    let equals = head.iter().position(|&b| b == b'=').ok_or(Malformed)?;
    let key = trim_ows(&head[..equals]);
    let value = trim_ows(&head[equals + 1..]);
    if !is_token(key) || !value.iter().all(|&b| is_baggage_octet(b)) {
        return Err(Malformed);
    }
    for property in properties.split(|&b| b == b';').skip(1) {
        parse_property(property)?;
    }
    Ok(Member {
        key,
        value,
        properties,
    })
}

fn parse_property(raw: &[u8]) -> Result<Property<'_>, Malformed> {
    let raw = trim_ows(raw);
    let (key, value) = match raw.iter().position(|&b| b == b'=') {
        Some(equals) => (trim_ows(&raw[..equals]), Some(trim_ows(&raw[equals + 1..]))),
        None => (raw, None),
    };
    let value_ok = value.is_none_or(|value| value.iter().all(|&b| is_baggage_octet(b)));
    if is_token(key) && value_ok {
        Ok(Property { key, value })
    } else {
        Err(Malformed)
    }
}

fn decode(raw: &[u8]) -> Vec<u8> {
    percent_decode(raw)
        .decode_utf8_lossy()
        .into_owned()
        .into_bytes()
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

/// RFC 7230 `token`: one or more `tchar`s.
fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(header: &str) -> Vec<(String, String)> {
        parse(header.as_bytes())
            .unwrap()
            .iter()
            .map(|m| {
                (
                    String::from_utf8(m.key().to_vec()).unwrap(),
                    String::from_utf8(m.value()).unwrap(),
                )
            })
            .collect()
    }

    fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn spec_example_with_properties_and_whitespace() {
        let header = b"key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue";
        assert_eq!(header.len(), 86, "the spec counts 86 bytes");
        let members = parse(header).unwrap();
        assert_eq!(members.len(), 3);
        assert_eq!(members[0].key(), b"key1");
        assert_eq!(members[0].value(), b"value1");
        let props: Vec<_> = members[0].properties().collect();
        assert_eq!(
            props,
            [
                Property {
                    key: b"property1",
                    value: None
                },
                Property {
                    key: b"property2",
                    value: None
                }
            ]
        );
        assert_eq!(members[1].key(), b"key2");
        assert_eq!(members[1].value(), b"value2");
        assert_eq!(members[2].value(), b"value3");
        let props: Vec<_> = members[2].properties().collect();
        assert_eq!(
            props,
            [Property {
                key: b"propertyKey",
                value: Some(b"propertyValue")
            }]
        );
    }

    #[test]
    fn spec_single_header_example_is_percent_decoded() {
        assert_eq!(
            pairs("userId=alice,serverNode=DF%2028,isProduction=false"),
            owned(&[
                ("userId", "alice"),
                ("serverNode", "DF 28"),
                ("isProduction", "false")
            ])
        );
    }

    #[test]
    fn spec_split_headers_combine_into_one_list() {
        // Envoy (RFC 7230) combines repeated headers with ", ".
        let first = "userId=alice";
        let second = "serverNode=DF%2028,isProduction=false";
        assert_eq!(
            pairs(&format!("{first}, {second}")),
            pairs("userId=alice,serverNode=DF%2028,isProduction=false")
        );
        assert_eq!(pairs(first), owned(&[("userId", "alice")]));
    }

    #[test]
    fn spec_spaces_around_names_and_values_are_trimmed() {
        assert_eq!(pairs("userId =   alice"), owned(&[("userId", "alice")]));
        assert_eq!(
            pairs("serverNode = DF%2028, isProduction = false"),
            owned(&[("serverNode", "DF 28"), ("isProduction", "false")])
        );
    }

    #[test]
    fn spec_use_case_examples() {
        assert_eq!(
            pairs("serverNode=DF%2028"),
            owned(&[("serverNode", "DF 28")])
        );
        assert_eq!(pairs("userId=alice"), owned(&[("userId", "alice")]));
        assert_eq!(
            pairs("isProduction=false"),
            owned(&[("isProduction", "false")])
        );
    }

    #[test]
    fn values_may_contain_equal_signs_and_be_empty() {
        assert_eq!(pairs("k=a=b=="), owned(&[("k", "a=b==")]));
        assert_eq!(pairs("k="), owned(&[("k", "")]));
        assert_eq!(pairs("k=v;p=x=y"), owned(&[("k", "v")]));
    }

    #[test]
    fn utf8_values_decode_and_invalid_sequences_become_replacement_characters() {
        assert_eq!(pairs("userId=Am%C3%A9lie"), owned(&[("userId", "Amélie")]));
        assert_eq!(pairs("k=%FFx"), owned(&[("k", "\u{FFFD}x")]));
    }

    #[test]
    fn grammar_violations_are_malformed() {
        for bad in [
            "",
            " ",
            "novalue",
            "=v",
            "k v=1",
            "k=a b",
            "k=\"q\"",
            "k=a\\b",
            "a=1,,b=2",
            "a=1,",
            ",a=1",
            "a=1;",
            "a=1;;p",
            "a=1;p=a b",
            "a=1;=x",
            "ké=1",
            "k=é",
            "k=\x7f",
            "k=\x01",
        ] {
            assert_eq!(parse(bad.as_bytes()), Err(Malformed), "{bad:?} accepted");
            assert_eq!(value_of(bad.as_bytes(), b"k"), None, "{bad:?}");
        }
    }

    #[test]
    fn one_bad_member_makes_the_whole_header_yield_no_key() {
        assert_eq!(value_of(b"sandbox=a, bad member", b"sandbox"), None);
        assert_eq!(
            value_of(b"sandbox=a, ok=1", b"sandbox"),
            Some(b"a".to_vec())
        );
    }

    #[test]
    fn the_spec_limits_are_enforced() {
        let members = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(parse(members(64).as_bytes()).unwrap().len(), 64);
        assert_eq!(parse(members(65).as_bytes()), Err(Malformed));

        let at_limit = format!("k={}", "v".repeat(MAX_BYTES - 2));
        assert_eq!(at_limit.len(), MAX_BYTES);
        assert!(parse(at_limit.as_bytes()).is_ok());
        let over = format!("{at_limit}v");
        assert_eq!(value_of(over.as_bytes(), b"k"), None);
    }

    #[test]
    fn the_first_of_duplicate_keys_wins_and_keys_are_case_sensitive() {
        assert_eq!(
            value_of(b"sandbox=a,sandbox=b", b"sandbox"),
            Some(b"a".to_vec())
        );
        assert_eq!(value_of(b"Sandbox=a", b"sandbox"), None);
        assert_eq!(
            value_of(b"k=1;sandbox=x", b"sandbox"),
            None,
            "properties are not members"
        );
    }

    #[test]
    fn removal_keeps_other_members_verbatim() {
        assert_eq!(
            without_key(b"a=1;p, sandbox=x;q=2 , b=%20", b"sandbox"),
            Some(b"a=1;p, b=%20".to_vec())
        );
        assert_eq!(without_key(b"sandbox=x", b"sandbox"), Some(Vec::new()));
        assert_eq!(without_key(b"a=1,b=2", b"sandbox"), None);
        assert_eq!(
            without_key(b"sandbox=x,sandbox=y,a=1", b"sandbox"),
            Some(b"a=1".to_vec())
        );
    }

    #[test]
    fn removal_catches_members_a_lenient_parser_would_read() {
        // Malformed headers (the strict parser yields nothing), percent-encoded keys, whitespace.
        assert_eq!(
            without_key(b"sandbox=evil, broken\"member", b"sandbox"),
            Some(b" broken\"member".to_vec())
        );
        assert_eq!(
            without_key(b"%73andbox=evil,a=1", b"sandbox"),
            Some(b"a=1".to_vec())
        );
        assert_eq!(
            without_key(b"\t sandbox \t= evil", b"sandbox"),
            Some(Vec::new())
        );
        assert_eq!(without_key(b"sandbox;p=1", b"sandbox"), Some(Vec::new()));
    }
}
