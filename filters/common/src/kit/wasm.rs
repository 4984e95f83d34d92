//! The kit's proxy-wasm shell (wasm32): [`WasmHost`], the [`Host`] backed by Envoy through
//! meshkit's trap-free wrappers, and the root and HTTP contexts every module shares, which only
//! forward host events to a [`Chain`]. A filter's module starts it with
//! [`standalone_module!`](crate::standalone_module), the suite module with [`start_suite`].
//!
//! A reconfiguration builds a new chain; streams keep the chain they started with, and a replaced
//! chain keeps being ticked while streams still hold it or it has pending work.

use super::chain::{Chain, ChainStream, MemberFactory};
use super::host::{Host, MetricKind};
use super::{Filter, Verdict};
use crate::callout;
use crate::clock::{Clock, HostClock, Timestamp};
use crate::error::HostError;
use crate::ffi;
use crate::grpc::GrpcStatus;
use crate::headers::{self, HeaderMapKind};
use crate::shared::{HostSharedStore, SharedStore};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MetricType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

#[doc(hidden)]
pub use proxy_wasm as __proxy_wasm;

/// Envoy, as a filter's [`Host`].
#[derive(Debug, Default, Clone, Copy)]
pub struct WasmHost;

impl Host for WasmHost {
    fn now(&self) -> Timestamp {
        HostClock.now()
    }

    fn header(&self, kind: HeaderMapKind, name: &str) -> Option<Vec<u8>> {
        headers::header_bytes(kind, name).unwrap_or_else(|err| {
            log::debug!("cannot read {kind:?} {name}: {err}");
            None
        })
    }

    fn header_values(&self, kind: HeaderMapKind, name: &str) -> Vec<Vec<u8>> {
        headers::header_values(kind, name).unwrap_or_else(|err| {
            log::debug!("cannot read {kind:?} {name}: {err}");
            Vec::new()
        })
    }

    fn set_header(&self, kind: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        headers::set_header(kind, name, value)
    }

    fn remove_header(&self, kind: HeaderMapKind, name: &str) -> Result<(), HostError> {
        headers::remove_header(kind, name)
    }

    fn clear_route_cache(&self) -> Result<(), HostError> {
        headers::clear_route_cache()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        crate::properties::property(path).unwrap_or_else(|err| {
            log::debug!("cannot read property {path:?}: {err}");
            None
        })
    }

    fn shared_store(&self) -> &dyn SharedStore {
        &HostSharedStore
    }

    fn send_http_reply(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        crate::reply::send_http_error(status, headers, body)
    }

    fn send_grpc_reply(
        &self,
        status: GrpcStatus,
        message: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), HostError> {
        crate::reply::send_grpc_error(status, message, headers)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let metric_type = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        ffi::define_metric(metric_type as u32, name)
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        if let Err(err) = ffi::increment_metric(id, delta) {
            log::debug!("metric {id} not updated: {err}");
        }
    }

    fn record_metric(&self, id: u32, value: u64) {
        if let Err(err) = ffi::record_metric(id, value) {
            log::debug!("metric {id} not updated: {err}");
        }
    }

    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        crate::clock::set_tick_period(period)
    }

    fn dispatch_http_call(
        &self,
        upstream: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let body = (!body.is_empty()).then_some(body);
        callout::dispatch_http_call(upstream, headers, body, &[], timeout)
    }

    fn http_call_response_header(&self, name: &str) -> Option<Vec<u8>> {
        callout::response_header(name).unwrap_or_else(|err| {
            log::debug!("cannot read callout response header {name}: {err}");
            None
        })
    }

    fn http_call_response_headers(&self) -> Vec<(String, Vec<u8>)> {
        callout::response_headers().unwrap_or_else(|err| {
            log::debug!("cannot read callout response headers: {err}");
            Vec::new()
        })
    }

    fn http_call_response_body(&self) -> Vec<u8> {
        // The host copies at most the body's size, whatever the limit asked for.
        match callout::response_body(usize::MAX) {
            Ok(body) => body.unwrap_or_default(),
            Err(err) => {
                log::debug!("cannot read callout response body: {err}");
                Vec::new()
            }
        }
    }
}

/// Which chain a module's root context builds from its plugin configuration.
enum ChainKind {
    /// One filter, configured by the whole plugin configuration.
    Standalone(MemberFactory),
    /// The suite: sections naming these filters.
    Suite(Vec<MemberFactory>),
}

/// The filters a suite module can run (implemented by the suite crate).
pub trait SuiteTable: 'static {
    /// One factory per filter.
    fn factories() -> Vec<MemberFactory>;
}

type SharedChain = Rc<RefCell<Chain>>;

/// The root context of every module.
struct KitRoot {
    kind: ChainKind,
    current: Option<SharedChain>,
    /// Replaced chains still held by open streams or owing work to shared state.
    retired: Vec<SharedChain>,
}

impl KitRoot {
    fn boxed(kind: ChainKind) -> Box<dyn RootContext> {
        Box::new(KitRoot {
            kind,
            current: None,
            retired: Vec::new(),
        })
    }
}

