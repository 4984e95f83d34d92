//! The imports a proxy-wasm 0.2.1 module links against (`env::proxy_*`), plus the few
//! `wasi_snapshot_preview1` functions a wasm32-wasip1 Rust module needs, implemented over
//! [`WorkerState`]. Imports not defined here trap with a message naming them.
//!
//! Statuses and "unavailable" answers follow Envoy: a map that does not exist in the current
//! phase is `BadArgument` (`NotFound` for single values during `proxy_on_log`), a missing
//! buffer is `NotFound`, empty results come back as a null pointer with size 0.

use std::time::Duration;

use wasmtime::{format_err, Caller, Engine, Linker, Memory};

use crate::headers::HeaderMap;
use crate::metrics::{MetricError, MetricKind, MetricsStore};
use crate::shared_data::SetError;
use crate::state::{lock, PendingCall, WorkerState};
use crate::types::{HttpCall, HttpCallReply, LocalResponse, LogLevel, LogRecord};

type Ctx<'a> = Caller<'a, WorkerState>;
type Status = wasmtime::Result<u32>;

/// proxy-wasm status codes.
mod status {
    pub const OK: u32 = 0;
    pub const NOT_FOUND: u32 = 1;
    pub const BAD_ARGUMENT: u32 = 2;
    pub const CAS_MISMATCH: u32 = 8;
}

/// WASI errno values.
mod errno {
    pub const SUCCESS: u32 = 0;
    pub const BADF: u32 = 8;
}

/// The foreign function Envoy registers to re-pick the route after header changes.
pub(crate) const CLEAR_ROUTE_CACHE: &str = "clear_route_cache";

static EMPTY_MAP: HeaderMap = HeaderMap::new();

/// A linker with every import the emulated host implements.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<WorkerState>> {
    let mut linker = Linker::new(engine);
    define_logging_and_time(&mut linker)?;
    define_maps(&mut linker)?;
    define_buffers(&mut linker)?;
    define_stream_control(&mut linker)?;
    define_shared_data_and_metrics(&mut linker)?;
    define_wasi(&mut linker)?;
    Ok(linker)
}

fn memory(caller: &Ctx<'_>) -> wasmtime::Result<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| format_err!("the module exports no memory"))
}

fn read(caller: &Ctx<'_>, ptr: u32, len: u32) -> wasmtime::Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let memory = memory(caller)?;
    let start = ptr as usize;
    let end = start.saturating_add(len as usize);
    memory
        .data(caller)
        .get(start..end)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format_err!("invalid memory access: {len} bytes at {ptr:#x}"))
}

