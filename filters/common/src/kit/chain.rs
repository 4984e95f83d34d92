//! [`Chain`]: the configured filters of one plugin on one worker, in order, driven as one; the
//! kit's proxy-wasm contexts are a thin shell around it, so everything here runs natively
//! against a fake host.
//!
//! A standalone module is a chain of one filter configured from the plugin configuration; the
//! suite module is a chain of the sections its configuration lists:
//!
//! ```json
//! {"filters": [{"filter": "load-shedder", "name": "shedder", "config": {"dry_run": true}}]}
//! ```
//!
//! `name` (default: the filter's name) names the section's metrics and shared-data namespace;
//! `config` is the filter's own configuration (default `{}`). An empty suite configuration runs
//! no filter. Per stream the chain records the response ([`ResponseTracker`]) once for all its
//! filters and ends each filter's stream exactly once with the [`Outcome`].
//!
//! Each filter sees the host through a [`MemberHost`] that notes the tokens of the HTTP callouts
//! it dispatches, so a callout's response reaches the filter that dispatched it and no other. The
//! tokens a stream's callouts left unanswered are forgotten when the stream ends (Envoy cancels
//! them with the stream).

use super::host::{Host, MetricKind};
use super::response::{Outcome, ResponseTracker};
use super::{configure_filter, Filter, Request, Setup, Verdict};
use crate::clock::Timestamp;
use crate::config::{ConfigError, Validate};
use crate::error::HostError;
use crate::grpc::GrpcStatus;
use crate::headers::HeaderMapKind;
use crate::shared::SharedStore;
use serde::Deserialize;
use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

/// A configured filter, type-erased so one chain can hold several kinds.
trait Member {
    fn name(&self) -> &'static str;
    fn new_stream(&self) -> Box<dyn Any>;
    fn on_request_headers(
        &mut self,
        host: &dyn Host,
        request: &Request,
        stream: &mut dyn Any,
    ) -> Verdict;
    fn on_response_headers(&mut self, host: &dyn Host, stream: &mut dyn Any);
    fn on_response_trailers(&mut self, host: &dyn Host, stream: &mut dyn Any);
    fn on_stream_end(&mut self, host: &dyn Host, stream: Box<dyn Any>, outcome: Outcome);
    fn on_tick(&mut self, host: &dyn Host);
    fn on_http_call_response(&mut self, host: &dyn Host, token: u32);
    fn has_pending_work(&self) -> bool;
}

/// A filter in a chain.
struct Slot<F: Filter>(F);

impl<F: Filter> Member for Slot<F> {
    fn name(&self) -> &'static str {
        F::NAME
    }

    fn new_stream(&self) -> Box<dyn Any> {
        Box::new(F::Stream::default())
    }

    fn on_request_headers(
        &mut self,
        host: &dyn Host,
        request: &Request,
        stream: &mut dyn Any,
    ) -> Verdict {
        match stream.downcast_mut::<F::Stream>() {
            Some(stream) => self.0.on_request_headers(host, request, stream),
            None => Verdict::Continue,
        }
    }

    fn on_response_headers(&mut self, host: &dyn Host, stream: &mut dyn Any) {
        if let Some(stream) = stream.downcast_mut::<F::Stream>() {
            self.0.on_response_headers(host, stream);
        }
    }

    fn on_response_trailers(&mut self, host: &dyn Host, stream: &mut dyn Any) {
        if let Some(stream) = stream.downcast_mut::<F::Stream>() {
            self.0.on_response_trailers(host, stream);
        }
    }

    fn on_stream_end(&mut self, host: &dyn Host, stream: Box<dyn Any>, outcome: Outcome) {
        if let Ok(stream) = stream.downcast::<F::Stream>() {
            self.0.on_stream_end(host, *stream, outcome);
        }
    }

    fn on_tick(&mut self, host: &dyn Host) {
        self.0.on_tick(host);
    }

    fn on_http_call_response(&mut self, host: &dyn Host, token: u32) {
        self.0.on_http_call_response(host, token);
    }

    fn has_pending_work(&self) -> bool {
        self.0.has_pending_work()
    }
}

/// The host as one filter of a chain sees it: every call goes to the chain's host, and the
/// tokens of the callouts the filter dispatches are noted for the chain to route their responses.
struct MemberHost<'a> {
    host: &'a dyn Host,
    dispatched: RefCell<Vec<u32>>,
}

