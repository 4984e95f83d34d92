//! The suite's table of filters and its configuration, natively against the kit's fake host.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshkit::kit::chain::ChainStream;
use meshkit::kit::fake::FakeHost;
use meshkit::kit::{Chain, ChainError, Verdict};

/// The suite configured by `config` in plugin `plugin`.
fn suite(host: &FakeHost, config: &str, plugin: &str) -> Result<Chain, ChainError> {
    Chain::suite(
        &mesh_suite::factories(),
        Some(config.as_bytes()),
        host,
        plugin,
    )
}

#[test]
fn every_filter_of_the_suite_has_a_distinct_name() {
    let names: Vec<_> = mesh_suite::factories().iter().map(|f| f.name()).collect();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    assert!(names.contains(&"load-shedder"));
    assert!(names.contains(&"drain-signal"));
    assert!(names.contains(&"retry-budget"));
}

#[test]
fn the_retry_budget_runs_in_the_suite_beside_the_load_shedder() {
    let host = FakeHost::new();
    let config = r#"{"filters":[
        {"filter":"load-shedder"},
        {"filter":"retry-budget","config":{"role":"server"}}]}"#;
    let chain = suite(&host, config, "suite").unwrap();
    assert_eq!(chain.filter_names(), ["load-shedder", "retry-budget"]);
    assert!(host
        .metric_names()
        .contains(&"mesh.retry_budget.retries_denied".to_owned()));
    let bad = r#"{"filters":[{"filter":"retry-budget","config":{"role":"server","ratio":2}}]}"#;
    let err = suite(&host, bad, "suite").err().unwrap();
    assert_eq!(err.path, "filters[0].config.ratio");
}

/// The suite's filter names are the catalog's crate names: the benchmark and the real-Envoy tests
/// configure a section per shipped filter by its crate name.
#[test]
fn every_shipped_filter_joins_the_suite_under_its_crate_name() {
    let names: Vec<_> = mesh_suite::factories().iter().map(|f| f.name()).collect();
    for filter in mesh_catalog::filters() {
        assert!(
            names.contains(&filter.crate_name),
            "{} is not in the suite's factories(): {names:?}",
            filter.crate_name
        );
    }
}

#[test]
fn the_suite_runs_the_configured_sections_in_order() {
    let host = FakeHost::new();
    let config = r#"{"filters":[
        {"filter":"load-shedder","name":"first"},
        {"filter":"load-shedder","name":"second","config":{"dry_run":true}}]}"#;
    let chain = suite(&host, config, "mesh").unwrap();
    assert_eq!(chain.filter_names(), ["load-shedder", "load-shedder"]);
    assert!(host
        .metric_names()
        .contains(&"mesh.load_shedder.first.limit".to_owned()));
    assert!(host
        .metric_names()
        .contains(&"mesh.load_shedder.second.limit".to_owned()));
}

#[test]
fn a_bad_section_names_its_field_and_value() {
    let host = FakeHost::new();
    let config = r#"{"filters":[{"filter":"load-shedder","config":{"limit":{"min_limit":0}}}]}"#;
    let err = suite(&host, config, "mesh").err().unwrap();
    assert_eq!(err.path, "filters[0].config.limit.min_limit");
    assert_eq!(err.value, "0");
}

#[test]
fn the_drain_signal_answers_its_trigger_before_the_load_shedder_counts_it() {
    let host = FakeHost::new();
    let config = r#"{"filters":[{"filter":"drain-signal","config":{"delay_ms":0}},{"filter":"load-shedder"}]}"#;
    let mut chain = suite(&host, config, "mesh").unwrap();
    host.set_property(&["source", "address"], b"127.0.0.1:1234");
    host.set_request_headers(&[(":method", "POST"), (":path", "/.mesh/drain")]);
    let mut stream = ChainStream::default();
    assert_eq!(
        chain.on_request_headers(&host, &mut stream),
        Verdict::Replied
    );
    chain.on_stream_end(&host, &mut stream);
    assert_eq!(host.replies()[0].status, 202);
    assert_eq!(host.counter("mesh.drain_signal.drain_triggered"), 1);
    assert_eq!(host.counter("mesh.load_shedder.admitted"), 0);
    // The admin call goes out from the suite's tick, and its response reaches the drain signal.
    chain.on_tick(&host);
    let calls = host.dispatched_calls();
    assert_eq!(calls.len(), 1);
    host.set_http_call_response(&[(":status", "200")], b"OK");
    chain.on_http_call_response(&host, calls[0].token);
    assert_eq!(host.counter("mesh.drain_signal.admin_drain_calls_ok"), 1);
}

#[test]
fn the_suite_runs_the_sandbox_router_with_its_section_config() {
    let host = FakeHost::new();
    let config = r#"{"filters":[{"filter":"sandbox-router",
        "config":{"sandboxes":{"feature-x":"sandbox_x"},"trusted_sources":["127.0.0.1/32"]}}]}"#;
    let mut chain = suite(&host, config, "suite").unwrap();
    host.set_property(&["source", "address"], b"127.0.0.1:5000");
    host.set_request_headers(&[(":path", "/"), ("x-sandbox", "feature-x")]);
    chain.on_request_headers(&host, &mut ChainStream::default());
    let routing = host.header_of(
        meshkit::headers::HeaderMapKind::RequestHeaders,
        "x-mesh-sandbox-cluster",
    );
    assert_eq!(routing.as_deref(), Some(&b"sandbox_x"[..]));
    assert_eq!(host.counter("mesh.sandbox_router.routed.feature_x"), 1);
}

/// Section names are per filter: the composer names each both-sided filter's sections after their
/// listener, so one suite holds retry-budget `ingress` beside sandbox-router `ingress`.
#[test]
fn sections_of_different_filters_may_share_a_name() {
    let host = FakeHost::new();
    let config = r#"{"filters":[
        {"filter":"retry-budget","name":"ingress","config":{"role":"server"}},
        {"filter":"sandbox-router","name":"ingress"}]}"#;
    let chain = suite(&host, config, "suite").unwrap();
    assert_eq!(chain.filter_names(), ["retry-budget", "sandbox-router"]);
    let names = host.metric_names();
    assert!(
        names.contains(&"mesh.retry_budget.ingress.requests".to_owned()),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("mesh.sandbox_router.ingress.")),
        "{names:?}"
    );
    let twice = r#"{"filters":[
        {"filter":"retry-budget","name":"ingress"},
        {"filter":"retry-budget","name":"ingress"}]}"#;
    let err = suite(&host, twice, "suite").err().unwrap();
    assert_eq!(err.path, "filters[1].name");
}
