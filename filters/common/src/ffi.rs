//! Trap-free access to the proxy-wasm ABI imports meshkit uses.
//!
//! The SDK's `proxy_wasm::hostcalls` wrappers `panic!` on most statuses they do not expect (for
//! example `BadArgument` when a header map is unavailable in the current phase), and a panic traps
//! the VM. These wrappers declare the same `env` imports and turn every status into a
//! [`HostError`] instead. Memory the host returns was allocated through the SDK's exported
//! `proxy_on_memory_allocate` (a `Vec<u8>` allocation), so it is reclaimed as a `Vec<u8>`.

use crate::error::HostError;
use std::ptr::{null, null_mut};

const STATUS_OK: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

fn check(operation: &'static str, status: u32) -> Result<(), HostError> {
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(HostError::from_code(operation, status))
    }
}

/// Takes ownership of a host-allocated buffer; `None` when the host returned no buffer.
///
/// # Safety
/// `data` must be null or point to `size` bytes allocated by `proxy_on_memory_allocate`.
unsafe fn take_buffer(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        None
    } else {
        Some(Vec::from_raw_parts(data, size, size))
    }
}

/// Writes `message` to the host log at `level` (the ABI's numeric log level).
pub(crate) fn log(level: u32, message: &str) -> Result<(), HostError> {
    // SAFETY: the pointer/length pair describes `message`, which outlives the call.
    let status = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
    check("log", status)
}

/// The host's current time in nanoseconds since the Unix epoch.
pub(crate) fn current_time_nanos() -> Result<u64, HostError> {
    let mut nanos = 0u64;
    // SAFETY: `nanos` is a valid out-pointer for the duration of the call.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut nanos) };
    check("get_current_time", status).map(|()| nanos)
}

/// Bytes of a host buffer (`BufferType` as its ABI number); `None` when the host has none.
pub(crate) fn buffer_bytes(
    buffer_type: u32,
    start: usize,
    max_size: usize,
) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-pointers are valid; the host fills them with a buffer it allocated through us.
    let status =
        unsafe { proxy_get_buffer_bytes(buffer_type, start, max_size, &mut data, &mut size) };
    match status {
        STATUS_OK => Ok(unsafe { take_buffer(data, size) }),
        1 => Ok(None),
        other => Err(HostError::from_code("get_buffer", other)),
    }
}

/// Replaces `size` bytes of a host buffer from `start` with `data` (Envoy's rules: `start` 0
/// replaces the first `size` bytes, `start` at or past the end appends).
pub(crate) fn set_buffer_bytes(
    buffer_type: u32,
    start: usize,
    size: usize,
    data: &[u8],
) -> Result<(), HostError> {
    // SAFETY: `data` outlives the call.
    let status =
        unsafe { proxy_set_buffer_bytes(buffer_type, start, size, data.as_ptr(), data.len()) };
    check("set_buffer", status)
}

/// Resumes a paused stream (`StreamType` as its ABI number: 0 request, 1 response).
pub(crate) fn continue_stream(stream_type: u32) -> Result<(), HostError> {
    // SAFETY: plain integer argument.
    check("continue_stream", unsafe {
        proxy_continue_stream(stream_type)
    })
}

/// The serialized pairs of a header map (`MapType` as its ABI number).
pub(crate) fn header_map_pairs(map_type: u32) -> Result<Vec<u8>, HostError> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-pointers are valid; the host fills them with a buffer it allocated through us.
    let status = unsafe { proxy_get_header_map_pairs(map_type, &mut data, &mut size) };
    check("get_header_map_pairs", status)?;
    Ok(unsafe { take_buffer(data, size) }.unwrap_or_default())
}

/// One header's value; `None` when the header is absent (`NotFound`).
pub(crate) fn header_map_value(map_type: u32, key: &str) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: `key` outlives the call; out-pointers are valid.
    let status = unsafe {
        proxy_get_header_map_value(map_type, key.as_ptr(), key.len(), &mut data, &mut size)
    };
    match status {
        STATUS_OK => Ok(Some(unsafe { take_buffer(data, size) }.unwrap_or_default())),
        1 => Ok(None),
        other => Err(HostError::from_code("get_header_map_value", other)),
    }
}

/// The signature shared by `proxy_replace_header_map_value` and `proxy_add_header_map_value`.
type HeaderValueEdit = unsafe extern "C" fn(u32, *const u8, usize, *const u8, usize) -> u32;

