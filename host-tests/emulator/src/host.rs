//! The emulated host: its builder, the per-process module cache, the virtual clock that drives
//! ticks and call timeouts, and accessors for everything the module left behind (shared data,
//! metrics, logs, HTTP calls).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Engine, InstancePre, Module};

use crate::error::EmulatorError;
use crate::hostcalls;
use crate::metrics::{MetricValue, MetricsStore};
use crate::shared_data::SharedDataStore;
use crate::state::{lock, Calls, HostShared, WorkerState};
use crate::stream::HttpStream;
use crate::types::{HttpCall, HttpCallReply, LogLevel, LogRecord};
use crate::vm::WorkerVm;

/// Virtual time a host starts at unless told otherwise: 2026-01-01T00:00:00Z.
pub const DEFAULT_START_TIME_UNIX_SECS: u64 = 1_767_225_600;

/// The built module of crate `crate_name` from the module catalog (`mesh-catalog`): an error naming
/// the module and telling to run `cargo xtask build` when it is missing or older than its sources.
pub fn built_module(crate_name: &str) -> Result<PathBuf, EmulatorError> {
    Ok(mesh_catalog::built(crate_name)?)
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

/// Compiles and links each module once per process; workers instantiate the cached result.
fn instance_pre(path: &Path) -> Result<InstancePre<WorkerState>, EmulatorError> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, InstancePre<WorkerState>>>> = OnceLock::new();
    if !path.is_file() {
        return Err(EmulatorError::ModuleNotBuilt {
            path: path.to_owned(),
        });
    }
    let load_error = |reason: String| EmulatorError::ModuleLoad {
        path: path.to_owned(),
        reason,
    };
    let key = path.canonicalize().map_err(|e| load_error(e.to_string()))?;
    let mut cache = lock(CACHE.get_or_init(Default::default));
    if let Some(pre) = cache.get(&key) {
        return Ok(pre.clone());
    }
    let module = Module::from_file(engine(), &key).map_err(|e| load_error(format!("{e:?}")))?;
    let mut linker = hostcalls::linker(engine()).map_err(|e| load_error(format!("{e:?}")))?;
    linker
        .define_unknown_imports_as_traps(&module)
        .map_err(|e| load_error(format!("{e:?}")))?;
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| load_error(format!("{e:?}")))?;
    cache.insert(key, pre.clone());
    Ok(pre)
}

/// Configures and starts an [`EmulatedHost`].
#[derive(Clone, Debug)]
pub struct HostBuilder {
    wasm: PathBuf,
    workers: usize,
    plugin_config: Vec<u8>,
    vm_config: Vec<u8>,
    properties: HashMap<String, Vec<u8>>,
    clusters: Option<HashSet<String>>,
    log_level: LogLevel,
    start_time: SystemTime,
}

