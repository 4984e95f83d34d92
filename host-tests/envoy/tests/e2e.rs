//! End-to-end tests against the real Envoy binary: the builder's bootstraps pass
//! `envoy --mode validate`, Envoy proxies through a built listener and counts it, a stripped
//! routing header cannot pick a cluster, and Envoy runs
//! the fixture wasm module on V8, surviving a non-UTF-8 header value.
//!
//! Every test runs its own Envoy (own ports and base id) and ends with `shutdown()`, which fails
//! the test if the Envoy log shows a wasm panic, trap or critical wasm line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "e2e/upstream.rs"]
mod upstream;

use envoy_configs::{
    AdaptiveConcurrency, Bootstrap, Cluster, CodecType, DnsLookupFamily, HeaderMatcher, HttpFilter,
    Listener, PerFilterConfig, RawAny, RetryOn, RetryPolicy, RetryPriority, Route, Thresholds,
    WasmFilter,
};
use mesh_envoy_harness::{self as envoy, DrainStrategy, EnvoyOptions, EnvoyProcess};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// Stats of a finished request can land just after the client saw the response.
const STAT_WAIT: Duration = Duration::from_secs(5);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn validate(bootstrap: &Bootstrap) {
    if let Err(err) = envoy::validate(bootstrap) {
        panic!("{err}");
    }
}

fn start(bootstrap: &Bootstrap, options: EnvoyOptions) -> EnvoyProcess {
    EnvoyProcess::start(bootstrap, options).unwrap_or_else(|err| panic!("{err}"))
}

fn fixture_module() -> PathBuf {
    envoy::wasm_module("host-fixture").unwrap_or_else(|err| panic!("{err}"))
}

/// Starts Envoy on one worker with `fixture` on the ingress listener, in front of a loopback
/// upstream (so every request reaches the same VM).
fn start_fixture_on_one_worker(fixture: WasmFilter) -> EnvoyProcess {
    let bootstrap = Bootstrap::new(0)
        .listener(
            Listener::http("ingress", 0)
                .wasm_filter(fixture)
                .route(Route::prefix("/").to_cluster("backend")),
        )
        .cluster(Cluster::static_cluster("backend", [upstream::start()]));
    start(
        &bootstrap,
        EnvoyOptions {
            concurrency: 1,
            ..EnvoyOptions::default()
        },
    )
}

/// GETs `url` and returns the response body.
fn get_text(url: &str) -> String {
    read_text(ureq::get(url))
}

/// Sends `request` and returns the response body.
fn read_text(request: ureq::RequestBuilder<ureq::typestate::WithoutBody>) -> String {
    request.call().unwrap().body_mut().read_to_string().unwrap()
}

#[test]
fn validate_accepts_listener_with_router_only() {
    validate(
        &Bootstrap::new(19000)
            .node("sidecar-0", "payments")
            .listener(
                Listener::http("ingress", 10000)
                    .codec(CodecType::Http1)
                    .route(Route::prefix("/").to_cluster("backend")),
            )
            .cluster(Cluster::static_cluster("backend", [loopback(8080)])),
    );
}

#[test]
fn validate_accepts_wasm_filter_and_admin_cluster() {
    validate(
        &Bootstrap::new(19000)
            .admin_cluster("admin")
            .listener(
                Listener::http("ingress", 10000)
                    .wasm_filter(
                        WasmFilter::new("fixture", fixture_module())
                            .configuration(&json!({"tick_period_ms": 500})),
                    )
                    .route(Route::prefix("/").to_cluster("backend")),
            )
            .cluster(Cluster::static_cluster("backend", [loopback(8080)])),
    );
}

#[test]
fn validate_accepts_aggregate_cluster_with_retry_priority() {
    validate(
        &Bootstrap::new(19000)
            .listener(
                Listener::http("egress", 10001).route(
                    Route::prefix("/")
                        .to_cluster("payments")
                        .timeout(Duration::from_secs(3))
                        .retry_policy(
                            RetryPolicy::new([RetryOn::FiveXx, RetryOn::ConnectFailure], 2)
                                .per_try_timeout(Duration::from_millis(800))
                                .retriable_status_codes([429])
                                .retry_priority(RetryPriority::previous_priorities(1))
                                .avoid_previous_hosts(3),
                        ),
                ),
            )
            .cluster(
                Cluster::aggregate("payments", ["payments-primary", "payments-fallback"])
                    .circuit_breaker(Thresholds::unlimited()),
            )
            .cluster(
                Cluster::static_cluster("payments-primary", [loopback(8081), loopback(8082)])
                    .priority(1, [loopback(8083)])
                    .http2()
                    .circuit_breaker(Thresholds::unlimited()),
            )
            .cluster(
                Cluster::strict_dns("payments-fallback", [("localhost", 8084)])
                    .dns_lookup_family(DnsLookupFamily::V4Only),
            ),
    );
}

