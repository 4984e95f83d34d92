//! gRPC recognition: content types, `/package.Service/Method` paths and status codes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Whether `content_type` is a gRPC one: `application/grpc`, optionally `+<codec>` (e.g.
/// `+proto`) and `;`-parameters, compared case-insensitively. gRPC-Web is not gRPC.
pub fn is_grpc(content_type: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let value = content_type.trim_ascii();
    if value.len() < GRPC.len() || !value[..GRPC.len()].eq_ignore_ascii_case(GRPC) {
        return false;
    }
    match value[GRPC.len()..].first() {
        None | Some(b';') => true,
        Some(b'+') => {
            let codec = &value[GRPC.len() + 1..];
            let codec = codec
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            !codec.is_empty()
                && codec
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
        }
        Some(_) => false,
    }
}

/// The service and method of a gRPC request path `/package.Service/Method`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GrpcMethod {
    service: String,
    method: String,
}

impl GrpcMethod {
    /// Parses a `:path`; `None` unless it is exactly `/<service>/<method>` with both parts
    /// non-empty UTF-8 free of whitespace, control characters, '?' and '#'.
    pub fn parse(path: &[u8]) -> Option<GrpcMethod> {
        let path = std::str::from_utf8(path).ok()?;
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && !"/?#".contains(c))
        };
        (valid(service) && valid(method)).then(|| GrpcMethod {
            service: service.to_owned(),
            method: method.to_owned(),
        })
    }

    /// The fully qualified service, e.g. `package.Service`.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The method, e.g. `Method`.
    pub fn method(&self) -> &str {
        &self.method
    }
}

impl fmt::Display for GrpcMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/{}", self.service, self.method)
    }
}

macro_rules! grpc_statuses {
    ($($variant:ident = $code:literal, $name:literal;)*) => {
        /// A gRPC status code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum GrpcStatus {
            $(
                #[doc = concat!("`", $name, "` (", stringify!($code), ").")]
                $variant = $code,
            )*
        }

        impl GrpcStatus {
            /// Every status, in code order.
            pub const ALL: [GrpcStatus; 17] = [$(GrpcStatus::$variant),*];

            /// The numeric code.
            pub fn code(self) -> u32 {
                self as u32
            }

            /// The canonical name, e.g. `UNAVAILABLE`.
            pub fn name(self) -> &'static str {
                match self {
                    $(GrpcStatus::$variant => $name,)*
                }
            }
        }
    };
}

grpc_statuses! {
    Ok = 0, "OK";
    Cancelled = 1, "CANCELLED";
    Unknown = 2, "UNKNOWN";
    InvalidArgument = 3, "INVALID_ARGUMENT";
    DeadlineExceeded = 4, "DEADLINE_EXCEEDED";
    NotFound = 5, "NOT_FOUND";
    AlreadyExists = 6, "ALREADY_EXISTS";
    PermissionDenied = 7, "PERMISSION_DENIED";
    ResourceExhausted = 8, "RESOURCE_EXHAUSTED";
    FailedPrecondition = 9, "FAILED_PRECONDITION";
    Aborted = 10, "ABORTED";
    OutOfRange = 11, "OUT_OF_RANGE";
    Unimplemented = 12, "UNIMPLEMENTED";
    Internal = 13, "INTERNAL";
    Unavailable = 14, "UNAVAILABLE";
    DataLoss = 15, "DATA_LOSS";
    Unauthenticated = 16, "UNAUTHENTICATED";
}

impl GrpcStatus {
    /// The status with numeric `code`, if there is one.
    pub fn from_code(code: u32) -> Option<GrpcStatus> {
        usize::try_from(code)
            .ok()
            .and_then(|index| Self::ALL.get(index))
            .copied()
    }

    /// The status named `name` (case-insensitive, e.g. `unavailable`).
    pub fn from_name(name: &str) -> Option<GrpcStatus> {
        Self::ALL
            .into_iter()
            .find(|status| status.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for GrpcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for GrpcStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for GrpcStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        GrpcStatus::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown gRPC status {name:?} (expected a name such as UNAVAILABLE)"
            ))
        })
    }
}