fn read_string(caller: &Ctx<'_>, ptr: u32, len: u32) -> wasmtime::Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

fn write(caller: &mut Ctx<'_>, ptr: u32, bytes: &[u8]) -> wasmtime::Result<()> {
    let memory = memory(caller)?;
    let start = ptr as usize;
    let end = start.saturating_add(bytes.len());
    memory
        .data_mut(caller)
        .get_mut(start..end)
        .ok_or_else(|| format_err!("invalid memory access: {} bytes at {ptr:#x}", bytes.len()))?
        .copy_from_slice(bytes);
    Ok(())
}

fn write_u32(caller: &mut Ctx<'_>, ptr: u32, value: u32) -> wasmtime::Result<()> {
    write(caller, ptr, &value.to_le_bytes())
}

fn write_u64(caller: &mut Ctx<'_>, ptr: u32, value: u64) -> wasmtime::Result<()> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Returns `data` to the module: memory from `proxy_on_memory_allocate`, its address and size
/// written to `ptr_ptr` / `size_ptr` (null and 0 for empty data, as Envoy does).
fn copy_out(
    caller: &mut Ctx<'_>,
    data: &[u8],
    ptr_ptr: u32,
    size_ptr: u32,
) -> wasmtime::Result<()> {
    let size = u32::try_from(data.len())?;
    let ptr = if data.is_empty() {
        0
    } else {
        let allocate = caller
            .data()
            .allocate
            .clone()
            .ok_or_else(|| format_err!("the module exports no proxy_on_memory_allocate"))?;
        let ptr = allocate.call(&mut *caller, size)?;
        if ptr == 0 {
            return Err(format_err!(
                "proxy_on_memory_allocate({size}) returned null"
            ));
        }
        write(caller, ptr, data)?;
        ptr
    };
    write_u32(caller, ptr_ptr, ptr)?;
    write_u32(caller, size_ptr, size)
}

fn define_logging_and_time(linker: &mut Linker<WorkerState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Ctx<'_>, level: u32, ptr: u32, len: u32| -> Status {
            let Some(level) = LogLevel::from_abi(level) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let message = read_string(&caller, ptr, len)?;
            let state = caller.data_mut();
            if level == LogLevel::Critical {
                state.last_critical = Some(message.clone());
            }
            lock(&state.shared.logs).push(LogRecord {
                worker: state.index,
                level,
                message,
            });
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Ctx<'_>, ret: u32| -> Status {
            let level = caller.data().shared.log_level.to_abi();
            write_u32(&mut caller, ret, level)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Ctx<'_>, ret: u32| -> Status {
            let now = caller.data().shared.now_nanos();
            write_u64(&mut caller, ret, now)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Ctx<'_>, period_ms: u32| -> Status {
            let state = caller.data_mut();
            let now = state.shared.now_nanos();
            if period_ms == 0 {
                state.tick_period = None;
            } else {
                let period = Duration::from_millis(u64::from(period_ms));
                state.tick_period = Some(period);
                state.next_tick_nanos = now.saturating_add(u64::from(period_ms) * 1_000_000);
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut caller: Ctx<'_>,
         path_ptr: u32,
         path_len: u32,
         ret_ptr: u32,
         ret_size: u32|
         -> Status {
            let path = read(&caller, path_ptr, path_len)?;
            let key = path
                .split(|b| *b == 0)
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(".");
            let Some(value) = caller.data().shared.properties.get(&key).cloned() else {
                return Ok(status::NOT_FOUND);
            };
            copy_out(&mut caller, &value, ret_ptr, ret_size)?;
            Ok(status::OK)
        },
    )?;
    Ok(())
}

/// Why a header map cannot be used right now.
fn map_unavailable(state: &WorkerState) -> u32 {
    if state.log_phase {
        status::NOT_FOUND
    } else {
        status::BAD_ARGUMENT
    }
}

/// The header map of ABI type `map_type` in the current context, read-only.
fn map_ref(state: &WorkerState, map_type: u32) -> Option<&HeaderMap> {
    match map_type {
        0..=3 => {
            let stream = state
                .streams
                .get(&state.effective_context)
                .filter(|s| !s.ended)?;
            match map_type {
                0 => stream.request_headers.as_ref(),
                1 => stream.request_trailers.as_ref(),
                2 => stream.response_headers.as_ref(),
                _ => stream.response_trailers.as_ref(),
            }
        }
        6 | 7 => match &state.call_reply {
            Some(HttpCallReply::Response {
                headers, trailers, ..
            }) => Some(if map_type == 6 { headers } else { trailers }),
            Some(HttpCallReply::Failure) => Some(&EMPTY_MAP),
            None => None,
        },
        _ => None,
    }
}

/// The header map of ABI type `map_type` in the current context, for mutation.
fn map_mut(state: &mut WorkerState, map_type: u32) -> Option<&mut HeaderMap> {
    let stream = state.effective_stream()?;
    match map_type {
        0 => stream.request_headers.as_mut(),
        1 => stream.request_trailers.as_mut(),
        2 => stream.response_headers.as_mut(),
        3 => stream.response_trailers.as_mut(),
        _ => None,
    }
}

/// Applies `edit` to the mutable header map of ABI type `map_type`: `Ok`, or `BadArgument`
/// when that map cannot be changed in the current context.
fn edit_map(state: &mut WorkerState, map_type: u32, edit: impl FnOnce(&mut HeaderMap)) -> u32 {
    match map_mut(state, map_type) {
        Some(map) => {
            edit(map);
            status::OK
        }
        None => status::BAD_ARGUMENT,
    }
}

/// Defines a `(map_type, key, value) -> status` import that changes one header of a mutable map.
fn define_map_value_edit(
    linker: &mut Linker<WorkerState>,
    name: &str,
    edit: fn(&mut HeaderMap, &str, &[u8]),
) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        name,
        move |mut caller: Ctx<'_>,
              map_type: u32,
              key_ptr: u32,
              key_len: u32,
              value_ptr: u32,
              value_len: u32|
              -> Status {
            let key = read_string(&caller, key_ptr, key_len)?;
            let value = read(&caller, value_ptr, value_len)?;
            Ok(edit_map(caller.data_mut(), map_type, |map| {
                edit(map, &key, &value)
            }))
        },
    )?;
    Ok(())
}