fn standalone_root<F: Filter>(_context_id: u32) -> Box<dyn RootContext> {
    KitRoot::boxed(ChainKind::Standalone(MemberFactory::of::<F>()))
}

fn suite_root<S: SuiteTable>(_context_id: u32) -> Box<dyn RootContext> {
    KitRoot::boxed(ChainKind::Suite(S::factories()))
}

/// Starts a module running filter `F` alone. Call it from `proxy_wasm::main!` (the
/// [`standalone_module!`](crate::standalone_module) macro does).
pub fn start_standalone<F: Filter>() {
    crate::panic_hook::init_logging(log::LevelFilter::Info);
    proxy_wasm::set_root_context(standalone_root::<F>);
}

/// Starts the suite module, able to run the filters of `S`.
pub fn start_suite<S: SuiteTable>() {
    crate::panic_hook::init_logging(log::LevelFilter::Info);
    proxy_wasm::set_root_context(suite_root::<S>);
}

/// Runs `f` on `chain` unless it is already borrowed (a re-entrant host callback).
fn with_chain(chain: &SharedChain, f: impl FnOnce(&mut Chain)) {
    match chain.try_borrow_mut() {
        Ok(mut chain) => f(&mut chain),
        Err(_) => log::error!("filter chain re-entered; event skipped"),
    }
}

impl KitRoot {
    fn chains(&self) -> impl Iterator<Item = &SharedChain> {
        self.current.iter().chain(&self.retired)
    }
}

impl Context for KitRoot {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        for chain in self.chains() {
            with_chain(chain, |chain| chain.on_http_call_response(&WasmHost, token));
        }
    }
}

impl RootContext for KitRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = match ffi::buffer_bytes(BufferType::PluginConfiguration as u32, 0, usize::MAX) {
            Ok(raw) => raw,
            Err(err) => {
                log::error!("cannot read the plugin configuration: {err}");
                return false;
            }
        };
        let plugin = crate::properties::plugin_name();
        let chain = match &self.kind {
            ChainKind::Standalone(factory) => {
                Chain::standalone(*factory, raw.as_deref(), &WasmHost, &plugin)
            }
            ChainKind::Suite(factories) => {
                Chain::suite(factories, raw.as_deref(), &WasmHost, &plugin)
            }
        };
        let Ok(chain) = chain else {
            return false;
        };
        if let Some(period) = chain.tick_period() {
            if let Err(err) = WasmHost.set_tick_period(period) {
                log::warn!("cannot set the tick period ({err}); filters are not ticked");
            }
        }
        log::info!(
            "plugin {plugin:?} configured: filters [{}]",
            chain.filter_names().join(", ")
        );
        if let Some(replaced) = self.current.replace(Rc::new(RefCell::new(chain))) {
            self.retired.push(replaced);
        }
        true
    }

    fn on_tick(&mut self) {
        for chain in self.chains() {
            with_chain(chain, |chain| chain.on_tick(&WasmHost));
        }
        self.retired.retain(|chain| {
            Rc::strong_count(chain) > 1
                || chain
                    .try_borrow()
                    .map_or(true, |chain| chain.has_pending_work())
        });
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(KitStream {
            chain: self.current.clone(),
            stream: ChainStream::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream: the chain it started with and its state in it.
struct KitStream {
    chain: Option<SharedChain>,
    stream: ChainStream,
}

impl KitStream {
    fn with(&mut self, f: impl FnOnce(&mut Chain, &mut ChainStream)) {
        if let Some(chain) = &self.chain {
            let stream = &mut self.stream;
            with_chain(chain, |chain| f(chain, stream));
        }
    }

    fn end(&mut self) {
        self.with(|chain, stream| chain.on_stream_end(&WasmHost, stream));
    }
}

impl Context for KitStream {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        self.with(|chain, stream| chain.on_stream_http_call_response(&WasmHost, stream, token));
    }

    fn on_done(&mut self) -> bool {
        self.end();
        true
    }
}

impl HttpContext for KitStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let mut verdict = Verdict::Continue;
        self.with(|chain, stream| verdict = chain.on_request_headers(&WasmHost, stream));
        match verdict {
            Verdict::Continue => Action::Continue,
            Verdict::Replied => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.with(|chain, stream| chain.on_response_headers(&WasmHost, stream, end_of_stream));
        Action::Continue
    }

    fn on_http_response_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
        self.with(|chain, stream| chain.on_response_body(stream, end_of_stream));
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.with(|chain, stream| chain.on_response_trailers(&WasmHost, stream));
        Action::Continue
    }

    fn on_log(&mut self) {
        self.end();
    }
}

/// The entry point of a module running one filter:
/// `meshkit::standalone_module!(load_shedder::LoadShedder);` in the filter's crate (behind its
/// `standalone` feature, so the suite can link the crate without a second entry point).
#[macro_export]
macro_rules! standalone_module {
    ($filter:ty) => {
        $crate::kit::wasm::__proxy_wasm::main! {{
            $crate::kit::wasm::start_standalone::<$filter>();
        }}
    };
}