impl<'a> MemberHost<'a> {
    fn new(host: &'a dyn Host) -> Self {
        MemberHost {
            host,
            dispatched: RefCell::new(Vec::new()),
        }
    }

    /// The tokens of the callouts dispatched through this host.
    fn into_dispatched(self) -> Vec<u32> {
        self.dispatched.into_inner()
    }
}

impl Host for MemberHost<'_> {
    fn now(&self) -> Timestamp {
        self.host.now()
    }

    fn header(&self, kind: HeaderMapKind, name: &str) -> Option<Vec<u8>> {
        self.host.header(kind, name)
    }

    fn header_values(&self, kind: HeaderMapKind, name: &str) -> Vec<Vec<u8>> {
        self.host.header_values(kind, name)
    }

    fn set_header(&self, kind: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.host.set_header(kind, name, value)
    }

    fn remove_header(&self, kind: HeaderMapKind, name: &str) -> Result<(), HostError> {
        self.host.remove_header(kind, name)
    }

    fn clear_route_cache(&self) -> Result<(), HostError> {
        self.host.clear_route_cache()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.host.property(path)
    }

    fn shared_store(&self) -> &dyn SharedStore {
        self.host.shared_store()
    }

    fn send_http_reply(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        self.host.send_http_reply(status, headers, body)
    }

    fn send_grpc_reply(
        &self,
        status: GrpcStatus,
        message: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), HostError> {
        self.host.send_grpc_reply(status, message, headers)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        self.host.define_metric(kind, name)
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        self.host.increment_metric(id, delta);
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.host.record_metric(id, value);
    }

    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        self.host.set_tick_period(period)
    }

    fn dispatch_http_call(
        &self,
        upstream: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let token = self
            .host
            .dispatch_http_call(upstream, headers, body, timeout)?;
        self.dispatched.borrow_mut().push(token);
        Ok(token)
    }

    fn http_call_response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.host.http_call_response_header(name)
    }

    fn http_call_response_headers(&self) -> Vec<(String, Vec<u8>)> {
        self.host.http_call_response_headers()
    }

    fn http_call_response_body(&self) -> Vec<u8> {
        self.host.http_call_response_body()
    }
}

/// Configures one filter from its raw JSON configuration.
type Configure = fn(Option<&[u8]>, &mut Setup<'_>) -> Result<Box<dyn Member>, ConfigError>;

/// How to configure one kind of filter into a chain: the suite module's table of filters is a
/// list of these, one line per filter (`MemberFactory::of::<LoadShedder>()`).
#[derive(Clone, Copy)]
pub struct MemberFactory {
    name: &'static str,
    configure: Configure,
}

impl MemberFactory {
    /// The factory of filter `F`.
    pub fn of<F: Filter>() -> MemberFactory {
        MemberFactory {
            name: F::NAME,
            configure: |raw, setup| {
                configure_filter::<F>(raw, setup).map(|filter| Box::new(Slot(filter)) as Box<_>)
            },
        }
    }

    /// The filter's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Why a chain could not be configured.
pub type ChainError = ConfigError;

/// The suite module's configuration: its ordered sections.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SuiteConfig {
    filters: Vec<SectionConfig>,
}

/// One filter of the suite.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SectionConfig {
    filter: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

impl Validate for SuiteConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (index, section) in self.filters.iter().enumerate() {
            let name = section.name.as_deref().unwrap_or(&section.filter);
            if name.is_empty() {
                return Err(ConfigError::invalid(
                    format!("filters[{index}].name"),
                    "\"\"",
                    "a section name must not be empty",
                ));
            }
            // Metrics and shared-data keys are the filter's own (`mesh.<filter>.<name>`), so only
            // two sections of one filter can clash.
            let earlier = self.filters[..index].iter().any(|other| {
                other.filter == section.filter
                    && other.name.as_deref().unwrap_or(&other.filter) == name
            });
            if earlier {
                return Err(ConfigError::invalid(
                    format!("filters[{index}].name"),
                    format!("{name:?}"),
                    "two sections of this filter have this name; give one a distinct `name`",
                ));
            }
        }
        Ok(())
    }
}

/// The configured filters of one plugin on one worker.
pub struct Chain {
    members: Vec<Box<dyn Member>>,
    tick: Option<Duration>,
    /// The filter (index into `members`) that dispatched each unanswered callout.
    callouts: HashMap<u32, usize>,
}

