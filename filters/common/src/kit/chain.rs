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

use super::host::Host;
use super::response::{Outcome, ResponseTracker};
use super::{configure_filter, Filter, Request, Setup, Verdict};
use crate::config::{ConfigError, Validate};
use crate::headers::HeaderMapKind;
use serde::Deserialize;
use std::any::Any;
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
            let earlier = self.filters[..index]
                .iter()
                .any(|other| other.name.as_deref().unwrap_or(&other.filter) == name);
            if earlier {
                return Err(ConfigError::invalid(
                    format!("filters[{index}].name"),
                    format!("{name:?}"),
                    "two sections have this name; give one a distinct `name`",
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
}

/// One stream's state in a chain: the response record and each filter's stream, for the
/// filters that saw the request headers.
#[derive(Default)]
pub struct ChainStream {
    tracker: ResponseTracker,
    streams: Vec<Box<dyn Any>>,
    ended: bool,
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

    /// Whether a filter still owes work to shared state.
    pub fn has_pending_work(&self) -> bool {
        self.members.iter().any(|member| member.has_pending_work())
    }

    /// The request headers: each filter in order, until one answers the request itself.
    pub fn on_request_headers(&mut self, host: &dyn Host, stream: &mut ChainStream) -> Verdict {
        let content_type = host.header(HeaderMapKind::RequestHeaders, "content-type");
        stream.tracker.request_content_type(content_type.as_deref());
        let request = Request {
            grpc: stream.tracker.is_grpc(),
        };
        for member in &mut self.members {
            let mut member_stream = member.new_stream();
            let verdict = member.on_request_headers(host, &request, member_stream.as_mut());
            stream.streams.push(member_stream);
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
        for (member, member_stream) in self.members.iter_mut().zip(&mut stream.streams) {
            member.on_response_headers(host, member_stream.as_mut());
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
        for (member, member_stream) in self.members.iter_mut().zip(&mut stream.streams) {
            member.on_response_trailers(host, member_stream.as_mut());
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
            member.on_stream_end(host, member_stream, outcome);
        }
    }

    /// The periodic tick, for every filter.
    pub fn on_tick(&mut self, host: &dyn Host) {
        for member in &mut self.members {
            member.on_tick(host);
        }
    }

    /// An HTTP callout response, for every filter.
    pub fn on_http_call_response(&mut self, host: &dyn Host, token: u32) {
        for member in &mut self.members {
            member.on_http_call_response(host, token);
        }
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

    /// A filter that counts what it sees and answers requests to `/reply` itself.
    struct Probe {
        seen: Counter,
        ended: Counter,
        /// Ends by outcome: success, error, reset, local reply.
        outcomes: [Counter; 4],
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct ProbeConfig {
        positive: u32,
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

        fn configure(_config: ProbeConfig, setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
            setup.tick_every(Duration::from_secs(1));
            Ok(Probe {
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
            if host
                .header(HeaderMapKind::RequestHeaders, ":path")
                .as_deref()
                == Some(b"/reply")
            {
                let _ = host.send_http_reply(429, &[], b"");
                return Verdict::Replied;
            }
            Verdict::Continue
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
