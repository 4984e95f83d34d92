//! `google.protobuf.Any` in its JSON form: the message's fields plus an `@type` URL, for the
//! messages the model types ([`Any`]) and, as an escape hatch, for those it does not ([`RawAny`]).

use serde::{Serialize, Serializer};

/// A proto message that can be packed into a [`Any`]: it knows its fully qualified type URL.
pub trait Message: Serialize {
    /// The `type.googleapis.com/...` URL Envoy uses to pick the message's decoder.
    const TYPE_URL: &'static str;
}

impl<T: Message> Message for &T {
    const TYPE_URL: &'static str = T::TYPE_URL;
}

/// A message packed as `google.protobuf.Any`: serializes as `{"@type": T::TYPE_URL, ...fields of T}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Any<T>(pub T);

impl<T: Message> Serialize for Any<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Packed<'a, T> {
            #[serde(rename = "@type")]
            type_url: &'static str,
            #[serde(flatten)]
            message: &'a T,
        }
        Packed {
            type_url: T::TYPE_URL,
            message: &self.0,
        }
        .serialize(serializer)
    }
}

/// A message the model has no type for, packed as `google.protobuf.Any`: its type URL and its
/// fields in proto3 JSON, passed to Envoy as given (Envoy checks them against the proto when it
/// loads the config). Build it from your own `Serialize` type or from JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct RawAny {
    type_url: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl RawAny {
    /// `message` (anything serializing to a JSON object) packed under `type_url`
    /// (`type.googleapis.com/<proto full name>`). `Err`: `message` is not a JSON object, carries
    /// its own `@type`, or does not serialize.
    pub fn new(type_url: impl Into<String>, message: &impl Serialize) -> Result<Self, RawAnyError> {
        let type_url = type_url.into();
        if !type_url.contains('/') {
            return Err(RawAnyError(format!(
                "type URL {type_url:?} has no '/' (expected type.googleapis.com/<message>)"
            )));
        }
        match serde_json::to_value(message) {
            Ok(serde_json::Value::Object(fields)) if !fields.contains_key("@type") => {
                Ok(Self { type_url, fields })
            }
            Ok(serde_json::Value::Object(_)) => Err(RawAnyError(
                "the message has its own \"@type\"; give the type URL instead".to_owned(),
            )),
            Ok(other) => Err(RawAnyError(format!(
                "a message must serialize to a JSON object, not {other}"
            ))),
            Err(err) => Err(RawAnyError(format!(
                "the message does not serialize: {err}"
            ))),
        }
    }

    /// A message the model does type, packed the same way.
    pub fn of<T: Message>(message: &T) -> Result<Self, RawAnyError> {
        Self::new(T::TYPE_URL, message)
    }

    /// The type URL.
    pub fn type_url(&self) -> &str {
        &self.type_url
    }
}

impl Serialize for RawAny {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.fields.len() + 1))?;
        map.serialize_entry("@type", &self.type_url)?;
        for (key, value) in &self.fields {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Why a [`RawAny`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAnyError(String);

impl std::fmt::Display for RawAnyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RawAnyError {}

/// `google.protobuf.StringValue`: how a wasm plugin receives its configuration string.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StringValue {
    /// The wrapped string (for plugin configuration: a JSON document).
    pub value: String,
}

impl Message for StringValue {
    const TYPE_URL: &'static str = "type.googleapis.com/google.protobuf.StringValue";
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_raw_any_packs_any_json_object_under_its_type_url() {
        #[derive(Serialize)]
        struct Buffer {
            max_request_bytes: u32,
        }
        let raw = RawAny::new(
            "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            &Buffer {
                max_request_bytes: 1024,
            },
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&raw).ok(),
            Some(json!({
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": 1024
            }))
        );
        let typed = RawAny::of(&StringValue {
            value: "v".to_owned(),
        })
        .unwrap();
        assert_eq!(typed.type_url(), StringValue::TYPE_URL);
        assert!(RawAny::new("type.googleapis.com/x", &json!([1])).is_err());
        assert!(RawAny::new("type.googleapis.com/x", &json!({"@type": "y"})).is_err());
        assert!(RawAny::new("Buffer", &json!({})).is_err());
    }

    #[test]
    fn any_puts_type_url_beside_the_message_fields() {
        let packed = Any(StringValue {
            value: "{\"a\":1}".to_owned(),
        });
        assert_eq!(
            serde_json::to_value(&packed).ok(),
            Some(json!({
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": "{\"a\":1}"
            }))
        );
    }
}