/// One stream's state in a chain: the response record and each filter's stream, for the
/// filters that saw the request headers.
#[derive(Default)]
pub struct ChainStream {
    tracker: ResponseTracker,
    streams: Vec<Box<dyn Any>>,
    ended: bool,
    /// Callouts dispatched while handling this stream (cancelled by Envoy when it ends).
    callouts: Vec<u32>,
}

impl Chain {
    /// A chain of the one filter `factory` builds, configured from the plugin configuration
    /// `raw` in plugin `plugin`. Errors are logged, naming the filter and field.
    pub fn standalone(
        factory: MemberFactory,
        raw: Option<&[u8]>,
        host: &dyn Host,
        plugin: &str,
    ) -> Result<Chain, ChainError> {
        let mut setup = Setup::new(host, factory.name, plugin, None);
        let member = (factory.configure)(raw, &mut setup).inspect_err(|err| {
            log::error!("{}: {err}", factory.name);
        })?;
        Ok(Chain {
            members: vec![member],
            tick: setup.tick_period(),
            callouts: HashMap::new(),
        })
    }

    /// The suite's chain: the sections of the suite configuration `raw`, each configured by
    /// the factory of its `filter` out of `factories`. Errors name the section's field path
    /// (e.g. `filters[0].config.limit.min_limit`) and are logged.
    pub fn suite(
        factories: &[MemberFactory],
        raw: Option<&[u8]>,
        host: &dyn Host,
        plugin: &str,
    ) -> Result<Chain, ChainError> {
        Self::configure_suite(factories, raw, host, plugin).inspect_err(|err| {
            log::error!("mesh-suite: {err}");
        })
    }

    fn configure_suite(
        factories: &[MemberFactory],
        raw: Option<&[u8]>,
        host: &dyn Host,
        plugin: &str,
    ) -> Result<Chain, ChainError> {
        let config: SuiteConfig = crate::config::load_config(raw)?;
        let mut chain = Chain {
            members: Vec::with_capacity(config.filters.len()),
            tick: None,
            callouts: HashMap::new(),
        };
        for (index, section) in config.filters.iter().enumerate() {
            let Some(factory) = factories.iter().find(|f| f.name == section.filter) else {
                let known: Vec<_> = factories.iter().map(|f| f.name).collect();
                return Err(ConfigError::invalid(
                    format!("filters[{index}].filter"),
                    format!("{:?}", section.filter),
                    format!("unknown filter; this suite has {}", known.join(", ")),
                ));
            };
            let name = section.name.as_deref().unwrap_or(factory.name);
            let mut setup = Setup::new(host, factory.name, plugin, Some(name));
            let raw = section.config.as_ref().map(|value| value.to_string());
            let member = (factory.configure)(raw.as_deref().map(str::as_bytes), &mut setup)
                .map_err(|err| nested(err, &format!("filters[{index}].config")))?;
            if let Some(period) = setup.tick_period() {
                chain.tick = Some(chain.tick.map_or(period, |tick| tick.min(period)));
            }
            chain.members.push(member);
        }
        if chain.members.is_empty() {
            log::warn!("mesh-suite: the configuration lists no filters; requests pass untouched");
        }
        Ok(chain)
    }