fn define_maps(linker: &mut Linker<WorkerState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Ctx<'_>, map_type: u32, ret_ptr: u32, ret_size: u32| -> Status {
            let serialized = match map_ref(caller.data(), map_type) {
                Some(map) if map.is_empty() => Vec::new(),
                Some(map) => map.serialize(),
                None if caller.data().log_phase => Vec::new(),
                None => return Ok(status::BAD_ARGUMENT),
            };
            copy_out(&mut caller, &serialized, ret_ptr, ret_size)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Ctx<'_>, map_type: u32, ptr: u32, len: u32| -> Status {
            let Ok(pairs) = HeaderMap::deserialize(&read(&caller, ptr, len)?) else {
                return Ok(status::BAD_ARGUMENT);
            };
            Ok(edit_map(caller.data_mut(), map_type, |map| *map = pairs))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Ctx<'_>,
         map_type: u32,
         key_ptr: u32,
         key_len: u32,
         ret_ptr: u32,
         ret_size: u32|
         -> Status {
            let key = read_string(&caller, key_ptr, key_len)?;
            let value = match map_ref(caller.data(), map_type) {
                Some(map) => map.get(&key).map(<[u8]>::to_vec),
                None => return Ok(map_unavailable(caller.data())),
            };
            match value {
                Some(value) => {
                    copy_out(&mut caller, &value, ret_ptr, ret_size)?;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    define_map_value_edit(linker, "proxy_replace_header_map_value", HeaderMap::replace)?;
    define_map_value_edit(linker, "proxy_add_header_map_value", HeaderMap::add)?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Ctx<'_>, map_type: u32, key_ptr: u32, key_len: u32| -> Status {
            let key = read_string(&caller, key_ptr, key_len)?;
            Ok(edit_map(caller.data_mut(), map_type, |map| {
                map.remove(&key)
            }))
        },
    )?;
    Ok(())
}

/// The buffer of ABI type `buffer_type` in the current context.
fn buffer_ref(state: &WorkerState, buffer_type: u32) -> Option<Vec<u8>> {
    let stream = || {
        state
            .streams
            .get(&state.effective_context)
            .filter(|s| !s.ended)
    };
    match buffer_type {
        0 => stream()?.request_buffer.clone(),
        1 => stream()?.response_buffer.clone(),
        4 => match &state.call_reply {
            Some(HttpCallReply::Response { body, .. }) => Some(body.clone()),
            Some(HttpCallReply::Failure) => Some(Vec::new()),
            None => None,
        },
        6 => Some(state.shared.vm_config.clone()),
        7 => Some(lock(&state.shared.plugin_config).clone()),
        _ => None,
    }
}

/// Envoy's body `setBuffer`: prepend (start 0, size 0), replace all (start 0, size >= length),
/// or append (start >= length); anything else is `BadArgument`.
fn splice_body(buffer: &mut Vec<u8>, start: usize, size: usize, data: &[u8]) -> u32 {
    if start == 0 && size == 0 {
        buffer.splice(0..0, data.iter().copied());
    } else if start == 0 && size >= buffer.len() {
        buffer.clear();
        buffer.extend_from_slice(data);
    } else if start >= buffer.len() {
        buffer.extend_from_slice(data);
    } else {
        return status::BAD_ARGUMENT;
    }
    status::OK
}

fn define_buffers(linker: &mut Linker<WorkerState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Ctx<'_>,
         buffer_type: u32,
         start: u32,
         max_size: u32,
         ret_ptr: u32,
         ret_size: u32|
         -> Status {
            let Some(buffer) = buffer_ref(caller.data(), buffer_type) else {
                return Ok(status::NOT_FOUND);
            };
            let start = start as usize;
            if start > buffer.len() {
                return Ok(status::BAD_ARGUMENT);
            }
            let end = start.saturating_add(max_size as usize).min(buffer.len());
            copy_out(&mut caller, &buffer[start..end], ret_ptr, ret_size)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: Ctx<'_>,
         buffer_type: u32,
         start: u32,
         size: u32,
         ptr: u32,
         len: u32|
         -> Status {
            let data = read(&caller, ptr, len)?;
            let Some(stream) = caller.data_mut().effective_stream() else {
                return Ok(status::NOT_FOUND);
            };
            let buffer = match buffer_type {
                0 => stream.request_buffer.as_mut(),
                1 => stream.response_buffer.as_mut(),
                _ => None,
            };
            Ok(match buffer {
                Some(buffer) => splice_body(buffer, start as usize, size as usize, &data),
                None => status::NOT_FOUND,
            })
        },
    )?;
    Ok(())
}

fn define_stream_control(linker: &mut Linker<WorkerState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut caller: Ctx<'_>, context_id: u32| -> Status {
            let state = caller.data_mut();
            let live_stream = state.streams.get(&context_id).is_some_and(|s| !s.ended);
            if context_id == state.root_context_id || live_stream {
                state.effective_context = context_id;
                Ok(status::OK)
            } else {
                Ok(status::BAD_ARGUMENT)
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut caller: Ctx<'_>, stream_type: u32| -> Status {
            let stream = caller.data_mut().effective_stream();
            match (stream_type, stream) {
                (0, Some(stream)) => {
                    stream.request_paused = false;
                    stream.flush_request();
                }
                (1, Some(stream)) => {
                    stream.response_paused = false;
                    stream.flush_response();
                }
                (0 | 1, None) => {}
                _ => return Ok(status::BAD_ARGUMENT),
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Ctx<'_>,
         status_code: u32,
         details_ptr: u32,
         details_len: u32,
         body_ptr: u32,
         body_len: u32,
         headers_ptr: u32,
         headers_len: u32,
         grpc_status: i32|
         -> Status {
            let details = read_string(&caller, details_ptr, details_len)?;
            let body = read(&caller, body_ptr, body_len)?;
            let Ok(headers) = HeaderMap::deserialize(&read(&caller, headers_ptr, headers_len)?)
            else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(stream) = caller.data_mut().effective_stream() else {
                return Ok(status::BAD_ARGUMENT);
            };
            if stream.local_response.is_none() {
                stream.local_response = Some(LocalResponse {
                    status: status_code,
                    details,
                    headers,
                    body,
                    grpc_status: u32::try_from(grpc_status).ok(),
                });
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut caller: Ctx<'_>,
         upstream_ptr: u32,
         upstream_len: u32,
         headers_ptr: u32,
         headers_len: u32,
         body_ptr: u32,
         body_len: u32,
         trailers_ptr: u32,
         trailers_len: u32,
         timeout_ms: u32,
         ret_token: u32|
         -> Status {
            let upstream = read_string(&caller, upstream_ptr, upstream_len)?;
            let body = read(&caller, body_ptr, body_len)?;
            let (Ok(headers), Ok(trailers)) = (
                HeaderMap::deserialize(&read(&caller, headers_ptr, headers_len)?),
                HeaderMap::deserialize(&read(&caller, trailers_ptr, trailers_len)?),
            ) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let state = caller.data();
            let known_cluster = state
                .shared
                .clusters
                .as_ref()
                .is_none_or(|clusters| clusters.contains(&upstream));
            let has_required_headers = [":method", ":path", ":authority"]
                .iter()
                .all(|name| headers.get(name).is_some());
            if !known_cluster || !has_required_headers {
                return Ok(status::BAD_ARGUMENT);
            }
            let shared = state.shared.clone();
            let token = shared
                .next_token
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let deadline = match timeout_ms {
                0 => u64::MAX,
                ms => shared.now_nanos().saturating_add(u64::from(ms) * 1_000_000),
            };
            {
                let mut calls = lock(&shared.calls);
                calls.history.push(HttpCall {
                    token,
                    worker: state.index,
                    context_id: state.effective_context,
                    upstream,
                    headers,
                    body,
                    trailers,
                    timeout: Duration::from_millis(u64::from(timeout_ms)),
                });
                calls.pending.insert(
                    token,
                    PendingCall {
                        deadline_nanos: deadline,
                        worker: state.index,
                        context_id: state.effective_context,
                    },
                );
            }
            write_u32(&mut caller, ret_token, token)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut caller: Ctx<'_>,
         name_ptr: u32,
         name_len: u32,
         _args_ptr: u32,
         _args_len: u32,
         ret_ptr: u32,
         ret_size: u32|
         -> Status {
            let name = read_string(&caller, name_ptr, name_len)?;
            if name != CLEAR_ROUTE_CACHE {
                return Ok(status::NOT_FOUND);
            }
            let state = caller.data_mut();
            if let Some(stream) = state.effective_stream() {
                stream.route_cache_clears += 1;
            }
            *lock(&state.shared.foreign_calls).entry(name).or_insert(0) += 1;
            copy_out(&mut caller, &[], ret_ptr, ret_size)?;
            Ok(status::OK)
        },
    )?;
    Ok(())
}

/// Applies `update` to the metric this worker defined as `id`: `NotFound` for an unknown id,
/// `BadArgument` when the update does not apply to the metric's kind.
fn update_metric(
    state: &WorkerState,
    id: u32,
    update: impl FnOnce(&MetricsStore, &str) -> Result<(), MetricError>,
) -> u32 {
    match state.metric_names.get(&id) {
        Some(name) => match update(&state.shared.metrics, name) {
            Ok(()) => status::OK,
            Err(MetricError::BadArgument) => status::BAD_ARGUMENT,
        },
        None => status::NOT_FOUND,
    }
}

fn define_shared_data_and_metrics(linker: &mut Linker<WorkerState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Ctx<'_>,
         key_ptr: u32,
         key_len: u32,
         ret_ptr: u32,
         ret_size: u32,
         ret_cas: u32|
         -> Status {
            let key = read_string(&caller, key_ptr, key_len)?;
            let Some((value, cas)) = caller.data().shared.shared_data.get(&key) else {
                return Ok(status::NOT_FOUND);
            };
            copy_out(&mut caller, &value, ret_ptr, ret_size)?;
            write_u32(&mut caller, ret_cas, cas)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |caller: Ctx<'_>,
         key_ptr: u32,
         key_len: u32,
         value_ptr: u32,
         value_len: u32,
         cas: u32|
         -> Status {
            let key = read_string(&caller, key_ptr, key_len)?;
            let value = read(&caller, value_ptr, value_len)?;
            Ok(
                match caller.data().shared.shared_data.set(&key, &value, cas) {
                    Ok(_) => status::OK,
                    Err(SetError::CasMismatch) => status::CAS_MISMATCH,
                },
            )
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut caller: Ctx<'_>,
         metric_type: u32,
         name_ptr: u32,
         name_len: u32,
         ret_id: u32|
         -> Status {
            let Some(kind) = MetricKind::from_abi(metric_type) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let name = read_string(&caller, name_ptr, name_len)?;
            let state = caller.data_mut();
            state.shared.metrics.define(&name, kind);
            let id = state.next_metric_id;
            state.next_metric_id += 1;
            state.metric_names.insert(id, name);
            write_u32(&mut caller, ret_id, id)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |caller: Ctx<'_>, id: u32, offset: i64| -> Status {
            Ok(update_metric(caller.data(), id, |metrics, name| {
                metrics.increment(name, offset)
            }))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |caller: Ctx<'_>, id: u32, value: u64| -> Status {
            Ok(update_metric(caller.data(), id, |metrics, name| {
                metrics.record(name, value)
            }))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut caller: Ctx<'_>, id: u32, ret: u32| -> Status {
            let state = caller.data();
            let value = match state.metric_names.get(&id) {
                Some(name) => state.shared.metrics.read(name),
                None => return Ok(status::NOT_FOUND),
            };
            match value {
                Ok(value) => {
                    write_u64(&mut caller, ret, value)?;
                    Ok(status::OK)
                }
                Err(MetricError::BadArgument) => Ok(status::BAD_ARGUMENT),
            }
        },
    )?;
    Ok(())
}

fn define_wasi(linker: &mut Linker<WorkerState>) -> wasmtime::Result<()> {
    const WASI: &str = "wasi_snapshot_preview1";
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut caller: Ctx<'_>, fd: u32, iovs: u32, iovs_len: u32, ret_written: u32| -> Status {
            if fd != 1 && fd != 2 {
                return Ok(errno::BADF);
            }
            let mut written = 0u32;
            for index in 0..iovs_len {
                let iov = read(&caller, iovs.wrapping_add(index * 8), 8)?;
                let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let bytes = read(&caller, ptr, len)?;
                caller.data_mut().stderr.extend_from_slice(&bytes);
                written = written.saturating_add(len);
            }
            write_u32(&mut caller, ret_written, written)?;
            Ok(errno::SUCCESS)
        },
    )?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        linker.func_wrap(
            WASI,
            name,
            |mut caller: Ctx<'_>, ret_count: u32, ret_size: u32| -> Status {
                write_u32(&mut caller, ret_count, 0)?;
                write_u32(&mut caller, ret_size, 0)?;
                Ok(errno::SUCCESS)
            },
        )?;
    }
    for name in ["environ_get", "args_get"] {
        linker.func_wrap(WASI, name, |_: Ctx<'_>, _: u32, _: u32| -> Status {
            Ok(errno::SUCCESS)
        })?;
    }
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut caller: Ctx<'_>, _clock: u32, _precision: u64, ret: u32| -> Status {
            let now = caller.data().shared.now_nanos();
            write_u64(&mut caller, ret, now)?;
            Ok(errno::SUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "random_get",
        |mut caller: Ctx<'_>, ptr: u32, len: u32| -> Status {
            let mut bytes = Vec::with_capacity(len as usize);
            let state = caller.data_mut();
            while bytes.len() < len as usize {
                // xorshift64: deterministic per worker, good enough for hash seeds.
                let mut x = state.random_state;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                state.random_state = x;
                bytes.extend_from_slice(&x.to_le_bytes());
            }
            bytes.truncate(len as usize);
            write(&mut caller, ptr, &bytes)?;
            Ok(errno::SUCCESS)
        },
    )?;
    linker.func_wrap(WASI, "sched_yield", |_: Ctx<'_>| -> Status {
        Ok(errno::SUCCESS)
    })?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Ctx<'_>, code: u32| -> wasmtime::Result<()> {
            Err(format_err!("the module called proc_exit({code})"))
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn body_splice_follows_envoy_set_buffer_rules() {
        let mut body = b"hello".to_vec();
        assert_eq!(splice_body(&mut body, 0, 0, b">"), status::OK);
        assert_eq!(body, b">hello");
        assert_eq!(splice_body(&mut body, 6, 0, b"<"), status::OK);
        assert_eq!(body, b">hello<");
        assert_eq!(splice_body(&mut body, 0, 7, b"new"), status::OK);
        assert_eq!(body, b"new");
        assert_eq!(splice_body(&mut body, 1, 1, b"x"), status::BAD_ARGUMENT);
        assert_eq!(body, b"new");
    }
}