/// Calls a header-value edit import with `key` and `value`.
fn edit_header_map_value(
    operation: &'static str,
    edit: HeaderValueEdit,
    map_type: u32,
    key: &str,
    value: &[u8],
) -> Result<(), HostError> {
    // SAFETY: `key` and `value` outlive the call; `edit` is one of the host's imports above.
    let status = unsafe {
        edit(
            map_type,
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    check(operation, status)
}

/// Replaces (or creates) a header.
pub(crate) fn replace_header_map_value(
    map_type: u32,
    key: &str,
    value: &[u8],
) -> Result<(), HostError> {
    edit_header_map_value(
        "replace_header_map_value",
        proxy_replace_header_map_value,
        map_type,
        key,
        value,
    )
}

/// Appends a header value, keeping existing values of the same name.
pub(crate) fn add_header_map_value(
    map_type: u32,
    key: &str,
    value: &[u8],
) -> Result<(), HostError> {
    edit_header_map_value(
        "add_header_map_value",
        proxy_add_header_map_value,
        map_type,
        key,
        value,
    )
}

/// Removes every value of a header.
pub(crate) fn remove_header_map_value(map_type: u32, key: &str) -> Result<(), HostError> {
    // SAFETY: `key` outlives the call.
    let status = unsafe { proxy_remove_header_map_value(map_type, key.as_ptr(), key.len()) };
    check("remove_header_map_value", status)
}

/// A shared-data value and its cas; `None` when the key is missing (`NotFound`).
pub(crate) fn shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: `key` outlives the call; out-pointers are valid.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match status {
        STATUS_OK => Ok(Some((
            unsafe { take_buffer(data, size) }.unwrap_or_default(),
            cas,
        ))),
        1 => Ok(None),
        other => Err(HostError::from_code("get_shared_data", other)),
    }
}

/// Sets a shared-data value; `cas` 0 is unconditional. A mismatch is a `CasMismatch` error.
pub(crate) fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
    // SAFETY: `key` and `value` outlive the call.
    let status =
        unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) };
    check("set_shared_data", status)
}

/// Sends a local reply; `headers` is a serialized header map, `grpc_status` -1 for none.
pub(crate) fn send_local_response(
    status_code: u32,
    body: &[u8],
    headers: &[u8],
    grpc_status: i32,
) -> Result<(), HostError> {
    // SAFETY: `body` and `headers` outlive the call; no details string is passed.
    let status = unsafe {
        proxy_send_local_response(
            status_code,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            grpc_status,
        )
    };
    check("send_local_response", status)
}

/// Calls a host-registered foreign function and returns its result bytes, if any.
pub(crate) fn call_foreign_function(
    name: &str,
    arguments: &[u8],
) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: `name` and `arguments` outlive the call; out-pointers are valid.
    let status = unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            arguments.as_ptr(),
            arguments.len(),
            &mut data,
            &mut size,
        )
    };
    check("call_foreign_function", status)?;
    Ok(unsafe { take_buffer(data, size) })
}

/// Defines a metric (`MetricType` as its ABI number) and returns its id.
pub(crate) fn define_metric(metric_type: u32, name: &str) -> Result<u32, HostError> {
    let mut id = 0u32;
    // SAFETY: `name` outlives the call; `id` is a valid out-pointer.
    let status = unsafe { proxy_define_metric(metric_type, name.as_ptr(), name.len(), &mut id) };
    check("define_metric", status).map(|()| id)
}

/// Sets a gauge or records a histogram sample.
pub(crate) fn record_metric(id: u32, value: u64) -> Result<(), HostError> {
    // SAFETY: plain integer arguments.
    check("record_metric", unsafe { proxy_record_metric(id, value) })
}

/// Adds `offset` to a counter or gauge.
pub(crate) fn increment_metric(id: u32, offset: i64) -> Result<(), HostError> {
    // SAFETY: plain integer arguments.
    check("increment_metric", unsafe {
        proxy_increment_metric(id, offset)
    })
}

/// A host property by its serialized path (segments separated by NUL); `None` when the host
/// has no such property (`NotFound`).
pub(crate) fn property(path: &[u8]) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: `path` outlives the call; out-pointers are valid.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    match status {
        STATUS_OK => Ok(Some(unsafe { take_buffer(data, size) }.unwrap_or_default())),
        1 => Ok(None),
        other => Err(HostError::from_code("get_property", other)),
    }
}

/// Sets the root context's tick period in milliseconds (0 disables ticks).
pub(crate) fn set_tick_period_millis(period: u32) -> Result<(), HostError> {
    // SAFETY: plain integer argument.
    check("set_tick_period", unsafe {
        proxy_set_tick_period_milliseconds(period)
    })
}
