//! `google.protobuf.Any` in its JSON form: the message's fields plus an `@type` URL.

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
    use super::*;
    use serde_json::json;

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