#[test]
fn validate_accepts_cluster_header_routing() {
    validate(
        &Bootstrap::new(19000)
            .listener(
                Listener::http("ingress", 10000)
                    .codec(CodecType::Http2)
                    .route(
                        Route::prefix("/")
                            .header(HeaderMatcher::present("x-mesh-cluster"))
                            .to_cluster_header("x-mesh-cluster"),
                    )
                    .route(
                        Route::path("/health")
                            .header(HeaderMatcher::exact("x-canary", "1").inverted())
                            .to_cluster("backend"),
                    ),
            )
            .cluster(Cluster::static_cluster("backend", [loopback(8080)])),
    );
}

#[test]
fn validate_accepts_native_adaptive_concurrency() {
    validate(
        &Bootstrap::new(19000)
            .listener(
                Listener::http("ingress", 10000)
                    .adaptive_concurrency(AdaptiveConcurrency::default())
                    .drain_timeout(Duration::from_secs(1))
                    .route(Route::prefix("/").to_cluster("backend")),
            )
            .cluster(Cluster::static_cluster("backend", [loopback(8080)])),
    );
}

#[test]
fn validate_rejects_a_route_to_an_unknown_cluster() {
    let err =
        envoy::validate(&Bootstrap::new(19000).listener(
            Listener::http("ingress", 10000).route(Route::prefix("/").to_cluster("nope")),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn envoy_proxies_through_a_built_listener_and_counts_it_in_stats() {
    let upstream = upstream::start();
    let bootstrap = Bootstrap::new(0)
        .admin_cluster("admin")
        .listener(
            Listener::http("ingress", 0)
                .route(Route::path("/ready").to_cluster("admin"))
                .route(Route::prefix("/").to_cluster("backend")),
        )
        .cluster(Cluster::static_cluster("backend", [upstream]));
    let envoy = start(&bootstrap, EnvoyOptions::default());
    let ingress = envoy.listener_addr("ingress").unwrap();

    // The admin cluster follows the admin port the harness picked.
    let ready = get_text(&format!("http://{ingress}/ready"));
    assert_eq!(ready.trim(), "LIVE");

    assert_eq!(get_text(&format!("http://{ingress}/hello")), upstream::BODY);

    assert_eq!(
        envoy
            .wait_for_stat("cluster.backend.upstream_rq_200", STAT_WAIT, |n| n >= 1)
            .unwrap(),
        1
    );
    envoy
        .wait_for_stat("http.ingress.downstream_rq_2xx", STAT_WAIT, |n| n >= 1)
        .unwrap();
    let prometheus = envoy.prometheus().unwrap();
    assert!(
        prometheus
            .lines()
            .any(|line| line.starts_with("envoy_cluster_upstream_rq_total{")
                && line.contains("envoy_cluster_name=\"backend\"")
                && line.ends_with(" 1")),
        "{prometheus}"
    );

    envoy.post_admin("/reset_counters").unwrap();
    assert_eq!(
        envoy.stat("cluster.backend.upstream_rq_200").unwrap(),
        Some(0)
    );
    assert_eq!(envoy.stat("no.such.stat").unwrap(), None);
    envoy.shutdown();
}

#[test]
fn a_stripped_routing_header_cannot_pick_a_cluster() {
    // What the composer does for sandbox-router and entity-cache: their routing header picks a
    // cluster (`cluster_header`), and the listener strips it before routing, so only a filter
    // (none here: as if its VM were dead and failed open) can set it. The unstripped listener
    // shows the same request would otherwise reach the admin interface.
    const ROUTING: &str = "x-mesh-sandbox-cluster";
    let upstream = upstream::start();
    let listener = |name: &str| {
        Listener::http(name, 0)
            .route(
                Route::prefix("/")
                    .header(HeaderMatcher::present(ROUTING))
                    .to_cluster_header(ROUTING),
            )
            .route(Route::prefix("/").to_cluster("backend"))
    };
    let bootstrap = Bootstrap::new(0)
        .admin_cluster("admin")
        .listener(listener("stripped").strip_request_header(ROUTING))
        .listener(listener("open"))
        .cluster(Cluster::static_cluster("backend", [upstream]));
    let envoy = start(&bootstrap, EnvoyOptions::default());
    let stripped = envoy.listener_addr("stripped").unwrap();
    let open = envoy.listener_addr("open").unwrap();

    let spoofed = |addr: SocketAddr| {
        read_text(ureq::get(format!("http://{addr}/ready")).header(ROUTING, "admin"))
    };
    assert_eq!(spoofed(open).trim(), "LIVE");
    assert_eq!(spoofed(stripped), upstream::BODY);
    envoy.shutdown();
}

#[test]
fn harness_options_reach_the_envoy_command_line() {
    let envoy = start(
        &Bootstrap::new(0),
        EnvoyOptions {
            concurrency: 1,
            drain_strategy: Some(DrainStrategy::Immediate),
            drain_time: Some(Duration::from_secs(3)),
            component_log_level: Some("wasm:debug".to_owned()),
            ..EnvoyOptions::default()
        },
    );
    let server_info: serde_json::Value =
        serde_json::from_str(&envoy.admin_get("/server_info").unwrap()).unwrap();
    let options = &server_info["command_line_options"];
    assert_eq!(options["concurrency"], 1);
    assert_eq!(options["drain_strategy"], "Immediate");
    assert_eq!(options["drain_time"], "3s");
    assert_eq!(options["component_log_level"], "wasm:debug");
    assert_eq!(options["log_path"], envoy.log_path().to_str().unwrap());
    envoy.shutdown();
}

#[test]
fn every_envoy_thread_runs_on_the_pinned_cpu() {
    let envoy = start(
        &Bootstrap::new(0),
        EnvoyOptions {
            concurrency: 1,
            cpus: vec![0],
            ..EnvoyOptions::default()
        },
    );
    let tasks = std::fs::read_dir(format!("/proc/{}/task", envoy.pid())).unwrap();
    let mut threads = 0;
    for task in tasks {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let allowed = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .unwrap();
        assert_eq!(allowed.trim(), "0", "{status}");
        threads += 1;
    }
    assert!(threads > 1, "main thread and a worker at least: {threads}");
    envoy.shutdown();
}

/// Sends `request` on a fresh connection (closed by `Connection: close`) and returns the
/// response head's status code and lowercase-named headers.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, Vec<(String, Vec<u8>)>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let head_end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a complete response head");
    let mut lines = response[..head_end].split(|&b| b == b'\n');
    let status_line = String::from_utf8_lossy(lines.next().unwrap()).into_owned();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).to_lowercase();
            Some((name, line[colon + 1..].trim_ascii().to_vec()))
        })
        .collect();
    (status, headers)
}

