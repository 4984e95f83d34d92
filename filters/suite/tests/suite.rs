//! The suite's table of filters and its configuration, natively against the kit's fake host.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshkit::kit::fake::FakeHost;
use meshkit::kit::Chain;

#[test]
fn every_filter_of_the_suite_has_a_distinct_name() {
    let names: Vec<_> = mesh_suite::factories().iter().map(|f| f.name()).collect();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    assert!(names.contains(&"load-shedder"));
}

#[test]
fn the_suite_runs_the_configured_sections_in_order() {
    let host = FakeHost::new();
    let config = r#"{"filters":[
        {"filter":"load-shedder","name":"first"},
        {"filter":"load-shedder","name":"second","config":{"dry_run":true}}]}"#;
    let chain = Chain::suite(
        &mesh_suite::factories(),
        Some(config.as_bytes()),
        &host,
        "mesh",
    )
    .unwrap();
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
    let err = Chain::suite(
        &mesh_suite::factories(),
        Some(config.as_bytes()),
        &host,
        "mesh",
    )
    .err()
    .unwrap();
    assert_eq!(err.path, "filters[0].config.limit.min_limit");
    assert_eq!(err.value, "0");
}

#[test]
fn the_suite_runs_the_sandbox_router_with_its_section_config() {
    use meshkit::headers::HeaderMapKind;
    use meshkit::kit::chain::ChainStream;
    let host = FakeHost::new();
    let config = r#"{"filters":[{"filter":"sandbox-router",
        "config":{"sandboxes":{"feature-x":"sandbox_x"},"trusted_sources":["127.0.0.1/32"]}}]}"#;
    let mut chain = Chain::suite(
        &mesh_suite::factories(),
        Some(config.as_bytes()),
        &host,
        "suite",
    )
    .unwrap();
    host.set_property(&["source", "address"], b"127.0.0.1:5000");
    host.set_request_headers(&[(":path", "/"), ("x-sandbox", "feature-x")]);
    chain.on_request_headers(&host, &mut ChainStream::default());
    let routing = host.header_of(HeaderMapKind::RequestHeaders, "x-mesh-sandbox-cluster");
    assert_eq!(routing.as_deref(), Some(&b"sandbox_x"[..]));
    assert_eq!(host.counter("mesh.sandbox_router.routed.feature_x"), 1);
}
