//! One worker's VM: a wasmtime `Store` + instance, and the proxy-wasm callback sequences Envoy
//! runs on it (start, configure, tick, HTTP stream phases, call replies, stream completion).

use wasmtime::{InstancePre, Store, TypedFunc, WasmParams, WasmResults};

use crate::error::EmulatorError;
use crate::headers::HeaderMap;
use crate::state::{lock, StreamState, WorkerState};
use crate::types::{Action, HttpCallReply, LocalResponse, LogLevel};

/// The module's exported callbacks; a missing callback behaves as Envoy's default (no-op,
/// `Continue`).
struct Callbacks {
    context_create: Option<TypedFunc<(u32, u32), ()>>,
    vm_start: Option<TypedFunc<(u32, u32), u32>>,
    configure: Option<TypedFunc<(u32, u32), u32>>,
    tick: Option<TypedFunc<u32, ()>>,
    request_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    request_trailers: Option<TypedFunc<(u32, u32), u32>>,
    response_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    response_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    response_trailers: Option<TypedFunc<(u32, u32), u32>>,
    done: Option<TypedFunc<u32, u32>>,
    log: Option<TypedFunc<u32, ()>>,
    delete: Option<TypedFunc<u32, ()>>,
    http_call_response: Option<CallResponseFn>,
}

/// `proxy_on_http_call_response(context_id, token, headers, body_size, trailers)`.
type CallResponseFn = TypedFunc<(u32, u32, u32, u32, u32), ()>;

/// Which HTTP direction a body/trailers call is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Request,
    Response,
}

/// A worker's instantiated module and its callbacks.
pub(crate) struct WorkerVm {
    store: Store<WorkerState>,
    callbacks: Callbacks,
    initialize: Option<TypedFunc<(), ()>>,
    dead: Option<String>,
}