/// The fault filter's config aborting every request with `status`.
fn abort_all(status: u16) -> RawAny {
    RawAny::new(
        "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        &json!({"abort": {"http_status": status, "percentage": {"numerator": 100}}}),
    )
    .unwrap()
}

#[test]
fn a_filter_the_model_does_not_type_runs_and_routes_disable_or_reconfigure_it() {
    let bootstrap = Bootstrap::new(0)
        .listener(
            Listener::http("ingress", 0)
                .http_filter(HttpFilter::custom("fault", abort_all(418)))
                .route(
                    Route::path("/skipped")
                        .to_cluster("backend")
                        .disable_filter("fault"),
                )
                .route(
                    Route::path("/overridden")
                        .to_cluster("backend")
                        .per_filter_config("fault", PerFilterConfig::Raw(abort_all(429))),
                )
                .route(Route::prefix("/").to_cluster("backend")),
        )
        .cluster(Cluster::static_cluster("backend", [upstream::start()]));
    let envoy = start(&bootstrap, EnvoyOptions::default());
    let ingress = envoy.listener_addr("ingress").unwrap();
    let status = |path: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        raw_exchange(ingress, request.as_bytes()).0
    };
    assert_eq!(status("/anything"), 418, "the filter's own config");
    assert_eq!(status("/skipped"), 200, "disabled on this route");
    assert_eq!(status("/overridden"), 429, "the route's own config");
    envoy.shutdown();
}

fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(header, _)| header == name)
        .map(|(_, value)| value.as_slice())
}

#[test]
fn fixture_module_on_v8_survives_a_non_utf8_header_value() {
    // One worker: the follow-up request must reach the same VM that saw the bad bytes.
    let envoy = start_fixture_on_one_worker(
        WasmFilter::new("fixture", fixture_module())
            .configuration(&json!({"tick_period_ms": 1000})),
    );
    let ingress = envoy.listener_addr("ingress").unwrap();

    let (status, headers) = raw_exchange(
        ingress,
        b"GET /bytes HTTP/1.1\r\nhost: mesh\r\nx-fixture-action: bytes\r\n\
          x-bytes: \xFF\xFE\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(header(&headers, "x-fixture-bytes"), Some(&b"fffe"[..]));
    assert_eq!(header(&headers, "x-fixture-str"), Some(&b"none"[..]));

    let mut response = ureq::get(format!("http://{ingress}/after"))
        .header("x-fixture-action", "bytes")
        .header("x-bytes", "ok")
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-fixture-str"], "ok");
    assert_eq!(response.headers()["x-fixture-bytes"], "6f6b");
    assert_eq!(
        response.body_mut().read_to_string().unwrap(),
        upstream::BODY
    );

    envoy.shutdown();
}

/// Starts the fixture module and makes it panic on one request.
fn envoy_with_a_panicked_fixture() -> EnvoyProcess {
    let envoy = start_fixture_on_one_worker(WasmFilter::new("fixture", fixture_module()));
    let ingress = envoy.listener_addr("ingress").unwrap();
    let (status, _) = raw_exchange(
        ingress,
        b"GET / HTTP/1.1\r\nhost: mesh\r\nx-fixture-action: panic\r\nconnection: close\r\n\r\n",
    );
    assert_ne!(status, 200, "a trapped filter must not pass the request");
    envoy
}

#[test]
#[should_panic(expected = "shows wasm failures")]
fn shutdown_fails_the_test_when_the_wasm_module_panicked() {
    envoy_with_a_panicked_fixture().shutdown();
}

#[test]
#[should_panic(expected = "shows wasm failures")]
fn drop_fails_the_test_when_the_wasm_module_panicked() {
    drop(envoy_with_a_panicked_fixture());
}
