//! The composer's behaviour: spec errors name the field path and line, and the rendered sidecar
//! carries the spec's filters in chain order with the mesh's defaults.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use envoy_configs::compose::render::{render, Modules, RenderOptions};
use envoy_configs::compose::spec::{ServiceSpec, SpecError, SpecFormat};
use serde_json::{json, Value};

const MINIMAL: &str = "service: orders\napp:\n  port: 8080\n  protocol: http1\n";

fn parse(yaml: &str) -> Result<ServiceSpec, SpecError> {
    ServiceSpec::parse(yaml, SpecFormat::Yaml)
}

fn error(yaml: &str) -> SpecError {
    parse(yaml).expect_err("the spec should be refused")
}

fn rendered(yaml: &str, modules: Modules) -> (Value, envoy_configs::compose::render::Rendered) {
    let spec = parse(yaml).unwrap();
    let options = RenderOptions {
        modules,
        ..RenderOptions::default()
    };
    let rendered = render(&spec, &options).unwrap();
    (
        serde_json::from_str(&rendered.bootstrap.to_json()).unwrap(),
        rendered,
    )
}

fn listener<'a>(bootstrap: &'a Value, name: &str) -> &'a Value {
    bootstrap["static_resources"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap()
}

fn hcm<'a>(bootstrap: &'a Value, name: &str) -> &'a Value {
    &listener(bootstrap, name)["filter_chains"][0]["filters"][0]["typed_config"]
}