fn wasm_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl WorkerVm {
    /// Instantiates the module for one worker (does not run any callback yet).
    pub fn instantiate(
        pre: &InstancePre<WorkerState>,
        state: WorkerState,
        path: &std::path::Path,
    ) -> Result<Self, EmulatorError> {
        let mut store = Store::new(pre.module().engine(), state);
        let instance = pre
            .instantiate(&mut store)
            .map_err(|err| EmulatorError::ModuleLoad {
                path: path.to_owned(),
                reason: format!("{err:?}"),
            })?;
        let memory = instance.get_memory(&mut store, "memory").ok_or_else(|| {
            EmulatorError::MissingExport {
                name: "memory".into(),
            }
        })?;
        let allocate = typed::<u32, u32>(&instance, &mut store, "proxy_on_memory_allocate")?
            .or(typed::<u32, u32>(&instance, &mut store, "malloc")?)
            .ok_or_else(|| EmulatorError::MissingExport {
                name: "proxy_on_memory_allocate".into(),
            })?;
        let abi = ["proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0"]
            .iter()
            .any(|name| instance.get_func(&mut store, name).is_some());
        if !abi {
            return Err(EmulatorError::MissingExport {
                name: "proxy_abi_version_0_2_1".into(),
            });
        }
        let initialize = typed::<(), ()>(&instance, &mut store, "_initialize")?
            .or(typed::<(), ()>(&instance, &mut store, "_start")?);
        let callbacks = Callbacks {
            context_create: typed(&instance, &mut store, "proxy_on_context_create")?,
            vm_start: typed(&instance, &mut store, "proxy_on_vm_start")?,
            configure: typed(&instance, &mut store, "proxy_on_configure")?,
            tick: typed(&instance, &mut store, "proxy_on_tick")?,
            request_headers: typed(&instance, &mut store, "proxy_on_request_headers")?,
            request_body: typed(&instance, &mut store, "proxy_on_request_body")?,
            request_trailers: typed(&instance, &mut store, "proxy_on_request_trailers")?,
            response_headers: typed(&instance, &mut store, "proxy_on_response_headers")?,
            response_body: typed(&instance, &mut store, "proxy_on_response_body")?,
            response_trailers: typed(&instance, &mut store, "proxy_on_response_trailers")?,
            done: typed(&instance, &mut store, "proxy_on_done")?,
            log: typed(&instance, &mut store, "proxy_on_log")?,
            delete: typed(&instance, &mut store, "proxy_on_delete")?,
            http_call_response: typed(&instance, &mut store, "proxy_on_http_call_response")?,
        };
        let state = store.data_mut();
        state.memory = Some(memory);
        state.allocate = Some(allocate);
        Ok(Self {
            store,
            callbacks,
            initialize,
            dead: None,
        })
    }

    pub fn state(&self) -> &WorkerState {
        self.store.data()
    }

    pub fn state_mut(&mut self) -> &mut WorkerState {
        self.store.data_mut()
    }

    pub fn is_dead(&self) -> bool {
        self.dead.is_some()
    }

    fn index(&self) -> usize {
        self.store.data().index
    }

    /// Calls one export with `context` as the effective context; a trap kills the worker.
    fn invoke<P: WasmParams, R: WasmResults>(
        &mut self,
        callback: &str,
        context: u32,
        func: Option<TypedFunc<P, R>>,
        params: P,
    ) -> Result<Option<R>, EmulatorError> {
        if let Some(reason) = &self.dead {
            return Err(EmulatorError::WorkerDead {
                worker: self.index(),
                reason: reason.clone(),
            });
        }
        let Some(func) = func else {
            return Ok(None);
        };
        let state = self.store.data_mut();
        state.effective_context = context;
        state.last_critical = None;
        state.stderr.clear();
        match func.call(&mut self.store, params) {
            Ok(result) => Ok(Some(result)),
            Err(err) => {
                let state = self.store.data();
                let stderr = String::from_utf8_lossy(&state.stderr).trim().to_owned();
                let panic_message = state
                    .last_critical
                    .clone()
                    .or_else(|| (!stderr.is_empty()).then_some(stderr));
                let trap = format!("{err:?}");
                self.dead = Some(format!(
                    "{callback}: {trap}{}",
                    panic_message
                        .as_ref()
                        .map(|m| format!(" (module said: {m})"))
                        .unwrap_or_default()
                ));
                Err(EmulatorError::Trap {
                    worker: state.index,
                    callback: callback.to_owned(),
                    trap,
                    panic_message,
                })
            }
        }
    }

    /// Error-level (and higher) log lines this worker wrote since `mark`.
    fn errors_since(&self, mark: usize) -> Vec<String> {
        let index = self.index();
        lock(&self.state().shared.logs)
            .iter()
            .skip(mark)
            .filter(|r| r.worker == index && r.level >= LogLevel::Error)
            .map(|r| r.message.clone())
            .collect()
    }

    fn log_mark(&self) -> usize {
        lock(&self.state().shared.logs).len()
    }

    /// `_initialize`, root context creation, `proxy_on_vm_start`, `proxy_on_configure`.
    pub fn start(&mut self) -> Result<(), EmulatorError> {
        let root = self.state().root_context_id;
        self.invoke("_initialize", root, self.initialize.clone(), ())?;
        self.invoke(
            "proxy_on_context_create",
            root,
            self.callbacks.context_create.clone(),
            (root, 0),
        )?;
        let mark = self.log_mark();
        let vm_config_len = wasm_len(self.state().shared.vm_config.len());
        let started = self.invoke(
            "proxy_on_vm_start",
            root,
            self.callbacks.vm_start.clone(),
            (root, vm_config_len),
        )?;
        if started == Some(0) {
            return Err(EmulatorError::VmStartRejected {
                worker: self.index(),
                errors: self.errors_since(mark),
            });
        }
        self.configure()
    }

    /// `proxy_on_configure` with the host's current plugin configuration.
    pub fn configure(&mut self) -> Result<(), EmulatorError> {
        let root = self.state().root_context_id;
        let mark = self.log_mark();
        let config_len = wasm_len(lock(&self.state().shared.plugin_config).len());
        let configured = self.invoke(
            "proxy_on_configure",
            root,
            self.callbacks.configure.clone(),
            (root, config_len),
        )?;
        if configured == Some(0) {
            return Err(EmulatorError::ConfigureRejected {
                worker: self.index(),
                errors: self.errors_since(mark),
            });
        }
        Ok(())
    }

    /// `proxy_on_tick` on the root context.
    pub fn tick(&mut self) -> Result<(), EmulatorError> {
        let root = self.state().root_context_id;
        self.state_mut().ticks_delivered += 1;
        self.invoke("proxy_on_tick", root, self.callbacks.tick.clone(), root)?;
        Ok(())
    }

    /// A new HTTP context (`proxy_on_context_create(id, root)`); returns its id.
    pub fn create_stream(&mut self) -> Result<u32, EmulatorError> {
        let state = self.state_mut();
        let id = state.next_context_id;
        state.next_context_id += 1;
        let root = state.root_context_id;
        state.streams.insert(id, StreamState::default());
        self.invoke(
            "proxy_on_context_create",
            id,
            self.callbacks.context_create.clone(),
            (id, root),
        )?;
        Ok(id)
    }

    fn live_stream(&mut self, context_id: u32) -> Result<&mut StreamState, EmulatorError> {
        let worker = self.index();
        self.state_mut()
            .streams
            .get_mut(&context_id)
            .filter(|s| !s.ended)
            .ok_or(EmulatorError::StreamEnded { worker, context_id })
    }

    /// Delivers request or response headers.
    pub fn send_headers(
        &mut self,
        context_id: u32,
        direction: Direction,
        headers: HeaderMap,
        end_of_stream: bool,
    ) -> Result<Action, EmulatorError> {
        let stream = self.live_stream(context_id)?;
        let count = wasm_len(headers.len());
        let (name, func) = match direction {
            Direction::Request => {
                stream.request_headers = Some(headers);
                (
                    "proxy_on_request_headers",
                    self.callbacks.request_headers.clone(),
                )
            }
            Direction::Response => {
                stream.response_headers = Some(headers);
                (
                    "proxy_on_response_headers",
                    self.callbacks.response_headers.clone(),
                )
            }
        };
        let action = self
            .invoke(
                name,
                context_id,
                func,
                (context_id, count, u32::from(end_of_stream)),
            )?
            .map_or(Action::Continue, Action::from_abi);
        self.after_phase(context_id, direction, action, end_of_stream)?;
        Ok(action)
    }

    /// Delivers a body chunk; while the filter keeps pausing, chunks accumulate in its buffer
    /// (Envoy's StopIterationAndBuffer).
    pub fn send_body(
        &mut self,
        context_id: u32,
        direction: Direction,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, EmulatorError> {
        let stream = self.live_stream(context_id)?;
        let (buffering, buffer) = match direction {
            Direction::Request => (stream.request_buffering, &mut stream.request_buffer),
            Direction::Response => (stream.response_buffering, &mut stream.response_buffer),
        };
        let buffer = buffer.get_or_insert_with(Vec::new);
        if !buffering {
            buffer.clear();
        }
        buffer.extend_from_slice(chunk);
        let size = wasm_len(buffer.len());
        let (name, func) = match direction {
            Direction::Request => ("proxy_on_request_body", self.callbacks.request_body.clone()),
            Direction::Response => (
                "proxy_on_response_body",
                self.callbacks.response_body.clone(),
            ),
        };
        let action = self
            .invoke(
                name,
                context_id,
                func,
                (context_id, size, u32::from(end_of_stream)),
            )?
            .map_or(Action::Continue, Action::from_abi);
        if let Ok(stream) = self.live_stream(context_id) {
            match direction {
                Direction::Request => stream.request_buffering = action == Action::Pause,
                Direction::Response => stream.response_buffering = action == Action::Pause,
            }
        }
        self.after_phase(context_id, direction, action, end_of_stream)?;
        Ok(action)
    }

    /// Delivers trailers (which end that direction).
    pub fn send_trailers(
        &mut self,
        context_id: u32,
        direction: Direction,
        trailers: HeaderMap,
    ) -> Result<Action, EmulatorError> {
        let stream = self.live_stream(context_id)?;
        let count = wasm_len(trailers.len());
        let (name, func) = match direction {
            Direction::Request => {
                stream.request_trailers = Some(trailers);
                (
                    "proxy_on_request_trailers",
                    self.callbacks.request_trailers.clone(),
                )
            }
            Direction::Response => {
                stream.response_trailers = Some(trailers);
                (
                    "proxy_on_response_trailers",
                    self.callbacks.response_trailers.clone(),
                )
            }
        };
        let action = self
            .invoke(name, context_id, func, (context_id, count))?
            .map_or(Action::Continue, Action::from_abi);
        self.after_phase(context_id, direction, action, true)?;
        Ok(action)
    }

    /// Records the filter's decision for a direction, then settles the stream.
    fn after_phase(
        &mut self,
        context_id: u32,
        direction: Direction,
        action: Action,
        end_of_stream: bool,
    ) -> Result<(), EmulatorError> {
        if let Ok(stream) = self.live_stream(context_id) {
            let paused = action == Action::Pause;
            match direction {
                Direction::Request => {
                    stream.request_paused = paused;
                    if !paused {
                        stream.flush_request();
                    }
                }
                Direction::Response => {
                    stream.response_paused = paused;
                    if !paused {
                        stream.flush_response();
                    }
                    stream.response_complete |= end_of_stream;
                }
            }
        }
        self.settle(context_id)
    }

    /// Sends a pending local response, or completes a stream whose response has ended.
    fn settle(&mut self, context_id: u32) -> Result<(), EmulatorError> {
        let Ok(stream) = self.live_stream(context_id) else {
            return Ok(());
        };
        if let Some(local) = stream.local_response.clone() {
            if !stream.local_response_delivered {
                stream.local_response_delivered = true;
                return self.deliver_local_response(context_id, local);
            }
        }
        if stream.response_complete && !stream.response_paused {
            return self.complete(context_id);
        }
        Ok(())
    }

    /// Envoy encodes a local reply through the filter chain, this filter included, then ends
    /// the stream. For a gRPC request with a gRPC status it becomes a trailers-only reply.
    fn deliver_local_response(
        &mut self,
        context_id: u32,
        local: LocalResponse,
    ) -> Result<(), EmulatorError> {
        let stream = self.live_stream(context_id)?;
        let is_grpc_request = stream
            .request_headers
            .as_ref()
            .and_then(|h| h.get("content-type"))
            .is_some_and(|ct| ct.starts_with(b"application/grpc"));
        let (headers, body) = match local.grpc_status {
            Some(grpc_status) if is_grpc_request => {
                let mut headers = HeaderMap::new()
                    .with(":status", "200")
                    .with("content-type", "application/grpc")
                    .with("grpc-status", grpc_status.to_string());
                if !local.body.is_empty() {
                    headers.add("grpc-message", &local.body);
                }
                for (name, value) in local.headers.iter() {
                    headers.add(name, value);
                }
                (headers, Vec::new())
            }
            _ => {
                let mut headers = HeaderMap::new().with(":status", local.status.to_string());
                for (name, value) in local.headers.iter() {
                    headers.add(name, value);
                }
                (headers, local.body)
            }
        };
        stream.response_buffering = false;
        stream.response_buffer = None;
        let count = wasm_len(headers.len());
        stream.response_headers = Some(headers);
        self.invoke(
            "proxy_on_response_headers",
            context_id,
            self.callbacks.response_headers.clone(),
            (context_id, count, u32::from(body.is_empty())),
        )?;
        if !body.is_empty() {
            let size = wasm_len(body.len());
            self.live_stream(context_id)?.response_buffer = Some(body);
            self.invoke(
                "proxy_on_response_body",
                context_id,
                self.callbacks.response_body.clone(),
                (context_id, size, 1),
            )?;
        }
        let stream = self.live_stream(context_id)?;
        stream.flush_response();
        stream.response_complete = true;
        self.complete(context_id)
    }

    /// Ends a stream as Envoy does: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`;
    /// pending HTTP calls it dispatched are cancelled.
    pub fn complete(&mut self, context_id: u32) -> Result<(), EmulatorError> {
        self.live_stream(context_id)?;
        let result = self.run_completion(context_id);
        let index = self.index();
        let state = self.state_mut();
        if let Some(stream) = state.streams.get_mut(&context_id) {
            stream.ended = true;
        }
        state.log_phase = false;
        lock(&state.shared.calls)
            .pending
            .retain(|_, call| !(call.worker == index && call.context_id == context_id));
        result
    }

    fn run_completion(&mut self, context_id: u32) -> Result<(), EmulatorError> {
        self.invoke(
            "proxy_on_done",
            context_id,
            self.callbacks.done.clone(),
            context_id,
        )?;
        self.state_mut().log_phase = true;
        self.invoke(
            "proxy_on_log",
            context_id,
            self.callbacks.log.clone(),
            context_id,
        )?;
        self.state_mut().log_phase = false;
        self.invoke(
            "proxy_on_delete",
            context_id,
            self.callbacks.delete.clone(),
            context_id,
        )?;
        Ok(())
    }

    /// Delivers an HTTP call's outcome to the context that dispatched it.
    pub fn deliver_call_reply(
        &mut self,
        context_id: u32,
        token: u32,
        reply: HttpCallReply,
    ) -> Result<(), EmulatorError> {
        let (headers, body, trailers) = match &reply {
            HttpCallReply::Response {
                headers,
                body,
                trailers,
            } => (headers.len(), body.len(), trailers.len()),
            HttpCallReply::Failure => (0, 0, 0),
        };
        self.state_mut().call_reply = Some(reply);
        let result = self.invoke(
            "proxy_on_http_call_response",
            context_id,
            self.callbacks.http_call_response.clone(),
            (
                context_id,
                token,
                wasm_len(headers),
                wasm_len(body),
                wasm_len(trailers),
            ),
        );
        self.state_mut().call_reply = None;
        result?;
        if context_id != self.state().root_context_id {
            self.settle(context_id)?;
        }
        Ok(())
    }
}

fn typed<P: WasmParams, R: WasmResults>(
    instance: &wasmtime::Instance,
    store: &mut Store<WorkerState>,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>, EmulatorError> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(func) => func
            .typed::<P, R>(&*store)
            .map(Some)
            .map_err(|_| EmulatorError::MissingExport { name: name.into() }),
    }
}
