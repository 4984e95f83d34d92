//! Errors reported by hostcalls: the failing operation and the status the host returned.

use proxy_wasm::types::Status;
use std::fmt;

/// A hostcall that returned a status other than `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError {
    operation: &'static str,
    status: Status,
    code: u32,
}

impl HostError {
    /// An error for `operation` (e.g. `"get_header"`) that failed with `status`.
    pub fn new(operation: &'static str, status: Status) -> Self {
        Self {
            operation,
            status,
            code: status as u32,
        }
    }

    /// An error from a raw ABI status code; codes the SDK has no name for map to
    /// [`Status::InternalFailure`] but keep their raw value in [`HostError::code`].
    pub fn from_code(operation: &'static str, code: u32) -> Self {
        let status = match code {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::BadArgument,
            3 => Status::SerializationFailure,
            4 => Status::ParseFailure,
            7 => Status::Empty,
            8 => Status::CasMismatch,
            _ => Status::InternalFailure,
        };
        Self {
            operation,
            status,
            code,
        }
    }

    /// The operation that failed.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The status the host returned.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The raw ABI status code the host returned.
    pub fn code(&self) -> u32 {
        self.code
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hostcall {} failed with status {:?} ({})",
            self.operation, self.status, self.code
        )
    }
}

impl std::error::Error for HostError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_operation_and_status() {
        let err = HostError::new("set_shared_data", Status::CasMismatch);
        assert_eq!(
            err.to_string(),
            "hostcall set_shared_data failed with status CasMismatch (8)"
        );
    }

    #[test]
    fn unknown_codes_keep_their_raw_value() {
        let err = HostError::from_code("define_metric", 12);
        assert_eq!(err.status(), Status::InternalFailure);
        assert_eq!(err.code(), 12);
        assert_eq!(
            HostError::from_code("x", 1).status(),
            Status::NotFound,
            "known codes map to their status"
        );
    }
}