    /// The filters' names, in order.
    pub fn filter_names(&self) -> Vec<&'static str> {
        self.members.iter().map(|member| member.name()).collect()
    }

    /// The tick period the chain's filters asked for.
    pub fn tick_period(&self) -> Option<Duration> {
        self.tick
    }

    /// Whether a filter still owes work to shared state or awaits a callout's response.
    pub fn has_pending_work(&self) -> bool {
        !self.callouts.is_empty() || self.members.iter().any(|member| member.has_pending_work())
    }

    /// Notes that filter `index` dispatched the callouts `tokens` (while handling `stream`, if
    /// given).
    fn note_callouts(&mut self, index: usize, tokens: Vec<u32>, stream: Option<&mut ChainStream>) {
        if tokens.is_empty() {
            return;
        }
        for &token in &tokens {
            self.callouts.insert(token, index);
        }
        if let Some(stream) = stream {
            stream.callouts.extend(tokens);
        }
    }

    /// The request headers: each filter in order, until one answers the request itself.
    pub fn on_request_headers(&mut self, host: &dyn Host, stream: &mut ChainStream) -> Verdict {
        let content_type = host.header(HeaderMapKind::RequestHeaders, "content-type");
        stream.tracker.request_content_type(content_type.as_deref());
        let request = Request {
            grpc: stream.tracker.is_grpc(),
        };
        for index in 0..self.members.len() {
            let Some(member) = self.members.get_mut(index) else {
                break;
            };
            let mut member_stream = member.new_stream();
            let member_host = MemberHost::new(host);
            let verdict = member.on_request_headers(&member_host, &request, member_stream.as_mut());
            stream.streams.push(member_stream);
            self.note_callouts(index, member_host.into_dispatched(), Some(stream));
            if verdict == Verdict::Replied {
                stream.tracker.replied_locally();
                return Verdict::Replied;
            }
        }
        Verdict::Continue
    }

    /// The response headers: recorded, then shown to the filters that saw the request.
    pub fn on_response_headers(
        &mut self,
        host: &dyn Host,
        stream: &mut ChainStream,
        end_of_stream: bool,
    ) {
        let response = HeaderMapKind::ResponseHeaders;
        let status = host.header(response, ":status");
        stream
            .tracker
            .response_headers(status.as_deref(), end_of_stream);
        if stream.tracker.wants_grpc_status() {
            let grpc_status = host.header(response, "grpc-status");
            stream.tracker.grpc_status(grpc_status.as_deref());
        }
        for index in 0..stream.streams.len().min(self.members.len()) {
            let (Some(member), Some(member_stream)) =
                (self.members.get_mut(index), stream.streams.get_mut(index))
            else {
                break;
            };
            let member_host = MemberHost::new(host);
            member.on_response_headers(&member_host, member_stream.as_mut());
            self.note_callouts(index, member_host.into_dispatched(), Some(stream));
        }
    }

    /// A response body chunk.
    pub fn on_response_body(&mut self, stream: &mut ChainStream, end_of_stream: bool) {
        if end_of_stream {
            stream.tracker.response_complete();
        }
    }

    /// The response trailers: recorded, then shown to the filters that saw the request.
    pub fn on_response_trailers(&mut self, host: &dyn Host, stream: &mut ChainStream) {
        stream.tracker.response_complete();
        if stream.tracker.wants_grpc_status() {
            let grpc_status = host.header(HeaderMapKind::ResponseTrailers, "grpc-status");
            stream.tracker.grpc_status(grpc_status.as_deref());
        }
        for index in 0..stream.streams.len().min(self.members.len()) {
            let (Some(member), Some(member_stream)) =
                (self.members.get_mut(index), stream.streams.get_mut(index))
            else {
                break;
            };
            let member_host = MemberHost::new(host);
            member.on_response_trailers(&member_host, member_stream.as_mut());
            self.note_callouts(index, member_host.into_dispatched(), Some(stream));
        }
    }

    /// The end of the stream (Envoy's `on_done` or `on_log`, whichever comes first): each
    /// filter that saw the request ends its stream exactly once, with the outcome.
    pub fn on_stream_end(&mut self, host: &dyn Host, stream: &mut ChainStream) {
        if std::mem::replace(&mut stream.ended, true) || stream.streams.is_empty() {
            return;
        }
        let outcome = stream.tracker.outcome(|| {
            host.property(&["response", "code_details"])
                .is_none_or(|details| details.as_slice() == b"via_upstream")
        });
        let streams = std::mem::take(&mut stream.streams);
        for (member, member_stream) in self.members.iter_mut().zip(streams) {
            // Callouts dispatched now are cancelled with the stream: nothing to note.
            member.on_stream_end(&MemberHost::new(host), member_stream, outcome);
        }
        for token in std::mem::take(&mut stream.callouts) {
            self.callouts.remove(&token);
        }
    }

    /// The periodic tick, for every filter.
    pub fn on_tick(&mut self, host: &dyn Host) {
        for index in 0..self.members.len() {
            let Some(member) = self.members.get_mut(index) else {
                break;
            };
            let member_host = MemberHost::new(host);
            member.on_tick(&member_host);
            self.note_callouts(index, member_host.into_dispatched(), None);
        }
    }

    /// The response of callout `token` dispatched outside any stream (from a tick or another
    /// such response), for the filter that dispatched it; a token this chain did not dispatch
    /// is ignored (a module's root context serves several chains).
    pub fn on_http_call_response(&mut self, host: &dyn Host, token: u32) {
        self.deliver_call_response(host, token, None);
    }

    /// The response of callout `token` dispatched while handling `stream`, for the filter that
    /// dispatched it.
    pub fn on_stream_http_call_response(
        &mut self,
        host: &dyn Host,
        stream: &mut ChainStream,
        token: u32,
    ) {
        stream.callouts.retain(|&pending| pending != token);
        self.deliver_call_response(host, token, Some(stream));
    }

    fn deliver_call_response(
        &mut self,
        host: &dyn Host,
        token: u32,
        stream: Option<&mut ChainStream>,
    ) {
        let Some(index) = self.callouts.remove(&token) else {
            return;
        };
        let Some(member) = self.members.get_mut(index) else {
            return;
        };
        let member_host = MemberHost::new(host);
        member.on_http_call_response(&member_host, token);
        self.note_callouts(index, member_host.into_dispatched(), stream);
    }
}