fn cluster<'a>(bootstrap: &'a Value, name: &str) -> &'a Value {
    bootstrap["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

#[test]
fn an_unknown_field_is_named_with_its_path_and_line() {
    let err = error(&format!(
        "{MINIMAL}dependencies:\n  - name: ledger\n    adress: ledger.svc\n"
    ));
    assert_eq!(err.path, "dependencies[0].adress");
    assert_eq!(err.line, Some(7));
    assert!(err.message.contains("unknown field `adress`"), "{err}");
}

#[test]
fn a_filter_config_error_is_caught_by_the_filters_own_type() {
    let err = error(&format!(
        "{MINIMAL}filters:\n  load_shedder:\n    limit:\n      max_limt: 3\n"
    ));
    assert_eq!(err.path, "filters.load_shedder.limit.max_limt");
    assert_eq!(err.line, Some(8));

    let err = error(&format!(
        "{MINIMAL}filters:\n  load_shedder:\n    limit:\n      min_limit: 0\n"
    ));
    assert_eq!(err.path, "filters.load_shedder.limit.min_limit");
    assert!(err.message.contains("got 0"), "{err}");
    assert!(err.line.is_some());
}

#[test]
fn every_filter_is_checked_by_its_own_type_and_a_role_section_keeps_field_paths() {
    let cases = [
        ("drain_signal: {path: drain}", "filters.drain_signal.path"),
        (
            "sandbox_router: {trusted_sources: [nonsense]}",
            "filters.sandbox_router.trusted_sources[0]",
        ),
        (
            "entity_cache: {breaker: {cool_down_ms: 1}}",
            "filters.entity_cache.breaker.cool_down_ms",
        ),
        (
            "retry_budget: {client: {ratio: 2}}",
            "filters.retry_budget.client.ratio",
        ),
        (
            "retry_budget: {server: {buckets: 0}}",
            "filters.retry_budget.server.buckets",
        ),
        (
            "retry_budget: {server: {budget: 1}}",
            "filters.retry_budget.server.budget",
        ),
        (
            "retry_budget: {server: {role: both}}",
            "filters.retry_budget.server.role",
        ),
    ];
    for (section, path) in cases {
        let err = error(&format!("{MINIMAL}filters:\n  {section}\n"));
        assert_eq!(err.path, path, "{section}: {err}");
    }
}

/// What a plugin receives for `filter` on `listener`: its section of the suite's configuration.
/// The suite sections of `listener`'s plugins, in chain order, each with its plugin's config.
fn suite_sections(bootstrap: &Value, listener: &str) -> Vec<(Value, Value)> {
    let mut sections = Vec::new();
    for filter in hcm(bootstrap, listener)["http_filters"].as_array().unwrap() {
        let plugin = &filter["typed_config"]["config"];
        let Some(text) = plugin["configuration"]["value"].as_str() else {
            continue;
        };
        let config: Value = serde_json::from_str(text).unwrap();
        for section in config["filters"].as_array().unwrap() {
            sections.push((plugin.clone(), section.clone()));
        }
    }
    sections
}

fn plugin_section(bootstrap: &Value, listener: &str, filter: &str) -> Value {
    suite_sections(bootstrap, listener)
        .into_iter()
        .find(|(_, section)| section["filter"] == filter)
        .unwrap_or_else(|| panic!("{filter} not on {listener}"))
        .1["config"]
        .clone()
}

#[test]
fn fail_closed_filters_get_their_own_suite_plugin_and_vm() {
    let (bootstrap, rendered) = rendered(
        &format!(
            "{MINIMAL}{}",
            STEERED.replace(
                "filters:\n",
                "filters:\n  load_shedder: {}\n  retry_budget: {client: {}}\n"
            )
        ),
        Modules::Suite,
    );
    let placement: Vec<(String, String, String)> = suite_sections(&bootstrap, "ingress")
        .into_iter()
        .map(|(plugin, section)| {
            (
                section["filter"].as_str().unwrap().to_owned(),
                plugin["failure_policy"].as_str().unwrap().to_owned(),
                plugin["vm_config"]["vm_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        placement,
        vec![
            (
                "load-shedder".to_owned(),
                "FAIL_OPEN".to_owned(),
                "mesh".to_owned()
            ),
            (
                "sandbox-router".to_owned(),
                "FAIL_CLOSED".to_owned(),
                "mesh-fail-closed".to_owned()
            ),
        ]
    );
    // Egress in chain order (the spec's section order is another): the fail-closed sandbox router
    // first, then one plugin for the two fail-open filters.
    let egress: Vec<(String, String)> = suite_sections(&bootstrap, "egress")
        .into_iter()
        .map(|(plugin, section)| {
            (
                section["filter"].as_str().unwrap().to_owned(),
                plugin["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        egress,
        [
            ("sandbox-router", "mesh-egress"),
            ("retry-budget", "mesh-egress-2"),
            ("entity-cache", "mesh-egress-2")
        ]
        .map(|(filter, plugin)| (filter.to_owned(), plugin.to_owned()))
    );
    let names: Vec<&str> = rendered.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "mesh-ingress",
            "mesh-ingress-2",
            "mesh-egress",
            "mesh-egress-2"
        ]
    );
}

#[test]
fn each_plugin_reads_back_exactly_the_config_its_spec_section_gave() {
    let spec = format!(
        "{MINIMAL}filters:\n  drain_signal: {{delay_ms: 1500, token: s3cret, gradual_window_ms: 2000}}\n  \
         load_shedder: {{dry_run: true}}\n  \
         retry_budget: {{server: {{retry_header: x-attempt}}, client: {{ratio: 0.1, key: authority}}}}\n  \
         sandbox_router: {{sandboxes: {{feature-x: sandbox_x}}, trusted_sources: [10.0.0.0/8, 127.0.0.1], unknown_key: not_found, \
         registry: {{cluster: registry, path: /sandboxes}}}}\n  \
         entity_cache: {{rules: [{{grpc_method: catalog.Catalog/*, cache_cluster: cache, origin_cluster: catalog}}], breaker: {{latency_threshold_ms: null}}}}\n\
         dependencies:\n  - {{name: cache, address: cache.svc, port: 1, protocol: grpc, timeout_ms: 100}}\n  \
         - {{name: catalog, address: catalog.svc, port: 2, protocol: grpc, timeout_ms: 100}}\n"
    );
    let parsed = parse(&spec).unwrap();
    let (bootstrap, _) = rendered(&spec, Modules::Suite);
    let filters = &parsed.filters;

    let drain: drain_signal::config::DrainConfig =
        serde_json::from_value(plugin_section(&bootstrap, "ingress", "drain-signal")).unwrap();
    assert_eq!(&drain, &filters.drain_signal.as_ref().unwrap().0);
    assert_eq!(drain.delay_ms.as_millis(), 1500);

    let shedder: load_shedder::config::ShedderConfig =
        serde_json::from_value(plugin_section(&bootstrap, "ingress", "load-shedder")).unwrap();
    assert_eq!(&shedder, &filters.load_shedder.as_ref().unwrap().0);

    let budgets = filters.retry_budget.as_ref().unwrap();
    for (listener, written, role) in [
        (
            "ingress",
            &budgets.server.as_ref().unwrap().config,
            retry_budget::config::Role::Server,
        ),
        (
            "egress",
            &budgets.client.as_ref().unwrap().config,
            retry_budget::config::Role::Client,
        ),
    ] {
        let budget: retry_budget::config::RetryBudgetConfig =
            serde_json::from_value(plugin_section(&bootstrap, listener, "retry-budget")).unwrap();
        assert_eq!(&budget, written, "{listener}");
        assert_eq!(budget.role, role);
    }

    let sandbox_section = plugin_section(&bootstrap, "ingress", "sandbox-router");
    assert_eq!(
        sandbox_section["trusted_sources"],
        json!(["10.0.0.0/8", "127.0.0.1/32"])
    );
    let sandbox: sandbox_router::config::SandboxConfig =
        serde_json::from_value(sandbox_section).unwrap();
    assert_eq!(&sandbox, &filters.sandbox_router.as_ref().unwrap().0);

    // A spec names a rule's clusters by dependency; the plugin gets the clusters the composer made.
    let cache: entity_cache::config::EntityCacheConfig =
        serde_json::from_value(plugin_section(&bootstrap, "egress", "entity-cache")).unwrap();
    let mut written = filters.entity_cache.as_ref().unwrap().0.clone();
    written.rules[0].cache_cluster = "egress_cache_or_catalog".to_owned();
    written.rules[0].origin_cluster = "egress_catalog".to_owned();
    assert_eq!(cache, written);
    assert_eq!(cache.breaker.latency_threshold_ms, None);
}

const STEERED: &str = "filters:\n  \
     sandbox_router: {trusted_sources: [10.0.0.0/8]}\n  \
     entity_cache: {rules: [{grpc_method: ledger.Ledger/Get, cache_cluster: cache, origin_cluster: ledger}]}\n\
     dependencies:\n  - {name: ledger, address: ledger.svc, port: 9000, protocol: grpc, timeout_ms: 800}\n  \
     - {name: cache, address: cache.svc, port: 8080, protocol: grpc, timeout_ms: 300}\n\
     sandboxes:\n  - {name: pr-7, address: orders-pr-7.svc, port: 8080}\n";

fn virtual_host<'a>(bootstrap: &'a Value, listener: &str, name: &str) -> &'a Value {
    hcm(bootstrap, listener)["route_config"]["virtual_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no virtual host {name} on {listener}"))
}

#[test]
fn routing_headers_are_stripped_on_arrival_on_both_listeners() {
    let (bootstrap, _) = rendered(&format!("{MINIMAL}{STEERED}"), Modules::Suite);
    let removed = |listener: &str| -> Vec<Value> {
        hcm(&bootstrap, listener)["early_header_mutation_extensions"][0]["typed_config"]
            ["mutations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["remove"].clone())
            .collect()
    };
    assert_eq!(removed("ingress"), vec![json!("x-mesh-sandbox-cluster")]);
    assert_eq!(
        removed("egress"),
        vec![
            json!("x-mesh-sandbox-cluster"),
            json!("x-entity-cache-cluster")
        ]
    );
    // Without steering filters nothing is stripped.
    let (plain, _) = rendered(MINIMAL, Modules::Suite);
    assert!(hcm(&plain, "ingress")
        .get("early_header_mutation_extensions")
        .is_none());
}

#[test]
fn a_sandbox_gets_a_cluster_falling_back_to_the_app_and_a_cluster_header_route() {
    let (bootstrap, _) = rendered(&format!("{MINIMAL}{STEERED}"), Modules::Suite);
    let sandbox = cluster(&bootstrap, "sandbox_pr-7");
    assert_eq!(sandbox["type"], "STRICT_DNS");
    assert_eq!(
        cluster(&bootstrap, "sandbox_pr-7_or_app")["cluster_type"]["typed_config"]["clusters"],
        json!(["sandbox_pr-7", "local_app"])
    );
    let routes = &virtual_host(&bootstrap, "ingress", "default")["routes"];
    assert_eq!(
        routes[0]["match"]["headers"][0],
        json!({"name": "x-mesh-sandbox-cluster", "present_match": true})
    );
    assert_eq!(
        routes[0]["route"]["cluster_header"],
        "x-mesh-sandbox-cluster"
    );
    let retry = &routes[0]["route"]["retry_policy"];
    assert_eq!(retry["num_retries"], 1);
    assert_eq!(
        retry["retry_priority"]["name"],
        "envoy.retry_priorities.previous_priorities"
    );
    assert_eq!(routes[1]["route"]["cluster"], "local_app");
    // Only the ingress router sends keys to this service's sandboxes.
    assert_eq!(
        plugin_section(&bootstrap, "ingress", "sandbox-router")["sandboxes"],
        json!({"pr-7": "sandbox_pr-7_or_app"})
    );
    assert_eq!(
        plugin_section(&bootstrap, "egress", "sandbox-router")["sandboxes"],
        json!({})
    );
}

#[test]
fn an_entity_cache_rule_gets_an_aggregate_cluster_and_a_route_on_its_origin() {
    let (bootstrap, _) = rendered(&format!("{MINIMAL}{STEERED}"), Modules::Suite);
    let aggregate = cluster(&bootstrap, "egress_cache_or_ledger");
    assert_eq!(
        aggregate["cluster_type"]["typed_config"]["clusters"],
        json!(["egress_cache", "egress_ledger"])
    );
    // A gRPC rule's aggregate shows the router a failure status from the cache's trailers.
    let upstream_filters = aggregate["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"]
        .as_array()
        .unwrap();
    assert_eq!(upstream_filters[0]["name"], "envoy.filters.http.lua");
    let http_rule = STEERED.replace("grpc_method: ledger.Ledger/Get", "path_prefix: /ledger/");
    let (http_bootstrap, _) = rendered(&format!("{MINIMAL}{http_rule}"), Modules::Suite);
    assert!(cluster(&http_bootstrap, "egress_cache_or_ledger")
        .get("typed_extension_protocol_options")
        .is_none());
    let routes = &virtual_host(&bootstrap, "egress", "ledger")["routes"];
    let steered: Vec<&Value> = routes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["route"].get("cluster_header"))
        .collect();
    assert_eq!(
        steered,
        vec![
            &json!("x-mesh-sandbox-cluster"),
            &json!("x-entity-cache-cluster")
        ]
    );
    let cache_route = &routes[1]["route"];
    assert_eq!(cache_route["timeout"], "0.800s");
    assert!(cache_route["retry_policy"]["retry_on"]
        .as_str()
        .unwrap()
        .contains("unavailable"));
    assert_eq!(routes[2]["route"]["cluster"], "egress_ledger");
    // The cache's own host has no cache route.
    assert_eq!(
        virtual_host(&bootstrap, "egress", "cache")["routes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn steering_errors_name_the_field() {
    let no_router = error(&format!(
        "{MINIMAL}sandboxes:\n  - {{name: pr-7, address: a, port: 1}}\n"
    ));
    assert_eq!(no_router.path, "sandboxes[0].name");
    assert!(
        no_router.message.contains("filters.sandbox_router"),
        "{no_router}"
    );
    let unknown = error(&format!(
        "{MINIMAL}filters:\n  entity_cache: {{rules: [{{grpc_method: a.B/*, cache_cluster: cache, origin_cluster: ledger}}]}}\n"
    ));
    assert_eq!(unknown.path, "filters.entity_cache.rules[0].cache_cluster");
    assert!(unknown.message.contains("\"cache\""), "{unknown}");
    let twice = error(&format!(
        "{MINIMAL}{STEERED}  - {{name: pr-7, address: b, port: 2}}\n"
    ));
    assert_eq!(twice.path, "sandboxes[1].name");
}

#[test]
fn a_wrong_type_names_the_field_in_yaml_and_json() {
    let err = error("service: orders\napp:\n  port: eighty\n  protocol: http1\n");
    assert_eq!((err.path.as_str(), err.line), ("app.port", Some(3)));

    let err = ServiceSpec::parse(
        r#"{"service": "orders", "app": {"port": 80, "protocol": "h3"}}"#,
        SpecFormat::Json,
    )
    .unwrap_err();
    assert_eq!(err.path, "app.protocol");
    assert!(err.message.contains("http1"), "lists the choices: {err}");
}

#[test]
fn rules_across_fields_name_the_field() {
    let clash = error(&format!("{MINIMAL}ingress:\n  port: 8080\n"));
    assert_eq!(clash.path, "ingress.port");
    assert!(clash.message.contains("app.port"), "{clash}");

    let dep = |extra: &str| {
        format!(
            "{MINIMAL}dependencies:\n  - {{name: ledger, address: l, port: 1, protocol: grpc, timeout_ms: 100{extra}}}\n"
        )
    };
    assert_eq!(
        error(&dep(", retry: {retries: 6}")).path,
        "dependencies[0].retry.retries"
    );
    assert_eq!(
        error(&dep(", retry: {per_try_timeout_ms: 200}")).path,
        "dependencies[0].retry.per_try_timeout_ms"
    );
    assert_eq!(
        error(&format!(
            "{}  - {{name: ledger, address: m, port: 2, protocol: grpc, timeout_ms: 1}}\n",
            dep("")
        ))
        .path,
        "dependencies[1].name"
    );
    assert_eq!(
        error("service: Orders\napp: {port: 1, protocol: grpc}\n").path,
        "service"
    );
}

#[test]
fn yaml_and_json_specs_are_the_same_spec() {
    let yaml = parse(&format!(
        "{MINIMAL}filters:\n  load_shedder: {{dry_run: true}}\n"
    ))
    .unwrap();
    let json = ServiceSpec::parse(
        r#"{"service": "orders", "app": {"port": 8080, "protocol": "http1"},
            "filters": {"load_shedder": {"dry_run": true}}}"#,
        SpecFormat::Json,
    )
    .unwrap();
    assert_eq!(yaml, json);
}

#[test]
fn the_suite_runs_exactly_the_spec_filters() {
    let (bootstrap, rendered) = rendered(
        &format!("{MINIMAL}filters:\n  load_shedder: {{dry_run: true}}\n"),
        Modules::Suite,
    );
    let filters = hcm(&bootstrap, "ingress")["http_filters"]
        .as_array()
        .unwrap();
    assert_eq!(filters.len(), 2, "suite plugin, router");
    let plugin = &filters[0]["typed_config"]["config"];
    assert_eq!(plugin["name"], "mesh-ingress");
    assert_eq!(plugin["vm_config"]["vm_id"], "mesh");
    assert_eq!(plugin["failure_policy"], "FAIL_OPEN");
    assert!(plugin["vm_config"]["code"]["local"]["filename"]
        .as_str()
        .unwrap()
        .ends_with("/mesh_suite.wasm"));
    let config: Value =
        serde_json::from_str(plugin["configuration"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(config["filters"][0]["filter"], "load-shedder");
    assert_eq!(config["filters"][0]["config"]["dry_run"], true);
    assert_eq!(config["filters"].as_array().unwrap().len(), 1);
    assert!(rendered.notes.is_empty(), "{:?}", rendered.notes);
    let egress = hcm(&bootstrap, "egress")["http_filters"]
        .as_array()
        .unwrap();
    assert_eq!(egress.len(), 1, "router only");
}

#[test]
fn a_filter_on_both_listeners_gets_one_instance_per_role() {
    let (bootstrap, _) = rendered(
        &format!("{MINIMAL}filters:\n  retry_budget: {{server: {{}}, client: {{ratio: 0.1}}}}\n"),
        Modules::Suite,
    );
    for (listener, role) in [("ingress", "server"), ("egress", "client")] {
        let plugin = &hcm(&bootstrap, listener)["http_filters"][0]["typed_config"]["config"];
        let config: Value =
            serde_json::from_str(plugin["configuration"]["value"].as_str().unwrap()).unwrap();
        let section = &config["filters"][0];
        assert_eq!(section["filter"], "retry-budget");
        assert_eq!(section["name"], listener, "instances named per listener");
        assert_eq!(section["config"]["role"], role);
    }
    let err = error(&format!(
        "{MINIMAL}filters:\n  retry_budget: {{server: {{role: client}}}}\n"
    ));
    assert_eq!(err.path, "filters.retry_budget.server.role");
}

#[test]
fn separate_modules_run_each_filter_as_its_own_plugin_named_after_it() {
    let (bootstrap, rendered) = rendered(
        &format!("{MINIMAL}filters:\n  load_shedder: {{}}\n"),
        Modules::Separate,
    );
    let plugin = &hcm(&bootstrap, "ingress")["http_filters"][0]["typed_config"]["config"];
    assert_eq!(plugin["name"], "load-shedder");
    assert!(plugin["vm_config"]["code"]["local"]["filename"]
        .as_str()
        .unwrap()
        .ends_with("/load_shedder.wasm"));
    let config: Value =
        serde_json::from_str(plugin["configuration"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        config["limit"]["max_limit"], 1000,
        "the typed defaults, written out"
    );
    assert!(rendered.notes.is_empty());
}

#[test]
fn each_dependency_gets_a_strict_dns_cluster_and_a_route_with_its_timeout() {
    let (bootstrap, _) = rendered(
        &format!(
            "{MINIMAL}dependencies:\n  - {{name: ledger, address: ledger.svc, port: 9000, protocol: grpc, timeout_ms: 800, retry: {{retries: 2, on: [unavailable]}}}}\n"
        ),
        Modules::Suite,
    );
    let ledger = cluster(&bootstrap, "egress_ledger");
    assert_eq!(ledger["type"], "STRICT_DNS");
    let options = &ledger["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        options["explicit_http_config"],
        json!({"http2_protocol_options": {}})
    );
    assert_eq!(
        options["common_http_protocol_options"]["max_connection_duration"],
        "240s"
    );
    assert_eq!(
        ledger["circuit_breakers"]["thresholds"][0]["max_requests"],
        u64::from(u32::MAX)
    );
    let hosts = hcm(&bootstrap, "egress")["route_config"]["virtual_hosts"]
        .as_array()
        .unwrap();
    let host = hosts.iter().find(|h| h["name"] == "ledger").unwrap();
    assert_eq!(
        host["domains"],
        json!(["ledger", "ledger:15001", "ledger.svc", "ledger.svc:9000"])
    );
    assert_eq!(host["include_request_attempt_count"], true);
    assert_eq!(host["include_attempt_count_in_response"], true);
    let route = &host["routes"][0]["route"];
    assert_eq!(route["timeout"], "0.800s");
    assert_eq!(route["retry_policy"]["num_retries"], 2);
    assert_eq!(route["retry_policy"]["retry_on"], "unavailable");
}

#[test]
fn dependency_clusters_eject_failing_endpoints_and_run_declared_health_checks() {
    let (bootstrap, _) = rendered(
        &format!(
            "{MINIMAL}dependencies:\n  - {{name: ledger, address: l, port: 1, protocol: grpc, timeout_ms: 100, health_check: {{interval_ms: 2000, timeout_ms: 500}}}}\n  - {{name: mail, address: m, port: 2, protocol: http2, timeout_ms: 100, health_check: {{path: /healthz}}}}\n  - {{name: audit, address: a, port: 3, protocol: http1, timeout_ms: 100}}\n"
        ),
        Modules::Suite,
    );
    for name in ["egress_ledger", "egress_mail", "egress_audit"] {
        let detection = &cluster(&bootstrap, name)["outlier_detection"];
        assert_eq!(
            detection["split_external_local_origin_errors"], true,
            "{name}"
        );
        assert_eq!(detection["enforcing_consecutive_5xx"], 0, "{name}");
    }
    let ledger = &cluster(&bootstrap, "egress_ledger")["health_checks"];
    assert_eq!(ledger[0]["grpc_health_check"], json!({}));
    assert_eq!(ledger[0]["interval"], "2s");
    assert_eq!(
        ledger[0]["no_traffic_interval"], "2s",
        "a dependency the app has not called yet is checked as often"
    );
    assert_eq!(ledger[0]["timeout"], "0.500s");
    let mail = &cluster(&bootstrap, "egress_mail")["health_checks"];
    assert_eq!(
        mail[0]["http_health_check"],
        json!({"path": "/healthz", "codec_client_type": "HTTP2"})
    );
    assert_eq!(mail[0]["interval"], "5s");
    assert!(cluster(&bootstrap, "egress_audit")
        .get("health_checks")
        .is_none());
}

#[test]
fn a_health_check_must_fit_the_dependency_protocol() {
    let dep = |protocol: &str, check: &str| {
        format!(
            "{MINIMAL}dependencies:\n  - {{name: d, address: a, port: 1, protocol: {protocol}, timeout_ms: 100, health_check: {check}}}\n"
        )
    };
    let cases = [
        (
            "grpc",
            "{path: /healthz}",
            "dependencies[0].health_check.path",
        ),
        ("http1", "{}", "dependencies[0].health_check.path"),
        (
            "http2",
            "{path: healthz}",
            "dependencies[0].health_check.path",
        ),
        (
            "grpc",
            "{interval_ms: 0}",
            "dependencies[0].health_check.interval_ms",
        ),
        (
            "grpc",
            "{interval_ms: 100, timeout_ms: 200}",
            "dependencies[0].health_check.timeout_ms",
        ),
        ("grpc", "{every: 1}", "dependencies[0].health_check.every"),
    ];
    for (protocol, check, path) in cases {
        let err = error(&dep(protocol, check));
        assert_eq!(err.path, path, "{protocol} {check}: {err}");
    }
}

#[test]
fn the_sidecar_carries_the_mesh_defaults() {
    let (bootstrap, _) = rendered(MINIMAL, Modules::Suite);
    let ingress = listener(&bootstrap, "ingress");
    assert_eq!(ingress["address"]["socket_address"]["address"], "0.0.0.0");
    assert_eq!(
        listener(&bootstrap, "egress")["address"]["socket_address"]["address"],
        "127.0.0.1"
    );
    let ingress_hcm = hcm(&bootstrap, "ingress");
    assert_eq!(
        ingress_hcm["common_http_protocol_options"]["max_connection_duration"],
        "300s"
    );
    assert_eq!(
        ingress_hcm["http2_protocol_options"]["max_concurrent_streams"],
        100
    );
    assert_eq!(ingress_hcm["drain_timeout"], "5s");
    assert_eq!(
        ingress_hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"],
        json!({"cluster": "local_app", "timeout": "15s"})
    );
    let prometheus = listener(&bootstrap, "prometheus");
    assert_eq!(
        prometheus["address"]["socket_address"],
        json!({"address": "0.0.0.0", "port_value": 15090})
    );
    let prometheus_routes =
        &hcm(&bootstrap, "prometheus")["route_config"]["virtual_hosts"][0]["routes"];
    assert_eq!(
        prometheus_routes,
        &json!([{"match": {"path": "/stats/prometheus"}, "route": {"cluster": "envoy_admin"}}]),
        "scrapers reach the stats and nothing else of the admin interface"
    );
    assert_eq!(cluster(&bootstrap, "envoy_admin")["type"], "STATIC");
    assert_eq!(cluster(&bootstrap, "local_app")["type"], "STATIC");
    assert!(
        bootstrap["overload_manager"]["actions"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    );
    let patterns = bootstrap["stats_config"]["stats_matcher"]["inclusion_list"]["patterns"]
        .as_array()
        .unwrap();
    assert!(patterns.contains(&json!({"prefix": "wasmcustom.mesh."})));
    assert!(patterns.contains(&json!({"prefix": "http.ingress.downstream_rq_"})));
}