impl HostBuilder {
    /// Number of workers (VMs), like Envoy's `--concurrency`; default 1, at least 1.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Plugin configuration passed to `proxy_on_configure` (usually JSON); default empty.
    pub fn plugin_config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.plugin_config = config.into();
        self
    }

    /// VM configuration passed to `proxy_on_vm_start`; default empty.
    pub fn vm_config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.vm_config = config.into();
        self
    }

    /// A property `proxy_get_property` returns; `path` segments are joined by `.`
    /// (e.g. `plugin_name`, `node.metadata.zone`). Unset properties are `NotFound`.
    pub fn property(mut self, path: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties.insert(path.to_owned(), value.into());
        self
    }

    /// Restricts `proxy_http_call` to these upstream clusters (others get `BadArgument`, as
    /// Envoy answers for an unknown cluster); by default every name is accepted.
    pub fn clusters<S: Into<String>>(mut self, clusters: impl IntoIterator<Item = S>) -> Self {
        self.clusters = Some(clusters.into_iter().map(Into::into).collect());
        self
    }

    /// Level `proxy_get_log_level` reports; default Trace. Every log call is captured anyway.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// Initial virtual time; default [`DEFAULT_START_TIME_UNIX_SECS`].
    pub fn start_time(mut self, time: SystemTime) -> Self {
        self.start_time = time;
        self
    }

    /// Starts with a configuration the module is expected to refuse: the error log lines it wrote
    /// (they name the bad field), or why the start was not such a refusal.
    pub fn start_rejected(self) -> Result<Vec<String>, String> {
        match self.start() {
            Err(EmulatorError::ConfigureRejected { errors, .. }) => Ok(errors),
            Err(other) => Err(format!("unexpected error {other}")),
            Ok(_) => Err("the configuration was accepted".to_owned()),
        }
    }

    /// Loads the module (compiled once per process), instantiates one VM per worker and runs,
    /// on each worker in order, `_initialize`, root context creation, `proxy_on_vm_start` and
    /// `proxy_on_configure`. A `false` from either callback or a trap is an `Err`.
    pub fn start(self) -> Result<EmulatedHost, EmulatorError> {
        let pre = instance_pre(&self.wasm)?;
        let start_nanos = self
            .start_time
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let shared = Arc::new(HostShared {
            clock_nanos: AtomicU64::new(start_nanos),
            shared_data: SharedDataStore::new(),
            metrics: MetricsStore::new(),
            logs: Mutex::new(Vec::new()),
            calls: Mutex::new(Calls::default()),
            next_token: AtomicU32::new(1),
            properties: self.properties,
            plugin_config: Mutex::new(self.plugin_config),
            vm_config: self.vm_config,
            clusters: self.clusters,
            log_level: self.log_level,
            foreign_calls: Mutex::new(HashMap::new()),
        });
        let mut workers = Vec::with_capacity(self.workers);
        for index in 0..self.workers {
            let state = WorkerState::new(index, shared.clone());
            let mut vm = WorkerVm::instantiate(&pre, state, &self.wasm)?;
            vm.start()?;
            workers.push(Worker {
                index,
                vm: Arc::new(Mutex::new(vm)),
            });
        }
        Ok(EmulatedHost {
            shared,
            workers,
            advance_lock: Mutex::new(()),
        })
    }
}

/// One worker (one VM). Cheap to clone; usable from any thread. Calls into one worker are
/// serialized (like an Envoy worker thread); different workers run concurrently.
#[derive(Clone)]
pub struct Worker {
    index: usize,
    vm: Arc<Mutex<WorkerVm>>,
}

impl Worker {
    /// The worker's index (0-based, as in log records and HTTP calls).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Starts a new HTTP stream: allocates a context id and calls
    /// `proxy_on_context_create(id, root_id)`.
    pub fn http_stream(&self) -> Result<HttpStream, EmulatorError> {
        let context_id = self.lock().create_stream()?;
        Ok(HttpStream::new(self.clone(), context_id))
    }

    /// Calls `proxy_on_tick` now, whatever the tick period (use [`EmulatedHost::advance`] for
    /// timer-driven ticks).
    pub fn tick(&self) -> Result<(), EmulatorError> {
        self.lock().tick()
    }

    /// The tick period the module set, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        self.lock().state().tick_period
    }

    /// How many `proxy_on_tick` calls this worker received (timer-driven and [`Worker::tick`]).
    pub fn ticks_delivered(&self) -> u64 {
        self.lock().state().ticks_delivered
    }

    /// True once the VM has trapped; every later call on it fails with `WorkerDead`.
    pub fn is_dead(&self) -> bool {
        self.lock().is_dead()
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, WorkerVm> {
        lock(&self.vm)
    }
}

/// An emulated proxy-wasm host running one real `.wasm` module on N workers that share one
/// shared-data store, one stats store, one log and one virtual clock.
pub struct EmulatedHost {
    shared: Arc<HostShared>,
    workers: Vec<Worker>,
    advance_lock: Mutex<()>,
}