/// `err` from a nested configuration document, with its path under `prefix`.
fn nested(err: ConfigError, prefix: &str) -> ConfigError {
    let path = if err.path == crate::config::ROOT_PATH {
        prefix.to_owned()
    } else {
        format!("{prefix}.{}", err.path)
    };
    ConfigError { path, ..err }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::fake::FakeHost;
    use crate::kit::Counter;
    use serde::Deserialize;

    /// A filter that counts what it sees, answers requests to `/reply` itself and, with
    /// `callouts`, dispatches one on every tick and on requests to `/call`.
    struct Probe {
        seen: Counter,
        ended: Counter,
        /// Ends by outcome: success, error, reset, local reply.
        outcomes: [Counter; 4],
        callouts: bool,
        /// Callout responses seen, and those whose token this probe dispatched.
        answered: Counter,
        answered_own: Counter,
        /// The `:status` of the last callout response (0: failed).
        answer_status: crate::kit::Gauge,
        dispatched: Vec<u32>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct ProbeConfig {
        positive: u32,
        callouts: bool,
    }

    impl Probe {
        fn call(&mut self, host: &dyn Host) {
            let headers: [(&str, &[u8]); 3] =
                [(":method", b"GET"), (":path", b"/"), (":authority", b"a")];
            let token = host
                .dispatch_http_call("cluster", &headers, b"", Duration::from_secs(1))
                .unwrap();
            self.dispatched.push(token);
        }
    }

    impl Validate for ProbeConfig {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.positive == 0 {
                return Err(ConfigError::invalid("positive", 0, "must be positive"));
            }
            Ok(())
        }
    }

    impl Filter for Probe {
        const NAME: &'static str = "probe";
        type Config = ProbeConfig;
        type Stream = bool;

        fn configure(config: ProbeConfig, setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
            setup.tick_every(Duration::from_secs(1));
            Ok(Probe {
                callouts: config.callouts,
                answered: setup.counter("answered"),
                answered_own: setup.counter("answered_own"),
                answer_status: setup.gauge("answer_status"),
                dispatched: Vec::new(),
                seen: setup.counter("seen"),
                ended: setup.counter("ended"),
                outcomes: ["success", "error", "reset", "local_reply"]
                    .map(|outcome| setup.counter(outcome)),
            })
        }

        fn on_request_headers(
            &mut self,
            host: &dyn Host,
            _request: &Request,
            stream: &mut bool,
        ) -> Verdict {
            self.seen.increment(host, 1);
            *stream = true;
            let path = host.header(HeaderMapKind::RequestHeaders, ":path");
            if path.as_deref() == Some(b"/reply") {
                let _ = host.send_http_reply(429, &[], b"");
                return Verdict::Replied;
            }
            if self.callouts && path.as_deref() == Some(b"/call") {
                self.call(host);
            }
            Verdict::Continue
        }

        fn on_tick(&mut self, host: &dyn Host) {
            if self.callouts {
                self.call(host);
            }
        }

        fn on_http_call_response(&mut self, host: &dyn Host, token: u32) {
            self.answered.increment(host, 1);
            if self.dispatched.contains(&token) {
                self.answered_own.increment(host, 1);
            }
            let status = host.http_call_response_header(":status");
            let status = status
                .and_then(|status| std::str::from_utf8(&status).ok()?.parse().ok())
                .unwrap_or(0);
            self.answer_status.set(host, status);
        }

        fn on_stream_end(&mut self, host: &dyn Host, stream: bool, outcome: Outcome) {
            assert!(stream, "the stream state is the one the request created");
            self.ended.increment(host, 1);
            let index = match outcome {
                Outcome::Success => 0,
                Outcome::Error => 1,
                Outcome::Reset => 2,
                Outcome::LocalReply => 3,
            };
            self.outcomes[index].increment(host, 1);
        }
    }

    fn suite(host: &FakeHost, config: &str) -> Result<Chain, ChainError> {
        Chain::suite(
            &[MemberFactory::of::<Probe>()],
            Some(config.as_bytes()),
            host,
            "mesh",
        )
    }

    #[test]
    fn an_empty_suite_configuration_runs_no_filter() {
        let host = FakeHost::new();
        let chain = suite(&host, "{}").unwrap();
        assert!(chain.filter_names().is_empty());
        assert_eq!(chain.tick_period(), None);
    }

    #[test]
    fn section_errors_name_the_section_field() {
        let host = FakeHost::new();
        let err = suite(
            &host,
            r#"{"filters":[{"filter":"probe","config":{"positive":0}}]}"#,
        )
        .err()
        .unwrap();
        assert_eq!(err.path, "filters[0].config.positive");
        let err = suite(&host, r#"{"filters":[{"filter":"nope"}]}"#)
            .err()
            .unwrap();
        assert_eq!(err.path, "filters[0].filter");
        assert!(err.message.contains("probe"), "{err}");
        let err = suite(
            &host,
            r#"{"filters":[{"filter":"probe","config":{"positive":1}},{"filter":"probe","config":{"positive":1}}]}"#,
        )
        .err()
        .unwrap();
        assert_eq!(err.path, "filters[1].name");
        let err = suite(&host, r#"{"filters":[],"extra":1}"#).err().unwrap();
        assert!(err.message.contains("extra"), "{err}");
    }

    #[test]
    fn each_section_gets_its_own_metrics_and_the_chain_ticks_as_asked() {
        let host = FakeHost::new();
        let mut chain = suite(
            &host,
            r#"{"filters":[{"filter":"probe","config":{"positive":1}},{"filter":"probe","name":"second","config":{"positive":1}}]}"#,
        )
        .unwrap();
        assert_eq!(chain.filter_names(), ["probe", "probe"]);
        assert_eq!(chain.tick_period(), Some(Duration::from_secs(1)));
        host.set_request_headers(&[(":path", "/")]);
        let mut stream = ChainStream::default();
        assert_eq!(
            chain.on_request_headers(&host, &mut stream),
            Verdict::Continue
        );
        assert_eq!(host.counter("mesh.probe.seen"), 1);
        assert_eq!(host.counter("mesh.probe.second.seen"), 1);
    }

    #[test]
    fn a_local_reply_stops_the_chain_and_ends_only_the_filters_that_saw_the_request() {
        let host = FakeHost::new();
        let mut chain = suite(
            &host,
            r#"{"filters":[{"filter":"probe","config":{"positive":1}},{"filter":"probe","name":"second","config":{"positive":1}}]}"#,
        )
        .unwrap();
        host.set_request_headers(&[(":path", "/reply")]);
        let mut stream = ChainStream::default();
        assert_eq!(
            chain.on_request_headers(&host, &mut stream),
            Verdict::Replied
        );
        host.set_response_headers(&[(":status", "429")]);
        chain.on_response_headers(&host, &mut stream, true);
        chain.on_stream_end(&host, &mut stream);
        chain.on_stream_end(&host, &mut stream);
        assert_eq!(host.counter("mesh.probe.seen"), 1);
        assert_eq!(host.counter("mesh.probe.ended"), 1);
        assert_eq!(host.counter("mesh.probe.second.seen"), 0);
        assert_eq!(host.counter("mesh.probe.second.ended"), 0);
    }

    #[test]
    fn a_stream_ends_once_with_its_outcome() {
        let host = FakeHost::new();
        let mut chain = Chain::standalone(
            MemberFactory::of::<Probe>(),
            Some(br#"{"positive":3}"#),
            &host,
            "probe",
        )
        .unwrap();
        for (status, details, outcome) in [
            ("200", "via_upstream", "success"),
            ("503", "via_upstream", "error"),
            ("504", "upstream_response_timeout", "local_reply"),
        ] {
            host.set_request_headers(&[(":path", "/")]);
            host.set_property(&["response", "code_details"], details.as_bytes());
            let mut stream = ChainStream::default();
            chain.on_request_headers(&host, &mut stream);
            host.set_response_headers(&[(":status", status)]);
            chain.on_response_headers(&host, &mut stream, false);
            chain.on_response_body(&mut stream, true);
            chain.on_stream_end(&host, &mut stream);
            chain.on_stream_end(&host, &mut stream);
            assert_eq!(
                host.counter(&format!("mesh.probe.{outcome}")),
                1,
                "{status}"
            );
        }
        let mut reset = ChainStream::default();
        chain.on_request_headers(&host, &mut reset);
        chain.on_stream_end(&host, &mut reset);
        assert_eq!(host.counter("mesh.probe.reset"), 1);
        assert_eq!(host.counter("mesh.probe.ended"), 4);
    }

    #[test]
    fn a_callout_response_reaches_only_the_filter_that_dispatched_it() {
        let host = FakeHost::new();
        let mut chain = suite(
            &host,
            r#"{"filters":[{"filter":"probe","config":{"positive":1}},{"filter":"probe","name":"caller","config":{"positive":1,"callouts":true}}]}"#,
        )
        .unwrap();
        chain.on_tick(&host);
        let calls = host.dispatched_calls();
        assert_eq!(calls.len(), 1);
        assert!(
            chain.has_pending_work(),
            "an unanswered callout is pending work"
        );
        host.set_http_call_response(&[(":status", "204")], b"");
        chain.on_http_call_response(&host, calls[0].token);
        assert_eq!(host.counter("mesh.probe.caller.answered_own"), 1);
        assert_eq!(host.counter("mesh.probe.caller.answered"), 1);
        assert_eq!(host.gauge("mesh.probe.caller.answer_status"), Some(204));
        assert_eq!(host.counter("mesh.probe.answered"), 0);
        assert!(!chain.has_pending_work());
        // A token answered twice, or one this chain never dispatched, reaches nobody.
        chain.on_http_call_response(&host, calls[0].token);
        chain.on_http_call_response(&host, 999);
        assert_eq!(host.counter("mesh.probe.caller.answered"), 1);
        // A failed callout has no headers.
        chain.on_tick(&host);
        host.set_http_call_failure();
        chain.on_http_call_response(&host, host.dispatched_calls()[1].token);
        assert_eq!(host.gauge("mesh.probe.caller.answer_status"), Some(0));
    }

    #[test]
    fn a_streams_callouts_are_answered_on_it_and_forgotten_when_it_ends() {
        let host = FakeHost::new();
        let mut chain = Chain::standalone(
            MemberFactory::of::<Probe>(),
            Some(br#"{"positive":1,"callouts":true}"#),
            &host,
            "probe",
        )
        .unwrap();
        host.set_request_headers(&[(":path", "/call")]);
        let mut answered = ChainStream::default();
        chain.on_request_headers(&host, &mut answered);
        let mut cancelled = ChainStream::default();
        chain.on_request_headers(&host, &mut cancelled);
        let calls = host.dispatched_calls();
        assert_eq!(calls.len(), 2);
        host.set_http_call_response(&[(":status", "200")], b"");
        chain.on_stream_http_call_response(&host, &mut answered, calls[0].token);
        assert_eq!(host.counter("mesh.probe.answered_own"), 1);
        chain.on_stream_end(&host, &mut answered);
        assert!(
            chain.has_pending_work(),
            "the second stream's callout is unanswered"
        );
        // Envoy cancels a stream's callouts when it ends: the chain forgets them.
        chain.on_stream_end(&host, &mut cancelled);
        assert!(!chain.has_pending_work());
        chain.on_http_call_response(&host, calls[1].token);
        assert_eq!(host.counter("mesh.probe.answered"), 1);
    }

    #[test]
    fn a_bad_standalone_configuration_names_the_field() {
        let host = FakeHost::new();
        let err = Chain::standalone(
            MemberFactory::of::<Probe>(),
            Some(br#"{"positive":0}"#),
            &host,
            "probe",
        )
        .err()
        .unwrap();
        assert_eq!(err.path, "positive");
        assert!(Chain::standalone(MemberFactory::of::<Probe>(), Some(b"[]"), &host, "p").is_err());
    }
}