/// The status in a `grpc-status` header value: ASCII digits naming a known code.
pub fn parse_grpc_status(value: &[u8]) -> Option<GrpcStatus> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 3 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u32, |code, digit| code * 10 + u32::from(digit - b'0'));
    GrpcStatus::from_code(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_grpc_content_types() {
        for yes in [
            &b"application/grpc"[..],
            b"application/grpc+proto",
            b"Application/GRPC+JSON",
            b"application/grpc; charset=utf-8",
            b"application/grpc+proto;foo=bar",
            b" application/grpc ",
        ] {
            assert!(is_grpc(yes), "{:?}", String::from_utf8_lossy(yes));
        }
        for no in [
            &b""[..],
            b"application/json",
            b"application/grpc-web",
            b"application/grpc-web+proto",
            b"application/grpcx",
            b"application/grpc+",
            b"application/grp",
            b"\xffapplication/grpc",
        ] {
            assert!(!is_grpc(no), "{:?}", String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn parses_service_and_method() {
        let method = GrpcMethod::parse(b"/helloworld.Greeter/SayHello").unwrap();
        assert_eq!(method.service(), "helloworld.Greeter");
        assert_eq!(method.method(), "SayHello");
        assert_eq!(method.to_string(), "/helloworld.Greeter/SayHello");
        assert!(GrpcMethod::parse(b"/Greeter/SayHello").is_some());
    }

    #[test]
    fn rejects_paths_that_are_not_grpc_methods() {
        for bad in [
            &b""[..],
            b"/",
            b"//",
            b"/svc",
            b"/svc/",
            b"//m",
            b"svc/m",
            b"/svc/m/",
            b"/a/b/c",
            b"/svc/m?x=1",
            b"/svc/m#frag",
            b"/s vc/m",
            b"/svc/\xff",
        ] {
            assert_eq!(
                GrpcMethod::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn status_codes_names_and_lookup_agree() {
        assert_eq!(GrpcStatus::ALL.len(), 17);
        for (index, status) in GrpcStatus::ALL.into_iter().enumerate() {
            assert_eq!(status.code() as usize, index);
            assert_eq!(GrpcStatus::from_code(status.code()), Some(status));
            assert_eq!(GrpcStatus::from_name(status.name()), Some(status));
        }
        assert_eq!(GrpcStatus::Unavailable.name(), "UNAVAILABLE");
        assert_eq!(
            GrpcStatus::from_name("deadline_exceeded"),
            Some(GrpcStatus::DeadlineExceeded)
        );
        assert_eq!(GrpcStatus::from_code(17), None);
        assert_eq!(GrpcStatus::from_name("UNAVAILABLE "), None);
    }

    #[test]
    fn deserializes_from_names() {
        let status: GrpcStatus = serde_json::from_str(r#""resource_exhausted""#).unwrap();
        assert_eq!(status, GrpcStatus::ResourceExhausted);
        let err = serde_json::from_str::<GrpcStatus>(r#""SLOW""#).unwrap_err();
        assert!(err.to_string().contains("unknown gRPC status"), "{err}");
        assert_eq!(serde_json::to_string(&GrpcStatus::Ok).unwrap(), r#""OK""#);
    }

    #[test]
    fn parses_grpc_status_header_values() {
        assert_eq!(parse_grpc_status(b"0"), Some(GrpcStatus::Ok));
        assert_eq!(parse_grpc_status(b"14"), Some(GrpcStatus::Unavailable));
        assert_eq!(
            parse_grpc_status(b" 16 "),
            Some(GrpcStatus::Unauthenticated)
        );
        for bad in [
            &b""[..],
            b"17",
            b"-1",
            b"1a",
            b"99999999999999999999",
            b"\xff",
        ] {
            assert_eq!(
                parse_grpc_status(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