impl EmulatedHost {
    /// A builder for a host running the module at `wasm` (see [`built_module`]).
    pub fn builder(wasm: impl Into<PathBuf>) -> HostBuilder {
        HostBuilder {
            wasm: wasm.into(),
            workers: 1,
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            properties: HashMap::new(),
            clusters: None,
            log_level: LogLevel::Trace,
            start_time: UNIX_EPOCH + Duration::from_secs(DEFAULT_START_TIME_UNIX_SECS),
        }
    }

    /// Worker `index`.
    pub fn worker(&self, index: usize) -> Result<Worker, EmulatorError> {
        self.workers
            .get(index)
            .cloned()
            .ok_or(EmulatorError::NoSuchWorker {
                index,
                workers: self.workers.len(),
            })
    }

    /// All workers, in index order.
    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }

    /// Current virtual time.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.shared.now_nanos())
    }

    /// Advances virtual time by `by`, firing in time order every tick whose period elapsed
    /// (workers in index order at equal instants; a period elapsing k times fires k ticks) and
    /// failing every HTTP call whose timeout passed. Dead workers are skipped.
    pub fn advance(&self, by: Duration) -> Result<(), EmulatorError> {
        let _serialized = lock(&self.advance_lock);
        let by_nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let target = self.shared.now_nanos().saturating_add(by_nanos);
        loop {
            let next_tick = self
                .workers
                .iter()
                .filter_map(|w| next_tick_of(&w.lock()))
                .min();
            let next_timeout = lock(&self.shared.calls)
                .pending
                .values()
                .map(|call| call.deadline_nanos)
                .min();
            let next = match (next_tick, next_timeout) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > target {
                break;
            }
            let now = self.shared.now_nanos().max(next);
            self.shared.clock_nanos.store(now, Ordering::SeqCst);
            for worker in &self.workers {
                let mut vm = worker.lock();
                if next_tick_of(&vm).is_some_and(|at| at <= now) {
                    let state = vm.state_mut();
                    let period = state
                        .tick_period
                        .map_or(0, |p| u64::try_from(p.as_nanos()).unwrap_or(u64::MAX));
                    state.next_tick_nanos = state.next_tick_nanos.saturating_add(period);
                    vm.tick()?;
                }
            }
            let mut expired: Vec<_> = {
                let mut calls = lock(&self.shared.calls);
                let tokens: Vec<u32> = calls
                    .pending
                    .iter()
                    .filter(|(_, call)| call.deadline_nanos <= now)
                    .map(|(token, _)| *token)
                    .collect();
                tokens
                    .into_iter()
                    .filter_map(|token| calls.pending.remove(&token).map(|c| (token, c)))
                    .collect()
            };
            expired.sort_by_key(|(token, _)| *token);
            for (token, call) in expired {
                let Some(worker) = self.workers.get(call.worker) else {
                    continue;
                };
                let mut vm = worker.lock();
                if !vm.is_dead() {
                    vm.deliver_call_reply(call.context_id, token, HttpCallReply::Failure)?;
                }
            }
        }
        self.shared.clock_nanos.store(target, Ordering::SeqCst);
        Ok(())
    }

    /// Replaces the plugin configuration and calls `proxy_on_configure` on every worker's root
    /// context; `Err(ConfigureRejected)` when a worker returns false.
    pub fn reconfigure(&self, config: impl Into<Vec<u8>>) -> Result<(), EmulatorError> {
        *lock(&self.shared.plugin_config) = config.into();
        for worker in &self.workers {
            worker.lock().configure()?;
        }
        Ok(())
    }

    /// The value and cas of a shared-data key (`None` when never set).
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.shared.shared_data.get(key)
    }

    /// Writes a shared-data key unconditionally (seeding state a test needs); returns its cas.
    pub fn set_shared_data(&self, key: &str, value: &[u8]) -> u32 {
        self.shared.shared_data.set(key, value, 0).unwrap_or(0)
    }

    /// How many shared-data writes failed with `CasMismatch` because workers raced on a key
    /// (injected failures are counted by [`EmulatedHost::injected_cas_failures`]).
    pub fn shared_data_cas_mismatches(&self) -> u64 {
        self.shared.shared_data.cas_mismatches()
    }

    /// Makes the next `count` shared-data writes with a nonzero cas fail with `CasMismatch` (as if
    /// another worker had written first), only writes to `key` when given: drives contention,
    /// fail-open and deferred paths deterministically. Writes with cas 0 are unaffected. Replaces
    /// any injection still pending; `count` 0 cancels it.
    pub fn fail_next_cas_sets(&self, count: u64, key: Option<&str>) {
        self.shared.shared_data.fail_next_cas_sets(count, key);
    }

    /// How many shared-data writes failed by injection so far.
    pub fn injected_cas_failures(&self) -> u64 {
        self.shared.shared_data.injected_cas_failures()
    }

    /// How many injected failures are still pending.
    pub fn pending_injected_cas_failures(&self) -> u64 {
        self.shared.shared_data.pending_injected_cas_failures()
    }

    /// Every shared-data key, sorted.
    pub fn shared_data_keys(&self) -> Vec<String> {
        self.shared.shared_data.keys()
    }

    /// The metric called `name` (as the module defined it, e.g. `mesh.fixture.requests`).
    pub fn metric(&self, name: &str) -> Option<MetricValue> {
        self.shared.metrics.get(name)
    }

    /// A counter's total over all workers; `None` when no counter has that name.
    pub fn counter(&self, name: &str) -> Option<u64> {
        match self.metric(name)? {
            MetricValue::Counter(total) => Some(total),
            _ => None,
        }
    }

    /// A gauge's value; `None` when no gauge has that name.
    pub fn gauge(&self, name: &str) -> Option<i64> {
        match self.metric(name)? {
            MetricValue::Gauge(value) => Some(value),
            _ => None,
        }
    }

    /// Every defined metric name, sorted.
    pub fn metric_names(&self) -> Vec<String> {
        self.shared.metrics.names()
    }

    /// Every log record so far, in order.
    pub fn logs(&self) -> Vec<LogRecord> {
        lock(&self.shared.logs).clone()
    }

    /// Messages logged at `level` or above, in order.
    pub fn log_messages(&self, level: LogLevel) -> Vec<String> {
        lock(&self.shared.logs)
            .iter()
            .filter(|r| r.level >= level)
            .map(|r| r.message.clone())
            .collect()
    }

    /// Every HTTP call dispatched so far, in order.
    pub fn http_calls(&self) -> Vec<HttpCall> {
        lock(&self.shared.calls).history.clone()
    }

    /// The HTTP calls still waiting for a reply, in dispatch order.
    pub fn pending_http_calls(&self) -> Vec<HttpCall> {
        let calls = lock(&self.shared.calls);
        calls
            .history
            .iter()
            .filter(|call| calls.pending.contains_key(&call.token))
            .cloned()
            .collect()
    }

    /// Delivers `reply` for the call `token` by calling `proxy_on_http_call_response` on the
    /// context that dispatched it, on its worker.
    pub fn respond_to_call(&self, token: u32, reply: HttpCallReply) -> Result<(), EmulatorError> {
        let call = lock(&self.shared.calls)
            .pending
            .remove(&token)
            .ok_or(EmulatorError::NoPendingCall { token })?;
        let worker = self.worker(call.worker)?;
        let mut vm = worker.lock();
        vm.deliver_call_reply(call.context_id, token, reply)
    }

    /// How many times the module called the foreign function `name` successfully
    /// (only `clear_route_cache` exists; unknown names answer `NotFound` and are not counted).
    pub fn foreign_function_calls(&self, name: &str) -> u64 {
        lock(&self.shared.foreign_calls)
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

fn next_tick_of(vm: &WorkerVm) -> Option<u64> {
    if vm.is_dead() {
        return None;
    }
    let state = vm.state();
    state.tick_period.map(|_| state.next_tick_nanos)
}
